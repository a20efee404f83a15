//! Snapshots and the journal on disk: which files exist, how they are
//! written atomically, how a restart reads them back, and when snapshots
//! are taken. The byte format is [`crate::persist::snapshot`]; appending is
//! [`crate::persist::journal`].
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

pub mod journal;
pub mod snapshot;

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
use crate::persist::journal::{Journal, JournalFile};
use crate::persist::snapshot::{
    FileKind, FileSealer, FormatError, FrameKind, Header, KeyFileError, SnapshotKey, SnapshotWriter,
};
use crate::store::key::Key;
use crate::store::secret::SecretBytes;
use crate::store::{Applied, Change, ChangeLog, ChangeOp, Record, Store, StoreError};

mod atomic;
mod files;
mod replay;
mod running;

pub use self::atomic::*;
use self::files::*;
use self::replay::*;
pub use self::running::*;

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

impl PersistenceError {
    /// A sound snapshot or journal holds a value that the secret arena has
    /// no room for: never discarded, whatever `--snapshot-on-error` says.
    pub fn is_arena_full(&self) -> bool {
        matches!(
            self,
            PersistenceError::Format {
                source: FormatError::ArenaFull { .. },
                ..
            }
        )
    }
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

#[cfg(test)]
mod tests;
