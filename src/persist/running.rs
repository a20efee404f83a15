//! The running persistence

use super::*;

/// Counters of the last snapshot, for `/metrics`.
#[derive(Debug, Default)]
pub(super) struct SnapshotStats {
    /// Milliseconds since the Unix epoch of the last success; 0 for never.
    pub(super) last_success_ms: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) entries: AtomicU64,
    pub(super) duration_us: AtomicU64,
    pub(super) total: AtomicU64,
    pub(super) failures: AtomicU64,
}

/// Guarded by the snapshot mutex: one snapshot at a time.
#[derive(Debug)]
pub(super) struct SnapshotState {
    /// The generation of the current journal.
    pub(super) generation: u64,
    /// Set by the final snapshot: no snapshot may follow the wipe.
    pub(super) closed: bool,
    /// At startup, the frames of the newest journal on disk, for the start
    /// frame of the first journal this process makes.
    pub(super) carried_frames: Option<u64>,
}

/// Snapshots and journal of one store.
pub struct Persistence {
    pub(super) dir: PathBuf,
    pub(super) key: Option<SnapshotKey>,
    pub(super) journal: Journal,
    pub(super) state: Mutex<SnapshotState>,
    pub(super) stats: SnapshotStats,
    /// Held for the life of the process: the scratch dir is ours.
    pub(super) _lock: Flock<File>,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("dir", &self.dir)
            .field("encrypted", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

pub(super) fn lock_state(state: &Mutex<SnapshotState>) -> MutexGuard<'_, SnapshotState> {
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

/// The key of encrypted snapshots; for plain ones, the check that the
/// directory is a tmpfs.
fn snapshot_key(settings: &Settings) -> Result<Option<SnapshotKey>, PersistenceError> {
    let dir = &settings.dir;
    match settings.mode {
        SnapshotSetting::Encrypted => {
            let path = settings.key_file.as_deref().ok_or_else(|| {
                PersistenceError::Key(KeyFileError::NotAKey {
                    path: "(none)".into(),
                    size: "nothing: --snapshot-key-file is not set".into(),
                })
            })?;
            Ok(Some(SnapshotKey::load(path)?))
        }
        _ => {
            // The self-check refuses this too; a second look costs
            // nothing, and `dev`-mode callers do not stop on a failed check.
            if crate::sys::fs_magic(dir).ok() != Some(crate::sys::TMPFS_MAGIC) {
                return Err(PersistenceError::PlainOutsideTmpfs {
                    dir: dir.display().to_string(),
                });
            }
            Ok(None)
        }
    }
}

/// The lock that keeps a second server off the same directory.
fn lock_dir(dir: &Path) -> Result<Flock<File>, PersistenceError> {
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
    Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| PersistenceError::Locked {
        dir: dir.display().to_string(),
    })
}

impl Persistence {
    /// Restores `store` and takes the first snapshot; see [`start`].
    pub fn open(settings: Settings, store: &Store) -> Result<Persistence, PersistenceError> {
        let key = snapshot_key(&settings)?;
        let dir = settings.dir;
        let shown = dir.display().to_string();
        let lock = lock_dir(&dir)?;

        let files = Files::scan(&dir)?;
        files.remove_temps();
        let started = Instant::now();
        let loaded = match load(&files, key.as_ref()) {
            Ok(loaded) => loaded,
            // A value that does not fit in the arena is a limit too small,
            // not a damaged file: discarding would lose sound data.
            Err(error)
                if settings.on_error == SnapshotOnError::Discard && !error.is_arena_full() =>
            {
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

    pub(super) fn snapshot_locked(
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
    pub(super) fn create_journal(
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

    pub(super) fn is_closed(&self) -> bool {
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
pub(super) async fn periodic(store: Store, persistence: Arc<Persistence>, interval: Duration) {
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

/// Snapshot and journal numbers (rendered by [`crate::ops::metrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PersistenceMetrics {
    /// Seconds since the last successful snapshot; `None` before the first.
    pub snapshot_age_seconds: Option<f64>,
    /// Size of the last snapshot.
    pub snapshot_bytes: u64,
    /// Entries in the last snapshot.
    pub snapshot_entries: u64,
    /// How long the last snapshot took.
    pub snapshot_duration_seconds: f64,
    /// Snapshots written since start.
    pub snapshots_total: u64,
    /// Snapshots that failed since start.
    pub snapshot_failures_total: u64,
    /// Records in the current journal (changes since the last snapshot).
    pub journal_records: u64,
    /// Bytes in the current journal.
    pub journal_bytes: u64,
    /// Journal appends that failed (each refused a change with 503).
    pub journal_failures_total: u64,
}
