use super::*;
use crate::store::RecordValue;
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
        .put(&key(name), SecretBytes::copy_from(value).unwrap(), options)
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
            .push(&key("pool"), SecretBytes::copy_from(item).unwrap(), ttl)
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
        .push(&key("l"), SecretBytes::copy_from(b"x").unwrap(), ttl)
        .unwrap();
    persistence.snapshot(&store, false).unwrap();
    store
        .push(&key("l"), SecretBytes::copy_from(b"y").unwrap(), ttl)
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
        value: RecordValue::Secret(Arc::new(SecretBytes::copy_from(value).unwrap())),
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
        value: SecretBytes::copy_from(value).unwrap(),
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
        item: SecretBytes::copy_from(item).unwrap(),
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
    let mut writer = SnapshotWriter::new(temp.file(), &header, persistence.key.as_ref()).unwrap();
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
        .put(
            &key("short"),
            SecretBytes::copy_from(b"s").unwrap(),
            options(1),
        )
        .unwrap();
    store
        .put(
            &key("long"),
            SecretBytes::copy_from(b"l").unwrap(),
            options(600),
        )
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
