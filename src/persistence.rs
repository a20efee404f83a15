//! Snapshots and the journal on disk: which files exist, how they are
//! written atomically, how a restart reads them back, and when snapshots
//! are taken. The byte format is [`crate::snapshot`]; appending is
//! [`crate::journal`].
//!
//! # Files in the scratch dir
//!
//! - `tmpvault.snapshot`: the last complete snapshot. Its header names a
//!   journal generation G: the state is this snapshot plus the journals
//!   G, G+1, ... replayed in order.
//! - `tmpvault.journal.<generation>` (20 digits): the changes since.
//! - `tmpvault.lock`: held with `flock` while a server uses the directory,
//!   so two servers can never write the same journal.
//! - `*.tmp.<random>`: a file being written; one left behind by a crash is
//!   removed at the next start. `*.discarded`: what
//!   `--snapshot-on-error=discard` moved aside.
//!
//! # Writing
//!
//! Every file is written as a temp file in the same directory (`O_EXCL`,
//! mode 0600), fsynced, renamed over its name, and the directory fsynced:
//! a crash at any instant leaves the old file or the new one, never a torn
//! one. A snapshot goes like this, one at a time:
//!
//! 1. Start journal G+1 (its header and a start record saying how many
//!    records journal G ended with, written as above; appends wait the few
//!    microseconds this takes on tmpfs) and make it the journal the store
//!    appends to. From here on every change lands in G+1.
//! 2. Export the store, one shard at a time. Each entry carries the `seq` of
//!    its last change, so a change that is both in the export and in G+1 is
//!    recognised on replay and applied once.
//! 3. Write the snapshot, naming G+1, and rename it into place.
//! 4. Delete the journals before G+1: the snapshot holds all they held.
//!
//! A crash before step 3 completes leaves the old snapshot, journal G and
//! journal G+1: replaying both is correct. A crash after leaves the new
//! snapshot and possibly stale journals, which are ignored and removed.
//! Snapshots are taken at startup (folding the journal in at once),
//! every `--snapshot-interval`, as soon as a journal write fails (to get a
//! fresh journal), and at shutdown after the drain; the store is wiped
//! after that last one.
//!
//! # Reading, at startup, before the listener is bound
//!
//! The snapshot is read whole (any damage refuses it), then every journal
//! from its generation on; the generations must follow one another, and
//! each journal but the newest must hold exactly as many records as the
//! start record of the next one says. A
//! change is applied to a key only if its `seq` is newer than the key's
//! (from the snapshot or an earlier change; a delete leaves a tombstone with
//! its `seq`). Changes that only make sense on an existing entry (push onto,
//! pop, renew, counted read) are skipped when the key is absent: the key was
//! removed before the snapshot was exported, by a change that is also
//! replayed or by expiry. The last frame of the *last* journal may be torn
//! (a crash in the middle of an append): it is cut off with a warning, and
//! no client was told that change had succeeded. Anything else that fails
//! authentication, a wrong key, a missing journal or a version this build
//! does not read refuses to start, naming the file and the reason, unless
//! `--snapshot-on-error=discard`.
//!
//! What authentication cannot prevent, and this design accepts: someone
//! who can write to the scratch dir can remove whole records from the end
//! of the newest journal, or the newest journal itself (which is what a
//! crash just before those appends looks like), or put back an old
//! snapshot together with all of its journals (a rollback). They cannot
//! read values, forge or alter an entry, reorder changes, or drop one from
//! the middle of the history.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{Flock, FlockArg};

use crate::config::{ServeConfig, SnapshotOnError, SnapshotSetting};
use crate::journal::{Journal, JournalFile};
use crate::key::Key;
use crate::metrics::PersistenceMetrics;
use crate::secret::SecretBytes;
use crate::snapshot::{
    self, FileKind, FileSealer, FormatError, FrameKind, Header, KeyFileError, SnapshotKey,
    SnapshotWriter,
};
use crate::store::{Change, ChangeLog, ChangeOp, Record, RecordValue, Store, StoreError};

/// The snapshot's file name.
pub const SNAPSHOT_FILE: &str = "tmpvault.snapshot";
/// The prefix of journal file names; the generation follows.
pub const JOURNAL_PREFIX: &str = "tmpvault.journal.";
/// The lock file's name.
pub const LOCK_FILE: &str = "tmpvault.lock";
/// The infix of temp files.
const TEMP_INFIX: &str = ".tmp.";
/// The suffix of files moved aside by `--snapshot-on-error=discard`.
const DISCARDED_SUFFIX: &str = ".discarded";
/// The longest wait before retrying a snapshot that failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The name of journal `generation`.
pub fn journal_name(generation: u64) -> String {
    format!("{JOURNAL_PREFIX}{generation:020}")
}

/// Why persistence could not start, or a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PersistenceError {
    /// The key file.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// `--snapshot plain` outside tmpfs.
    #[error(
        "refusing to write plaintext snapshots to {dir}: it is not a tmpfs (use --snapshot \
         encrypted)"
    )]
    PlainOutsideTmpfs {
        /// The scratch dir.
        dir: String,
    },
    /// Another server holds the directory.
    #[error("{dir} is in use by another tmpvault process (it holds {LOCK_FILE})")]
    Locked {
        /// The scratch dir.
        dir: String,
    },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A snapshot or journal is damaged, or was written with another key.
    #[error("loading {kind} {path}: {source}")]
    Format {
        /// `snapshot` or `journal`.
        kind: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: FormatError,
    },
    /// A file in the scratch dir is not one tmpvault would have written: a
    /// symbolic link, not a regular file, another user's, or readable by
    /// others. It is never followed or read.
    #[error("refusing {path}: {reason}")]
    Untrusted {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The files on disk do not fit together.
    #[error("loading {path}: {reason}")]
    Inconsistent {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The restored entries do not fit in `--max-memory`.
    #[error("restoring the snapshot: {0} (raise --max-memory)")]
    Budget(StoreError),
    /// The blocking task was lost.
    #[error("the snapshot task stopped: {0}")]
    Task(String),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PersistenceError {
    let path = path.display().to_string();
    move |source| PersistenceError::Io {
        action,
        path,
        source,
    }
}

/// Opens a file in the scratch dir without following a link (`O_NOFOLLOW`,
/// and `O_NOCTTY`), and only if it is what tmpvault writes: a regular file
/// owned by this process's user, with no access for group or others. The
/// self-check promises a private scratch dir; this does not trust more than
/// it checks.
fn open_scratch(
    options: &mut OpenOptions,
    action: &'static str,
    path: &Path,
) -> Result<File, PersistenceError> {
    let untrusted = |reason: String| PersistenceError::Untrusted {
        path: path.display().to_string(),
        reason,
    };
    let file = options
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(code) if code == nix::errno::Errno::ELOOP as i32 => untrusted(
                "it is a symbolic link, and tmpvault follows no link in its scratch dir".into(),
            ),
            _ => io_error(action, path)(error),
        })?;
    let meta = file.metadata().map_err(io_error(action, path))?;
    if !meta.file_type().is_file() {
        return Err(untrusted("it is not a regular file".into()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(untrusted(format!(
            "it is owned by uid {}, not by this process (uid {euid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(untrusted(format!(
            "its mode is {:04o}; tmpvault writes its files 0600",
            meta.mode() & 0o7777
        )));
    }
    Ok(file)
}

/// What persistence needs from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The scratch dir.
    pub dir: PathBuf,
    /// `plain` or `encrypted`.
    pub mode: SnapshotSetting,
    /// The key file, when encrypted.
    pub key_file: Option<PathBuf>,
    /// Time between snapshots.
    pub interval: Duration,
    /// What to do with files that cannot be loaded.
    pub on_error: SnapshotOnError,
}

impl Settings {
    /// The settings of `config`; `None` when snapshots are off.
    pub fn from_config(config: &ServeConfig) -> Option<Settings> {
        (config.snapshot != SnapshotSetting::Off).then(|| Settings {
            dir: config.scratch_dir.clone(),
            mode: config.snapshot,
            key_file: config.snapshot_key_file.clone(),
            interval: config.snapshot_interval,
            on_error: config.snapshot_on_error,
        })
    }
}

// ---------------------------------------------------------------------------
// Atomic files

/// A file written under a temp name and renamed into place by
/// [`AtomicFile::commit`]; removed if dropped before that.
pub struct AtomicFile {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Creates `dir/name.tmp.<random>` with `O_EXCL` and mode 0600.
    pub fn create(dir: &Path, name: &str) -> Result<AtomicFile, PersistenceError> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|error| {
            io_error("creating a temp file in", dir)(io::Error::other(error.to_string()))
        })?;
        let suffix: String = suffix.iter().map(|byte| format!("{byte:02x}")).collect();
        let temp = dir.join(format!("{name}{TEMP_INFIX}{suffix}"));
        // O_EXCL refuses any existing name, a planted link included.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NOCTTY)
            .open(&temp)
            .map_err(io_error("creating", &temp))?;
        Ok(AtomicFile {
            file,
            temp,
            target: dir.join(name),
            committed: false,
        })
    }

    /// The open temp file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// fsync the file, rename it into place, fsync the directory.
    pub fn commit(mut self) -> Result<(), PersistenceError> {
        self.file
            .sync_all()
            .map_err(io_error("syncing", &self.temp))?;
        fs::rename(&self.temp, &self.target).map_err(io_error("renaming", &self.temp))?;
        self.committed = true;
        sync_dir(&self.target)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// fsync the directory holding `path`, so a rename or removal in it lasts.
fn sync_dir(path: &Path) -> Result<(), PersistenceError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("syncing the directory", dir))
}

// ---------------------------------------------------------------------------
// The files present

/// The persistence files found in the scratch dir.
#[derive(Debug, Default)]
struct Files {
    snapshot: Option<PathBuf>,
    journals: BTreeMap<u64, PathBuf>,
    temps: Vec<PathBuf>,
}

impl Files {
    fn scan(dir: &Path) -> Result<Files, PersistenceError> {
        let mut files = Files::default();
        for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
            let entry = entry.map_err(io_error("listing", dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            if !name.starts_with("tmpvault.") || name.ends_with(DISCARDED_SUFFIX) {
                continue;
            }
            if name.contains(TEMP_INFIX) {
                files.temps.push(path);
            } else if name == SNAPSHOT_FILE {
                files.snapshot = Some(path);
            } else if let Some(generation) = name
                .strip_prefix(JOURNAL_PREFIX)
                .filter(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse().ok())
            {
                files.journals.insert(generation, path);
            }
        }
        Ok(files)
    }

    /// The highest generation any file here names or belongs to.
    fn last_generation(&self, snapshot_generation: Option<u64>) -> u64 {
        let journals = self.journals.keys().next_back().copied().unwrap_or(0);
        journals.max(snapshot_generation.unwrap_or(0))
    }

    /// Moves the snapshot and journals aside (`--snapshot-on-error=discard`).
    fn discard(&self) {
        for path in self.snapshot.iter().chain(self.journals.values()) {
            let mut aside = path.clone().into_os_string();
            aside.push(DISCARDED_SUFFIX);
            match fs::rename(path, &aside) {
                Ok(()) => tracing::error!(
                    file = %path.display(),
                    moved_to = %Path::new(&aside).display(),
                    "DISCARDED: moved aside, its secrets are not restored"
                ),
                Err(error) => {
                    tracing::error!(file = %path.display(), %error, "could not move aside");
                }
            }
        }
    }
}

fn file_len(file: &File, path: &Path) -> Result<u64, PersistenceError> {
    file.metadata()
        .map(|metadata| metadata.len())
        .map_err(io_error("reading", path))
}

// ---------------------------------------------------------------------------
// Replay

/// One key's state while the snapshot and journals are replayed.
enum Slot {
    Live(Record),
    /// Removed by the change with this seq.
    Gone(u64),
}

impl Slot {
    fn seq(&self) -> u64 {
        match self {
            Slot::Live(record) => record.seq,
            Slot::Gone(seq) => *seq,
        }
    }
}

/// The store being rebuilt from the files.
#[derive(Default)]
struct Replay {
    slots: HashMap<Key, Slot>,
    applied: u64,
    skipped: u64,
}

impl Replay {
    fn insert_snapshot(&mut self, record: Record) -> Result<(), String> {
        let key = record.key.clone();
        if self.slots.insert(key.clone(), Slot::Live(record)).is_some() {
            return Err(format!("the key {key} appears twice"));
        }
        Ok(())
    }

    /// Applies one journaled change if it is newer than what the key has.
    fn apply(&mut self, change: Change<Key, SecretBytes>) {
        let Change { key, seq, op } = change;
        let slot = self.slots.get_mut(&key);
        if slot.as_ref().is_some_and(|slot| slot.seq() >= seq) {
            // The snapshot (or an earlier record) already holds it.
            self.skipped += 1;
            return;
        }
        let live = match slot {
            Some(Slot::Live(record)) => Some(record),
            _ => None,
        };
        let mut applied = true;
        match (op, live) {
            (
                ChangeOp::Put {
                    value,
                    revision,
                    version,
                    created_at,
                    updated_at,
                    expires_at,
                    reads_left,
                    content_type,
                },
                _,
            ) => {
                let record = Record {
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
                };
                self.slots.insert(key, Slot::Live(record));
            }
            (
                ChangeOp::Push {
                    item,
                    created: true,
                    revision,
                    version,
                    created_at,
                    updated_at,
                    expires_at,
                },
                _,
            ) => {
                let record = Record {
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
                };
                self.slots.insert(key, Slot::Live(record));
            }
            (
                ChangeOp::Push {
                    item,
                    revision,
                    version,
                    updated_at,
                    ..
                },
                Some(record),
            ) => match &mut record.value {
                RecordValue::List(items) => {
                    items.push_back(item);
                    (record.seq, record.revision, record.version) = (seq, revision, version);
                    record.updated_at = updated_at;
                }
                RecordValue::Secret(_) => applied = false,
            },
            (
                ChangeOp::Pop {
                    end,
                    revision,
                    version,
                    updated_at,
                },
                Some(record),
            ) => match &mut record.value {
                RecordValue::List(items) => {
                    let _popped = match end {
                        crate::store::End::Newest => items.pop_back(),
                        crate::store::End::Oldest => items.pop_front(),
                    };
                    if items.is_empty() {
                        self.slots.insert(key, Slot::Gone(seq));
                    } else {
                        (record.seq, record.revision, record.version) = (seq, revision, version);
                        record.updated_at = updated_at;
                    }
                }
                RecordValue::Secret(_) => applied = false,
            },
            (
                ChangeOp::Renew {
                    expires_at,
                    updated_at,
                },
                Some(record),
            ) => {
                record.seq = seq;
                record.expires_at = expires_at;
                record.updated_at = updated_at;
            }
            (ChangeOp::Read { reads_left }, Some(record)) => {
                if reads_left == 0 {
                    self.slots.insert(key, Slot::Gone(seq));
                } else {
                    record.seq = seq;
                    record.reads_left = Some(reads_left);
                }
            }
            (ChangeOp::Delete, _) => {
                self.slots.insert(key, Slot::Gone(seq));
            }
            // A change to an entry that is not there: it was removed before
            // the snapshot was exported (see the module docs).
            (_, None) => applied = false,
        }
        if applied {
            self.applied += 1;
        } else {
            self.skipped += 1;
        }
    }

    fn into_records(self) -> impl Iterator<Item = Record> {
        self.slots.into_values().filter_map(|slot| match slot {
            Slot::Live(record) => Some(record),
            Slot::Gone(_) => None,
        })
    }
}

/// What the files held.
struct Loaded {
    replay: Replay,
    /// The highest generation seen, so new journals come after it.
    last_generation: u64,
    /// The frames the newest journal holds, for its successor's start frame.
    last_journal_frames: Option<u64>,
    journals_read: usize,
}

fn format_error(kind: FileKind, path: &Path) -> impl FnOnce(FormatError) -> PersistenceError {
    let path = path.display().to_string();
    move |source| PersistenceError::Format {
        kind: match kind {
            FileKind::Snapshot => "snapshot",
            FileKind::Journal => "journal",
        },
        path,
        source,
    }
}

fn load(files: &Files, key: Option<&SnapshotKey>) -> Result<Loaded, PersistenceError> {
    let mut replay = Replay::default();
    let mut snapshot_generation = None;
    if let Some(path) = &files.snapshot {
        let file = open_scratch(OpenOptions::new().read(true), "opening", path)?;
        let len = file_len(&file, path)?;
        let contents = snapshot::read_snapshot(file, len, key)
            .map_err(format_error(FileKind::Snapshot, path))?;
        snapshot_generation = Some(contents.header.generation);
        for record in contents.records {
            replay
                .insert_snapshot(record)
                .map_err(|reason| PersistenceError::Inconsistent {
                    path: path.display().to_string(),
                    reason,
                })?;
        }
    }
    // The journals that follow the snapshot (all of them without one); the
    // older ones were folded into it and are removed after the next snapshot.
    let first = snapshot_generation.or_else(|| files.journals.keys().next().copied());
    let wanted: Vec<(u64, &PathBuf)> = match first {
        Some(first) => files
            .journals
            .range(first..)
            .map(|(generation, path)| (*generation, path))
            .collect(),
        None => Vec::new(),
    };
    match (&files.snapshot, snapshot_generation, wanted.first()) {
        (Some(path), Some(first), found) if found.map(|(g, _)| *g) != Some(first) => {
            return Err(PersistenceError::Inconsistent {
                path: path.display().to_string(),
                reason: format!(
                    "the snapshot is followed by journal {}, which is missing",
                    journal_name(first)
                ),
            });
        }
        // Only the very first journal (a crash before the first snapshot
        // was renamed into place) may be there without a snapshot.
        (None, _, Some((generation, path))) if *generation != 1 => {
            return Err(PersistenceError::Inconsistent {
                path: path.display().to_string(),
                reason: format!("it continues a snapshot, and {SNAPSHOT_FILE} is missing"),
            });
        }
        _ => {}
    }
    // The previous journal read: its path, its complete frames, and where
    // its torn end starts if it has one.
    let mut previous: Option<(&PathBuf, u64, Option<u64>)> = None;
    for (position, (generation, path)) in wanted.iter().enumerate() {
        if let Some((previous, _)) = position.checked_sub(1).map(|p| wanted[p]) {
            if *generation != previous + 1 {
                return Err(PersistenceError::Inconsistent {
                    path: path.display().to_string(),
                    reason: format!(
                        "journal {} before it is missing",
                        journal_name(previous + 1)
                    ),
                });
            }
        }
        let file = open_scratch(OpenOptions::new().read(true), "opening", path)?;
        let len = file_len(&file, path)?;
        let contents = snapshot::read_journal(&file, len, key)
            .map_err(format_error(FileKind::Journal, path))?;
        if contents.header.generation != *generation {
            return Err(PersistenceError::Inconsistent {
                path: path.display().to_string(),
                reason: format!(
                    "its header says generation {}: the file was renamed",
                    contents.header.generation
                ),
            });
        }
        // Every journal but the newest must hold exactly what its successor
        // says it ended with: none can lose records from its end unnoticed.
        if let Some((previous_path, frames, torn_at)) = previous {
            if contents.previous_frames != Some(frames) {
                return Err(PersistenceError::Inconsistent {
                    path: previous_path.display().to_string(),
                    reason: format!(
                        "it holds {frames} records, but {} says it ended with {}: it was cut \
                         short or added to",
                        journal_name(*generation),
                        contents
                            .previous_frames
                            .map_or_else(|| "none".to_owned(), |n| n.to_string())
                    ),
                });
            }
            if let Some(valid) = torn_at {
                // A write that failed, was refused (503), and could not be
                // cut off then.
                truncate(previous_path, valid)?;
            }
        }
        for change in contents.changes {
            replay.apply(change);
        }
        previous = Some((path, contents.frames, contents.torn_at));
    }
    if let Some((path, _, Some(valid))) = previous {
        tracing::warn!(
            journal = %path.display(),
            valid_bytes = valid,
            "the journal's last record is torn (the server was killed while appending it; that \
             change was never acknowledged): truncating it"
        );
        truncate(path, valid)?;
    }
    Ok(Loaded {
        replay,
        last_generation: files.last_generation(snapshot_generation),
        last_journal_frames: previous.map(|(_, frames, _)| frames),
        journals_read: wanted.len(),
    })
}

fn truncate(path: &Path, len: u64) -> Result<(), PersistenceError> {
    open_scratch(OpenOptions::new().write(true), "truncating", path)?
        .set_len(len)
        .map_err(io_error("truncating", path))
}

// ---------------------------------------------------------------------------
// The running persistence

/// Counters of the last snapshot, for `/metrics`.
#[derive(Debug, Default)]
struct SnapshotStats {
    /// Milliseconds since the Unix epoch of the last success; 0 for never.
    last_success_ms: AtomicU64,
    bytes: AtomicU64,
    entries: AtomicU64,
    duration_us: AtomicU64,
    total: AtomicU64,
    failures: AtomicU64,
}

/// Guarded by the snapshot mutex: one snapshot at a time.
#[derive(Debug)]
struct SnapshotState {
    /// The generation of the current journal.
    generation: u64,
    /// Set by the final snapshot: no snapshot may follow the wipe.
    closed: bool,
    /// At startup, the frames of the newest journal on disk, for the start
    /// frame of the first journal this process makes.
    carried_frames: Option<u64>,
}

/// Snapshots and journal of one store.
pub struct Persistence {
    dir: PathBuf,
    key: Option<SnapshotKey>,
    journal: Journal,
    state: Mutex<SnapshotState>,
    stats: SnapshotStats,
    /// Held for the life of the process: the scratch dir is ours.
    _lock: Flock<File>,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("dir", &self.dir)
            .field("encrypted", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

fn lock_state(state: &Mutex<SnapshotState>) -> MutexGuard<'_, SnapshotState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Opens persistence for `settings`: restores `store` from the scratch dir,
/// takes a first snapshot (which also proves the directory is writable),
/// and from then on journals every change to the store and snapshots it
/// every interval. Runs before the listener is bound, so nothing is served
/// until the restore is complete.
pub async fn start(
    settings: Settings,
    store: &Store,
) -> Result<Arc<Persistence>, PersistenceError> {
    let interval = settings.interval;
    let restoring = store.clone();
    let persistence = tokio::task::spawn_blocking(move || Persistence::open(settings, &restoring))
        .await
        .map_err(|error| PersistenceError::Task(error.to_string()))??;
    let persistence = Arc::new(persistence);
    store.set_change_log(Arc::clone(&persistence) as Arc<dyn ChangeLog>);
    tokio::spawn(periodic(store.clone(), Arc::clone(&persistence), interval));
    Ok(persistence)
}

impl Persistence {
    /// Restores `store` and takes the first snapshot; see [`start`].
    pub fn open(settings: Settings, store: &Store) -> Result<Persistence, PersistenceError> {
        let dir = settings.dir;
        let shown = dir.display().to_string();
        let key = match settings.mode {
            SnapshotSetting::Encrypted => {
                let path = settings.key_file.as_deref().ok_or_else(|| {
                    PersistenceError::Key(KeyFileError::NotAKey {
                        path: "(none)".into(),
                        size: "nothing: --snapshot-key-file is not set".into(),
                    })
                })?;
                Some(SnapshotKey::load(path)?)
            }
            _ => {
                // The self-check refuses this too; a second look costs
                // nothing, and `dev`-mode callers do not stop on a failed check.
                if crate::sysinfo::fs_magic(&dir).ok() != Some(crate::sysinfo::TMPFS_MAGIC) {
                    return Err(PersistenceError::PlainOutsideTmpfs { dir: shown });
                }
                None
            }
        };
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = open_scratch(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600),
            "opening",
            &lock_path,
        )?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| PersistenceError::Locked { dir: shown.clone() })?;

        let files = Files::scan(&dir)?;
        for temp in &files.temps {
            match fs::remove_file(temp) {
                Ok(()) => tracing::info!(
                    file = %temp.display(),
                    "removed a temp file left by an interrupted write"
                ),
                Err(error) => tracing::warn!(file = %temp.display(), %error, "could not remove"),
            }
        }
        let started = Instant::now();
        let loaded = match load(&files, key.as_ref()) {
            Ok(loaded) => loaded,
            Err(error) if settings.on_error == SnapshotOnError::Discard => {
                tracing::error!(
                    %error,
                    "THE SNAPSHOT COULD NOT BE LOADED AND IS DISCARDED (--snapshot-on-error=discard): \
                     starting with an empty store"
                );
                files.discard();
                // Every journal was moved aside: numbering starts over.
                Loaded {
                    replay: Replay::default(),
                    last_generation: 0,
                    last_journal_frames: None,
                    journals_read: 0,
                }
            }
            Err(error) => return Err(error),
        };
        let (applied, skipped) = (loaded.replay.applied, loaded.replay.skipped);
        let (restored, expired) = store
            .import(loaded.replay.into_records())
            .map_err(PersistenceError::Budget)?;
        tracing::info!(
            dir = %shown,
            encrypted = key.is_some(),
            key_id = key.as_ref().map(SnapshotKey::id_hex).unwrap_or_default(),
            restored,
            expired,
            journals = loaded.journals_read,
            journal_changes_applied = applied,
            journal_changes_already_in_snapshot = skipped,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot restored"
        );
        let persistence = Persistence {
            dir,
            key,
            journal: Journal::default(),
            state: Mutex::new(SnapshotState {
                generation: loaded.last_generation,
                closed: false,
                carried_frames: loaded.last_journal_frames,
            }),
            stats: SnapshotStats::default(),
            _lock: lock,
        };
        persistence.snapshot(store, false)?;
        Ok(persistence)
    }

    /// Takes a snapshot now (see the module docs for the steps). With
    /// `last`, no other snapshot is taken after this one: the store is
    /// about to be wiped.
    pub fn snapshot(&self, store: &Store, last: bool) -> Result<(), PersistenceError> {
        let mut state = lock_state(&self.state);
        if state.closed {
            return Ok(());
        }
        state.closed = last;
        let started = Instant::now();
        let result = self.snapshot_locked(&mut state, store);
        let elapsed = started.elapsed();
        match &result {
            Ok((bytes, entries)) => {
                let now_ms = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as u64);
                self.stats.last_success_ms.store(now_ms, Ordering::Relaxed);
                self.stats.bytes.store(*bytes, Ordering::Relaxed);
                self.stats.entries.store(*entries, Ordering::Relaxed);
                self.stats
                    .duration_us
                    .store(elapsed.as_micros() as u64, Ordering::Relaxed);
                self.stats.total.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    generation = state.generation,
                    entries,
                    bytes,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "snapshot written"
                );
            }
            Err(error) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "snapshot failed; the previous snapshot and the journals still hold every change");
            }
        }
        result.map(drop)
    }

    fn snapshot_locked(
        &self,
        state: &mut SnapshotState,
        store: &Store,
    ) -> Result<(u64, u64), PersistenceError> {
        // 1. A new journal; every change from now on goes there. The
        // generation only moves on once the file exists, so a failure here
        // leaves no gap for a restore to trip over.
        let generation = state.generation + 1;
        let carried = state.carried_frames;
        self.journal
            .rotate(|previous| self.create_journal(generation, previous.or(carried)))?;
        state.generation = generation;
        state.carried_frames = None;
        // 2 and 3. The store as it is now (each entry with the seq of its
        // last change), a shard at a time, into the snapshot naming the new
        // journal.
        let header = Header::new(FileKind::Snapshot, self.key.as_ref(), generation)?;
        let temp = AtomicFile::create(&self.dir, SNAPSHOT_FILE)?;
        let writing = io_error("writing", &temp.temp);
        let written = (|| {
            let mut writer = SnapshotWriter::new(temp.file(), &header, self.key.as_ref())?;
            store
                .export_each(|records| records.iter().try_for_each(|record| writer.add(record)))?;
            writer.finish()
        })();
        let (_, bytes, entries) = written.map_err(writing)?;
        temp.commit()?;
        // 4. The journals it replaces.
        let files = Files::scan(&self.dir)?;
        for (_, path) in files.journals.range(..generation) {
            if let Err(error) = fs::remove_file(path) {
                tracing::warn!(journal = %path.display(), %error, "could not remove an old journal");
            }
        }
        Ok((bytes, entries))
    }

    /// A new journal: header and start frame, written atomically.
    fn create_journal(
        &self,
        generation: u64,
        previous_frames: Option<u64>,
    ) -> Result<JournalFile, PersistenceError> {
        let header = Header::new(FileKind::Journal, self.key.as_ref(), generation)?;
        let mut sealer = FileSealer::new(&header, self.key.as_ref());
        let mut start = snapshot::start_frame(previous_frames);
        let name = journal_name(generation);
        sealer.seal(FrameKind::Start, &mut start).map_err(io_error(
            "sealing the start frame of",
            &self.dir.join(&name),
        ))?;
        let temp = AtomicFile::create(&self.dir, &name)?;
        temp.file()
            .write_all(sealer.header())
            .and_then(|()| temp.file().write_all(start.as_bytes()))
            .map_err(io_error("writing", &temp.temp))?;
        temp.commit()?;
        let len = (snapshot::HEADER_LEN + start.as_bytes().len()) as u64;
        let path = self.dir.join(&name);
        let file = open_scratch(OpenOptions::new().append(true), "opening", &path)?;
        Ok(JournalFile::new(file, path, sealer, len))
    }

    /// The final snapshot, after which no other is taken.
    pub fn final_snapshot(&self, store: &Store) {
        let started = Instant::now();
        if self.snapshot(store, true).is_ok() {
            tracing::info!(
                entries = self.stats.entries.load(Ordering::Relaxed),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "final snapshot written"
            );
        }
    }

    fn is_closed(&self) -> bool {
        lock_state(&self.state).closed
    }

    /// The numbers `/metrics` shows.
    pub fn metrics(&self) -> PersistenceMetrics {
        let last = self.stats.last_success_ms.load(Ordering::Relaxed);
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let (journal_records, journal_bytes) = self.journal.stats();
        PersistenceMetrics {
            snapshot_age_seconds: (last > 0).then(|| now_ms.saturating_sub(last) as f64 / 1000.0),
            snapshot_bytes: self.stats.bytes.load(Ordering::Relaxed),
            snapshot_entries: self.stats.entries.load(Ordering::Relaxed),
            snapshot_duration_seconds: self.stats.duration_us.load(Ordering::Relaxed) as f64 / 1e6,
            snapshots_total: self.stats.total.load(Ordering::Relaxed),
            snapshot_failures_total: self.stats.failures.load(Ordering::Relaxed),
            journal_records,
            journal_bytes,
            journal_failures_total: self.journal.failures(),
        }
    }
}

impl ChangeLog for Persistence {
    fn append(&self, change: &Change<&Key, &SecretBytes>) -> io::Result<()> {
        self.journal.append(change)
    }

    fn before_wipe(&self, store: &Store) {
        // Blocking file I/O on the runtime: this is shutdown, after the
        // drain, and nothing else is waiting.
        self.final_snapshot(store);
    }
}

/// Snapshots every interval, and at once when the journal fails, until
/// the final snapshot.
async fn periodic(store: Store, persistence: Arc<Persistence>, interval: Duration) {
    let mut next = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = persistence.journal.failed().notified() => {
                tracing::warn!("taking a snapshot now to start a new journal");
            }
        }
        if persistence.is_closed() {
            return;
        }
        let (taking, of) = (Arc::clone(&persistence), store.clone());
        let result = tokio::task::spawn_blocking(move || taking.snapshot(&of, false)).await;
        let failed = !matches!(result, Ok(Ok(())));
        next = tokio::time::Instant::now()
            + if failed {
                interval.min(RETRY_AFTER_FAILURE)
            } else {
                interval
            };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{End, Precondition, PutOptions};
    use std::sync::Arc;
    use tempfile::TempDir;

    fn key(raw: &str) -> Key {
        Key::parse(raw).unwrap()
    }

    fn put(store: &Store, name: &str, value: &[u8], max_reads: Option<u32>) {
        let options = PutOptions {
            ttl: Duration::from_secs(600),
            max_reads,
            content_type: crate::store::MediaType::from("text/plain"),
            precondition: Precondition::None,
        };
        store
            .put(&key(name), SecretBytes::copy_from(value), options)
            .unwrap();
    }

    fn value(store: &Store, name: &str) -> Option<Vec<u8>> {
        store
            .get(&key(name), false)
            .ok()
            .map(|(bytes, _)| bytes.expose().to_vec())
    }

    fn scratch() -> TempDir {
        tempfile::Builder::new()
            .prefix("tmpvault-persistence-")
            .tempdir_in("/dev/shm")
            .unwrap()
    }

    /// A key file in its own directory (not the scratch dir, which a crash
    /// copy duplicates).
    fn key_file(byte: u8) -> (TempDir, PathBuf) {
        let dir = scratch();
        let path = dir.path().join("snapshot.key");
        let key = SnapshotKey::from_bytes(zeroize::Zeroizing::new([byte; 32]));
        fs::write(&path, key.to_base64_line().as_bytes()).unwrap();
        (dir, path)
    }

    fn settings(dir: &Path, key_file: Option<&Path>) -> Settings {
        Settings {
            dir: dir.to_owned(),
            mode: if key_file.is_some() {
                SnapshotSetting::Encrypted
            } else {
                SnapshotSetting::Plain
            },
            key_file: key_file.map(Path::to_owned),
            interval: Duration::from_secs(3600),
            on_error: SnapshotOnError::Refuse,
        }
    }

    /// Opens persistence on `dir` for a new store, journaling its changes.
    fn open(settings: Settings) -> Result<(Store, Arc<Persistence>), PersistenceError> {
        let store = Store::new(1 << 24);
        let persistence = Arc::new(Persistence::open(settings, &store)?);
        store.set_change_log(Arc::clone(&persistence) as Arc<dyn ChangeLog>);
        Ok((store, persistence))
    }

    /// What a `kill -9` would leave: the files as they are, in a new
    /// directory (the running store keeps its lock on the old one).
    fn crash_copy(dir: &Path) -> TempDir {
        let copy = scratch();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if name.starts_with("tmpvault.") && name != LOCK_FILE {
                fs::copy(entry.path(), copy.path().join(&name)).unwrap();
            }
        }
        copy
    }

    fn journals(dir: &Path) -> Vec<u64> {
        Files::scan(dir).unwrap().journals.into_keys().collect()
    }

    #[tokio::test]
    async fn every_acknowledged_change_survives_a_crash() {
        let (_keys, key_path) = key_file(1);
        let dir = scratch();
        let (store, _persistence) = open(settings(dir.path(), Some(&key_path))).unwrap();
        put(&store, "a", b"alpha", None);
        put(&store, "b", b"bravo", None);
        put(&store, "b", b"bravo-2", None);
        put(&store, "once", b"read-once", Some(2));
        store.get(&key("once"), true).unwrap();
        put(&store, "gone", b"x", None);
        store.delete(&key("gone")).unwrap();
        let ttl = Duration::from_secs(600);
        for item in [&b"1"[..], b"2", b"3"] {
            store
                .push(&key("pool"), SecretBytes::copy_from(item), ttl)
                .unwrap();
        }
        store.pop(&key("pool"), End::Oldest).unwrap();
        store.renew(&key("a"), Duration::from_secs(60)).unwrap();

        let crashed = crash_copy(dir.path());
        let (restored, _p) = open(settings(crashed.path(), Some(&key_path))).unwrap();
        assert_eq!(value(&restored, "a").unwrap(), b"alpha");
        assert_eq!(value(&restored, "b").unwrap(), b"bravo-2");
        assert_eq!(value(&restored, "gone"), None);
        let once = restored.meta(&key("once")).unwrap();
        assert_eq!(once.reads_left, Some(1));
        for name in ["a", "b", "once", "pool"] {
            let (before, after) = (
                store.meta(&key(name)).unwrap(),
                restored.meta(&key(name)).unwrap(),
            );
            assert_eq!(
                (
                    after.version,
                    after.revision,
                    after.created_at,
                    after.updated_at
                ),
                (
                    before.version,
                    before.revision,
                    before.created_at,
                    before.updated_at
                ),
                "{name}"
            );
            let drift = after
                .expires_at
                .duration_since(before.expires_at)
                .or_else(|_| before.expires_at.duration_since(after.expires_at))
                .unwrap();
            assert!(drift < Duration::from_millis(100), "{name}: {drift:?}");
        }
        assert_eq!(
            restored.pop(&key("pool"), End::Oldest).unwrap().0.expose(),
            b"2"
        );
        // The restore folded everything into a new snapshot and one journal.
        assert_eq!(journals(crashed.path()).len(), 1);
    }

    #[tokio::test]
    async fn a_snapshot_and_the_journal_after_it_replay_once() {
        let (_keys, key_path) = key_file(2);
        let dir = scratch();
        let (store, persistence) = open(settings(dir.path(), Some(&key_path))).unwrap();
        put(&store, "a", b"1", None);
        let ttl = Duration::from_secs(600);
        store
            .push(&key("l"), SecretBytes::copy_from(b"x"), ttl)
            .unwrap();
        persistence.snapshot(&store, false).unwrap();
        store
            .push(&key("l"), SecretBytes::copy_from(b"y"), ttl)
            .unwrap();
        put(&store, "a", b"2", None);
        let crashed = crash_copy(dir.path());
        let (restored, _p) = open(settings(crashed.path(), Some(&key_path))).unwrap();
        assert_eq!(value(&restored, "a").unwrap(), b"2");
        assert_eq!(restored.meta(&key("l")).unwrap().size, 2, "y pushed once");
    }

    #[test]
    fn replay_applies_only_what_is_newer() {
        let at = SystemTime::now() + Duration::from_secs(600);
        let secret = |value: &[u8], seq| Record {
            key: key("k"),
            value: RecordValue::Secret(Arc::new(SecretBytes::copy_from(value))),
            seq,
            revision: seq,
            version: 1,
            created_at: at,
            updated_at: at,
            expires_at: at,
            reads_left: Some(3),
            content_type: Some(crate::store::MediaType::from("text/plain")),
        };
        let change = |seq, op| Change {
            key: key("k"),
            seq,
            op,
        };
        let put = |value: &[u8]| ChangeOp::Put {
            value: SecretBytes::copy_from(value),
            revision: 0,
            version: 2,
            created_at: at,
            updated_at: at,
            expires_at: at,
            reads_left: None,
            content_type: crate::store::MediaType::from("text/plain"),
        };
        let state = |replay: &Replay| match replay.slots.get(&key("k")) {
            Some(Slot::Live(record)) => match &record.value {
                RecordValue::Secret(bytes) => {
                    format!(
                        "{} {:?}",
                        String::from_utf8_lossy(bytes.expose()),
                        record.reads_left
                    )
                }
                RecordValue::List(items) => format!("list of {}", items.len()),
            },
            Some(Slot::Gone(seq)) => format!("gone at {seq}"),
            None => "absent".into(),
        };

        // The snapshot already holds seq 10: older records are skipped.
        let mut replay = Replay::default();
        replay.insert_snapshot(secret(b"snap", 10)).unwrap();
        replay.apply(change(9, put(b"older")));
        replay.apply(change(10, ChangeOp::Read { reads_left: 0 }));
        assert_eq!(state(&replay), "snap Some(3)");
        replay.apply(change(11, ChangeOp::Read { reads_left: 2 }));
        assert_eq!(state(&replay), "snap Some(2)");
        replay.apply(change(12, ChangeOp::Read { reads_left: 0 }));
        assert_eq!(state(&replay), "gone at 12");
        // A delete leaves a tombstone that older writes cannot get past.
        replay.apply(change(11, put(b"stale")));
        assert_eq!(state(&replay), "gone at 12");
        replay.apply(change(13, put(b"new")));
        assert_eq!(state(&replay), "new None");
        replay.apply(change(14, ChangeOp::Delete));
        replay.apply(change(13, put(b"new")));
        assert_eq!(state(&replay), "gone at 14");

        // Changes that need an entry are skipped when there is none.
        let mut replay = Replay::default();
        replay.apply(change(
            5,
            ChangeOp::Renew {
                expires_at: at,
                updated_at: at,
            },
        ));
        replay.apply(change(
            6,
            ChangeOp::Pop {
                end: End::Newest,
                revision: 6,
                version: 2,
                updated_at: at,
            },
        ));
        assert_eq!(state(&replay), "absent");
        assert_eq!((replay.applied, replay.skipped), (0, 2));
        let push = |item: &[u8], created| ChangeOp::Push {
            item: SecretBytes::copy_from(item),
            created,
            revision: 0,
            version: 1,
            created_at: at,
            updated_at: at,
            expires_at: at,
        };
        replay.apply(change(7, push(b"a", false)));
        assert_eq!(state(&replay), "absent");
        replay.apply(change(8, push(b"a", true)));
        replay.apply(change(9, push(b"b", false)));
        assert_eq!(state(&replay), "list of 2");
        for seq in [10, 11] {
            replay.apply(change(
                seq,
                ChangeOp::Pop {
                    end: End::Oldest,
                    revision: seq,
                    version: 3,
                    updated_at: at,
                },
            ));
        }
        assert_eq!(state(&replay), "gone at 11");
    }

    #[tokio::test]
    async fn a_crash_before_the_rename_leaves_the_old_snapshot() {
        let (_keys, key_path) = key_file(3);
        let dir = scratch();
        let (store, persistence) = open(settings(dir.path(), Some(&key_path))).unwrap();
        put(&store, "k", b"old", None);
        persistence.snapshot(&store, false).unwrap();
        let older = journal_name(*journals(dir.path()).last().unwrap());
        let before_later = fs::metadata(dir.path().join(&older)).unwrap().len();
        put(&store, "later", b"journaled", None);
        // A snapshot that gets as far as a complete, fsynced temp file and
        // dies before the rename: steps 1 and 2 done, 3 half done.
        {
            let mut state = lock_state(&persistence.state);
            let generation = state.generation + 1;
            persistence
                .journal
                .rotate(|previous| persistence.create_journal(generation, previous))
                .unwrap();
            state.generation = generation;
        }
        put(&store, "k", b"new", None);
        let header = Header::new(FileKind::Snapshot, persistence.key.as_ref(), 99).unwrap();
        let temp = AtomicFile::create(dir.path(), SNAPSHOT_FILE).unwrap();
        let mut writer =
            SnapshotWriter::new(temp.file(), &header, persistence.key.as_ref()).unwrap();
        for record in store.export() {
            writer.add(&record).unwrap();
        }
        writer.finish().unwrap();
        temp.file().sync_all().unwrap();
        let temp_name = temp.temp.file_name().unwrap().to_owned();
        std::mem::forget(temp); // the crash: no rename, no cleanup

        let crashed = crash_copy(dir.path());
        assert!(crashed.path().join(&temp_name).exists());
        assert_eq!(journals(crashed.path()).len(), 2);
        let (restored, _p) = open(settings(crashed.path(), Some(&key_path))).unwrap();
        assert_eq!(value(&restored, "k").unwrap(), b"new");
        assert_eq!(value(&restored, "later").unwrap(), b"journaled");
        assert!(
            !crashed.path().join(&temp_name).exists(),
            "the temp file is removed"
        );

        // Cutting whole records off the older journal is noticed: its
        // successor's start record says how many it ended with.
        let cut = crash_copy(dir.path());
        truncate(&cut.path().join(&older), before_later).unwrap();
        let error = open(settings(cut.path(), Some(&key_path))).unwrap_err();
        assert!(error.to_string().contains("cut short"), "{error}");

        // Without the journals that follow it the snapshot is incomplete,
        // and a restore says so instead of silently losing changes.
        let without = crash_copy(dir.path());
        for generation in journals(without.path()) {
            fs::remove_file(without.path().join(journal_name(generation))).unwrap();
        }
        let error = open(settings(without.path(), Some(&key_path))).unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[tokio::test]
    async fn a_torn_last_record_is_cut_off_and_the_rest_restored() {
        let dir = scratch();
        let (store, _persistence) = open(settings(dir.path(), None)).unwrap();
        put(&store, "first", b"1", None);
        put(&store, "second", b"2", None);
        let crashed = crash_copy(dir.path());
        let generation = journals(crashed.path())[0];
        let path = crashed.path().join(journal_name(generation));
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (restored, _p) = open(settings(crashed.path(), None)).unwrap();
        assert_eq!(value(&restored, "first").unwrap(), b"1");
        assert_eq!(value(&restored, "second"), None, "never acknowledged");
    }

    #[tokio::test]
    async fn damage_refuses_to_start_unless_discard() {
        let (_keys, key_path) = key_file(4);
        let dir = scratch();
        let (store, persistence) = open(settings(dir.path(), Some(&key_path))).unwrap();
        put(&store, "k", b"v", None);
        persistence.snapshot(&store, false).unwrap();

        let damaged = crash_copy(dir.path());
        let snapshot = damaged.path().join(SNAPSHOT_FILE);
        let mut bytes = fs::read(&snapshot).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x20;
        fs::write(&snapshot, &bytes).unwrap();
        let error = open(settings(damaged.path(), Some(&key_path))).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&snapshot.display().to_string()),
            "{message}"
        );
        assert!(message.contains("failed authentication"), "{message}");

        let (_other_keys, other_key) = key_file(5);
        let error = open(settings(damaged.path(), Some(&other_key))).unwrap_err();
        assert!(error.to_string().contains("different key"), "{error}");

        let mut discard = settings(damaged.path(), Some(&key_path));
        discard.on_error = SnapshotOnError::Discard;
        let (empty, _p) = open(discard).unwrap();
        assert_eq!(empty.stats().entries, 0);
        let mut aside = snapshot.into_os_string();
        aside.push(DISCARDED_SUFFIX);
        assert!(Path::new(&aside).exists());
    }

    #[tokio::test]
    async fn journals_without_their_snapshot_are_refused() {
        let dir = scratch();
        let (store, persistence) = open(settings(dir.path(), None)).unwrap();
        put(&store, "k", b"v", None);
        persistence.snapshot(&store, false).unwrap();
        put(&store, "later", b"v", None);
        let crashed = crash_copy(dir.path());
        fs::remove_file(crashed.path().join(SNAPSHOT_FILE)).unwrap();
        let error = open(settings(crashed.path(), None)).unwrap_err();
        assert!(
            error.to_string().contains("tmpvault.snapshot is missing"),
            "{error}"
        );

        // The very first journal alone is a crash before the first snapshot.
        let first = scratch();
        let (store, _p) = open(settings(first.path(), None)).unwrap();
        put(&store, "k", b"v", None);
        let crashed = crash_copy(first.path());
        fs::remove_file(crashed.path().join(SNAPSHOT_FILE)).unwrap();
        assert_eq!(journals(crashed.path()), [1]);
        let (restored, _p) = open(settings(crashed.path(), None)).unwrap();
        assert_eq!(value(&restored, "k").unwrap(), b"v");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_not_written() {
        let dir = scratch();
        let (store, persistence) = open(settings(dir.path(), None)).unwrap();
        let options = |seconds| PutOptions {
            ttl: Duration::from_secs(seconds),
            max_reads: None,
            content_type: crate::store::MediaType::from("text/plain"),
            precondition: Precondition::None,
        };
        store
            .put(&key("short"), SecretBytes::copy_from(b"s"), options(1))
            .unwrap();
        store
            .put(&key("long"), SecretBytes::copy_from(b"l"), options(600))
            .unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        persistence.snapshot(&store, false).unwrap();
        let file = File::open(dir.path().join(SNAPSHOT_FILE)).unwrap();
        let len = file.metadata().unwrap().len();
        let contents = snapshot::read_snapshot(file, len, None).unwrap();
        let keys: Vec<_> = contents.records.iter().map(|r| r.key.to_string()).collect();
        assert_eq!(keys, ["long"]);
    }

    /// Planted links and foreign files in the scratch dir: each refuses to
    /// start, naming the file, and nothing outside the dir is created, read
    /// or locked.
    #[tokio::test]
    async fn planted_links_and_foreign_files_are_refused_never_followed() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let outside = scratch();
        let target = outside.path().join("elsewhere");

        // The lock: the old code created and locked the link's target.
        let dir = scratch();
        symlink(&target, dir.path().join(LOCK_FILE)).unwrap();
        let error = open(settings(dir.path(), None)).unwrap_err().to_string();
        assert!(
            error.contains(LOCK_FILE) && error.contains("symbolic link"),
            "{error}"
        );
        assert!(!target.exists(), "the link's target was created");

        // A snapshot or journal linked to a file elsewhere is not read, even
        // with --snapshot-on-error=discard, which moves the link aside.
        fs::write(&target, b"not for tmpvault").unwrap();
        for name in [SNAPSHOT_FILE.to_owned(), journal_name(1)] {
            let dir = scratch();
            symlink(&target, dir.path().join(&name)).unwrap();
            let error = open(settings(dir.path(), None)).unwrap_err().to_string();
            assert!(
                error.contains(&name) && error.contains("symbolic link"),
                "{error}"
            );
            assert!(!error.contains("16"), "the target's size leaks: {error}");
            let mut discard = settings(dir.path(), None);
            discard.on_error = SnapshotOnError::Discard;
            let (empty, _p) = open(discard).unwrap();
            assert_eq!(empty.stats().entries, 0);
            assert_eq!(fs::read(&target).unwrap(), b"not for tmpvault");
        }

        // A snapshot others may read is not one tmpvault wrote.
        let dir = scratch();
        let (store, persistence) = open(settings(dir.path(), None)).unwrap();
        put(&store, "k", b"v", None);
        persistence.snapshot(&store, false).unwrap();
        let copy = crash_copy(dir.path());
        let snapshot = copy.path().join(SNAPSHOT_FILE);
        fs::set_permissions(&snapshot, fs::Permissions::from_mode(0o644)).unwrap();
        let error = open(settings(copy.path(), None)).unwrap_err().to_string();
        assert!(
            error.contains(SNAPSHOT_FILE) && error.contains("0644"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn one_server_per_directory() {
        let dir = scratch();
        let (_store, _persistence) = open(settings(dir.path(), None)).unwrap();
        let error = open(settings(dir.path(), None)).unwrap_err();
        assert!(matches!(error, PersistenceError::Locked { .. }), "{error}");
    }

    #[tokio::test]
    async fn the_final_snapshot_is_the_last() {
        let dir = scratch();
        let (store, persistence) = open(settings(dir.path(), None)).unwrap();
        put(&store, "k", b"v", None);
        store.before_wipe();
        store.wipe_all();
        persistence.snapshot(&store, false).unwrap();
        let crashed = crash_copy(dir.path());
        let (restored, _p) = open(settings(crashed.path(), None)).unwrap();
        assert_eq!(value(&restored, "k").unwrap(), b"v", "not the wiped store");
    }
}
