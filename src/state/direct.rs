//! New files written past the kernel's page cache (`O_DIRECT` on Linux),
//! through an aligned staging buffer reused from one file to the next. An
//! epoch's blocks are written once, synced, and read again only by a
//! restore: copying them into cache pages first (allocating, copying and
//! accounting each page, then writing it back) was most of a commit's CPU
//! time, and a copy into a buffer already in memory costs a fraction of
//! that. Where the file system takes no direct writes (tmpfs), the file is
//! written through the cache.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// What a direct write's memory address, file offset and length are
/// multiples of (the logical block size of common devices is 512 or 4096).
const ALIGN: usize = 4096;

/// Bytes staged before each direct write.
const STAGING: usize = 4 << 20;

/// Staging buffers not in use (one per file being written at once).
static IDLE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A file being written: directly, or through the cache.
pub struct NewFile {
    pub file: File,
    path: PathBuf,
    direct: bool,
}

impl NewFile {
    /// Creates `path`, which must not exist, for direct writes if its file
    /// system takes them.
    pub fn create(path: &Path) -> io::Result<NewFile> {
        match Self::open(path, cfg!(target_os = "linux")) {
            // No direct I/O here: the file may have been made before the
            // flag was refused.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                std::fs::remove_file(path).or_else(|e| match e.kind() {
                    io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })?;
                Self::open(path, false)
            }
            result => result,
        }
    }

    fn open(path: &Path, direct: bool) -> io::Result<NewFile> {
        let mut options = File::options();
        options.write(true).create_new(true);
        #[cfg(target_os = "linux")]
        if direct {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_DIRECT);
        }
        Ok(NewFile {
            file: options.open(path)?,
            path: path.to_path_buf(),
            direct,
        })
    }

    /// Writes `parts` one after another from the start of the file, which
    /// is then exactly as long as they are.
    pub fn write_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        if !self.direct {
            return parts.iter().try_for_each(|p| self.file.write_all(p));
        }
        let mut staging = IDLE
            .lock()
            .pop()
            .unwrap_or_else(|| vec![0; STAGING + ALIGN]);
        let result = self.write_staged(&mut staging, parts);
        IDLE.lock().push(staging);
        match result {
            // Direct writes refused after all (a device asking for a larger
            // alignment): the file is written again through the cache.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.file = File::options()
                    .write(true)
                    .truncate(true)
                    .open(&self.path)?;
                self.direct = false;
                self.write_parts(parts)
            }
            result => result,
        }
    }

    fn write_staged(&mut self, staging: &mut [u8], parts: &[&[u8]]) -> io::Result<()> {
        let start = staging.as_ptr().align_offset(ALIGN);
        let buf = &mut staging[start..start + STAGING];
        let mut filled = 0;
        let mut len = 0u64;
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let n = rest.len().min(STAGING - filled);
                buf[filled..filled + n].copy_from_slice(&rest[..n]);
                filled += n;
                rest = &rest[n..];
                if filled == STAGING {
                    self.file.write_all(buf)?;
                    filled = 0;
                }
            }
            len += part.len() as u64;
        }
        if filled > 0 {
            // The last write is padded to whole blocks, then cut to length.
            let padded = filled.next_multiple_of(ALIGN);
            buf[filled..padded].fill(0);
            self.file.write_all(&buf[..padded])?;
            self.file.set_len(len)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parts of every size around the alignment and the staging buffer's,
    /// written directly where the file system allows it and through the
    /// cache, in a directory of the repository (on the machine's disk)
    /// and in /dev/shm where there is one (a tmpfs, which may refuse
    /// direct writes): read back, the file is the parts, no longer.
    #[test]
    fn parts_are_the_file_exactly() {
        let parts: Vec<Vec<u8>> = [0, 1, 4095, 4096, 4097, STAGING - 1, STAGING + 3, 10]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j * 7) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let want = parts.concat();
        let on_disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let shm = tempfile::tempdir_in("/dev/shm").ok();
        for dir in [Some(&on_disk), shm.as_ref()].into_iter().flatten() {
            for (n, cached) in [(1, false), (refs.len(), false), (refs.len(), true)] {
                let path = dir.path().join(format!("f{n}{cached}"));
                let mut f = match cached {
                    false => NewFile::create(&path).unwrap(),
                    true => NewFile::open(&path, false).unwrap(),
                };
                f.write_parts(&refs[..n]).unwrap();
                f.file.sync_all().unwrap();
                drop(f);
                let got = std::fs::read(&path).unwrap();
                assert!(got == want[..refs[..n].concat().len()], "{path:?}");
            }
            let written = dir.path().join("f1false");
            assert!(NewFile::create(&written).is_err(), "never over a file");
        }
    }
}
