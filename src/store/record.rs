//! What the store holds and answers with: kinds, metadata, records and
//! changes (what the journal and snapshots carry), options, errors.

use super::*;

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
pub(super) const JOURNAL_UNAVAILABLE: &str =
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

/// What applying a change did to the record it was applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The record now holds the change.
    Changed,
    /// The change removed the key (the last item popped, the last read).
    Removed,
    /// The change does not fit the record (a push or pop on a secret): it
    /// was left as it was.
    Refused,
}

impl Record {
    /// The record a change makes on its own, whatever the key held before:
    /// a `Put`, or a `Push` that created its list. Any other change is
    /// handed back, to be applied to the record the key has
    /// ([`Record::apply`]) or dropped if it has none.
    ///
    /// # Errors
    ///
    /// The change itself, when it needs an existing record.
    pub fn create(
        key: &Key,
        seq: u64,
        op: ChangeOp<SecretBytes>,
    ) -> Result<Record, ChangeOp<SecretBytes>> {
        match op {
            ChangeOp::Put {
                value,
                revision,
                version,
                created_at,
                updated_at,
                expires_at,
                reads_left,
                content_type,
            } => Ok(Record {
                key: key.clone(),
                value: RecordValue::Secret(Arc::new(value)),
                seq,
                revision,
                version,
                created_at,
                updated_at,
                expires_at,
                reads_left,
                content_type: Some(content_type),
            }),
            ChangeOp::Push {
                item,
                created: true,
                revision,
                version,
                created_at,
                updated_at,
                expires_at,
            } => Ok(Record {
                key: key.clone(),
                value: RecordValue::List([item].into()),
                seq,
                revision,
                version,
                created_at,
                updated_at,
                expires_at,
                reads_left: None,
                content_type: None,
            }),
            other => Err(other),
        }
    }

    /// Applies change `seq` to this record: what each [`ChangeOp`] means,
    /// written once. A change that makes a record on its own replaces this
    /// one; `Delete` (and the end of a list or of its reads) removes it.
    pub fn apply(&mut self, seq: u64, op: ChangeOp<SecretBytes>) -> Applied {
        let op = match Record::create(&self.key, seq, op) {
            Ok(record) => {
                *self = record;
                return Applied::Changed;
            }
            Err(op) => op,
        };
        match (op, &mut self.value) {
            (
                ChangeOp::Push {
                    item,
                    revision,
                    version,
                    updated_at,
                    ..
                },
                RecordValue::List(items),
            ) => {
                items.push_back(item);
                (self.seq, self.revision, self.version) = (seq, revision, version);
                self.updated_at = updated_at;
                Applied::Changed
            }
            (
                ChangeOp::Pop {
                    end,
                    revision,
                    version,
                    updated_at,
                },
                RecordValue::List(items),
            ) => {
                let _popped = match end {
                    End::Newest => items.pop_back(),
                    End::Oldest => items.pop_front(),
                };
                if items.is_empty() {
                    return Applied::Removed;
                }
                (self.seq, self.revision, self.version) = (seq, revision, version);
                self.updated_at = updated_at;
                Applied::Changed
            }
            (ChangeOp::Push { .. } | ChangeOp::Pop { .. }, RecordValue::Secret(_)) => {
                Applied::Refused
            }
            (
                ChangeOp::Renew {
                    expires_at,
                    updated_at,
                },
                _,
            ) => {
                self.seq = seq;
                self.expires_at = expires_at;
                self.updated_at = updated_at;
                Applied::Changed
            }
            (ChangeOp::Read { reads_left: 0 }, _) | (ChangeOp::Delete, _) => Applied::Removed,
            (ChangeOp::Read { reads_left }, _) => {
                self.seq = seq;
                self.reads_left = Some(reads_left);
                Applied::Changed
            }
            // `create` took these.
            (ChangeOp::Put { .. }, _) => Applied::Changed,
        }
    }
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

/// A stored secret's value as a GET hands it to the response: the entry
/// itself, shared with the store, so the bytes are not copied and no lock
/// is held while they are written out. The last holder (the store, or a
/// response after a delete or a replace) wipes them.
pub struct SecretRef(Slot);

impl SecretRef {
    pub(super) fn new(slot: &Slot) -> SecretRef {
        debug_assert!(slot.value.is_some(), "a list has no value");
        SecretRef(slot.clone())
    }

    /// The secret bytes. Callers must not keep a copy beyond one request.
    pub fn expose(&self) -> &[u8] {
        self.0.value.as_ref().map_or(&[], SecretBytes::expose)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    /// True for a zero-length secret.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted {} bytes]", self.len())
    }
}
