//! The in-memory store: secrets and lists, each with a deadline.
//!
//! Layout, in the spirit of mini-redis's `db.rs`:
//!
//! - The keyspace is split over a fixed number of shards, each a
//!   `std::sync::Mutex<Shard>` holding a `BTreeSet` of entries (ordered by
//!   key, so listing by prefix and `after` is a range scan) and a min-heap
//!   of deadlines ([`deadlines`]: lazy deletion, no B-tree node per entry).
//!   An entry is one allocation, its key's bytes and its metadata (an
//!   [`block::Block`]); the set holds a thin pointer to it.
//!   Readers of different keys rarely meet on the same lock, so reads scale
//!   with cores.
//! - A std `Mutex` (not tokio's) is right here: no lock is ever held across an
//!   `.await`, and critical sections are a map lookup and a pointer copy.
//! - One purge task sleeps until the earliest deadline of all shards, or until
//!   a write brings that deadline forward (a `Notify`). It only ever looks at
//!   the front of each deadline heap: expiry never scans the whole store.
//! - Values are [`SecretBytes`], wiped on drop, whose bytes are blocks of
//!   the secret arena ([`arena`]). A GET hands the response the entry's
//!   block (a [`SecretRef`]), so the bytes go out without a copy; the last
//!   owner (store or response) wipes them.
//! - Every read checks the deadline itself, so an expired entry is never
//!   served even in the instant before the purge task reaches it.
//! - A memory budget counts stored bytes (key, value, content type) plus a
//!   fixed per-item overhead, so a flood of empty secrets is bounded too.
//! - With persistence on, every change goes to a [`ChangeLog`] (the journal)
//!   *inside* the shard lock and *before* it is applied: the journal sees the
//!   changes to one key in the order the store made them, and a change the
//!   journal could not record is refused, never half made. Each change carries
//!   a store-wide sequence number (`seq`, drawn from the revision counter) so
//!   a restore can tell which journal records a snapshot already holds. With
//!   persistence off the only cost is one atomic load per write (the empty
//!   `OnceLock`); reads that do not count against `max_reads` never look.

pub mod arena;
pub mod key;
pub mod secret;
pub mod watch;

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store::key::Key;
use crate::store::secret::SecretBytes;
use crate::store::watch::{Watch, Watchers};

mod block;
mod clock;
mod deadlines;
mod export;
mod lists;
mod purge;
mod record;
mod secrets;
mod shard;

use self::clock::{Tick, WallTime};
use self::deadlines::Deadlines;
use self::purge::*;
pub use self::record::*;
use self::shard::*;

/// Bytes charged to the memory budget for each stored item on top of its
/// key and value: the map nodes, the deadline index entry and the metadata.
pub const ITEM_OVERHEAD: u64 = 128;

/// Number of shards; a power of two well above the core counts we run on.
const SHARDS: usize = 16;

/// A cheap-to-clone handle to the store.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Store {
    /// Creates an empty store with a memory budget in bytes and starts its
    /// purge task on the current tokio runtime.
    pub fn new(budget: u64) -> Store {
        let epoch = Instant::now();
        let start_revision = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |since| since.as_micros() as u64);
        let shared = Arc::new(Shared {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            budget,
            used: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            next_revision: AtomicU64::new(start_revision),
            next_wake: AtomicU64::new(u64::MAX),
            epoch,
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            change_log: OnceLock::new(),
            watchers: Arc::default(),
            lingering: Lingering::default(),
        });
        tokio::spawn(purge_task(Arc::clone(&shared)));
        Store { shared }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        let index = self.shared.hasher.hash_one(key.as_str()) as usize % SHARDS;
        &self.shared.shards[index]
    }

    fn revision(&self) -> u64 {
        self.shared.next_revision.fetch_add(1, Ordering::Relaxed)
    }

    /// Records `change` in the journal, if persistence is on. Called inside
    /// the shard lock, before the change is applied.
    fn journal<'a>(
        &self,
        change: impl FnOnce() -> Change<&'a Key, &'a SecretBytes>,
    ) -> Result<(), StoreError> {
        match self.shared.change_log.get() {
            None => Ok(()),
            Some(log) => log
                .append(&change())
                .map_err(|_| StoreError::Unavailable(JOURNAL_UNAVAILABLE)),
        }
    }

    /// For changes that need a sequence number only for the journal: with
    /// persistence off this is one load (no shared counter is touched on
    /// the read path); with it on, a fresh seq is taken and the change
    /// journaled. Returns the seq to store on the entry.
    fn journal_seq<'a>(
        &self,
        change: impl FnOnce(u64) -> Change<&'a Key, &'a SecretBytes>,
    ) -> Result<Option<u64>, StoreError> {
        let Some(log) = self.shared.change_log.get() else {
            return Ok(None);
        };
        let seq = self.revision();
        log.append(&change(seq))
            .map_err(|_| StoreError::Unavailable(JOURNAL_UNAVAILABLE))?;
        Ok(Some(seq))
    }

    /// Undoes `charge(old, new)` after a refused change. Unconditional: the
    /// bytes were already counted, so no budget check applies.
    fn uncharge(&self, old: u64, new: u64) {
        // Adds `old - new` modulo 2^64, which is the exact inverse.
        self.shared
            .used
            .fetch_add(old.wrapping_sub(new), Ordering::Relaxed);
    }

    /// Charges `new` bytes against the budget in place of `old`.
    fn charge(&self, old: u64, new: u64) -> Result<(), StoreError> {
        if new == old {
            // A same-size rewrite: no write to the counter every core shares.
            return Ok(());
        }
        if new < old {
            self.shared.used.fetch_sub(old - new, Ordering::Relaxed);
            return Ok(());
        }
        self.shared.reap();
        let extra = new - old;
        let budget = self.shared.budget;
        self.shared
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(extra).filter(|total| *total <= budget)
            })
            .map(|_| ())
            .map_err(|used| StoreError::BudgetExceeded { budget, used })
    }

    /// Now, on the store's clock.
    fn now(&self) -> Tick {
        Tick::at(self.shared.epoch, Instant::now())
    }

    /// Tells the purge task about a new deadline if it is the earliest yet.
    fn schedule(&self, deadline: Tick) {
        let Tick(at) = deadline;
        // Most deadlines are later than the next wake: a load, shared
        // between cores, answers that without a write to the line.
        if self.shared.next_wake.load(Ordering::Acquire) <= at {
            return;
        }
        if self.shared.next_wake.fetch_min(at, Ordering::AcqRel) > at {
            self.shared.wake.notify_one();
        }
    }

    fn deadline_after(&self, ttl: Duration, now: Tick) -> Tick {
        now.after(ttl)
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.shared.reap();
        Stats {
            entries: self.shared.entries.load(Ordering::Relaxed),
            bytes: self.shared.used.load(Ordering::Relaxed),
            expired: self.shared.expired.load(Ordering::Relaxed),
            waiting: self.waiting() as u64,
        }
    }

    /// The memory budget in bytes.
    pub fn budget(&self) -> u64 {
        self.shared.budget
    }

    /// Sends every later change to `log` (persistence, once the store is
    /// restored). Returns false if a log was already set.
    pub fn set_change_log(&self, log: Arc<dyn ChangeLog>) -> bool {
        self.shared.change_log.set(log).is_ok()
    }

    /// With persistence on, takes the final snapshot. The server calls it
    /// after the drain and before [`Store::wipe_all`].
    pub fn before_wipe(&self) {
        if let Some(log) = self.shared.change_log.get() {
            log.before_wipe(self);
        }
    }

    /// Registers interest in `key`: [`Watch::next_change`] completes after
    /// the next write, delete or consuming read of it (or at shutdown).
    pub fn watch(&self, key: &Key) -> Watch {
        self.shared.watchers.watch(key.as_str())
    }

    /// Ends every `?wait=` request now (they answer as if the wait had
    /// ended), so the drain is not held up by them; later waits do not wait.
    pub fn release_waiters(&self) {
        self.shared.watchers.close();
    }

    /// Requests waiting for a key to change now.
    pub fn waiting(&self) -> usize {
        self.shared.watchers.waiting()
    }

    /// Wipes every entry and stops the purge task. Used at shutdown; the
    /// store stays usable (empty) for requests still draining.
    pub fn wipe_all(&self) {
        self.shared.watchers.close();
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        for shard in self.shared.shards.iter() {
            let taken = std::mem::take(&mut *lock(shard));
            for slot in &taken.entries {
                self.shared.release(slot);
            }
            // `taken` drops here, wiping every value.
        }
    }
}

#[cfg(test)]
mod tests;
