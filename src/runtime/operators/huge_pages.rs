//! An allocator for large in-memory tables: the global allocator's memory,
//! with the kernel asked to back it by transparent huge pages
//! (`MADV_HUGEPAGE`). A table of millions of groups is met at random: in
//! 4 KiB pages nearly every lookup also misses the TLB, and walks page
//! tables that are not in cache either.

use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};

/// Allocations from this size on are advised: a small table would hold a
/// whole huge page for little.
const ADVISED_FROM: usize = 8 << 20;

/// The size of a transparent huge page on x86-64 and most arm64 kernels.
const HUGE_PAGE: usize = 2 << 20;

#[derive(Clone, Copy, Default)]
pub struct HugePages;

// SAFETY: every call goes to `Global`, which upholds the contract; the
// advice changes how the kernel backs the memory, not its contents.
unsafe impl Allocator for HugePages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let block = Global.allocate(layout)?;
        if layout.size() >= ADVISED_FROM {
            advise(block);
        }
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: `ptr` was allocated by `Global` with `layout` (above).
        unsafe { Global.deallocate(ptr, layout) }
    }
}

/// Advises the whole huge pages within `block` (best effort: a kernel
/// without transparent huge pages, or set to `never`, ignores it).
fn advise(block: NonNull<[u8]>) {
    let start = block.as_ptr() as *mut u8 as usize;
    let first = start.next_multiple_of(HUGE_PAGE);
    let end = (start + block.len()) / HUGE_PAGE * HUGE_PAGE;
    if end <= first {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: the range lies within a live allocation of ours; the advice
    // does not change its contents.
    unsafe {
        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_usable_and_given_back() {
        for size in [64, ADVISED_FROM + 12_345] {
            let layout = Layout::from_size_align(size, 16).unwrap();
            let block = HugePages.allocate(layout).unwrap();
            assert!(block.len() >= size);
            let p = block.as_ptr() as *mut u8;
            // SAFETY: within the block just allocated.
            unsafe {
                p.write_bytes(7, size);
                assert_eq!(*p.add(size - 1), 7);
                HugePages.deallocate(NonNull::new(p).unwrap(), layout);
            }
        }
    }
}
