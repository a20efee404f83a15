//! Replay

use super::*;

/// One key's state while the snapshot and journals are replayed.
pub(super) enum Slot {
    Live(Record),
    /// Removed by the change with this seq.
    Gone(u64),
}

impl Slot {
    pub(super) fn seq(&self) -> u64 {
        match self {
            Slot::Live(record) => record.seq,
            Slot::Gone(seq) => *seq,
        }
    }
}

/// The store being rebuilt from the files.
#[derive(Default)]
pub(super) struct Replay {
    pub(super) slots: HashMap<Key, Slot>,
    pub(super) applied: u64,
    pub(super) skipped: u64,
}

impl Replay {
    pub(super) fn insert_snapshot(&mut self, record: Record) -> Result<(), String> {
        let key = record.key.clone();
        if self.slots.insert(key.clone(), Slot::Live(record)).is_some() {
            return Err(format!("the key {key} appears twice"));
        }
        Ok(())
    }

    /// Applies one journaled change if it is newer than what the key has
    /// ([`Record::apply`] says what each change does).
    pub(super) fn apply(&mut self, change: Change<Key, SecretBytes>) {
        let Change { key, seq, op } = change;
        let slot = self.slots.get_mut(&key);
        if slot.as_ref().is_some_and(|slot| slot.seq() >= seq) {
            // The snapshot (or an earlier record) already holds it.
            self.skipped += 1;
            return;
        }
        let applied = match (slot, op) {
            (_, ChangeOp::Delete) => Applied::Removed,
            (Some(Slot::Live(record)), op) => record.apply(seq, op),
            // Nothing live under the key: only a change that makes a record
            // on its own applies. Any other was to an entry removed before
            // the snapshot was exported (see the module docs).
            (_, op) => match Record::create(&key, seq, op) {
                Ok(record) => {
                    self.slots.insert(key.clone(), Slot::Live(record));
                    Applied::Changed
                }
                Err(_) => Applied::Refused,
            },
        };
        match applied {
            Applied::Changed => self.applied += 1,
            Applied::Removed => {
                self.slots.insert(key, Slot::Gone(seq));
                self.applied += 1;
            }
            Applied::Refused => self.skipped += 1,
        }
    }

    pub(super) fn into_records(self) -> impl Iterator<Item = Record> {
        self.slots.into_values().filter_map(|slot| match slot {
            Slot::Live(record) => Some(record),
            Slot::Gone(_) => None,
        })
    }
}

/// What the files held.
pub(super) struct Loaded {
    pub(super) replay: Replay,
    /// The highest generation seen, so new journals come after it.
    pub(super) last_generation: u64,
    /// The frames the newest journal holds, for its successor's start frame.
    pub(super) last_journal_frames: Option<u64>,
    pub(super) journals_read: usize,
}

pub(super) fn format_error(
    kind: FileKind,
    path: &Path,
) -> impl FnOnce(FormatError) -> PersistenceError {
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

/// The snapshot, if there is one, into `replay`; its generation.
fn load_snapshot(
    files: &Files,
    key: Option<&SnapshotKey>,
    replay: &mut Replay,
) -> Result<Option<u64>, PersistenceError> {
    let Some(path) = &files.snapshot else {
        return Ok(None);
    };
    let file = open_scratch(OpenOptions::new().read(true), "opening", path)?;
    let len = file_len(&file, path)?;
    let contents =
        snapshot::read_snapshot(file, len, key).map_err(format_error(FileKind::Snapshot, path))?;
    for record in contents.records {
        replay
            .insert_snapshot(record)
            .map_err(|reason| PersistenceError::Inconsistent {
                path: path.display().to_string(),
                reason,
            })?;
    }
    Ok(Some(contents.header.generation))
}

/// The journals to replay, oldest first, after checking that the first
/// of them is the one the files need.
fn journals_to_read(
    files: &Files,
    snapshot_generation: Option<u64>,
) -> Result<Vec<(u64, &PathBuf)>, PersistenceError> {
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
            Err(PersistenceError::Inconsistent {
                path: path.display().to_string(),
                reason: format!(
                    "the snapshot is followed by journal {}, which is missing",
                    journal_name(first)
                ),
            })
        }
        // Only the very first journal (a crash before the first snapshot
        // was renamed into place) may be there without a snapshot.
        (None, _, Some((generation, path))) if *generation != 1 => {
            Err(PersistenceError::Inconsistent {
                path: path.display().to_string(),
                reason: format!("it continues a snapshot, and {SNAPSHOT_FILE} is missing"),
            })
        }
        _ => Ok(wanted),
    }
}

/// Reads the snapshot and the journals after it into one replay, checking
/// that no journal is missing, renamed, cut short or added to; a torn last
/// record (a kill mid-append, never acknowledged) is cut off.
pub(super) fn load(files: &Files, key: Option<&SnapshotKey>) -> Result<Loaded, PersistenceError> {
    let mut replay = Replay::default();
    let snapshot_generation = load_snapshot(files, key, &mut replay)?;
    let wanted = journals_to_read(files, snapshot_generation)?;
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

pub(super) fn truncate(path: &Path, len: u64) -> Result<(), PersistenceError> {
    open_scratch(OpenOptions::new().write(true), "truncating", path)?
        .set_len(len)
        .map_err(io_error("truncating", path))
}
