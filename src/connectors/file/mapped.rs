//! Files read through a memory map: their bytes reach the parser without
//! the kernel copying them into a buffer first. A mapped file that is cut
//! short (truncated) while mapped would kill the process with SIGBUS at the
//! first touch of a page past its new end; a handler installed with the
//! first map puts a page of zeros there instead and marks the map cut
//! short, which the reader reports as an error once the batch is parsed.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use memmap2::{Advice, Mmap, UncheckedAdvice};

/// Maps registered at a time; a file is read instead when none is free.
const SLOTS: usize = 64;

/// A registered map: where it is, and whether a page of it was missing.
struct Slot {
    /// 0 when free.
    start: AtomicUsize,
    len: AtomicUsize,
    cut: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    cut: AtomicBool::new(false),
};

static REGISTERED: [Slot; SLOTS] = [FREE; SLOTS];

/// Whether the handler is in place (installed with the first map).
static INSTALLED: OnceLock<bool> = OnceLock::new();
/// The page size, and the SIGBUS disposition found before ours (a leaked
/// `sigaction`), to pass on a fault that is not in a registered map: set
/// before the handler is, read by it.
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static PREVIOUS: AtomicUsize = AtomicUsize::new(0);

/// A file's bytes, mapped read-only, and registered with the SIGBUS handler
/// while mapped.
pub(crate) struct MappedFile {
    map: Mmap,
    slot: usize,
    /// The pages before this byte were let go of ([`MappedFile::taken_to`]).
    released: AtomicUsize,
}

/// Bytes of a map taken at a time before their pages are let go of.
const RELEASE_STEP: usize = 16 << 20;

impl MappedFile {
    /// Maps the first `len` bytes of `file`. None when mapping is not to be
    /// had (no handler, no free slot, or the kernel refused): read instead.
    pub(crate) fn map(file: &File, len: u64) -> Option<Arc<Self>> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        if !*INSTALLED.get_or_init(install) {
            return None;
        }
        // SAFETY: the map is of a file others may change. Bytes changed in
        // place are read as whatever they are then (text, checked as such);
        // a file cut short faults, which the handler turns into zeros and a
        // mark that fails the read.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file) }.ok()?;
        let _ = map.advise(Advice::Sequential);
        let start = map.as_ptr() as usize;
        let slot = REGISTERED.iter().position(|s| {
            s.start
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        let s = &REGISTERED[slot];
        s.cut.store(false, Ordering::Relaxed);
        s.len.store(len, Ordering::Relaxed);
        s.start.store(start, Ordering::Release);
        Some(Arc::new(MappedFile {
            map,
            slot,
            released: AtomicUsize::new(0),
        }))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Maps in the pages of `bytes[from..to]` now, in one call, rather than
    /// at one fault after another. False if some page is past the file's
    /// end (it was cut short).
    pub(crate) fn populate(&self, from: usize, to: usize) -> bool {
        let page = PAGE.load(Ordering::Relaxed);
        let from = from / page * page;
        match self
            .map
            .advise_range(Advice::PopulateRead, from, to.saturating_sub(from))
        {
            // Touching a page past the end would have faulted.
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                REGISTERED[self.slot].cut.store(true, Ordering::Release);
                false
            }
            // Done, or not to be had (older kernels know no such advice):
            // the pages fault in as they are read.
            _ => true,
        }
    }

    /// The records up to byte `end` are parsed and taken, and so are all
    /// before them (called in the order read). Once a step of
    /// [`RELEASE_STEP`] bytes or the end of the map is reached, lets go of
    /// the pages taken since the last time: they stay in the page cache, but
    /// no longer count in the process's resident memory, which would
    /// otherwise grow to the whole file's size. (Letting go of each batch's
    /// pages as it is parsed was measured to cost all that mapping saves.)
    pub(crate) fn taken_to(&self, end: usize) {
        let page = PAGE.load(Ordering::Relaxed);
        let from = self.released.load(Ordering::Relaxed);
        let to = end.min(self.map.len()) / page * page;
        if to <= from || (to < from + RELEASE_STEP && end < self.map.len()) {
            return;
        }
        self.released.store(to, Ordering::Relaxed);
        // SAFETY: the map is read-only and of a file: its pages, let go
        // of, read the file's bytes again if touched.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, from, to - from)
        };
    }

    /// Some page was past the file's end when touched: what was read of it
    /// is zeros, not the file.
    pub(crate) fn cut_short(&self) -> bool {
        REGISTERED[self.slot].cut.load(Ordering::Acquire)
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // Nothing touches the map any more; it is unmapped after this.
        REGISTERED[self.slot].start.store(0, Ordering::Release);
    }
}

/// Puts the handler in place, keeping the disposition it replaces.
fn install() -> bool {
    // SAFETY: sysconf and sigaction with valid arguments; the handler only
    // makes async-signal-safe calls (mmap, sigaction) and atomic loads.
    unsafe {
        let Ok(page) = usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)) else {
            return false;
        };
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
            return false;
        }
        PAGE.store(page, Ordering::Relaxed);
        PREVIOUS.store(
            Box::into_raw(Box::new(previous)) as usize,
            Ordering::Release,
        );
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0
    }
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for slot in &REGISTERED {
        let start = slot.start.load(Ordering::Acquire);
        if start == 0 || start == usize::MAX {
            continue;
        }
        if addr < start || addr - start >= slot.len.load(Ordering::Relaxed) {
            continue;
        }
        // SAFETY: the page is inside a live map of ours; replacing it with
        // a private page of zeros leaves the rest of the map as it is.
        let zeros = unsafe {
            libc::mmap(
                (addr / page * page) as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zeros != libc::MAP_FAILED {
            slot.cut.store(true, Ordering::Release);
            return;
        }
    }
    // Not ours: as the disposition before ours would have it.
    let previous = PREVIOUS.load(Ordering::Acquire) as *const libc::sigaction;
    // SAFETY: set by `install` before this handler was, and never freed.
    let previous = unsafe { &*previous };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: restoring the default; returning re-runs the faulting
        // access, which now ends the process as it would have.
        unsafe { libc::sigaction(signal, previous, std::ptr::null_mut()) };
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler, called as it was registered.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(signal, info, context);
    } else {
        // SAFETY: as above, a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_cut_short_while_mapped_reads_zeros_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        let page = 4096;
        file.write_all(&vec![b'x'; 4 * page]).unwrap();
        let file = File::open(&path).unwrap();
        let map = MappedFile::map(&file, 4 * page as u64).expect("mapped");
        let other = MappedFile::map(&file, 4 * page as u64).expect("mapped");
        assert!(map.populate(0, 4 * page));
        assert_eq!(map.bytes()[3 * page], b'x');
        assert!(!map.cut_short());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(page as u64)
            .unwrap();
        // Past the new end: no SIGBUS, zeros, and the map knows.
        assert_eq!(
            map.bytes()[page..].iter().map(|&b| b as u64).sum::<u64>(),
            0
        );
        assert_eq!(map.bytes()[0], b'x');
        assert!(map.cut_short());
        // Asking for the pages past the end fails, with no fault either.
        assert!(!other.cut_short());
        assert!(!other.populate(0, 4 * page));
        assert!(other.cut_short());
    }

    #[test]
    fn maps_free_their_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc\n").unwrap();
        let file = File::open(&path).unwrap();
        for _ in 0..3 * SLOTS {
            let map = MappedFile::map(&file, 4).expect("a slot is free again");
            assert_eq!(map.bytes(), b"abc\n");
        }
    }
}
