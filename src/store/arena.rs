//! The secret arena: the one owner of the memory stored values live in.
//!
//! Every stored secret value and list item ([`super::secret::SecretBytes`])
//! is a block of one region of memory mapped at startup, the best the
//! kernel and the limits allow, tried in this order:
//!
//! 1. **`memfd_secret(2)`** (Linux 5.14+, on by default since 6.5): pages
//!    the kernel removes from its own direct map, so no other process, not
//!    even root through `/proc/PID/mem` or `process_vm_readv`, and no kernel
//!    read primitive over the direct map can read them; they are locked,
//!    never swapped, left out of core dumps, and zeroed by the kernel when
//!    the file goes.
//! 2. **An anonymous mapping locked with `mlock2(MLOCK_ONFAULT)` and marked
//!    `MADV_DONTDUMP`**: never swapped or dumped, but readable by root.
//! 3. **The heap** (no arena): values are ordinary allocations, wiped on
//!    free by [`crate::posture::alloc`].
//!
//! Each refused step is logged once, with the call and the errno, and the
//! self-check's `memory.secret_arena` reports the mode, the size and the
//! limit that decided it.
//!
//! ## Size
//!
//! Both arena mappings count against `RLIMIT_MEMLOCK` in full when they are
//! made (unless the process holds `CAP_IPC_LOCK`), so the arena is
//! `--max-memory` rounded up to whole top-size blocks, capped at the
//! memlock soft limit rounded down. The pages only become resident when a
//! value first uses them. When the arena is full, a write gets 507
//! `memory_budget_exceeded`, like a full budget: a value never moves to the
//! heap on its own because the arena has no room.
//!
//! ## Allocation
//!
//! A binary buddy allocator over the region: blocks of 16 bytes to the
//! "top" size (the next power of two of `--max-value-bytes`, at least
//! 64 KiB); the region is a whole number of top blocks. A request takes the
//! lowest free block of the smallest order that fits, splitting larger ones;
//! a freed block merges with its free buddy, order by order. Lowest first
//! keeps the touched (resident) part of the region small. The free lists
//! are ordinary heap data (offsets, nothing secret) behind one mutex held
//! for a few set operations.
//!
//! Free blocks are all zero: the kernel hands out zeroed pages, and a block
//! is wiped before it is freed (its first `len` bytes, the only ones ever
//! written).
//!
//! This module, [`super::block`] and [`crate::posture::alloc`] are the
//! crate's three `unsafe` modules: mapping memory and handing out raw
//! blocks of it cannot be done without. The unsafe parts here are the four
//! system calls and [`Buffer`]'s pointer, which is valid for as long as the
//! `Buffer` lives.
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{compiler_fence, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::config::SecretArena;

/// Smallest block: 16 bytes.
const MIN_SHIFT: u32 = 4;
/// Smallest top block: 64 KiB.
const MIN_TOP_SHIFT: u32 = 16;
/// The bit of [`Buffer`]'s length word that marks a heap buffer; values
/// are at most 16 MiB (`MAX_VALUE_BYTES_CEILING`), far below it.
const HEAP: u32 = 1 << 31;

/// Where values live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArenaMode {
    /// A `memfd_secret(2)` mapping.
    MemfdSecret,
    /// An `mlock`ed anonymous mapping.
    Mlock,
    /// The heap: no arena.
    Heap,
}

impl fmt::Display for ArenaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArenaMode::MemfdSecret => "memfd_secret",
            ArenaMode::Mlock => "mlock",
            ArenaMode::Heap => "heap",
        })
    }
}

/// How the arena was set up, for the self-check and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaReport {
    /// `--secret-arena`.
    pub setting: SecretArena,
    /// The mode in use.
    pub mode: ArenaMode,
    /// Bytes of the arena (0 on the heap).
    pub capacity: u64,
    /// What decided the size, e.g. `RLIMIT_MEMLOCK 8 MiB`.
    pub sized_by: String,
    /// Each better mode that was refused, and why (call and errno).
    pub refused: Vec<String>,
}

/// No block of the arena can hold a value of this size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the secret arena ({mode}, {capacity} bytes) has no free block for {len} more bytes")]
pub struct ArenaFull {
    /// The arena's mode.
    pub mode: ArenaMode,
    /// The arena's size in bytes.
    pub capacity: u64,
    /// The size asked for.
    pub len: usize,
}

/// The sizes an arena is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaSize {
    /// Bytes wanted (`--max-memory`).
    pub wanted: u64,
    /// The largest value (`--max-value-bytes`).
    pub max_value: u64,
    /// Bytes the process may lock: `None` when it may lock without limit
    /// (`RLIMIT_MEMLOCK` unlimited, or `CAP_IPC_LOCK` held).
    pub lockable: Option<u64>,
}

impl ArenaSize {
    /// The sizes for `max_memory` and `max_value`, with this process's
    /// memlock limit.
    pub fn for_process(max_memory: u64, max_value: u64) -> ArenaSize {
        let cap_ipc_lock = crate::sys::proc_status().is_ok_and(|status| status.has_cap_ipc_lock());
        let lockable = match crate::sys::memlock_limit() {
            _ if cap_ipc_lock => None,
            Ok(limit) => limit.soft,
            // Unknown: assume the common container default rather than none.
            Err(_) => Some(8 << 20),
        };
        ArenaSize {
            wanted: max_memory,
            max_value,
            lockable,
        }
    }

    fn top_shift(&self) -> u32 {
        let max_value = self.max_value.max(1);
        let shift = u64::BITS - (max_value - 1).leading_zeros();
        shift.clamp(MIN_TOP_SHIFT, 40)
    }

    /// The arena's length (a multiple of the top block) and what decided
    /// it, or why no arena fits.
    fn decide(&self) -> Result<(usize, String), String> {
        let top = 1u64 << self.top_shift();
        let wanted = self.wanted.max(1).div_ceil(top) * top;
        let (len, sized_by) = match self.lockable {
            Some(lockable) if lockable < wanted => (
                lockable / top * top,
                format!("RLIMIT_MEMLOCK {}", mib(lockable)),
            ),
            _ => (wanted, format!("--max-memory {}", mib(self.wanted))),
        };
        if len == 0 {
            return Err(format!(
                "{sized_by} is less than one {} block (the next power of two of \
                 --max-value-bytes)",
                mib(top)
            ));
        }
        let len = usize::try_from(len).map_err(|_| "the arena does not fit the address space")?;
        Ok((len, sized_by))
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// A mapped region and its buddy allocator.
pub struct Arena {
    base: NonNull<u8>,
    len: usize,
    mode: ArenaMode,
    top_shift: u32,
    free: Mutex<FreeLists>,
    used: AtomicUsize,
}

// SAFETY: the region is plain memory owned by the arena; all mutable state
// (the free lists) is behind a mutex, and the blocks it hands out are owned
// by one `Buffer` each.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

/// Free block offsets per order (index 0 is [`MIN_SHIFT`]).
struct FreeLists(Vec<BTreeSet<usize>>);

impl Arena {
    /// Maps an arena by the fallback chain that `setting` allows. `None`
    /// with the heap; the report says why.
    pub fn open(setting: SecretArena, size: ArenaSize) -> (Option<Arena>, ArenaReport) {
        let mut refused = Vec::new();
        let heap = |refused, sized_by: String| {
            let report = ArenaReport {
                setting,
                mode: ArenaMode::Heap,
                capacity: 0,
                sized_by,
                refused,
            };
            (None, report)
        };
        if setting == SecretArena::Heap {
            return heap(refused, "--secret-arena heap".to_owned());
        }
        let (len, sized_by) = match size.decide() {
            Ok(decided) => decided,
            Err(why) => {
                refused.push(why.clone());
                return heap(refused, why);
            }
        };
        let modes: &[ArenaMode] = match setting {
            SecretArena::Auto => &[ArenaMode::MemfdSecret, ArenaMode::Mlock],
            SecretArena::MemfdSecret => &[ArenaMode::MemfdSecret],
            SecretArena::Mlock => &[ArenaMode::Mlock],
            SecretArena::Heap => &[],
        };
        for &mode in modes {
            match map_region(mode, len) {
                Ok(base) => {
                    let arena = Arena::over(base, len, mode, size.top_shift());
                    let report = ArenaReport {
                        setting,
                        mode,
                        capacity: len as u64,
                        sized_by,
                        refused,
                    };
                    return (Some(arena), report);
                }
                Err(why) => refused.push(why),
            }
        }
        heap(refused, sized_by)
    }

    fn over(base: NonNull<u8>, len: usize, mode: ArenaMode, top_shift: u32) -> Arena {
        let orders = (top_shift - MIN_SHIFT + 1) as usize;
        let mut free = vec![BTreeSet::new(); orders];
        let top = 1usize << top_shift;
        free[orders - 1] = (0..len / top).map(|block| block * top).collect();
        Arena {
            base,
            len,
            mode,
            top_shift,
            free: Mutex::new(FreeLists(free)),
            used: AtomicUsize::new(0),
        }
    }

    /// The arena's mode.
    pub fn mode(&self) -> ArenaMode {
        self.mode
    }

    /// Bytes of blocks in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes of the arena.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// A zeroed block of at least `len` (> 0) bytes: its offset and order.
    fn take(&self, len: usize) -> Result<(usize, u32), ArenaFull> {
        let full = ArenaFull {
            mode: self.mode,
            capacity: self.len as u64,
            len,
        };
        let order = order_for(len);
        if order > self.top_shift {
            return Err(full);
        }
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let lists = &mut free.0;
        let from = (order..=self.top_shift)
            .find(|&k| !lists[(k - MIN_SHIFT) as usize].is_empty())
            .ok_or(full)?;
        let offset = lists[(from - MIN_SHIFT) as usize].pop_first().ok_or(full)?;
        // Split down to the order asked for; the upper halves go free.
        for k in (order..from).rev() {
            lists[(k - MIN_SHIFT) as usize].insert(offset + (1 << k));
        }
        drop(free);
        self.used.fetch_add(1 << order, Ordering::Relaxed);
        Ok((offset, order))
    }

    /// Frees the (already wiped) block at `offset` of `order`, merging it
    /// with its free buddies.
    fn give_back(&self, offset: usize, order: u32) {
        self.used.fetch_sub(1 << order, Ordering::Relaxed);
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let lists = &mut free.0;
        let (mut offset, mut order) = (offset, order);
        while order < self.top_shift {
            let buddy = offset ^ (1 << order);
            if !lists[(order - MIN_SHIFT) as usize].remove(&buddy) {
                break;
            }
            offset = offset.min(buddy);
            order += 1;
        }
        lists[(order - MIN_SHIFT) as usize].insert(offset);
    }

    /// A buffer in this arena holding a copy of `bytes`.
    fn copy(&self, bytes: &[u8]) -> Result<Buffer, ArenaFull> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|len| len & HEAP == 0)
            .ok_or(ArenaFull {
                mode: self.mode,
                capacity: self.len as u64,
                len: bytes.len(),
            })?;
        let (offset, _) = self.take(bytes.len())?;
        // SAFETY: `take` returned a block of `1 << order >= len` bytes at
        // `offset`, inside the mapping (`offset + (1 << order) <= self.len`),
        // owned by nobody else until `give_back`.
        let ptr = unsafe {
            let ptr = self.base.as_ptr().add(offset);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len());
            NonNull::new_unchecked(ptr)
        };
        Ok(Buffer { ptr, len })
    }
}

/// The order of the block that holds `len` bytes: the smallest power of
/// two that fits, at least [`MIN_SHIFT`]. A function of the length alone,
/// so a [`Buffer`] need not store it.
fn order_for(len: usize) -> u32 {
    (usize::BITS - (len.max(1) - 1).leading_zeros()).max(MIN_SHIFT)
}

impl Drop for Arena {
    fn drop(&mut self) {
        // Only arenas from `open` that were never installed are dropped (the
        // self-check's probe, tests); their blocks are all free. munmap of
        // a memfd_secret mapping releases its pages, which the kernel zeroes.
        // SAFETY: `base..base+len` is the mapping made by `map_region`, and no
        // `Buffer` of an uninstalled arena exists.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Maps `len` bytes for `mode`; the error names the call and the errno.
fn map_region(mode: ArenaMode, len: usize) -> Result<NonNull<u8>, String> {
    let errno = || std::io::Error::last_os_error();
    match mode {
        ArenaMode::MemfdSecret => {
            // SAFETY: memfd_secret takes one flags argument and returns a new
            // file descriptor or -1; nothing is borrowed.
            let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(format!("memfd_secret: {}", errno()));
            }
            let fd = fd as libc::c_int;
            // SAFETY: `fd` is ours and open; the mapping takes its own
            // reference to the file, so closing `fd` after it is correct.
            let mapped = unsafe {
                let mapped = if libc::ftruncate(fd, len as libc::off_t) == 0 {
                    mmap(len, libc::MAP_SHARED, fd)
                        .map_err(|e| format!("mmap of memfd_secret: {e}"))
                } else {
                    Err(format!("ftruncate of memfd_secret: {}", errno()))
                };
                libc::close(fd);
                mapped
            };
            mapped
        }
        ArenaMode::Mlock => {
            // SAFETY: a fresh anonymous mapping; the two calls after it only
            // change its flags.
            unsafe {
                let base = mmap(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
                    .map_err(|e| format!("mmap: {e}"))?;
                let ptr = base.as_ptr().cast();
                if libc::mlock2(ptr, len, libc::MLOCK_ONFAULT) != 0 {
                    let error =
                        format!("mlock2(MLOCK_ONFAULT) of {}: {}", mib(len as u64), errno());
                    libc::munmap(ptr, len);
                    return Err(error);
                }
                if libc::madvise(ptr, len, libc::MADV_DONTDUMP) != 0 {
                    let error = format!("madvise(MADV_DONTDUMP): {}", errno());
                    libc::munmap(ptr, len);
                    return Err(error);
                }
                Ok(base)
            }
        }
        ArenaMode::Heap => Err("the heap is not a mapping".to_owned()),
    }
}

/// `mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0)`.
///
/// # Safety
///
/// `fd` must be -1 with `MAP_ANONYMOUS`, or an open file of at least `len`
/// bytes.
unsafe fn mmap(len: usize, flags: libc::c_int, fd: libc::c_int) -> std::io::Result<NonNull<u8>> {
    // SAFETY: the caller vouches for `fd`; a NULL hint lets the kernel pick
    // a fresh range, so no existing mapping is replaced.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    NonNull::new(ptr.cast()).ok_or_else(|| std::io::Error::other("mmap returned NULL"))
}

/// The process's arena, once [`install`]ed.
static INSTALLED: OnceLock<(Option<Arena>, ArenaReport)> = OnceLock::new();

/// Opens the process's arena by [`Arena::open`], logs each refused step
/// once, and makes it the home of every later [`Buffer::copy`]. The first
/// call decides; later calls (a second server in one test process) get the
/// first one's report.
pub fn install(setting: SecretArena, size: ArenaSize) -> &'static ArenaReport {
    let (_, report) = INSTALLED.get_or_init(|| {
        let (arena, report) = Arena::open(setting, size);
        for step in &report.refused {
            tracing::warn!(refused = %step, "secret arena: falling back");
        }
        tracing::info!(
            mode = %report.mode,
            capacity = report.capacity,
            sized_by = %report.sized_by,
            "secret arena"
        );
        (arena, report)
    });
    report
}

/// The installed arena, if any.
pub fn installed() -> Option<&'static Arena> {
    INSTALLED.get().and_then(|(arena, _)| arena.as_ref())
}

/// Owned bytes, in the installed arena or on the heap: what
/// [`super::secret::SecretBytes`] is made of.
///
/// 12 bytes, aligned to 4, so that a stored entry can put a 32-bit field
/// beside it (docs/BENCHMARKS.md, "Memory per secret"): the pointer and a
/// 32-bit length word (values are at most 16 MiB) whose [`HEAP`] bit marks
/// a boxed slice. An arena block's order follows from the length
/// ([`order_for`]). The fields are only ever copied out, never borrowed
/// (a reference into a packed struct may be misaligned).
#[repr(C, packed(4))]
pub(super) struct Buffer {
    ptr: NonNull<u8>,
    len: u32,
}

// SAFETY: a `Buffer` owns its bytes exclusively, like a `Box<[u8]>`.
unsafe impl Send for Buffer {}
// SAFETY: shared access only reads.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// A copy of `bytes` in the installed arena, or on the heap when there
    /// is none.
    pub(super) fn copy(bytes: &[u8]) -> Result<Buffer, ArenaFull> {
        match installed() {
            Some(arena) if !bytes.is_empty() => arena.copy(bytes),
            _ => Buffer::boxed(Box::from(bytes)),
        }
    }

    /// Whether values go to an arena (else [`Buffer::boxed`] is the home).
    pub(super) fn in_arena() -> bool {
        installed().is_some()
    }

    /// Takes a boxed slice as is (the heap home).
    pub(super) fn boxed(bytes: Box<[u8]>) -> Result<Buffer, ArenaFull> {
        let Some(len) = u32::try_from(bytes.len())
            .ok()
            .filter(|len| len & HEAP == 0)
        else {
            return Err(ArenaFull {
                mode: ArenaMode::Heap,
                capacity: 0,
                len: bytes.len(),
            });
        };
        Ok(Buffer::from_box(bytes, len))
    }

    /// A copy of these bytes on the heap.
    pub(super) fn heap_copy(&self) -> Buffer {
        Buffer::from_box(Box::from(self.as_slice()), self.len())
    }

    /// The length in bytes.
    fn len(&self) -> u32 {
        let word = self.len;
        word & !HEAP
    }

    fn is_heap(&self) -> bool {
        let word = self.len;
        word & HEAP != 0
    }

    /// Whether the bytes are on the heap though an arena is installed (a
    /// transient copy): such a value is copied into the arena to be stored.
    pub(super) fn off_arena(&self) -> bool {
        self.is_heap() && self.len() > 0 && Buffer::in_arena()
    }

    fn from_box(bytes: Box<[u8]>, len: u32) -> Buffer {
        let raw = Box::into_raw(bytes);
        // SAFETY: `Box::into_raw` never returns null (a zero-length box has
        // a dangling, non-null pointer).
        let ptr = unsafe { NonNull::new_unchecked(raw.cast::<u8>()) };
        Buffer {
            ptr,
            len: len | HEAP,
        }
    }

    /// The bytes.
    pub(super) fn as_slice(&self) -> &[u8] {
        let ptr = self.ptr;
        // SAFETY: `ptr` is valid for `len` initialised bytes for as long as
        // `self` lives (a block of the installed arena, never unmapped, or
        // the boxed slice), and only `drop` writes to them.
        unsafe { std::slice::from_raw_parts(ptr.as_ptr(), self.len() as usize) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let (ptr, len) = (self.ptr, self.len() as usize);
        // SAFETY: as in `as_slice`; nothing else can be reading the bytes
        // (we are being dropped).
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, len) };
        // Keep the wipe: the block is freed (or reused) right after, and the
        // compiler may call a store before that dead.
        compiler_fence(Ordering::SeqCst);
        std::hint::black_box(ptr);
        if self.is_heap() {
            // SAFETY: made by `Box::into_raw` of a `[u8]` of `len` bytes in
            // `boxed`, and not freed since.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr.as_ptr(), len)) });
        } else if let Some(arena) = installed() {
            let offset = ptr.as_ptr() as usize - arena.base.as_ptr() as usize;
            arena.give_back(offset, order_for(len));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(wanted: u64, lockable: Option<u64>) -> ArenaSize {
        ArenaSize {
            wanted,
            max_value: 64 << 10,
            lockable,
        }
    }

    #[test]
    fn the_arena_is_sized_by_the_budget_or_the_memlock_limit() {
        assert_eq!(
            size(16 << 20, None).decide(),
            Ok((16 << 20, "--max-memory 16 MiB".to_owned()))
        );
        // Rounded up to whole 64 KiB blocks.
        assert_eq!(size(100_000, None).decide().map(|d| d.0), Ok(128 << 10));
        assert_eq!(
            size(256 << 20, Some(8 << 20)).decide(),
            Ok((8 << 20, "RLIMIT_MEMLOCK 8 MiB".to_owned()))
        );
        assert_eq!(
            size(256 << 20, Some(64 << 10)).decide().map(|d| d.0),
            Ok(64 << 10)
        );
        let err = size(256 << 20, Some(32 << 10)).decide().unwrap_err();
        assert!(
            err.contains("RLIMIT_MEMLOCK 32 KiB is less than one 64 KiB block"),
            "{err}"
        );
        let big = ArenaSize {
            wanted: 64 << 20,
            max_value: 1 << 20,
            lockable: None,
        };
        assert_eq!(big.top_shift(), 20);
    }

    /// An arena of `len` bytes in `mode` (memfd_secret where the kernel
    /// has it, else the mlock mapping), not installed.
    fn arena(len: u64) -> Arena {
        let (arena, report) = Arena::open(SecretArena::Auto, size(len, None));
        arena.unwrap_or_else(|| panic!("no arena here: {report:?}"))
    }

    #[test]
    fn blocks_split_merge_and_fill_the_arena_exactly() {
        let arena = arena(128 << 10);
        let mut taken = Vec::new();
        // 4096 blocks of 32 bytes fill 128 KiB exactly.
        for _ in 0..4096 {
            taken.push(arena.take(17).expect("room"));
        }
        assert_eq!(arena.used(), 128 << 10);
        assert!(arena.take(1).is_err(), "the arena is full");
        for &(offset, order) in &taken {
            assert_eq!(order, 5);
            assert!(offset + 32 <= arena.capacity());
        }
        let mut offsets: Vec<_> = taken.iter().map(|t| t.0).collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), 4096, "no block is handed out twice");
        for (offset, order) in taken {
            arena.give_back(offset, order);
        }
        assert_eq!(arena.used(), 0);
        // Everything merged back: two whole top blocks can be taken again.
        assert_eq!(arena.take(64 << 10).map(|t| t.0), Ok(0));
        assert_eq!(arena.take(64 << 10).map(|t| t.0), Ok(64 << 10));
        let full = arena.take(16).unwrap_err();
        assert_eq!(full.len, 16);
        assert!(
            arena.take((64 << 10) + 1).is_err(),
            "larger than a top block"
        );
    }

    #[test]
    fn a_copy_holds_its_bytes_and_frees_wiped() {
        let arena = arena(64 << 10);
        let buffer = arena.copy(b"hunter2").expect("room");
        assert_eq!(
            (buffer.len(), buffer.is_heap(), order_for(7)),
            (7, false, 4)
        );
        let ptr = buffer.ptr;
        let offset = ptr.as_ptr() as usize - arena.base.as_ptr() as usize;
        // SAFETY: reading inside the live mapping.
        let held = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), 7) }.to_vec();
        assert_eq!(held, b"hunter2");
        // Not installed, so dropping would not give the block back: wipe and
        // free it by hand as `Drop` does.
        std::mem::forget(buffer);
        // SAFETY: the block is ours.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, 7) };
        arena.give_back(offset, 4);
        // SAFETY: as above.
        let after = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), 16) }.to_vec();
        assert_eq!(after, [0; 16]);
        assert_eq!(arena.used(), 0);
    }

    #[test]
    fn the_heap_setting_maps_nothing() {
        let (arena, report) = Arena::open(SecretArena::Heap, size(1 << 20, None));
        assert!(arena.is_none());
        assert_eq!(report.mode, ArenaMode::Heap);
        assert_eq!(report.sized_by, "--secret-arena heap");
    }

    #[test]
    fn memfd_secret_is_used_where_the_kernel_has_it() {
        let (arena, report) = Arena::open(SecretArena::MemfdSecret, size(1 << 20, None));
        match arena {
            Some(arena) => {
                assert_eq!(arena.mode(), ArenaMode::MemfdSecret);
                assert_eq!(report.capacity, 1 << 20);
            }
            None => eprintln!("skipping: this kernel refuses memfd_secret: {report:?}"),
        }
        let (arena, report) = Arena::open(SecretArena::Mlock, size(1 << 20, None));
        assert_eq!(
            arena.map(|a| a.mode()),
            Some(ArenaMode::Mlock),
            "{report:?}"
        );
    }

    #[test]
    fn a_buffer_is_twelve_bytes_and_knows_its_home() {
        assert_eq!(std::mem::size_of::<Buffer>(), 12);
        assert_eq!(std::mem::align_of::<Buffer>(), 4);
        let boxed = Buffer::boxed(Box::from(&b"abc"[..])).expect("small");
        assert_eq!((boxed.len(), boxed.is_heap()), (3, true));
        assert_eq!(boxed.as_slice(), b"abc");
        assert_eq!(order_for(1), 4);
        assert_eq!(order_for(32), 5);
        assert_eq!(order_for(33), 6);
    }
}
