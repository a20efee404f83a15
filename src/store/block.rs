//! The store's one allocation per entry: [`Block`], a header and the key's
//! bytes behind a thin pointer, counted like an `Arc`.
//!
//! One of the crate's three `unsafe` modules (with [`super::arena`] and
//! [`crate::posture::alloc`]): `std` cannot build an `Arc` of a header and
//! a slice of run-time length behind a thin pointer. The unsafe parts are
//! the allocation and its layout, the counts, and reading the key's bytes.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// A stored entry's one allocation: a header `H` (the store's metadata and
/// value handle) and the key's bytes right after it, behind a thin
/// pointer, counted like an `Arc` (strong and weak counts, 32 bits each).
///
/// It is what the shard map holds (ordered by the key bytes), what a GET
/// response holds while it writes the value, and, weakly, what the
/// deadline heap and the lingering list point at. One allocation instead
/// of three (the key's `Arc<str>`, the entry in the map's node, the
/// value's `Arc`), and half the map slot: docs/BENCHMARKS.md, "Memory per
/// secret". `std` cannot build an `Arc` of a header and a slice of run-time
/// length behind a thin pointer, hence this type, here in the store's
/// unsafe module. It follows `std::sync::Arc`'s counting: the strong
/// holders together own one weak count; the header is dropped when the
/// last strong count goes, the allocation freed when the last weak one
/// does.
pub(super) struct Block<H> {
    inner: NonNull<BlockInner<H>>,
}

/// A weak handle to a [`Block`]: keeps the allocation, not the header.
pub(super) struct WeakBlock<H> {
    inner: NonNull<BlockInner<H>>,
}

/// The fixed part of a block. The key's bytes start right after
/// `key_len`, inside this struct's trailing padding and past it: a block's
/// allocation is `max(size_of::<BlockInner<H>>(), KEY_OFFSET + key_len)`
/// bytes, so a reference to the whole struct is always in bounds.
#[repr(C)]
struct BlockInner<H> {
    header: H,
    strong: AtomicU32,
    weak: AtomicU32,
    key_len: u16,
}

/// Counts beyond this abort the process, as `Arc` does (a count cannot be
/// allowed to wrap; nothing real holds two billion handles).
const MAX_COUNT: u32 = i32::MAX as u32;

impl<H> BlockInner<H> {
    const KEY_OFFSET: usize = std::mem::offset_of!(BlockInner<H>, key_len) + 2;

    fn layout(key_len: usize) -> std::alloc::Layout {
        let size = std::mem::size_of::<Self>().max(Self::KEY_OFFSET + key_len);
        std::alloc::Layout::from_size_align(size, std::mem::align_of::<Self>())
            .expect("a block of at most a few hundred bytes")
    }
}

fn count_up(count: &AtomicU32) {
    if count.fetch_add(1, Ordering::Relaxed) > MAX_COUNT {
        std::process::abort();
    }
}

// SAFETY: a block is shared like an `Arc<H>`: it hands out `&H` to every
// thread that holds it and drops `H` on whichever thread lets go last, so it
// is `Send` and `Sync` exactly when `Arc<H>` would be. The key bytes are
// written once, before the block is shared, and only read after.
unsafe impl<H: Send + Sync> Send for Block<H> {}
// SAFETY: as above.
unsafe impl<H: Send + Sync> Sync for Block<H> {}
// SAFETY: a weak handle only touches the counts (atomics) and, through
// `upgrade`, becomes a `Block`.
unsafe impl<H: Send + Sync> Send for WeakBlock<H> {}
// SAFETY: as above.
unsafe impl<H: Send + Sync> Sync for WeakBlock<H> {}

impl<H> Block<H> {
    /// A new block holding `header` and a copy of `key` (at most
    /// `u16::MAX` bytes; keys are at most 256).
    pub(super) fn new(header: H, key: &str) -> Block<H> {
        let key_len = u16::try_from(key.len()).expect("keys are at most 256 bytes");
        let layout = BlockInner::<H>::layout(key.len());
        // SAFETY: the layout has a non-zero size (it holds a `BlockInner`).
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(base) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        let inner = base.cast::<BlockInner<H>>();
        // SAFETY: `base` is a fresh allocation of `layout`, aligned for and
        // at least as large as a `BlockInner<H>`, and `KEY_OFFSET +
        // key.len()` bytes long; nothing else can see it yet.
        unsafe {
            inner.as_ptr().write(BlockInner {
                header,
                strong: AtomicU32::new(1),
                weak: AtomicU32::new(1),
                key_len,
            });
            std::ptr::copy_nonoverlapping(
                key.as_ptr(),
                raw.add(BlockInner::<H>::KEY_OFFSET),
                key.len(),
            );
        }
        Block { inner }
    }

    fn inner(&self) -> &BlockInner<H> {
        // SAFETY: a `Block` holds a strong count, so the allocation and its
        // header are alive, and it is as large as a `BlockInner<H>`.
        unsafe { self.inner.as_ref() }
    }

    /// The header.
    pub(super) fn header(&self) -> &H {
        &self.inner().header
    }

    /// The key the block was made with.
    pub(super) fn key(&self) -> &str {
        let len = usize::from(self.inner().key_len);
        // SAFETY: `new` copied `len` bytes of a `str` there, and nothing
        // writes them again while the allocation lives (it does: we hold a
        // count).
        unsafe {
            let start = self
                .inner
                .as_ptr()
                .cast::<u8>()
                .add(BlockInner::<H>::KEY_OFFSET);
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(start, len))
        }
    }

    /// How many `Block`s of this allocation exist.
    pub(super) fn strong_count(this: &Block<H>) -> usize {
        this.inner().strong.load(Ordering::Acquire) as usize
    }

    /// Whether two handles are of the same block.
    pub(super) fn ptr_eq(a: &Block<H>, b: &Block<H>) -> bool {
        a.inner == b.inner
    }

    /// A weak handle to this block.
    pub(super) fn downgrade(this: &Block<H>) -> WeakBlock<H> {
        count_up(&this.inner().weak);
        WeakBlock { inner: this.inner }
    }
}

impl<H> Clone for Block<H> {
    fn clone(&self) -> Block<H> {
        count_up(&self.inner().strong);
        Block { inner: self.inner }
    }
}

impl<H> Drop for Block<H> {
    fn drop(&mut self) {
        if self.inner().strong.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // The last strong handle: every other handle's use of the header
        // happened before this (their `Release` decrements).
        std::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: the strong count is 0 and never rises again (`upgrade`
        // refuses 0), so nothing can reach the header any more; it is
        // dropped exactly once, here.
        unsafe { std::ptr::drop_in_place(&raw mut (*self.inner.as_ptr()).header) };
        // The weak count the strong handles held together.
        drop(WeakBlock { inner: self.inner });
    }
}

impl<H> WeakBlock<H> {
    /// The strong count. A weak handle keeps the allocation, so the counts
    /// can always be read; nothing else is (the header may be dropped), and
    /// no reference to the whole block is made.
    fn strong(&self) -> &AtomicU32 {
        // SAFETY: as above; a place projection, not a reference to the block.
        unsafe { &(*self.inner.as_ptr()).strong }
    }

    /// The weak count, as [`WeakBlock::strong`].
    fn weak(&self) -> &AtomicU32 {
        // SAFETY: as in `strong`.
        unsafe { &(*self.inner.as_ptr()).weak }
    }

    /// A strong handle, unless the header is gone.
    pub(super) fn upgrade(&self) -> Option<Block<H>> {
        let strong = self.strong();
        let mut current = strong.load(Ordering::Relaxed);
        loop {
            if current == 0 {
                return None;
            }
            if current > MAX_COUNT {
                std::process::abort();
            }
            match strong.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Block { inner: self.inner }),
                Err(now) => current = now,
            }
        }
    }

    /// How many strong handles of the block exist (0: its header is gone).
    pub(super) fn strong_count(&self) -> usize {
        self.strong().load(Ordering::Acquire) as usize
    }
}

impl<H> Clone for WeakBlock<H> {
    fn clone(&self) -> WeakBlock<H> {
        count_up(self.weak());
        WeakBlock { inner: self.inner }
    }
}

impl<H> Drop for WeakBlock<H> {
    fn drop(&mut self) {
        let inner = self.inner.as_ptr();
        // SAFETY: as in `strong`: the allocation lives until the weak count
        // reaches 0, which is this handle's to see.
        let key_len = usize::from(unsafe { (*inner).key_len });
        let weak = self.weak();
        if weak.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        std::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: the last handle of any kind: the header was dropped with
        // the last strong one, and the allocation was made in `new` with
        // this layout (the key length is the one it was made with).
        unsafe { std::alloc::dealloc(inner.cast(), BlockInner::<H>::layout(key_len)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A header that counts its drops.
    struct Counted(std::sync::Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_block_holds_its_key_and_drops_its_header_with_the_last_strong_handle() {
        let drops = std::sync::Arc::new(AtomicUsize::new(0));
        for key in ["k", "mem/000000", &"k".repeat(256)] {
            drops.store(0, Ordering::SeqCst);
            let block = Block::new(Counted(drops.clone()), key);
            assert_eq!(block.key(), key);
            let second = block.clone();
            let weak = Block::downgrade(&block);
            assert_eq!(Block::strong_count(&block), 2);
            assert!(Block::ptr_eq(&block, &second));
            drop(block);
            assert_eq!(drops.load(Ordering::SeqCst), 0, "a strong handle is left");
            let third = weak.upgrade().expect("still alive");
            assert_eq!(third.key(), key);
            drop((second, third));
            assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped with the last");
            assert_eq!(weak.strong_count(), 0);
            assert!(weak.upgrade().is_none(), "never alive again");
            let other_weak = weak.clone();
            drop(weak);
            drop(other_weak);
            assert_eq!(drops.load(Ordering::SeqCst), 1, "exactly once");
        }
    }

    #[test]
    fn handles_of_a_block_cross_threads() {
        let drops = std::sync::Arc::new(AtomicUsize::new(0));
        let block = Block::new(Counted(drops.clone()), "shared");
        let weak = Block::downgrade(&block);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (block, weak) = (block.clone(), weak.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let again = weak.upgrade().expect("held");
                        assert_eq!(again.key(), block.key());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        drop(block);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(weak.upgrade().is_none());
    }
}
