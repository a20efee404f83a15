use super::*;
use zeroize::Zeroizing;

fn key(raw: &str) -> Key {
    Key::parse(raw).unwrap()
}

fn secret(bytes: &[u8]) -> SecretBytes {
    SecretBytes::new(Zeroizing::new(bytes.to_vec())).unwrap()
}

#[test]
fn the_default_media_type_is_recognised_however_it_arrives() {
    assert!(matches!(
        MediaType::from("application/octet-stream"),
        MediaType::Default
    ));
    assert!(matches!(
        MediaType::from(Arc::<str>::from("application/octet-stream")),
        MediaType::Default
    ));
    let other = MediaType::from("text/plain");
    assert!(matches!(&other, MediaType::Other(text) if &**text == "text/plain"));
    assert_eq!(other, MediaType::from(Arc::<str>::from("text/plain")));
    assert_ne!(other, MediaType::Default);
    assert_eq!(&*MediaType::Default, "application/octet-stream");
    assert_eq!(format!("{other:?}"), "\"text/plain\"");
}

fn options(ttl_secs: u64) -> PutOptions {
    PutOptions {
        ttl: Duration::from_secs(ttl_secs),
        max_reads: None,
        content_type: MediaType::from("application/octet-stream"),
        precondition: Precondition::None,
    }
}

#[tokio::test(start_paused = true)]
async fn expired_secrets_are_purged_by_the_deadline_index() {
    let store = Store::new(1 << 20);
    store
        .put(&key("short"), secret(b"one"), options(1))
        .unwrap();
    store
        .put(&key("long"), secret(b"two"), options(60))
        .unwrap();
    assert_eq!(store.stats().entries, 2);

    tokio::time::sleep(Duration::from_millis(1_001)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        store.stats().entries,
        1,
        "the 1s secret is gone without being touched"
    );
    assert_eq!(store.stats().expired, 1);
    assert_eq!(
        store.get(&key("short"), true).unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(store.get(&key("long"), true).unwrap().0.expose(), b"two");
}

#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_wakes_the_purge_task() {
    let store = Store::new(1 << 20);
    store
        .put(&key("late"), secret(b"x"), options(3600))
        .unwrap();
    tokio::task::yield_now().await;
    store.put(&key("soon"), secret(b"y"), options(2)).unwrap();
    tokio::time::sleep(Duration::from_millis(2_001)).await;
    tokio::task::yield_now().await;
    assert_eq!(store.stats().entries, 1);
}

#[tokio::test(start_paused = true)]
async fn renew_moves_the_deadline() {
    let store = Store::new(1 << 20);
    store.put(&key("k"), secret(b"v"), options(1)).unwrap();
    store.renew(&key("k"), Duration::from_secs(10)).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(store.get(&key("k"), false).is_ok());
    store.renew(&key("k"), Duration::from_secs(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(1_001)).await;
    tokio::task::yield_now().await;
    assert_eq!(store.stats().entries, 0);
}

#[tokio::test]
async fn read_once_is_removed_by_the_read_that_uses_it_up() {
    let store = Store::new(1 << 20);
    let mut opts = options(60);
    opts.max_reads = Some(2);
    store.put(&key("k"), secret(b"v"), opts).unwrap();
    assert!(store.get(&key("k"), false).is_ok(), "HEAD does not count");
    assert_eq!(store.get(&key("k"), true).unwrap().1.reads_left, Some(1));
    assert_eq!(store.get(&key("k"), true).unwrap().1.reads_left, Some(0));
    assert_eq!(
        store.get(&key("k"), true).unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(store.stats(), Stats::default());
}

#[tokio::test]
async fn preconditions() {
    let store = Store::new(1 << 20);
    let k = key("k");
    let mut opts = options(60);
    opts.precondition = Precondition::Present;
    assert!(matches!(
        store.put(&k, secret(b"a"), opts.clone()),
        Err(StoreError::PreconditionFailed(_))
    ));
    let (meta, created) = store.put(&k, secret(b"a"), options(60)).unwrap();
    assert!(created);
    opts.precondition = Precondition::Absent;
    assert!(matches!(
        store.put(&k, secret(b"b"), opts.clone()),
        Err(StoreError::PreconditionFailed(_))
    ));
    opts.precondition = Precondition::Revision(meta.revision + 1);
    assert!(matches!(
        store.put(&k, secret(b"b"), opts.clone()),
        Err(StoreError::PreconditionFailed(_))
    ));
    opts.precondition = Precondition::Revision(meta.revision);
    let (second, created) = store.put(&k, secret(b"b"), opts).unwrap();
    assert!(!created);
    assert_eq!(second.version, 2);
    assert_ne!(second.revision, meta.revision);
    assert_eq!(second.created_at, meta.created_at);
}

/// The stalled-response attack: a client GETs a secret and never reads
/// the answer, then DELETEs (or replaces) it. The value lives on in the
/// response, so it stays charged until the response lets it go.
#[tokio::test]
async fn a_value_a_response_still_holds_stays_charged_until_let_go() {
    let k = key("k");
    let one = secret_charge(k.as_str(), &secret(&[0; 1000]), "application/octet-stream");
    let store = Store::new(one + one / 2);
    store.put(&k, secret(&[1; 1000]), options(60)).unwrap();
    let (held, _) = store.get(&k, true).unwrap();
    store.delete(&k).unwrap();
    assert_eq!(store.stats().entries, 0);
    assert!(store.stats().bytes >= 1000, "{:?}", store.stats());
    // The budget still counts it: a second value does not fit.
    let err = store.put(&k, secret(&[2; 1000]), options(60)).unwrap_err();
    assert!(matches!(err, StoreError::BudgetExceeded { .. }), "{err}");
    drop(held);
    assert_eq!(store.stats().bytes, 0);
    store.put(&k, secret(&[2; 1000]), options(60)).unwrap();

    // Replacing a held value: the old bytes stay charged too.
    let (held, _) = store.get(&k, true).unwrap();
    let err = store.put(&k, secret(&[3; 1000]), options(60)).unwrap_err();
    assert!(matches!(err, StoreError::BudgetExceeded { .. }), "{err}");
    store.put(&k, secret(&[3; 10]), options(60)).unwrap();
    assert!(store.stats().bytes >= 1010);
    drop(held);
    let small = secret_charge(k.as_str(), &secret(&[0; 10]), "application/octet-stream");
    assert_eq!(store.stats().bytes, small);
}

#[tokio::test]
async fn budget_counts_bytes_and_frees_them() {
    let k = key("k");
    let one = secret_charge(k.as_str(), &secret(&[0; 100]), "application/octet-stream");
    let store = Store::new(one);
    store.put(&k, secret(&[0; 100]), options(60)).unwrap();
    let err = store
        .put(&key("other"), secret(&[0; 10]), options(60))
        .unwrap_err();
    assert!(matches!(err, StoreError::BudgetExceeded { .. }));
    assert_eq!(
        store.get(&k, false).unwrap().0.len(),
        100,
        "existing data still readable"
    );
    // Replacing with a smaller value of the same key fits.
    store.put(&k, secret(&[0; 50]), options(60)).unwrap();
    store.delete(&k).unwrap();
    assert_eq!(store.stats().bytes, 0);
}

#[tokio::test]
async fn lists_push_and_pop_from_either_end() {
    let store = Store::new(1 << 20);
    let k = key("pool");
    assert!(
        store
            .push(&k, secret(b"1"), Duration::from_secs(60))
            .unwrap()
            .1
    );
    assert!(
        !store
            .push(&k, secret(b"2"), Duration::from_secs(60))
            .unwrap()
            .1
    );
    store
        .push(&k, secret(b"3"), Duration::from_secs(60))
        .unwrap();
    assert_eq!(store.pop(&k, End::Newest).unwrap().0.expose(), b"3");
    assert_eq!(store.pop(&k, End::Oldest).unwrap().0.expose(), b"1");
    let (last, left) = store.pop(&k, End::Newest).unwrap();
    assert_eq!((last.expose(), left), (&b"2"[..], 0));
    assert_eq!(
        store.pop(&k, End::Newest).unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(store.stats(), Stats::default());
    store.put(&key("s"), secret(b"v"), options(60)).unwrap();
    assert!(matches!(
        store.push(&key("s"), secret(b"x"), Duration::from_secs(60)),
        Err(StoreError::WrongKind {
            expected: Kind::List,
            found: Kind::Secret
        })
    ));
}

#[tokio::test]
async fn list_pages_across_shards_in_key_order() {
    let store = Store::new(1 << 20);
    for i in 0..25 {
        store
            .put(&key(&format!("app/k{i:02}")), secret(b"v"), options(60))
            .unwrap();
    }
    store
        .put(&key("other/x"), secret(b"v"), options(60))
        .unwrap();
    let (page, next) = store.list("app/", None, 10);
    let keys: Vec<_> = page.iter().map(|m| m.key.to_string()).collect();
    assert_eq!(keys.first().map(String::as_str), Some("app/k00"));
    assert_eq!(keys.len(), 10);
    assert_eq!(next.as_ref().map(Key::as_str), Some("app/k09"));
    let (page, next) = store.list("app/", Some("app/k19"), 10);
    assert_eq!(page.len(), 5);
    assert_eq!(next, None);
    let (all, _) = store.list("", None, 100);
    assert_eq!(all.len(), 26);
}

/// A change log that remembers what it was given, or refuses it.
#[derive(Default)]
struct RecordingLog {
    refuse: AtomicBool,
    seen: Mutex<Vec<(String, u64, &'static str)>>,
}

impl ChangeLog for RecordingLog {
    fn append(&self, change: &Change<&Key, &SecretBytes>) -> std::io::Result<()> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("refused by the test"));
        }
        let op = match change.op {
            ChangeOp::Put { .. } => "put",
            ChangeOp::Push { created: true, .. } => "create",
            ChangeOp::Push { .. } => "push",
            ChangeOp::Pop { .. } => "pop",
            ChangeOp::Renew { .. } => "renew",
            ChangeOp::Read { .. } => "read",
            ChangeOp::Delete => "delete",
        };
        self.seen
            .lock()
            .unwrap()
            .push((change.key.to_string(), change.seq, op));
        Ok(())
    }

    fn before_wipe(&self, _store: &Store) {}
}

#[tokio::test]
async fn every_change_is_journaled_in_order_and_plain_reads_are_not() {
    let store = Store::new(1 << 20);
    let log = Arc::new(RecordingLog::default());
    assert!(store.set_change_log(log.clone()));
    let mut once = options(60);
    once.max_reads = Some(2);
    store.put(&key("s"), secret(b"v"), once).unwrap();
    store.get(&key("s"), false).unwrap();
    store.get(&key("s"), true).unwrap();
    store.renew(&key("s"), Duration::from_secs(30)).unwrap();
    store.get(&key("s"), true).unwrap();
    store.put(&key("t"), secret(b"v"), options(60)).unwrap();
    store.get(&key("t"), true).unwrap();
    store.delete(&key("t")).unwrap();
    let ttl = Duration::from_secs(60);
    store.push(&key("l"), secret(b"1"), ttl).unwrap();
    store.push(&key("l"), secret(b"2"), ttl).unwrap();
    store.pop(&key("l"), End::Oldest).unwrap();
    let seen = log.seen.lock().unwrap().clone();
    let ops: Vec<_> = seen.iter().map(|(k, _, op)| format!("{k}:{op}")).collect();
    assert_eq!(
        ops,
        [
            "s:put", "s:read", "s:renew", "s:read", "t:put", "t:delete", "l:create", "l:push",
            "l:pop"
        ],
        "HEAD and reads of secrets without max_reads are not changes"
    );
    assert!(
        seen.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "sequence numbers increase: {seen:?}"
    );
}

#[tokio::test]
async fn a_change_the_journal_refuses_is_not_made() {
    let store = Store::new(1 << 20);
    let log = Arc::new(RecordingLog::default());
    store.set_change_log(log.clone());
    store.put(&key("s"), secret(b"old"), options(60)).unwrap();
    let mut once = options(60);
    once.max_reads = Some(1);
    store.put(&key("once"), secret(b"v"), once).unwrap();
    store
        .push(&key("l"), secret(b"1"), Duration::from_secs(60))
        .unwrap();
    let before = store.stats();
    let meta = store.meta(&key("s")).unwrap();
    log.refuse.store(true, Ordering::Relaxed);

    let unavailable = |result: Result<(), StoreError>| {
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
    };
    unavailable(store.put(&key("s"), secret(b"new"), options(60)).map(drop));
    unavailable(store.put(&key("n"), secret(b"new"), options(60)).map(drop));
    unavailable(store.renew(&key("s"), Duration::from_secs(5)).map(drop));
    unavailable(store.delete(&key("s")).map(drop));
    unavailable(store.get(&key("once"), true).map(drop));
    unavailable(
        store
            .push(&key("l"), secret(b"2"), Duration::from_secs(60))
            .map(drop),
    );
    unavailable(
        store
            .push(&key("m"), secret(b"2"), Duration::from_secs(60))
            .map(drop),
    );
    unavailable(store.pop(&key("l"), End::Newest).map(drop));

    assert_eq!(store.stats(), before, "budget and counts untouched");
    let after = store.meta(&key("s")).unwrap();
    assert_eq!(
        (after.revision, after.version),
        (meta.revision, meta.version)
    );
    let moved = after
        .expires_at
        .duration_since(meta.expires_at)
        .or_else(|_| meta.expires_at.duration_since(after.expires_at))
        .unwrap();
    assert!(moved < Duration::from_secs(1), "the renewal was not made");
    assert_eq!(store.get(&key("s"), false).unwrap().0.expose(), b"old");
    assert_eq!(store.meta(&key("once")).unwrap().reads_left, Some(1));
    assert_eq!(store.meta(&key("l")).unwrap().size, 1);
    assert!(
        store.get(&key("s"), false).is_ok(),
        "plain reads still work"
    );
}

#[tokio::test]
async fn export_and_import_keep_everything_but_the_expired() {
    let store = Store::new(1 << 20);
    let mut opts = options(600);
    opts.max_reads = Some(3);
    opts.content_type = MediaType::from("text/plain");
    store.put(&key("a"), secret(b"alpha"), opts).unwrap();
    store.get(&key("a"), true).unwrap();
    let ttl = Duration::from_secs(60);
    store.push(&key("l"), secret(b"1"), ttl).unwrap();
    store.push(&key("l"), secret(b"2"), ttl).unwrap();
    let mut records = store.export();
    records.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(records.len(), 2);
    let (a, l) = (
        store.meta(&key("a")).unwrap(),
        store.meta(&key("l")).unwrap(),
    );
    // One that expired while on disk.
    records.push(Record {
        key: key("gone"),
        value: RecordValue::Secret(Arc::new(secret(b"x"))),
        seq: 1,
        revision: 1,
        version: 1,
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
        expires_at: SystemTime::now() - Duration::from_secs(1),
        reads_left: None,
        content_type: Some(MediaType::from("text/plain")),
    });
    let highest = records.iter().map(|r| r.seq).max().unwrap();

    let restored = Store::new(1 << 20);
    assert_eq!(restored.import(records).unwrap(), (2, 1));
    assert_eq!(restored.stats().entries, 2);
    assert_eq!(restored.stats().bytes, store.stats().bytes);
    let close = |x: SystemTime, y: SystemTime| {
        x.duration_since(y)
            .or_else(|_| y.duration_since(x))
            .unwrap()
            < Duration::from_millis(50)
    };
    for before in [a, l] {
        let after = restored.meta(&before.key).unwrap();
        assert!(close(after.expires_at, before.expires_at));
        assert_eq!(
            Meta {
                expires_at: before.expires_at,
                ..after
            },
            before
        );
    }
    assert_eq!(restored.get(&key("a"), true).unwrap().0.expose(), b"alpha");
    assert_eq!(
        restored.pop(&key("l"), End::Oldest).unwrap().0.expose(),
        b"1"
    );
    let (meta, _) = restored
        .put(&key("new"), secret(b"v"), options(60))
        .unwrap();
    assert!(
        meta.revision > highest,
        "new revisions sort after restored ones"
    );
}

#[tokio::test]
async fn wipe_all_empties_everything() {
    let store = Store::new(1 << 20);
    store.put(&key("a"), secret(b"v"), options(60)).unwrap();
    store
        .push(&key("b"), secret(b"v"), Duration::from_secs(60))
        .unwrap();
    store.wipe_all();
    assert_eq!(store.stats(), Stats::default());
}

fn pushed(item: &[u8], created: bool, revision: u64) -> ChangeOp<SecretBytes> {
    let now = SystemTime::now();
    ChangeOp::Push {
        item: secret(item),
        created,
        revision,
        version: revision,
        created_at: now,
        updated_at: now,
        expires_at: now + Duration::from_secs(60),
    }
}

fn popped(revision: u64) -> ChangeOp<SecretBytes> {
    ChangeOp::Pop {
        end: End::Oldest,
        revision,
        version: revision,
        updated_at: SystemTime::now(),
    }
}

#[test]
fn a_change_applies_to_a_record_as_the_store_made_it() {
    let list = key("list");
    // Only a creating push makes a record on its own.
    let Err(handed_back) = Record::create(&list, 1, pushed(b"a", false, 1)) else {
        panic!("a push to no list made one");
    };
    assert!(matches!(handed_back, ChangeOp::Push { created: false, .. }));
    let mut record = Record::create(&list, 1, pushed(b"a", true, 1)).unwrap();
    assert_eq!(record.apply(2, pushed(b"b", false, 2)), Applied::Changed);
    assert_eq!((record.seq, record.revision), (2, 2));
    let RecordValue::List(items) = &record.value else {
        panic!("not a list");
    };
    let items: Vec<&[u8]> = items.iter().map(|item| item.expose()).collect();
    assert_eq!(items, [b"a".as_slice(), b"b".as_slice()]);
    assert_eq!(record.apply(3, popped(3)), Applied::Changed);
    assert_eq!(record.apply(4, popped(4)), Applied::Removed);

    // A secret refuses list changes, and its last counted read removes it.
    let now = SystemTime::now();
    let put = ChangeOp::Put {
        value: secret(b"s3cr3t"),
        revision: 5,
        version: 1,
        created_at: now,
        updated_at: now,
        expires_at: now + Duration::from_secs(60),
        reads_left: Some(2),
        content_type: MediaType::from("text/plain"),
    };
    let mut record = Record::create(&key("secret"), 5, put).unwrap();
    assert_eq!(record.apply(6, popped(6)), Applied::Refused);
    assert_eq!(record.seq, 5);
    assert_eq!(
        record.apply(7, ChangeOp::Read { reads_left: 1 }),
        Applied::Changed
    );
    assert_eq!(record.reads_left, Some(1));
    assert_eq!(
        record.apply(8, ChangeOp::Read { reads_left: 0 }),
        Applied::Removed
    );
    assert_eq!(record.apply(9, ChangeOp::Delete), Applied::Removed);
}

#[test]
fn an_entry_and_a_deadline_stay_narrow() {
    // An entry's block is a malloc chunk of 96 bytes for keys of up to 14
    // bytes (docs/BENCHMARKS.md, "Memory per secret: where the bytes go"):
    // a field added here should be a choice.
    assert_eq!(std::mem::size_of::<Option<SecretBytes>>(), 12);
    assert_eq!(std::mem::size_of::<Entry>(), 64);
    assert_eq!(std::mem::size_of::<Slot>(), 8);
    assert_eq!(std::mem::size_of::<(Tick, block::WeakBlock<Entry>)>(), 16);
}
