//! [`ZeroizingAllocator`]: the global allocator of the `tmpvault` binary,
//! which wipes every heap block before it goes back to the system.
//!
//! [`SecretBytes`](crate::store::secret::SecretBytes) wipes the buffers tmpvault
//! owns, but a value also passes through buffers it does not: hyper's read
//! and write buffers, rustls's TLS record buffers (where the plaintext is
//! decrypted in place), `Bytes` chunks, serde's scratch space. Those are
//! freed without being cleared, and `malloc` leaves the old bytes in the
//! freed chunk until something else happens to reuse it. Wiping in the
//! allocator covers every such heap copy at once, whoever made it:
//!
//! - `dealloc` zeroes the block, then frees it;
//! - `realloc` allocates the new block, copies, zeroes the old one and frees
//!   it, instead of calling the system `realloc`, which may move the data
//!   and free the old block with the bytes still in it;
//! - `alloc` and `alloc_zeroed` pass through.
//!
//! The cost is one `memset` per free and a copy per `realloc`, where glibc
//! would often have grown the block in place. Measured on x86-64: a few
//! nanoseconds per free below 1 KiB, about 20 ns at 4 KiB and 85 ns at
//! 16 KiB; per request, no difference stood out from the noise.
//!
//! What it does not cover: a block still in use. A connection's buffers
//! live until the connection closes, and hyper's read buffer holds the last
//! few KiB of requests on a keep-alive connection, deleted values included;
//! they are wiped when the connection ends. Nor copies on a stack or in
//! registers, the kernel's socket buffers, or memory C code `malloc`s
//! directly (none of it handles secrets here).
//!
//! No `MADV_DONTDUMP` on the heap: with core dumps off for the whole
//! process (see [`crate::posture::harden`]: `PR_SET_DUMPABLE` 0 and `RLIMIT_CORE` 1)
//! there is no dump for it to keep pages out of. Stored values are not on
//! the heap anyway but in the secret arena ([`crate::store::arena`]),
//! whose pages are left out of dumps whatever the limits.
//!
//! This is one of the crate's three `unsafe` modules (the others are the
//! secret arena, [`crate::store::arena`], and the store's entry blocks):
//! a `GlobalAlloc` cannot be written without it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{compiler_fence, Ordering};

/// A global allocator over [`System`] that zeroes every block it frees,
/// including the old block of a `realloc`.
///
/// Registered in `main.rs` only; code linking the library keeps whatever
/// allocator it registers itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZeroizingAllocator;

/// Zeroes `len` bytes at `ptr` in a way the optimiser must keep.
///
/// The block is freed right after, and the compiler knows `free`: a plain
/// `memset` before it is a dead store, and at `-O` it is deleted. The
/// optimiser treats the fence after it as a point where memory may be
/// read, and `black_box` makes the pointer escape, so the write has to
/// happen (checked in the disassembly of a release build's
/// `__rust_dealloc`, and end to end by tests/residue.rs).
///
/// # Safety
///
/// `ptr` must be valid for writes of `len` bytes.
#[inline]
unsafe fn wipe(ptr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees `ptr` is valid for `len` bytes of writes;
    // any byte value is valid for a `u8` block that is about to be freed.
    unsafe { ptr::write_bytes(ptr, 0, len) };
    compiler_fence(Ordering::SeqCst);
    // The pointer escapes to code the optimiser cannot see into, which may
    // read the zeroes: a second guard, for whole-program (fat LTO) builds.
    std::hint::black_box(ptr);
}

// SAFETY: every method forwards to `System`, which upholds the `GlobalAlloc`
// contract, with layouts the caller gave us; `dealloc` and `realloc` only
// add writes to the old block, which the caller hands over to us and which
// is valid for `layout.size()` bytes until we free it.
unsafe impl GlobalAlloc for ZeroizingAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours (`layout` has a non-zero size).
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes from this
        // allocator (the caller's contract), so it is writable, and then
        // freed exactly once with the layout it was allocated with.
        unsafe {
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the
        // alignment, does not overflow `isize`, so the layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_size` is non-zero (the caller's contract).
        let new_ptr = unsafe { System.alloc(new_layout) };
        if new_ptr.is_null() {
            // The old block stays allocated and untouched, as `realloc`
            // promises on failure.
            return new_ptr;
        }
        // SAFETY: `ptr` is valid for `layout.size()` bytes and `new_ptr` for
        // `new_size`; they are distinct live blocks, so they do not overlap.
        // The old block is then wiped and freed as in `dealloc`.
        unsafe {
            ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOCATOR: ZeroizingAllocator = ZeroizingAllocator;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("a valid layout")
    }

    /// Reads `len` bytes of a live block.
    fn bytes(ptr: *mut u8, len: usize) -> Vec<u8> {
        // SAFETY: callers pass live blocks of at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
    }

    #[test]
    fn wipe_zeroes_exactly_the_block() {
        let mut buffer = [0xAAu8; 64];
        // SAFETY: 32 bytes from offset 16 lie inside `buffer`.
        unsafe { wipe(buffer.as_mut_ptr().add(16), 32) };
        assert!(buffer[..16].iter().all(|&byte| byte == 0xAA));
        assert!(buffer[16..48].iter().all(|&byte| byte == 0));
        assert!(buffer[48..].iter().all(|&byte| byte == 0xAA));
    }

    #[test]
    fn alloc_and_dealloc_round_trip() {
        for (size, align) in [(1, 1), (24, 8), (4096, 64), (1 << 20, 4096)] {
            let layout = layout(size, align);
            // SAFETY: non-zero sizes; every block is freed once with its layout.
            unsafe {
                let ptr = ALLOCATOR.alloc(layout);
                assert!(!ptr.is_null());
                assert_eq!(ptr as usize % align, 0);
                ptr::write_bytes(ptr, 0x5A, size);
                assert!(bytes(ptr, size).iter().all(|&byte| byte == 0x5A));
                ALLOCATOR.dealloc(ptr, layout);
            }
        }
    }

    #[test]
    fn alloc_zeroed_is_zeroed() {
        let layout = layout(4096, 16);
        // SAFETY: a non-zero size, freed once with its layout.
        unsafe {
            let ptr = ALLOCATOR.alloc_zeroed(layout);
            assert!(!ptr.is_null());
            assert!(bytes(ptr, 4096).iter().all(|&byte| byte == 0));
            ALLOCATOR.dealloc(ptr, layout);
        }
    }

    #[test]
    fn realloc_keeps_the_contents_growing_and_shrinking() {
        let pattern: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let old = layout(1000, 32);
        // SAFETY: non-zero sizes; each block is used only while live and
        // freed once, with the layout of its last size.
        unsafe {
            let ptr = ALLOCATOR.alloc(old);
            assert!(!ptr.is_null());
            ptr::copy_nonoverlapping(pattern.as_ptr(), ptr, 1000);

            let grown = ALLOCATOR.realloc(ptr, old, 5000);
            assert!(!grown.is_null());
            assert_eq!(grown as usize % 32, 0);
            assert_eq!(bytes(grown, 1000), pattern);

            let shrunk = ALLOCATOR.realloc(grown, layout(5000, 32), 10);
            assert!(!shrunk.is_null());
            assert_eq!(bytes(shrunk, 10), pattern[..10]);
            ALLOCATOR.dealloc(shrunk, layout(10, 32));
        }
    }

    #[test]
    fn a_buffer_grown_step_by_step_keeps_every_step() {
        // The path a growing `Vec` takes: `realloc` to double, then `dealloc`.
        let mut size = 8;
        // SAFETY: non-zero sizes; the block is grown twice, then freed once
        // with the layout of its last size.
        unsafe {
            let mut ptr = ALLOCATOR.alloc(layout(size, 1));
            assert!(!ptr.is_null());
            ptr::write_bytes(ptr, 1, size);
            for step in 2..=3u8 {
                ptr = ALLOCATOR.realloc(ptr, layout(size, 1), size * 2);
                assert!(!ptr.is_null());
                ptr::write_bytes(ptr.add(size), step, size);
                size *= 2;
            }
            let contents = bytes(ptr, size);
            assert_eq!(&contents[..8], &[1; 8]);
            assert_eq!(&contents[8..16], &[2; 8]);
            assert_eq!(&contents[16..], &[3; 16]);
            ALLOCATOR.dealloc(ptr, layout(size, 1));
        }
    }
}
