//! Inside a shard: entries and their values, the deadline index, and the
//! state the shards share (the memory charge, the change log, waiters).

use super::*;

/// One entry in a shard: 80 bytes, inline in the shard map's B-tree
/// nodes (120 before the times narrowed and the charge went; see
/// docs/BENCHMARKS.md, "Memory per secret: where the bytes go").
pub(super) struct Entry {
    pub(super) value: Value,
    pub(super) deadline: Tick,
    pub(super) created_at: WallTime,
    pub(super) updated_at: WallTime,
    pub(super) version: u64,
    pub(super) revision: u64,
    /// Sequence number of the last change (equal to `revision` after a
    /// write; renewals and counted reads move it on alone).
    pub(super) seq: u64,
    pub(super) reads_left: Option<u32>,
}

/// An entry's value. A secret's media type lives beside its bytes rather
/// than in [`Entry`] as an `Option`: that would cost every entry 24 bytes
/// where this costs none. A list is boxed, so that the variant is no
/// larger than a secret's 24 bytes; lists are few, and what a list is
/// charged is kept with it (a secret's is computed).
pub(super) enum Value {
    Secret(Arc<SecretBytes>, MediaType),
    List(Box<List>),
}

/// A list's items and what they and the key are charged.
pub(super) struct List {
    pub(super) items: VecDeque<SecretBytes>,
    pub(super) charge: u64,
}

impl Value {
    pub(super) fn kind(&self) -> Kind {
        match self {
            Value::Secret(..) => Kind::Secret,
            Value::List(_) => Kind::List,
        }
    }

    /// A secret's media type; a list has none.
    pub(super) fn media_type(&self) -> Option<&MediaType> {
        match self {
            Value::Secret(_, media_type) => Some(media_type),
            Value::List(_) => None,
        }
    }
}

#[derive(Default)]
pub(super) struct Shard {
    pub(super) entries: BTreeMap<Key, Entry>,
    pub(super) deadlines: Deadlines,
}

impl Shard {
    /// Removes `key`. Its deadline stays in the index until it comes due
    /// ([`Deadlines`] deletes lazily). The entry's bytes are wiped when the
    /// returned entry is dropped; callers drop it after releasing the lock.
    pub(super) fn remove(&mut self, key: &Key) -> Option<Entry> {
        self.entries.remove(key)
    }

    /// Puts `entry` under `key` with its deadline; returns the entry it
    /// replaced.
    pub(super) fn insert(&mut self, key: &Key, entry: Entry) -> Option<Entry> {
        let deadline = entry.deadline;
        let replaced = self.entries.insert(key.clone(), entry);
        self.set_deadline(key, deadline);
        replaced
    }

    /// Indexes `key`'s new deadline `at` (the entry already holds it), and
    /// rebuilds the index when left-behind deadlines outnumber the entries.
    pub(super) fn set_deadline(&mut self, key: &Key, at: Tick) {
        self.deadlines.push(at, key.clone());
        if self.deadlines.wants_rebuild(self.entries.len()) {
            let live = self
                .entries
                .iter()
                .map(|(key, entry)| (entry.deadline, key.clone()));
            self.deadlines.rebuild(live);
        }
    }

    /// Returns the live entry for `key`. An expired one is removed first and
    /// its accounting released at once (so an early return cannot skip it);
    /// its bytes go to `expired`, to be wiped once the lock is released.
    pub(super) fn live(
        &mut self,
        key: &Key,
        now: Tick,
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
                shared.release(key, entry);
                shared.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.entries.get_mut(key)
    }
}

pub(super) struct Shared {
    pub(super) shards: Box<[Mutex<Shard>]>,
    pub(super) hasher: RandomState,
    pub(super) budget: u64,
    pub(super) used: AtomicU64,
    pub(super) entries: AtomicU64,
    pub(super) expired: AtomicU64,
    /// Next revision to hand out. Starts at the wall clock in microseconds so
    /// that an `ETag` from before a restart never matches a new value.
    pub(super) next_revision: AtomicU64,
    /// The purge task's next wake-up, in nanoseconds since `epoch`.
    pub(super) next_wake: AtomicU64,
    pub(super) epoch: Instant,
    pub(super) wake: Notify,
    pub(super) closed: AtomicBool,
    /// The journal, once persistence has restored the store; empty when
    /// persistence is off.
    pub(super) change_log: OnceLock<Arc<dyn ChangeLog>>,
    /// Requests waiting for a key to change (`?wait=`).
    pub(super) watchers: Arc<Watchers>,
    /// Values removed or replaced while a response still held them.
    pub(super) lingering: Lingering,
}

/// Secret values gone from the store that a response body still holds (a
/// client that does not read keeps them alive): their bytes stay charged to
/// the budget until the last holder lets go, so what clients pin counts
/// against `--max-memory` like what is stored.
#[derive(Default)]
pub(super) struct Lingering {
    pub(super) values: Mutex<Vec<(Weak<SecretBytes>, u64)>>,
    pub(super) count: AtomicUsize,
}

/// The bytes of a value that something besides `entry` still holds.
pub(super) fn held_elsewhere(entry: &Entry) -> u64 {
    match &entry.value {
        Value::Secret(bytes, _) if Arc::strong_count(bytes) > 1 => bytes.len() as u64,
        _ => 0,
    }
}

impl Shared {
    /// Returns a removed entry's bytes and count to the budget; a value a
    /// response still holds stays charged until it is let go.
    pub(super) fn release(&self, key: &Key, entry: &Entry) {
        let held = held_elsewhere(entry);
        self.used
            .fetch_sub(entry.charge(key) - held, Ordering::Relaxed);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        if held > 0 {
            self.linger(entry, held);
        }
    }

    /// Keeps `held` bytes of `entry`'s value charged until its last holder
    /// drops it.
    pub(super) fn linger(&self, entry: &Entry, held: u64) {
        if let Value::Secret(bytes, _) = &entry.value {
            let mut values = lock(&self.lingering.values);
            values.push((Arc::downgrade(bytes), held));
            self.lingering.count.store(values.len(), Ordering::Release);
        }
    }

    /// Uncharges the lingering values nobody holds any more.
    pub(super) fn reap(&self) {
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

pub(super) fn lock<T>(shard: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard lock would be a bug; the shard's data is
    // still consistent (every mutation is a single map operation), so keep
    // serving rather than poisoning the whole keyspace. (The lingering list
    // is one push or retain at a time, consistent too.)
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Entry {
    /// What this entry is charged against the memory budget.
    pub(super) fn charge(&self, key: &Key) -> u64 {
        match &self.value {
            Value::Secret(bytes, media_type) => secret_charge(key, bytes, media_type),
            Value::List(list) => list.charge,
        }
    }

    pub(super) fn meta(&self, key: &Key, now: Tick, wall_now: SystemTime) -> Meta {
        let size = match &self.value {
            Value::Secret(bytes, _) => bytes.len() as u64,
            Value::List(list) => list.items.len() as u64,
        };
        Meta {
            key: key.clone(),
            kind: self.value.kind(),
            size,
            version: self.version,
            revision: self.revision,
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
            expires_at: self.deadline.wall_clock(now, wall_now),
            reads_left: self.reads_left,
            content_type: self.value.media_type().cloned(),
        }
    }
}

pub(super) fn secret_charge(key: &Key, value: &SecretBytes, content_type: &str) -> u64 {
    ITEM_OVERHEAD + key.as_str().len() as u64 + value.len() as u64 + content_type.len() as u64
}
