//! The in-memory store: secrets and lists, each with a deadline.
//!
//! Layout, in the spirit of mini-redis's `db.rs`:
//!
//! - The keyspace is split over a fixed number of shards, each a
//!   `std::sync::Mutex<Shard>` holding a `BTreeMap` of entries (ordered, so
//!   listing by prefix and `after` is a range scan) and a
//!   `BTreeSet<(Instant, Key)>` of deadlines. Readers of different keys rarely
//!   meet on the same lock, so reads scale with cores.
//! - A std `Mutex` (not tokio's) is right here: no lock is ever held across an
//!   `.await`, and critical sections are a map lookup and a pointer copy.
//! - One purge task sleeps until the earliest deadline of all shards, or until
//!   a write brings that deadline forward (a `Notify`). It only ever looks at
//!   the front of each deadline set: expiry never scans the whole store.
//! - Values are [`SecretBytes`], wiped on drop. A secret's value sits in an
//!   `Arc` so a GET hands the bytes to the response without a copy; the last
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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::key::Key;
use crate::secret::SecretBytes;
use crate::watch::{Watch, Watchers};

/// Bytes charged to the memory budget for each stored item on top of its
/// key and value: the map nodes, the deadline index entry and the metadata.
pub const ITEM_OVERHEAD: u64 = 128;

/// Number of shards; a power of two well above the core counts we run on.
const SHARDS: usize = 16;

/// The kind of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A single secret value.
    Secret,
    /// A list of one-time items.
    List,
}

impl Kind {
    /// `secret` or `list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::List => "list",
        }
    }
}

/// What a store operation can refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such key (or it has expired).
    #[error("no such key")]
    NotFound,
    /// The key holds the other kind.
    #[error("the key holds a {found}, not a {expected}", found = found.as_str(), expected = expected.as_str())]
    WrongKind {
        /// What the operation needed.
        expected: Kind,
        /// What the key holds.
        found: Kind,
    },
    /// An `If-Match` / `If-None-Match` condition did not hold.
    #[error("{0}")]
    PreconditionFailed(&'static str),
    /// The write would take the store past its memory budget.
    #[error("storing this would exceed the memory budget of {budget} bytes ({used} in use)")]
    BudgetExceeded {
        /// The budget in bytes.
        budget: u64,
        /// Bytes in use before the write.
        used: u64,
    },
    /// Persistence is on and the change could not be journaled, so it was
    /// not made.
    #[error("{0}")]
    Unavailable(&'static str),
}

/// Why a change was refused when the journal could not take it.
const JOURNAL_UNAVAILABLE: &str =
    "the change could not be written to the snapshot journal, so it was not made; retry shortly";

/// A write's condition on the current state of the key.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Create or replace.
    #[default]
    None,
    /// `If-None-Match: *`: create only.
    Absent,
    /// `If-Match: *`: replace only.
    Present,
    /// `If-Match: "<etag>"`: replace only if the current revision matches.
    Revision(u64),
}

/// Metadata of an entry, as the API returns it. Never holds a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The key.
    pub key: Key,
    /// Secret or list.
    pub kind: Kind,
    /// Bytes of a secret, items of a list.
    pub size: u64,
    /// Number of writes to this key since it was created (1 at creation).
    pub version: u64,
    /// Store-wide unique revision of the current value: the `ETag`.
    pub revision: u64,
    /// When the key was created.
    pub created_at: SystemTime,
    /// When the value or its expiry last changed.
    pub updated_at: SystemTime,
    /// When the key expires.
    pub expires_at: SystemTime,
    /// Reads left before a secret is wiped, if it has `max_reads`.
    pub reads_left: Option<u32>,
    /// Media type of a secret (lists have none).
    pub content_type: Option<MediaType>,
}

/// An entry whole and owned, as snapshots hold it: [`Store::export`] makes
/// them, [`Store::import`] takes them back at startup. Values stay in
/// zeroizing buffers.
#[derive(Debug)]
pub struct Record {
    /// The key.
    pub key: Key,
    /// The secret or the list items.
    pub value: RecordValue,
    /// Store-wide sequence number of the entry's last change.
    pub seq: u64,
    /// Revision of the current value (the `ETag`).
    pub revision: u64,
    /// Writes since creation.
    pub version: u64,
    /// When the key was created.
    pub created_at: SystemTime,
    /// When the value or its expiry last changed.
    pub updated_at: SystemTime,
    /// The absolute deadline, on the wall clock.
    pub expires_at: SystemTime,
    /// Reads left before a secret is wiped, if it has `max_reads`.
    pub reads_left: Option<u32>,
    /// Media type of a secret.
    pub content_type: Option<MediaType>,
}

/// What a [`Record`] holds.
#[derive(Debug)]
pub enum RecordValue {
    /// A secret's bytes (shared with the store: exporting copies nothing).
    Secret(Arc<SecretBytes>),
    /// A list's items, oldest first.
    List(VecDeque<SecretBytes>),
}

impl RecordValue {
    /// `secret` or `list`.
    pub fn kind(&self) -> Kind {
        match self {
            RecordValue::Secret(_) => Kind::Secret,
            RecordValue::List(_) => Kind::List,
        }
    }
}

/// One change to one key, as the journal records it. The store hands the
/// journal a borrowed `Change<&Key, &SecretBytes>`; reading a journal back
/// gives an owned `Change<Key, SecretBytes>`.
#[derive(Debug)]
pub struct Change<K, V> {
    /// The key changed.
    pub key: K,
    /// Store-wide sequence number of this change: a restore applies it only
    /// if it is newer than what the key already has.
    pub seq: u64,
    /// What changed.
    pub op: ChangeOp<V>,
}

/// The kinds of change. Timestamps are wall-clock; deadlines absolute.
#[derive(Debug)]
pub enum ChangeOp<V> {
    /// A secret written (created or replaced): its whole new state.
    Put {
        /// The value.
        value: V,
        /// New revision.
        revision: u64,
        /// New version.
        version: u64,
        /// Creation time (kept across replacements).
        created_at: SystemTime,
        /// This write's time.
        updated_at: SystemTime,
        /// The deadline.
        expires_at: SystemTime,
        /// `max_reads`, if given.
        reads_left: Option<u32>,
        /// The media type.
        content_type: MediaType,
    },
    /// An item appended to a list; `created` when this push made the list.
    Push {
        /// The item.
        item: V,
        /// Whether the list was created (then the fields below are its whole state).
        created: bool,
        /// New revision.
        revision: u64,
        /// New version.
        version: u64,
        /// The list's creation time.
        created_at: SystemTime,
        /// This push's time.
        updated_at: SystemTime,
        /// The list's deadline.
        expires_at: SystemTime,
    },
    /// An item taken from a list (the last one deletes the list).
    Pop {
        /// Which end.
        end: End,
        /// New revision.
        revision: u64,
        /// New version.
        version: u64,
        /// This pop's time.
        updated_at: SystemTime,
    },
    /// A new deadline.
    Renew {
        /// The deadline.
        expires_at: SystemTime,
        /// This renewal's time.
        updated_at: SystemTime,
    },
    /// A counted read: `reads_left` after it (0 removes the secret).
    Read {
        /// Reads left.
        reads_left: u32,
    },
    /// The key removed.
    Delete,
}

/// Where the store sends its changes when persistence is on (the journal).
pub trait ChangeLog: Send + Sync {
    /// Records `change` before the store applies it; called inside the shard
    /// lock, so changes to one key arrive in store order. An error refuses
    /// the change (the client gets 503) and leaves the store as it was.
    fn append(&self, change: &Change<&Key, &SecretBytes>) -> std::io::Result<()>;

    /// Called once at shutdown, after the drain and before the wipe: the
    /// final snapshot of `store`.
    fn before_wipe(&self, store: &Store);
}

/// One entry in a shard.
struct Entry {
    value: Value,
    deadline: Instant,
    created_at: SystemTime,
    updated_at: SystemTime,
    version: u64,
    revision: u64,
    /// Sequence number of the last change (equal to `revision` after a
    /// write; renewals and counted reads move it on alone).
    seq: u64,
    reads_left: Option<u32>,
    /// What this entry is charged against the memory budget.
    charge: u64,
}

/// An entry's value. A secret's media type lives beside its bytes rather
/// than in [`Entry`] as an `Option`: that would cost every entry 24 bytes
/// where this costs none (the variant fits in the list's 32).
enum Value {
    Secret(Arc<SecretBytes>, MediaType),
    List(VecDeque<SecretBytes>),
}

impl Value {
    fn kind(&self) -> Kind {
        match self {
            Value::Secret(..) => Kind::Secret,
            Value::List(_) => Kind::List,
        }
    }

    /// A secret's media type; a list has none.
    fn media_type(&self) -> Option<&MediaType> {
        match self {
            Value::Secret(_, media_type) => Some(media_type),
            Value::List(_) => None,
        }
    }
}

#[derive(Default)]
struct Shard {
    entries: BTreeMap<Key, Entry>,
    deadlines: BTreeSet<(Instant, Key)>,
}

impl Shard {
    /// Removes `key` and its deadline. The entry's bytes are wiped when the
    /// returned entry is dropped; callers drop it after releasing the lock.
    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.deadlines.remove(&(entry.deadline, key.clone()));
        Some(entry)
    }

    /// Returns the live entry for `key`. An expired one is removed first and
    /// its accounting released at once (so an early return cannot skip it);
    /// its bytes go to `expired`, to be wiped once the lock is released.
    fn live(
        &mut self,
        key: &Key,
        now: Instant,
        shared: &Shared,
        expired: &mut Option<Entry>,
    ) -> Option<&mut Entry> {
        if self
            .entries
            .get(key)
            .is_some_and(|entry| entry.deadline <= now)
        {
            *expired = self.remove(key);
            if let Some(entry) = expired {
                shared.release(entry);
                shared.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.entries.get_mut(key)
    }
}

/// Where `pop` takes an item from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The most recently pushed item (a stack).
    Newest,
    /// The first pushed item (a queue).
    Oldest,
}

/// A secret's media type. Most secrets have the default, which then costs
/// no allocation and no reference count: when it was one `Arc` shared by
/// every such secret, each write incremented and decremented its count
/// four times from whichever core served it, and those `lock` instructions
/// were among the hottest of `Store::put` (perf annotate, keep-alive PUT).
#[derive(Clone)]
pub enum MediaType {
    /// [`MediaType::DEFAULT`].
    Default,
    /// Any other type, as the client sent it.
    Other(Arc<str>),
}

impl MediaType {
    /// The type of a secret written without one.
    pub const DEFAULT: &'static str = "application/octet-stream";

    /// The type as text.
    pub fn as_str(&self) -> &str {
        match self {
            MediaType::Default => MediaType::DEFAULT,
            MediaType::Other(text) => text,
        }
    }
}

impl std::ops::Deref for MediaType {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for MediaType {
    fn from(text: &str) -> MediaType {
        if text == MediaType::DEFAULT {
            MediaType::Default
        } else {
            MediaType::Other(Arc::from(text))
        }
    }
}

impl From<Arc<str>> for MediaType {
    fn from(text: Arc<str>) -> MediaType {
        if &*text == MediaType::DEFAULT {
            MediaType::Default
        } else {
            MediaType::Other(text)
        }
    }
}

impl PartialEq for MediaType {
    fn eq(&self, other: &MediaType) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for MediaType {}

impl fmt::Debug for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// How a secret is written.
#[derive(Clone, Debug)]
pub struct PutOptions {
    /// Time to live from now.
    pub ttl: Duration,
    /// Reads allowed before the secret is wiped.
    pub max_reads: Option<u32>,
    /// The media type served back on GET.
    pub content_type: MediaType,
    /// Condition on the current state.
    pub precondition: Precondition,
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live entries (secrets and lists).
    pub entries: u64,
    /// Bytes charged against the budget.
    pub bytes: u64,
    /// Entries removed by expiry since start.
    pub expired: u64,
    /// `GET ?wait=` requests waiting for a change now.
    pub waiting: u64,
}

struct Shared {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    budget: u64,
    used: AtomicU64,
    entries: AtomicU64,
    expired: AtomicU64,
    /// Next revision to hand out. Starts at the wall clock in microseconds so
    /// that an `ETag` from before a restart never matches a new value.
    next_revision: AtomicU64,
    /// The purge task's next wake-up, in nanoseconds since `epoch`.
    next_wake: AtomicU64,
    epoch: Instant,
    wake: Notify,
    closed: AtomicBool,
    /// The journal, once persistence has restored the store; empty when
    /// persistence is off.
    change_log: OnceLock<Arc<dyn ChangeLog>>,
    /// Requests waiting for a key to change (`?wait=`).
    watchers: Arc<Watchers>,
    /// Values removed or replaced while a response still held them.
    lingering: Lingering,
}

/// Secret values gone from the store that a response body still holds (a
/// client that does not read keeps them alive): their bytes stay charged to
/// the budget until the last holder lets go, so what clients pin counts
/// against `--max-memory` like what is stored.
#[derive(Default)]
struct Lingering {
    values: Mutex<Vec<(Weak<SecretBytes>, u64)>>,
    count: AtomicUsize,
}

/// The bytes of a value that something besides `entry` still holds.
fn held_elsewhere(entry: &Entry) -> u64 {
    match &entry.value {
        Value::Secret(bytes, _) if Arc::strong_count(bytes) > 1 => bytes.len() as u64,
        _ => 0,
    }
}

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

impl Shared {
    /// Returns a removed entry's bytes and count to the budget; a value a
    /// response still holds stays charged until it is let go.
    fn release(&self, entry: &Entry) {
        let held = held_elsewhere(entry);
        self.used.fetch_sub(entry.charge - held, Ordering::Relaxed);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        if held > 0 {
            self.linger(entry, held);
        }
    }

    /// Keeps `held` bytes of `entry`'s value charged until its last holder
    /// drops it.
    fn linger(&self, entry: &Entry, held: u64) {
        if let Value::Secret(bytes, _) = &entry.value {
            let mut values = lock(&self.lingering.values);
            values.push((Arc::downgrade(bytes), held));
            self.lingering.count.store(values.len(), Ordering::Release);
        }
    }

    /// Uncharges the lingering values nobody holds any more.
    fn reap(&self) {
        if self.lingering.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut values = lock(&self.lingering.values);
        values.retain(|(value, held)| {
            let alive = value.strong_count() > 0;
            if !alive {
                self.used.fetch_sub(*held, Ordering::Relaxed);
            }
            alive
        });
        self.lingering.count.store(values.len(), Ordering::Release);
    }
}

fn lock<T>(shard: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard lock would be a bug; the shard's data is
    // still consistent (every mutation is a single map operation), so keep
    // serving rather than poisoning the whole keyspace. (The lingering list
    // is one push or retain at a time, consistent too.)
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn wall_clock_at(deadline: Instant, now: Instant, wall_now: SystemTime) -> SystemTime {
    match deadline.checked_duration_since(now) {
        Some(ahead) => wall_now + ahead,
        None => wall_now - now.duration_since(deadline),
    }
}

impl Entry {
    fn meta(&self, key: &Key, now: Instant, wall_now: SystemTime) -> Meta {
        let size = match &self.value {
            Value::Secret(bytes, _) => bytes.len() as u64,
            Value::List(items) => items.len() as u64,
        };
        Meta {
            key: key.clone(),
            kind: self.value.kind(),
            size,
            version: self.version,
            revision: self.revision,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: wall_clock_at(self.deadline, now, wall_now),
            reads_left: self.reads_left,
            content_type: self.value.media_type().cloned(),
        }
    }
}

fn secret_charge(key: &Key, value: &SecretBytes, content_type: &str) -> u64 {
    ITEM_OVERHEAD + key.as_str().len() as u64 + value.len() as u64 + content_type.len() as u64
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

    /// Tells the purge task about a new deadline if it is the earliest yet.
    fn schedule(&self, deadline: Instant) {
        let at = deadline.duration_since(self.shared.epoch).as_nanos() as u64;
        // Most deadlines are later than the next wake: a load, shared
        // between cores, answers that without a write to the line.
        if self.shared.next_wake.load(Ordering::Acquire) <= at {
            return;
        }
        if self.shared.next_wake.fetch_min(at, Ordering::AcqRel) > at {
            self.shared.wake.notify_one();
        }
    }

    fn deadline_after(&self, ttl: Duration, now: Instant) -> Instant {
        // `ttl` is bounded by --max-ttl long before this could overflow; fall
        // back to a far deadline rather than panic if it ever did.
        now.checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400))
    }

    /// Stores a secret. Returns its metadata and whether it was created.
    pub fn put(
        &self,
        key: &Key,
        value: SecretBytes,
        options: PutOptions,
    ) -> Result<(Meta, bool), StoreError> {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let deadline = self.deadline_after(options.ttl, now);
        let charge = secret_charge(key, &value, &options.content_type);
        let mut expired = None;
        let mut replaced = None;
        let result = {
            let mut shard = lock(self.shard(key));
            let existing = shard.live(key, now, &self.shared, &mut expired);
            match (&options.precondition, &existing) {
                (Precondition::Absent, Some(_)) => {
                    return Err(StoreError::PreconditionFailed("the key already exists"))
                }
                (Precondition::Present | Precondition::Revision(_), None) => {
                    return Err(StoreError::PreconditionFailed("the key does not exist"))
                }
                (Precondition::Revision(expected), Some(entry)) if entry.revision != *expected => {
                    return Err(StoreError::PreconditionFailed(
                        "the ETag does not match the current value",
                    ))
                }
                (_, Some(entry)) if entry.value.kind() == Kind::List => {
                    return Err(StoreError::WrongKind {
                        expected: Kind::Secret,
                        found: Kind::List,
                    })
                }
                _ => {}
            }
            // A replaced value a response still holds stays charged.
            let (old_charge, held, created_at, version) =
                existing.as_ref().map_or((0, 0, wall_now, 0), |e| {
                    let held = held_elsewhere(e);
                    (e.charge - held, held, e.created_at, e.version)
                });
            self.charge(old_charge, charge)?;
            let revision = self.revision();
            let journaled = self.journal(|| Change {
                key,
                seq: revision,
                op: ChangeOp::Put {
                    value: &value,
                    revision,
                    version: version + 1,
                    created_at,
                    updated_at: wall_now,
                    expires_at: wall_clock_at(deadline, now, wall_now),
                    reads_left: options.max_reads,
                    content_type: options.content_type.clone(),
                },
            });
            if let Err(error) = journaled {
                self.uncharge(old_charge, charge);
                return Err(error);
            }
            let entry = Entry {
                value: Value::Secret(Arc::new(value), options.content_type),
                deadline,
                created_at,
                updated_at: wall_now,
                version: version + 1,
                revision,
                seq: revision,
                reads_left: options.max_reads,
                charge,
            };
            let meta = entry.meta(key, now, wall_now);
            if let Some(old) = shard.entries.insert(key.clone(), entry) {
                shard.deadlines.remove(&(old.deadline, key.clone()));
                if held > 0 {
                    self.shared.linger(&old, held);
                }
                replaced = Some(old);
            } else {
                self.shared.entries.fetch_add(1, Ordering::Relaxed);
            }
            shard.deadlines.insert((deadline, key.clone()));
            (meta, replaced.is_none())
        };
        self.schedule(deadline);
        self.shared.watchers.changed(key.as_str());
        // `replaced` and `expired` are dropped (and wiped) here, outside the lock.
        Ok(result)
    }

    /// Reads a secret. With `consume`, counts the read against `max_reads`;
    /// the read that uses up the last one removes the secret in the same
    /// critical section, so concurrent readers can never both get it.
    pub fn get(&self, key: &Key, consume: bool) -> Result<(Arc<SecretBytes>, Meta), StoreError> {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let mut expired = None;
        let mut consumed = None;
        let result = {
            let mut shard = lock(self.shard(key));
            let entry = shard
                .live(key, now, &self.shared, &mut expired)
                .ok_or(StoreError::NotFound)?;
            let Value::Secret(bytes, _) = &entry.value else {
                return Err(StoreError::WrongKind {
                    expected: Kind::Secret,
                    found: Kind::List,
                });
            };
            let bytes = Arc::clone(bytes);
            if let (true, Some(left)) = (consume, entry.reads_left) {
                // A counted read is a change: journaled, or a restarted
                // server would serve a read-once secret again.
                let left = left.saturating_sub(1);
                if let Some(seq) = self.journal_seq(|seq| Change {
                    key,
                    seq,
                    op: ChangeOp::Read { reads_left: left },
                })? {
                    entry.seq = seq;
                }
                entry.reads_left = Some(left);
            }
            let meta = entry.meta(key, now, wall_now);
            if consume && meta.reads_left == Some(0) {
                consumed = shard.remove(key);
            }
            (bytes, meta)
        };
        if let Some(entry) = &consumed {
            self.shared.release(entry);
            self.shared.watchers.changed(key.as_str());
        }
        drop(expired);
        Ok(result)
    }

    /// Metadata of a key of either kind.
    pub fn meta(&self, key: &Key) -> Result<Meta, StoreError> {
        let now = Instant::now();
        let mut expired = None;
        let mut shard = lock(self.shard(key));
        let meta = shard
            .live(key, now, &self.shared, &mut expired)
            .map(|entry| entry.meta(key, now, SystemTime::now()))
            .ok_or(StoreError::NotFound);
        drop(shard);
        meta
    }

    /// Sets a new time to live (longer or shorter) on a key of either kind.
    pub fn renew(&self, key: &Key, ttl: Duration) -> Result<Meta, StoreError> {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let deadline = self.deadline_after(ttl, now);
        let mut expired = None;
        let meta = {
            let mut shard = lock(self.shard(key));
            let entry = shard
                .live(key, now, &self.shared, &mut expired)
                .ok_or(StoreError::NotFound)?;
            if let Some(seq) = self.journal_seq(|seq| Change {
                key,
                seq,
                op: ChangeOp::Renew {
                    expires_at: wall_clock_at(deadline, now, wall_now),
                    updated_at: wall_now,
                },
            })? {
                entry.seq = seq;
            }
            let old_deadline = std::mem::replace(&mut entry.deadline, deadline);
            entry.updated_at = wall_now;
            let meta = entry.meta(key, now, wall_now);
            shard.deadlines.remove(&(old_deadline, key.clone()));
            shard.deadlines.insert((deadline, key.clone()));
            meta
        };
        self.schedule(deadline);
        Ok(meta)
    }

    /// Removes and wipes a key of either kind. Returns what it was.
    pub fn delete(&self, key: &Key) -> Result<Kind, StoreError> {
        let now = Instant::now();
        let mut expired = None;
        let removed = {
            let mut shard = lock(self.shard(key));
            if shard.live(key, now, &self.shared, &mut expired).is_none() {
                None
            } else {
                self.journal_seq(|seq| Change {
                    key,
                    seq,
                    op: ChangeOp::Delete,
                })?;
                shard.remove(key)
            }
        };
        if let Some(entry) = &removed {
            self.shared.release(entry);
            self.shared.watchers.changed(key.as_str());
        }
        drop(expired);
        removed
            .map(|entry| entry.value.kind())
            .ok_or(StoreError::NotFound)
    }

    /// Lists metadata of live keys starting with `prefix`, in key order,
    /// strictly after `after`, at most `limit`. Returns the page and the key
    /// to continue after when more remain.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Meta>, Option<Key>) {
        self.list_filtered(prefix, after, limit, |_| true)
    }

    /// Like [`Store::list`], keeping only keys for which `visible` holds (the
    /// policy's `list` permission), so a page is never short because of it.
    pub fn list_filtered(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        visible: impl Fn(&Key) -> bool,
    ) -> (Vec<Meta>, Option<Key>) {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let lower: Bound<&str> = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut page = Vec::new();
        for shard in self.shared.shards.iter() {
            let shard = lock(shard);
            let range = shard.entries.range::<str, _>((lower, Bound::Unbounded));
            page.extend(
                range
                    .take_while(|(key, _)| key.as_str().starts_with(prefix))
                    .filter(|(key, entry)| entry.deadline > now && visible(key))
                    .take(limit.saturating_add(1))
                    .map(|(key, entry)| entry.meta(key, now, wall_now)),
            );
        }
        page.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|meta| meta.key.clone())
        } else {
            None
        };
        (page, next)
    }

    /// Appends an item to a list, creating the list with `ttl` if absent.
    pub fn push(
        &self,
        key: &Key,
        item: SecretBytes,
        ttl: Duration,
    ) -> Result<(Meta, bool), StoreError> {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let item_charge = ITEM_OVERHEAD + item.len() as u64;
        let mut expired = None;
        let mut created_deadline = None;
        let result = {
            let mut shard = lock(self.shard(key));
            let revision = self.revision();
            match shard.live(key, now, &self.shared, &mut expired) {
                Some(entry) => {
                    let Value::List(items) = &mut entry.value else {
                        return Err(StoreError::WrongKind {
                            expected: Kind::List,
                            found: Kind::Secret,
                        });
                    };
                    self.charge(0, item_charge)?;
                    let journaled = self.journal(|| Change {
                        key,
                        seq: revision,
                        op: ChangeOp::Push {
                            item: &item,
                            created: false,
                            revision,
                            version: entry.version + 1,
                            created_at: entry.created_at,
                            updated_at: wall_now,
                            expires_at: wall_clock_at(entry.deadline, now, wall_now),
                        },
                    });
                    if let Err(error) = journaled {
                        self.uncharge(0, item_charge);
                        return Err(error);
                    }
                    items.push_back(item);
                    entry.charge += item_charge;
                    entry.version += 1;
                    entry.revision = revision;
                    entry.seq = revision;
                    entry.updated_at = wall_now;
                    (entry.meta(key, now, wall_now), false)
                }
                None => {
                    let charge = ITEM_OVERHEAD + key.as_str().len() as u64 + item_charge;
                    self.charge(0, charge)?;
                    let deadline = self.deadline_after(ttl, now);
                    let journaled = self.journal(|| Change {
                        key,
                        seq: revision,
                        op: ChangeOp::Push {
                            item: &item,
                            created: true,
                            revision,
                            version: 1,
                            created_at: wall_now,
                            updated_at: wall_now,
                            expires_at: wall_clock_at(deadline, now, wall_now),
                        },
                    });
                    if let Err(error) = journaled {
                        self.uncharge(0, charge);
                        return Err(error);
                    }
                    let entry = Entry {
                        value: Value::List(VecDeque::from([item])),
                        deadline,
                        created_at: wall_now,
                        updated_at: wall_now,
                        version: 1,
                        revision,
                        seq: revision,
                        reads_left: None,
                        charge,
                    };
                    let meta = entry.meta(key, now, wall_now);
                    shard.entries.insert(key.clone(), entry);
                    shard.deadlines.insert((deadline, key.clone()));
                    self.shared.entries.fetch_add(1, Ordering::Relaxed);
                    created_deadline = Some(deadline);
                    (meta, true)
                }
            }
        };
        if let Some(deadline) = created_deadline {
            self.schedule(deadline);
        }
        Ok(result)
    }

    /// Removes and returns one item of a list; popping the last item deletes
    /// the list. Returns the item and the number of items left.
    pub fn pop(&self, key: &Key, end: End) -> Result<(SecretBytes, u64), StoreError> {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let mut expired = None;
        let mut emptied = None;
        let result = {
            let mut shard = lock(self.shard(key));
            let revision = self.revision();
            let entry = shard
                .live(key, now, &self.shared, &mut expired)
                .ok_or(StoreError::NotFound)?;
            let Value::List(items) = &mut entry.value else {
                return Err(StoreError::WrongKind {
                    expected: Kind::List,
                    found: Kind::Secret,
                });
            };
            if items.is_empty() {
                return Err(StoreError::NotFound);
            }
            self.journal(|| Change {
                key,
                seq: revision,
                op: ChangeOp::Pop {
                    end,
                    revision,
                    version: entry.version + 1,
                    updated_at: wall_now,
                },
            })?;
            let item = match end {
                End::Newest => items.pop_back(),
                End::Oldest => items.pop_front(),
            }
            .ok_or(StoreError::NotFound)?;
            let left = items.len() as u64;
            let item_charge = ITEM_OVERHEAD + item.len() as u64;
            entry.charge -= item_charge;
            entry.version += 1;
            entry.revision = revision;
            entry.seq = revision;
            entry.updated_at = wall_now;
            self.shared.used.fetch_sub(item_charge, Ordering::Relaxed);
            if left == 0 {
                emptied = shard.remove(key);
            }
            (item, left)
        };
        if let Some(entry) = &emptied {
            self.shared.release(entry);
        }
        drop(expired);
        Ok(result)
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

    /// Every live entry, owned, in no particular order: what a snapshot
    /// writes. Shards are locked one at a time, never two at once, and each
    /// only long enough to copy its entries' metadata and `Arc`s; list items
    /// are copied into new zeroizing buffers. Each record is consistent with
    /// its `seq`: it holds exactly the changes to its key numbered up to it.
    pub fn export(&self) -> Vec<Record> {
        let mut all = Vec::new();
        let _ = self.export_each(|records| {
            all.extend(records);
            Ok::<(), std::convert::Infallible>(())
        });
        all
    }

    /// Like [`Store::export`], one shard at a time: `visit` gets each
    /// shard's records after that shard's lock is released, so a snapshot
    /// holds at most one shard's copies (and keeps no deleted secret alive)
    /// while it writes, instead of the whole store's.
    pub fn export_each<E>(
        &self,
        mut visit: impl FnMut(Vec<Record>) -> Result<(), E>,
    ) -> Result<(), E> {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        for shard in self.shared.shards.iter() {
            let records: Vec<Record> = {
                let shard = lock(shard);
                shard
                    .entries
                    .iter()
                    .filter(|(_, entry)| entry.deadline > now)
                    .map(|(key, entry)| Record {
                        key: key.clone(),
                        value: match &entry.value {
                            Value::Secret(bytes, _) => RecordValue::Secret(Arc::clone(bytes)),
                            Value::List(items) => RecordValue::List(
                                items
                                    .iter()
                                    .map(|item| SecretBytes::copy_from(item.expose()))
                                    .collect(),
                            ),
                        },
                        seq: entry.seq,
                        revision: entry.revision,
                        version: entry.version,
                        created_at: entry.created_at,
                        updated_at: entry.updated_at,
                        expires_at: wall_clock_at(entry.deadline, now, wall_now),
                        reads_left: entry.reads_left,
                        content_type: entry.value.media_type().cloned(),
                    })
                    .collect()
            };
            visit(records)?;
        }
        Ok(())
    }

    /// Puts restored records into the store (at startup, before serving;
    /// nothing is journaled). Records whose deadline has passed are dropped,
    /// and so are a secret with no reads left and an empty list. The
    /// revision counter moves past every restored `seq`, so new changes sort
    /// after them. Returns how many were restored and how many had expired.
    pub fn import(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<(u64, u64), StoreError> {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let (mut restored, mut expired) = (0, 0);
        let mut earliest: Option<Instant> = None;
        for record in records {
            let Ok(ahead) = record.expires_at.duration_since(wall_now) else {
                expired += 1;
                continue;
            };
            if ahead.is_zero()
                || record.reads_left == Some(0)
                || matches!(&record.value, RecordValue::List(items) if items.is_empty())
            {
                expired += 1;
                continue;
            }
            let key_bytes = record.key.as_str().len() as u64;
            let (value, charge) = match record.value {
                RecordValue::Secret(bytes) => {
                    // The snapshot format makes the type optional; a secret
                    // record without one gets the default, as a secret
                    // written without one does.
                    let media_type = record.content_type.unwrap_or(MediaType::Default);
                    let charge = secret_charge(&record.key, &bytes, &media_type);
                    (Value::Secret(bytes, media_type), charge)
                }
                RecordValue::List(items) => {
                    let charge = ITEM_OVERHEAD
                        + key_bytes
                        + items
                            .iter()
                            .map(|item| ITEM_OVERHEAD + item.len() as u64)
                            .sum::<u64>();
                    (Value::List(items), charge)
                }
            };
            self.charge(0, charge)?;
            let deadline = self.deadline_after(ahead, now);
            let entry = Entry {
                value,
                deadline,
                created_at: record.created_at,
                updated_at: record.updated_at,
                version: record.version,
                revision: record.revision,
                seq: record.seq,
                reads_left: record.reads_left,
                charge,
            };
            self.shared.next_revision.fetch_max(
                record.seq.max(record.revision).saturating_add(1),
                Ordering::Relaxed,
            );
            let replaced = {
                let mut shard = lock(self.shard(&record.key));
                let replaced = shard.remove(&record.key);
                shard.entries.insert(record.key.clone(), entry);
                shard.deadlines.insert((deadline, record.key));
                replaced
            };
            match &replaced {
                Some(old) => self.shared.used.fetch_sub(old.charge, Ordering::Relaxed),
                None => self.shared.entries.fetch_add(1, Ordering::Relaxed),
            };
            earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
            restored += 1;
        }
        if let Some(deadline) = earliest {
            self.schedule(deadline);
        }
        Ok((restored, expired))
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
            for entry in taken.entries.values() {
                self.shared.release(entry);
            }
            // `taken` drops here, wiping every value.
        }
    }
}

/// Removes expired entries from the front of each shard's deadline set and
/// returns the earliest deadline still pending.
fn purge_expired(shared: &Shared, now: Instant) -> Option<Instant> {
    let mut earliest: Option<Instant> = None;
    for shard in shared.shards.iter() {
        let mut removed = Vec::new();
        {
            let mut shard = lock(shard);
            while let Some((deadline, key)) = shard.deadlines.first().cloned() {
                if deadline > now {
                    earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                    break;
                }
                shard.deadlines.pop_first();
                if let Some(entry) = shard.entries.remove(&key) {
                    removed.push(entry);
                }
            }
        }
        for entry in &removed {
            shared.release(entry);
            shared.expired.fetch_add(1, Ordering::Relaxed);
        }
        // `removed` drops here, outside the lock, wiping the values.
    }
    earliest
}

async fn purge_task(shared: Arc<Shared>) {
    while !shared.closed.load(Ordering::Acquire) {
        // Reset before purging: a write that lands after this point lowers
        // `next_wake` again and notifies, so no deadline is missed.
        shared.next_wake.store(u64::MAX, Ordering::Release);
        let now = Instant::now();
        let next = purge_expired(&shared, now);
        if let Some(next) = next {
            let at = next.duration_since(shared.epoch).as_nanos() as u64;
            shared.next_wake.fetch_min(at, Ordering::AcqRel);
        }
        let wake_at = shared.next_wake.load(Ordering::Acquire);
        let sleep_until =
            (wake_at != u64::MAX).then(|| shared.epoch + Duration::from_nanos(wake_at));
        match sleep_until {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn key(raw: &str) -> Key {
        Key::parse(raw).unwrap()
    }

    fn secret(bytes: &[u8]) -> SecretBytes {
        SecretBytes::new(Zeroizing::new(bytes.to_vec()))
    }

    #[test]
    fn the_default_media_type_is_recognised_however_it_arrives() {
        assert!(matches!(
            MediaType::from("application/octet-stream"),
            MediaType::Default
        ));
        assert!(matches!(
            MediaType::from(Arc::<str>::from("application/octet-stream")),
            MediaType::Default
        ));
        let other = MediaType::from("text/plain");
        assert!(matches!(&other, MediaType::Other(text) if &**text == "text/plain"));
        assert_eq!(other, MediaType::from(Arc::<str>::from("text/plain")));
        assert_ne!(other, MediaType::Default);
        assert_eq!(&*MediaType::Default, "application/octet-stream");
        assert_eq!(format!("{other:?}"), "\"text/plain\"");
    }

    #[test]
    fn a_secret_media_type_costs_an_entry_no_space() {
        // The secret variant (an Arc and a MediaType, 24 bytes) fits in the
        // list variant's 32, and the list's capacity leaves a niche for the
        // tag: a value is as large as a VecDeque and no larger.
        assert_eq!(
            std::mem::size_of::<Value>(),
            std::mem::size_of::<VecDeque<SecretBytes>>()
        );
    }

    fn options(ttl_secs: u64) -> PutOptions {
        PutOptions {
            ttl: Duration::from_secs(ttl_secs),
            max_reads: None,
            content_type: MediaType::from("application/octet-stream"),
            precondition: Precondition::None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expired_secrets_are_purged_by_the_deadline_index() {
        let store = Store::new(1 << 20);
        store
            .put(&key("short"), secret(b"one"), options(1))
            .unwrap();
        store
            .put(&key("long"), secret(b"two"), options(60))
            .unwrap();
        assert_eq!(store.stats().entries, 2);

        tokio::time::sleep(Duration::from_millis(1_001)).await;
        tokio::task::yield_now().await;
        assert_eq!(
            store.stats().entries,
            1,
            "the 1s secret is gone without being touched"
        );
        assert_eq!(store.stats().expired, 1);
        assert_eq!(
            store.get(&key("short"), true).unwrap_err(),
            StoreError::NotFound
        );
        assert_eq!(store.get(&key("long"), true).unwrap().0.expose(), b"two");
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_the_purge_task() {
        let store = Store::new(1 << 20);
        store
            .put(&key("late"), secret(b"x"), options(3600))
            .unwrap();
        tokio::task::yield_now().await;
        store.put(&key("soon"), secret(b"y"), options(2)).unwrap();
        tokio::time::sleep(Duration::from_millis(2_001)).await;
        tokio::task::yield_now().await;
        assert_eq!(store.stats().entries, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn renew_moves_the_deadline() {
        let store = Store::new(1 << 20);
        store.put(&key("k"), secret(b"v"), options(1)).unwrap();
        store.renew(&key("k"), Duration::from_secs(10)).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(store.get(&key("k"), false).is_ok());
        store.renew(&key("k"), Duration::from_secs(1)).unwrap();
        tokio::time::sleep(Duration::from_millis(1_001)).await;
        tokio::task::yield_now().await;
        assert_eq!(store.stats().entries, 0);
    }

    #[tokio::test]
    async fn read_once_is_removed_by_the_read_that_uses_it_up() {
        let store = Store::new(1 << 20);
        let mut opts = options(60);
        opts.max_reads = Some(2);
        store.put(&key("k"), secret(b"v"), opts).unwrap();
        assert!(store.get(&key("k"), false).is_ok(), "HEAD does not count");
        assert_eq!(store.get(&key("k"), true).unwrap().1.reads_left, Some(1));
        assert_eq!(store.get(&key("k"), true).unwrap().1.reads_left, Some(0));
        assert_eq!(
            store.get(&key("k"), true).unwrap_err(),
            StoreError::NotFound
        );
        assert_eq!(store.stats(), Stats::default());
    }

    #[tokio::test]
    async fn preconditions() {
        let store = Store::new(1 << 20);
        let k = key("k");
        let mut opts = options(60);
        opts.precondition = Precondition::Present;
        assert!(matches!(
            store.put(&k, secret(b"a"), opts.clone()),
            Err(StoreError::PreconditionFailed(_))
        ));
        let (meta, created) = store.put(&k, secret(b"a"), options(60)).unwrap();
        assert!(created);
        opts.precondition = Precondition::Absent;
        assert!(matches!(
            store.put(&k, secret(b"b"), opts.clone()),
            Err(StoreError::PreconditionFailed(_))
        ));
        opts.precondition = Precondition::Revision(meta.revision + 1);
        assert!(matches!(
            store.put(&k, secret(b"b"), opts.clone()),
            Err(StoreError::PreconditionFailed(_))
        ));
        opts.precondition = Precondition::Revision(meta.revision);
        let (second, created) = store.put(&k, secret(b"b"), opts).unwrap();
        assert!(!created);
        assert_eq!(second.version, 2);
        assert_ne!(second.revision, meta.revision);
        assert_eq!(second.created_at, meta.created_at);
    }

    /// The stalled-response attack: a client GETs a secret and never reads
    /// the answer, then DELETEs (or replaces) it. The value lives on in the
    /// response, so it stays charged until the response lets it go.
    #[tokio::test]
    async fn a_value_a_response_still_holds_stays_charged_until_let_go() {
        let k = key("k");
        let one = secret_charge(&k, &secret(&[0; 1000]), "application/octet-stream");
        let store = Store::new(one + one / 2);
        store.put(&k, secret(&[1; 1000]), options(60)).unwrap();
        let (held, _) = store.get(&k, true).unwrap();
        store.delete(&k).unwrap();
        assert_eq!(store.stats().entries, 0);
        assert!(store.stats().bytes >= 1000, "{:?}", store.stats());
        // The budget still counts it: a second value does not fit.
        let err = store.put(&k, secret(&[2; 1000]), options(60)).unwrap_err();
        assert!(matches!(err, StoreError::BudgetExceeded { .. }), "{err}");
        drop(held);
        assert_eq!(store.stats().bytes, 0);
        store.put(&k, secret(&[2; 1000]), options(60)).unwrap();

        // Replacing a held value: the old bytes stay charged too.
        let (held, _) = store.get(&k, true).unwrap();
        let err = store.put(&k, secret(&[3; 1000]), options(60)).unwrap_err();
        assert!(matches!(err, StoreError::BudgetExceeded { .. }), "{err}");
        store.put(&k, secret(&[3; 10]), options(60)).unwrap();
        assert!(store.stats().bytes >= 1010);
        drop(held);
        let small = secret_charge(&k, &secret(&[0; 10]), "application/octet-stream");
        assert_eq!(store.stats().bytes, small);
    }

    #[tokio::test]
    async fn budget_counts_bytes_and_frees_them() {
        let k = key("k");
        let one = secret_charge(&k, &secret(&[0; 100]), "application/octet-stream");
        let store = Store::new(one);
        store.put(&k, secret(&[0; 100]), options(60)).unwrap();
        let err = store
            .put(&key("other"), secret(&[0; 10]), options(60))
            .unwrap_err();
        assert!(matches!(err, StoreError::BudgetExceeded { .. }));
        assert_eq!(
            store.get(&k, false).unwrap().0.len(),
            100,
            "existing data still readable"
        );
        // Replacing with a smaller value of the same key fits.
        store.put(&k, secret(&[0; 50]), options(60)).unwrap();
        store.delete(&k).unwrap();
        assert_eq!(store.stats().bytes, 0);
    }

    #[tokio::test]
    async fn lists_push_and_pop_from_either_end() {
        let store = Store::new(1 << 20);
        let k = key("pool");
        assert!(
            store
                .push(&k, secret(b"1"), Duration::from_secs(60))
                .unwrap()
                .1
        );
        assert!(
            !store
                .push(&k, secret(b"2"), Duration::from_secs(60))
                .unwrap()
                .1
        );
        store
            .push(&k, secret(b"3"), Duration::from_secs(60))
            .unwrap();
        assert_eq!(store.pop(&k, End::Newest).unwrap().0.expose(), b"3");
        assert_eq!(store.pop(&k, End::Oldest).unwrap().0.expose(), b"1");
        let (last, left) = store.pop(&k, End::Newest).unwrap();
        assert_eq!((last.expose(), left), (&b"2"[..], 0));
        assert_eq!(
            store.pop(&k, End::Newest).unwrap_err(),
            StoreError::NotFound
        );
        assert_eq!(store.stats(), Stats::default());
        store.put(&key("s"), secret(b"v"), options(60)).unwrap();
        assert!(matches!(
            store.push(&key("s"), secret(b"x"), Duration::from_secs(60)),
            Err(StoreError::WrongKind {
                expected: Kind::List,
                found: Kind::Secret
            })
        ));
    }

    #[tokio::test]
    async fn list_pages_across_shards_in_key_order() {
        let store = Store::new(1 << 20);
        for i in 0..25 {
            store
                .put(&key(&format!("app/k{i:02}")), secret(b"v"), options(60))
                .unwrap();
        }
        store
            .put(&key("other/x"), secret(b"v"), options(60))
            .unwrap();
        let (page, next) = store.list("app/", None, 10);
        let keys: Vec<_> = page.iter().map(|m| m.key.to_string()).collect();
        assert_eq!(keys.first().map(String::as_str), Some("app/k00"));
        assert_eq!(keys.len(), 10);
        assert_eq!(next.as_ref().map(Key::as_str), Some("app/k09"));
        let (page, next) = store.list("app/", Some("app/k19"), 10);
        assert_eq!(page.len(), 5);
        assert_eq!(next, None);
        let (all, _) = store.list("", None, 100);
        assert_eq!(all.len(), 26);
    }

    /// A change log that remembers what it was given, or refuses it.
    #[derive(Default)]
    struct RecordingLog {
        refuse: AtomicBool,
        seen: Mutex<Vec<(String, u64, &'static str)>>,
    }

    impl ChangeLog for RecordingLog {
        fn append(&self, change: &Change<&Key, &SecretBytes>) -> std::io::Result<()> {
            if self.refuse.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("refused by the test"));
            }
            let op = match change.op {
                ChangeOp::Put { .. } => "put",
                ChangeOp::Push { created: true, .. } => "create",
                ChangeOp::Push { .. } => "push",
                ChangeOp::Pop { .. } => "pop",
                ChangeOp::Renew { .. } => "renew",
                ChangeOp::Read { .. } => "read",
                ChangeOp::Delete => "delete",
            };
            self.seen
                .lock()
                .unwrap()
                .push((change.key.to_string(), change.seq, op));
            Ok(())
        }

        fn before_wipe(&self, _store: &Store) {}
    }

    #[tokio::test]
    async fn every_change_is_journaled_in_order_and_plain_reads_are_not() {
        let store = Store::new(1 << 20);
        let log = Arc::new(RecordingLog::default());
        assert!(store.set_change_log(log.clone()));
        let mut once = options(60);
        once.max_reads = Some(2);
        store.put(&key("s"), secret(b"v"), once).unwrap();
        store.get(&key("s"), false).unwrap();
        store.get(&key("s"), true).unwrap();
        store.renew(&key("s"), Duration::from_secs(30)).unwrap();
        store.get(&key("s"), true).unwrap();
        store.put(&key("t"), secret(b"v"), options(60)).unwrap();
        store.get(&key("t"), true).unwrap();
        store.delete(&key("t")).unwrap();
        let ttl = Duration::from_secs(60);
        store.push(&key("l"), secret(b"1"), ttl).unwrap();
        store.push(&key("l"), secret(b"2"), ttl).unwrap();
        store.pop(&key("l"), End::Oldest).unwrap();
        let seen = log.seen.lock().unwrap().clone();
        let ops: Vec<_> = seen.iter().map(|(k, _, op)| format!("{k}:{op}")).collect();
        assert_eq!(
            ops,
            [
                "s:put", "s:read", "s:renew", "s:read", "t:put", "t:delete", "l:create", "l:push",
                "l:pop"
            ],
            "HEAD and reads of secrets without max_reads are not changes"
        );
        assert!(
            seen.windows(2).all(|pair| pair[0].1 < pair[1].1),
            "sequence numbers increase: {seen:?}"
        );
    }

    #[tokio::test]
    async fn a_change_the_journal_refuses_is_not_made() {
        let store = Store::new(1 << 20);
        let log = Arc::new(RecordingLog::default());
        store.set_change_log(log.clone());
        store.put(&key("s"), secret(b"old"), options(60)).unwrap();
        let mut once = options(60);
        once.max_reads = Some(1);
        store.put(&key("once"), secret(b"v"), once).unwrap();
        store
            .push(&key("l"), secret(b"1"), Duration::from_secs(60))
            .unwrap();
        let before = store.stats();
        let meta = store.meta(&key("s")).unwrap();
        log.refuse.store(true, Ordering::Relaxed);

        let unavailable = |result: Result<(), StoreError>| {
            assert!(
                matches!(result, Err(StoreError::Unavailable(_))),
                "{result:?}"
            );
        };
        unavailable(store.put(&key("s"), secret(b"new"), options(60)).map(drop));
        unavailable(store.put(&key("n"), secret(b"new"), options(60)).map(drop));
        unavailable(store.renew(&key("s"), Duration::from_secs(5)).map(drop));
        unavailable(store.delete(&key("s")).map(drop));
        unavailable(store.get(&key("once"), true).map(drop));
        unavailable(
            store
                .push(&key("l"), secret(b"2"), Duration::from_secs(60))
                .map(drop),
        );
        unavailable(
            store
                .push(&key("m"), secret(b"2"), Duration::from_secs(60))
                .map(drop),
        );
        unavailable(store.pop(&key("l"), End::Newest).map(drop));

        assert_eq!(store.stats(), before, "budget and counts untouched");
        let after = store.meta(&key("s")).unwrap();
        assert_eq!(
            (after.revision, after.version),
            (meta.revision, meta.version)
        );
        let moved = after
            .expires_at
            .duration_since(meta.expires_at)
            .or_else(|_| meta.expires_at.duration_since(after.expires_at))
            .unwrap();
        assert!(moved < Duration::from_secs(1), "the renewal was not made");
        assert_eq!(store.get(&key("s"), false).unwrap().0.expose(), b"old");
        assert_eq!(store.meta(&key("once")).unwrap().reads_left, Some(1));
        assert_eq!(store.meta(&key("l")).unwrap().size, 1);
        assert!(
            store.get(&key("s"), false).is_ok(),
            "plain reads still work"
        );
    }

    #[tokio::test]
    async fn export_and_import_keep_everything_but_the_expired() {
        let store = Store::new(1 << 20);
        let mut opts = options(600);
        opts.max_reads = Some(3);
        opts.content_type = MediaType::from("text/plain");
        store.put(&key("a"), secret(b"alpha"), opts).unwrap();
        store.get(&key("a"), true).unwrap();
        let ttl = Duration::from_secs(60);
        store.push(&key("l"), secret(b"1"), ttl).unwrap();
        store.push(&key("l"), secret(b"2"), ttl).unwrap();
        let mut records = store.export();
        records.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(records.len(), 2);
        let (a, l) = (
            store.meta(&key("a")).unwrap(),
            store.meta(&key("l")).unwrap(),
        );
        // One that expired while on disk.
        records.push(Record {
            key: key("gone"),
            value: RecordValue::Secret(Arc::new(secret(b"x"))),
            seq: 1,
            revision: 1,
            version: 1,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::now() - Duration::from_secs(1),
            reads_left: None,
            content_type: Some(MediaType::from("text/plain")),
        });
        let highest = records.iter().map(|r| r.seq).max().unwrap();

        let restored = Store::new(1 << 20);
        assert_eq!(restored.import(records).unwrap(), (2, 1));
        assert_eq!(restored.stats().entries, 2);
        assert_eq!(restored.stats().bytes, store.stats().bytes);
        let close = |x: SystemTime, y: SystemTime| {
            x.duration_since(y)
                .or_else(|_| y.duration_since(x))
                .unwrap()
                < Duration::from_millis(50)
        };
        for before in [a, l] {
            let after = restored.meta(&before.key).unwrap();
            assert!(close(after.expires_at, before.expires_at));
            assert_eq!(
                Meta {
                    expires_at: before.expires_at,
                    ..after
                },
                before
            );
        }
        assert_eq!(restored.get(&key("a"), true).unwrap().0.expose(), b"alpha");
        assert_eq!(
            restored.pop(&key("l"), End::Oldest).unwrap().0.expose(),
            b"1"
        );
        let (meta, _) = restored
            .put(&key("new"), secret(b"v"), options(60))
            .unwrap();
        assert!(
            meta.revision > highest,
            "new revisions sort after restored ones"
        );
    }

    #[tokio::test]
    async fn wipe_all_empties_everything() {
        let store = Store::new(1 << 20);
        store.put(&key("a"), secret(b"v"), options(60)).unwrap();
        store
            .push(&key("b"), secret(b"v"), Duration::from_secs(60))
            .unwrap();
        store.wipe_all();
        assert_eq!(store.stats(), Stats::default());
    }
}
