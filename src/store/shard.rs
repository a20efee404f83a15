//! Inside a shard: entries and their values, the deadline index, and the
//! state the shards share (the memory charge, the change log, waiters).

use std::borrow::Borrow;

use super::block::{Block, WeakBlock};
use super::*;

/// One entry's metadata and value: the header of its [`Block`], which
/// holds the key's bytes too. 64 bytes, so that with the counts and a key
/// of up to 14 bytes the block is a 96-byte malloc chunk (a 16-byte step
/// per 16 more bytes of key); docs/BENCHMARKS.md, "Memory per secret".
///
/// A GET response holds the block while it writes the value, without the
/// shard lock, so the fields that change after the entry is made are
/// atomics: they are written only under the shard lock and read under it
/// too (a response reads nothing but the value), so `Relaxed` is all they
/// need. A secret's value and media type are fixed for the entry's life: a
/// write makes a new entry.
pub(super) struct Entry {
    /// A secret's bytes; `None` for a list.
    pub(super) value: Option<SecretBytes>,
    /// Writes since creation; saturates at `u32::MAX` (four billion writes
    /// of one key), which lets it sit beside the value's 12 bytes.
    pub(super) version: AtomicU32,
    /// The deadline, a [`Tick`].
    pub(super) deadline: AtomicU64,
    pub(super) created_at: WallTime,
    /// A [`WallTime`].
    pub(super) updated_at: AtomicU64,
    pub(super) revision: AtomicU64,
    /// Sequence number of the last change (equal to `revision` after a
    /// write; renewals and counted reads move it on alone).
    pub(super) seq: AtomicU64,
    /// What few entries have: a media type other than the default, a
    /// `max_reads`, or a list's items.
    pub(super) extra: Option<Box<Extra>>,
}

/// The rarer parts of an entry, boxed so that entries without them (a
/// secret of the default type, no `max_reads`) do not pay for them.
pub(super) enum Extra {
    Secret {
        media_type: MediaType,
        reads_left: Option<AtomicU32>,
    },
    List(Mutex<List>),
}

/// A list's items and what they and the key are charged.
pub(super) struct List {
    pub(super) items: VecDeque<SecretBytes>,
    pub(super) charge: u64,
}

/// What a new entry starts with.
pub(super) struct Fields {
    pub(super) deadline: Tick,
    pub(super) created_at: WallTime,
    pub(super) updated_at: WallTime,
    pub(super) version: u64,
    pub(super) revision: u64,
    pub(super) seq: u64,
}

impl Entry {
    /// A secret's entry.
    pub(super) fn secret(
        value: SecretBytes,
        media_type: MediaType,
        reads_left: Option<u32>,
        fields: &Fields,
    ) -> Entry {
        let extra = match (&media_type, reads_left) {
            (MediaType::Default, None) => None,
            _ => Some(Box::new(Extra::Secret {
                media_type,
                reads_left: reads_left.map(AtomicU32::new),
            })),
        };
        Entry::with(Some(value), extra, fields)
    }

    /// A list's entry.
    pub(super) fn new_list(list: List, fields: &Fields) -> Entry {
        Entry::with(None, Some(Box::new(Extra::List(Mutex::new(list)))), fields)
    }

    fn with(value: Option<SecretBytes>, extra: Option<Box<Extra>>, fields: &Fields) -> Entry {
        Entry {
            value,
            version: AtomicU32::new(narrow_version(fields.version)),
            deadline: AtomicU64::new(fields.deadline.0),
            created_at: fields.created_at,
            updated_at: AtomicU64::new(fields.updated_at.nanos()),
            revision: AtomicU64::new(fields.revision),
            seq: AtomicU64::new(fields.seq),
            extra,
        }
    }

    pub(super) fn kind(&self) -> Kind {
        match self.extra.as_deref() {
            Some(Extra::List(_)) => Kind::List,
            _ => Kind::Secret,
        }
    }

    /// A list's items, locked (only ever under the shard lock too, so the
    /// list's own lock is never contended).
    pub(super) fn list(&self) -> Option<MutexGuard<'_, List>> {
        match self.extra.as_deref() {
            Some(Extra::List(list)) => Some(lock(list)),
            _ => None,
        }
    }

    /// A secret's media type; a list has none.
    pub(super) fn media_type(&self) -> Option<&MediaType> {
        match self.extra.as_deref() {
            None => Some(&MediaType::Default),
            Some(Extra::Secret { media_type, .. }) => Some(media_type),
            Some(Extra::List(_)) => None,
        }
    }

    pub(super) fn reads_left(&self) -> Option<&AtomicU32> {
        match self.extra.as_deref() {
            Some(Extra::Secret { reads_left, .. }) => reads_left.as_ref(),
            _ => None,
        }
    }

    pub(super) fn deadline(&self) -> Tick {
        Tick(self.deadline.load(Ordering::Relaxed))
    }

    pub(super) fn version(&self) -> u64 {
        u64::from(self.version.load(Ordering::Relaxed))
    }

    pub(super) fn revision(&self) -> u64 {
        self.revision.load(Ordering::Relaxed)
    }

    pub(super) fn seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    pub(super) fn set_seq(&self, seq: u64) {
        self.seq.store(seq, Ordering::Relaxed);
    }

    pub(super) fn set_updated_at(&self, at: SystemTime) {
        self.updated_at
            .store(WallTime::from(at).nanos(), Ordering::Relaxed);
    }

    /// A list's change: one more version, a new revision and seq.
    pub(super) fn changed(&self, revision: u64, at: SystemTime) {
        let version = self.version.load(Ordering::Relaxed).saturating_add(1);
        self.version.store(version, Ordering::Relaxed);
        self.revision.store(revision, Ordering::Relaxed);
        self.set_seq(revision);
        self.set_updated_at(at);
    }

    pub(super) fn updated_at(&self) -> WallTime {
        WallTime::from_nanos(self.updated_at.load(Ordering::Relaxed))
    }
}

fn narrow_version(version: u64) -> u32 {
    u32::try_from(version).unwrap_or(u32::MAX)
}

/// An entry as the shard map holds it: its block, ordered by its key's
/// bytes (which is the order of [`Key`]s), and found by a `&str`.
#[derive(Clone)]
pub(super) struct Slot(pub(super) Block<Entry>);

impl Slot {
    pub(super) fn new(key: &Key, entry: Entry) -> Slot {
        Slot(Block::new(entry, key.as_str()))
    }

    pub(super) fn key(&self) -> &str {
        self.0.key()
    }

    /// The key, as a [`Key`] of its own (an allocation: for metadata that
    /// outlives the lock).
    pub(super) fn owned_key(&self) -> Key {
        Key::stored(self.key())
    }

    pub(super) fn downgrade(&self) -> WeakBlock<Entry> {
        Block::downgrade(&self.0)
    }

    pub(super) fn is(&self, other: &Slot) -> bool {
        Block::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for Slot {
    type Target = Entry;

    fn deref(&self) -> &Entry {
        self.0.header()
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Slot {}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Slot) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Slot {
    fn cmp(&self, other: &Slot) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl Borrow<str> for Slot {
    fn borrow(&self) -> &str {
        self.key()
    }
}

#[derive(Default)]
pub(super) struct Shard {
    /// The entries, in key order: 8 bytes each in the B-tree's nodes.
    pub(super) entries: BTreeSet<Slot>,
    pub(super) deadlines: Deadlines<WeakBlock<Entry>>,
}

impl Shard {
    /// Removes `key`. Its deadline stays in the index until it comes due
    /// ([`Deadlines`] deletes lazily; a weak handle keeps only the block's
    /// allocation, not its value). The entry's bytes are wiped when the
    /// returned slot is dropped, if no response holds it; callers drop it
    /// after releasing the lock.
    pub(super) fn remove(&mut self, key: &str) -> Option<Slot> {
        self.entries.take(key)
    }

    /// Puts the entry `slot` in, with its deadline; returns the entry it
    /// replaced.
    pub(super) fn insert(&mut self, slot: Slot) -> Option<Slot> {
        let deadline = slot.deadline();
        let weak = slot.downgrade();
        let replaced = self.entries.replace(slot);
        self.set_deadline(weak, deadline);
        replaced
    }

    /// Indexes an entry's new deadline `at` (the entry already holds it),
    /// and rebuilds the index when left-behind deadlines outnumber the
    /// entries.
    pub(super) fn set_deadline(&mut self, entry: WeakBlock<Entry>, at: Tick) {
        self.deadlines.push(at, entry);
        if self.deadlines.wants_rebuild(self.entries.len()) {
            let live = self
                .entries
                .iter()
                .map(|slot| (slot.deadline(), slot.downgrade()));
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
        expired: &mut Option<Slot>,
    ) -> Option<&Slot> {
        if self
            .entries
            .get(key.as_str())
            .is_some_and(|slot| slot.deadline() <= now)
        {
            *expired = self.remove(key.as_str());
            if let Some(slot) = expired {
                shared.release(slot);
                shared.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.entries.get(key.as_str())
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
    pub(super) values: Mutex<Vec<(WeakBlock<Entry>, u64)>>,
    pub(super) count: AtomicUsize,
}

/// The bytes of a value that something besides the map's `slot` still
/// holds (a response).
pub(super) fn held_elsewhere(slot: &Slot) -> u64 {
    match &slot.value {
        Some(bytes) if Block::strong_count(&slot.0) > 1 => bytes.len() as u64,
        _ => 0,
    }
}

impl Shared {
    /// Returns a removed entry's bytes and count to the budget; a value a
    /// response still holds stays charged until it is let go.
    pub(super) fn release(&self, slot: &Slot) {
        let held = held_elsewhere(slot);
        self.used
            .fetch_sub(slot.charge(slot.key()) - held, Ordering::Relaxed);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        if held > 0 {
            self.linger(slot, held);
        }
    }

    /// Keeps `held` bytes of `slot`'s value charged until its last holder
    /// drops it.
    pub(super) fn linger(&self, slot: &Slot, held: u64) {
        let mut values = lock(&self.lingering.values);
        values.push((slot.downgrade(), held));
        self.lingering.count.store(values.len(), Ordering::Release);
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
    /// What this entry, under `key`, is charged against the memory budget.
    pub(super) fn charge(&self, key: &str) -> u64 {
        match (&self.value, self.list()) {
            (Some(bytes), _) => secret_charge(key, bytes, self.media_type().map_or("", |t| t)),
            (None, Some(list)) => list.charge,
            (None, None) => 0,
        }
    }

    /// The entry's metadata, under `key` (the caller's, or one made from
    /// the block's bytes).
    pub(super) fn meta(&self, key: Key, now: Tick, wall_now: SystemTime) -> Meta {
        let size = match (&self.value, self.list()) {
            (Some(bytes), _) => bytes.len() as u64,
            (None, Some(list)) => list.items.len() as u64,
            (None, None) => 0,
        };
        Meta {
            key,
            kind: self.kind(),
            size,
            version: self.version(),
            revision: self.revision(),
            created_at: self.created_at.into(),
            updated_at: self.updated_at().into(),
            expires_at: self.deadline().wall_clock(now, wall_now),
            reads_left: self.reads_left().map(|left| left.load(Ordering::Relaxed)),
            content_type: self.media_type().cloned(),
        }
    }
}

pub(super) fn secret_charge(key: &str, value: &SecretBytes, content_type: &str) -> u64 {
    ITEM_OVERHEAD + key.len() as u64 + value.len() as u64 + content_type.len() as u64
}
