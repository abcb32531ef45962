//! Shared pieces of the fuzz targets (`fuzz_targets/`) and of the seed-corpus generator
//! (`examples/gen_corpus.rs`).
//!
//! * [`CappedAlloc`]: a global allocator that aborts on any single allocation above
//!   [`ALLOC_CAP`], so a size read from untrusted bytes is caught even when the memory would
//!   never be touched (a zeroed `Vec` is lazily mapped, and RSS limits miss it).
//! * [`files`]: how one fuzz input describes a store directory, and the CRC fix-up of the
//!   `store_recovery_crc` variant.
//! * [`store`]: what the store targets do with such a directory.

pub mod files;
pub mod store;

use std::alloc::{GlobalAlloc, Layout, System};

/// Largest single allocation a target may make. Inputs are at most a few hundred KiB, so
/// anything this large was sized from a length field rather than from the data.
pub const ALLOC_CAP: usize = 64 << 20;

/// The system allocator, with [`ALLOC_CAP`] enforced.
pub struct CappedAlloc;

fn over_cap(size: usize) -> ! {
    // No allocation here: the message is static.
    let msg = b"rnats-fuzz: allocation above ALLOC_CAP (a size taken from the input?)\n";
    // SAFETY: writing a static buffer to fd 2.
    unsafe {
        libc_write(2, msg.as_ptr(), msg.len());
    }
    let _ = size;
    std::process::abort();
}

unsafe extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, n: usize) -> isize;
}

// SAFETY: forwards to `System` unchanged, only refusing sizes above the cap.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            over_cap(layout.size());
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            over_cap(layout.size());
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CAP {
            over_cap(new_size);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
