//! Inside a shard: entries and their values, the deadline index, and the
//! state the shards share (the memory charge, the change log, waiters).

use super::*;

/// One entry in a shard.
pub(super) struct Entry {
    pub(super) value: Value,
    pub(super) deadline: Instant,
    pub(super) created_at: SystemTime,
    pub(super) updated_at: SystemTime,
    pub(super) version: u64,
    pub(super) revision: u64,
    /// Sequence number of the last change (equal to `revision` after a
    /// write; renewals and counted reads move it on alone).
    pub(super) seq: u64,
    pub(super) reads_left: Option<u32>,
    /// What this entry is charged against the memory budget.
    pub(super) charge: u64,
}

/// An entry's value. A secret's media type lives beside its bytes rather
/// than in [`Entry`] as an `Option`: that would cost every entry 24 bytes
/// where this costs none (the variant fits in the list's 32).
pub(super) enum Value {
    Secret(Arc<SecretBytes>, MediaType),
    List(VecDeque<SecretBytes>),
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
    pub(super) deadlines: BTreeSet<(Instant, Key)>,
}

impl Shard {
    /// Removes `key` and its deadline. The entry's bytes are wiped when the
    /// returned entry is dropped; callers drop it after releasing the lock.
    pub(super) fn remove(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.deadlines.remove(&(entry.deadline, key.clone()));
        Some(entry)
    }

    /// Returns the live entry for `key`. An expired one is removed first and
    /// its accounting released at once (so an early return cannot skip it);
    /// its bytes go to `expired`, to be wiped once the lock is released.
    pub(super) fn live(
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
    pub(super) fn release(&self, entry: &Entry) {
        let held = held_elsewhere(entry);
        self.used.fetch_sub(entry.charge - held, Ordering::Relaxed);
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

pub(super) fn wall_clock_at(deadline: Instant, now: Instant, wall_now: SystemTime) -> SystemTime {
    match deadline.checked_duration_since(now) {
        Some(ahead) => wall_now + ahead,
        None => wall_now - now.duration_since(deadline),
    }
}

impl Entry {
    pub(super) fn meta(&self, key: &Key, now: Instant, wall_now: SystemTime) -> Meta {
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

pub(super) fn secret_charge(key: &Key, value: &SecretBytes, content_type: &str) -> u64 {
    ITEM_OVERHEAD + key.as_str().len() as u64 + value.len() as u64 + content_type.len() as u64
}
