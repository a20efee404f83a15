//! The journal writer: one sealed frame per change, appended with a single
//! `write(2)` before the store applies the change, so before the client
//! gets its answer.
//!
//! - **Why no fsync.** The scratch dir is a tmpfs (`serve` refuses to start
//!   otherwise). On tmpfs the page cache is the file: once `write(2)` has
//!   returned, the bytes survive the process dying in any way (`kill -9`,
//!   the OOM killer, a panic under `panic = "abort"`), which is the failure
//!   the journal is for. `fsync` on tmpfs returns at once and adds nothing;
//!   a kernel crash or power loss takes the tmpfs, and the secrets, with it.
//!   Snapshots are still fsynced (and their directory too), because that is
//!   what makes a rename atomic on every filesystem, and costs one call per
//!   snapshot rather than one per request.
//! - **Ordering.** The store calls [`Journal::append`] inside the key's
//!   shard lock, so the journal holds the changes to one key in the order
//!   the store made them. The journal's own mutex is taken only inside a
//!   shard lock or alone (rotation), never the other way round, so the two
//!   cannot deadlock. The change is encoded before that mutex is taken; only
//!   sealing (a few microseconds of AES-GCM) and the `write(2)` are under it.
//! - **Failure.** If a write fails (the tmpfs is full), the partial frame is
//!   cut off, the change is refused (the client gets 503), and the file is
//!   never written again: its next frame index, which is also its next
//!   nonce, has been used. Appends are refused until the next snapshot
//!   starts a new journal; [`Journal::failed`] wakes the snapshot task to do
//!   that at once. The new journal's start record says how many records
//!   the failed one holds, so a restore accepts its end as it is.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::persist::snapshot::{self, FileSealer, FrameKind};
use crate::store::key::Key;
use crate::store::secret::SecretBytes;
use crate::store::Change;

/// An open journal file, ready to append to.
#[derive(Debug)]
pub struct JournalFile {
    file: File,
    path: PathBuf,
    sealer: FileSealer,
    /// Bytes known to be written: the header and every complete frame.
    len: u64,
    /// Complete frames in the file, the start frame included.
    frames: u64,
    failed: bool,
}

impl JournalFile {
    /// A journal whose header and start frame (`len` bytes) are already
    /// written to `file` (opened for appending) at `path`.
    pub fn new(file: File, path: PathBuf, sealer: FileSealer, len: u64) -> JournalFile {
        JournalFile {
            file,
            path,
            sealer,
            len,
            frames: 1,
            failed: false,
        }
    }
}

/// The current journal file, swapped at every snapshot.
#[derive(Debug, Default)]
pub struct Journal {
    current: Mutex<Option<JournalFile>>,
    /// Records and bytes in the current file, for `/metrics`.
    records: AtomicU64,
    bytes: AtomicU64,
    /// Appends that failed since start.
    failures: AtomicU64,
    failed: Notify,
}

fn lock(current: &Mutex<Option<JournalFile>>) -> MutexGuard<'_, Option<JournalFile>> {
    // Every mutation under this lock leaves the file state consistent (the
    // length is only advanced after a complete write), so a panic elsewhere
    // while it was held does not make it unusable.
    current
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Journal {
    /// Appends `change` as one frame. On `Ok` the frame is in the file.
    pub fn append(&self, change: &Change<&Key, &SecretBytes>) -> io::Result<()> {
        // Encoded outside the lock; wiped when it drops, after the lock is
        // released (it is declared first).
        let mut frame = snapshot::change_frame(change);
        let mut current = lock(&self.current);
        let Some(journal) = current.as_mut() else {
            return Err(io::Error::other("no journal is open"));
        };
        if journal.failed {
            return Err(io::Error::other(
                "the journal failed earlier; changes wait for the next snapshot",
            ));
        }
        // A frame that could not be sealed used up its index too: the
        // journal is retired either way.
        let written = journal
            .sealer
            .seal(FrameKind::Change, &mut frame)
            .and_then(|()| (&journal.file).write_all(frame.as_bytes()));
        match written {
            Ok(()) => {
                let len = frame.as_bytes().len() as u64;
                journal.len += len;
                journal.frames += 1;
                self.records.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(len, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                journal.failed = true;
                // Cut off a partial frame so the file reads back cleanly
                // (if this fails too, a restart sees a torn last frame).
                let truncated = journal.file.set_len(journal.len);
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    journal = %journal.path.display(),
                    %error,
                    truncated = truncated.is_ok(),
                    "writing to the journal failed: changes are refused (503) until a snapshot \
                     starts a new journal"
                );
                self.failed.notify_one();
                Err(error)
            }
        }
    }

    /// Replaces the current journal with the one `create` makes, given the
    /// number of frames the current one ends with (its successor's start
    /// frame records it). Appends wait meanwhile, so that number is final;
    /// on tmpfs creating a file takes microseconds. If `create` fails the
    /// current journal stays.
    pub fn rotate<E>(
        &self,
        create: impl FnOnce(Option<u64>) -> Result<JournalFile, E>,
    ) -> Result<(), E> {
        let mut current = lock(&self.current);
        let next = create(current.as_ref().map(|journal| journal.frames))?;
        self.records.store(0, Ordering::Relaxed);
        self.bytes.store(next.len, Ordering::Relaxed);
        // The previous file is closed here; it is complete.
        *current = Some(next);
        Ok(())
    }

    /// Records and bytes in the current journal file.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Appends that failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Notified when an append fails and the journal stops taking changes.
    pub fn failed(&self) -> &Notify {
        &self.failed
    }
}
