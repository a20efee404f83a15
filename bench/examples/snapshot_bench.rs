//! Measures what snapshots cost, in one process, on /dev/shm:
//!
//! - write throughput of the store with persistence off, then with the
//!   journal on (encrypted, then plain), in the same run;
//! - snapshot time, restore time and file size for 10k and 100k secrets
//!   of 1 KiB.
//!
//! `cargo run --release --example snapshot_bench` (a debug build measures
//! the debug build). The numbers are the store's own cost; HTTP and TLS
//! come on top and are the same with or without persistence.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tmpvault::config::{SnapshotOnError, SnapshotSetting};
use tmpvault::persist::snapshot::{self, SnapshotKey};
use tmpvault::persist::{Persistence, Settings, SNAPSHOT_FILE};
use tmpvault::store::key::Key;
use tmpvault::store::secret::SecretBytes;
use tmpvault::store::{ChangeLog, Precondition, PutOptions, Store};

const VALUE: usize = 1024;
const BUDGET: u64 = 2 << 30;

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tmpvault-bench-")
        .tempdir_in("/dev/shm")
        .expect("a temp dir on /dev/shm")
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

fn options() -> PutOptions {
    PutOptions {
        ttl: Duration::from_secs(3600),
        max_reads: None,
        content_type: tmpvault::store::MediaType::Default,
        precondition: Precondition::None,
    }
}

fn keys(count: usize) -> Vec<Key> {
    (0..count)
        .map(|i| Key::parse(&format!("bench/secret-{i:06}")).expect("key"))
        .collect()
}

/// `writes` PUTs of 1 KiB over `keys`, on `threads` threads; writes/s.
fn put_rate(store: &Store, keys: &Arc<Vec<Key>>, writes: usize, threads: usize) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (store, keys) = (store.clone(), Arc::clone(keys));
            scope.spawn(move || {
                let value = [0x5a; VALUE];
                for i in (thread..writes).step_by(threads) {
                    store
                        .put(
                            &keys[i % keys.len()],
                            SecretBytes::copy_from(&value).expect("on the heap"),
                            options(),
                        )
                        .expect("put");
                }
            });
        }
    });
    writes as f64 / started.elapsed().as_secs_f64()
}

fn open(settings: Settings, store: &Store) -> Arc<Persistence> {
    let persistence = Arc::new(Persistence::open(settings, store).expect("persistence"));
    store.set_change_log(Arc::clone(&persistence) as Arc<dyn ChangeLog>);
    persistence
}

fn fill(store: &Store, count: usize) {
    let value = [0xa5; VALUE];
    for key in keys(count) {
        store
            .put(
                &key,
                SecretBytes::copy_from(&value).expect("on the heap"),
                options(),
            )
            .expect("put");
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let key_dir = scratch();
    let key_path = key_dir.path().join("snapshot.key");
    snapshot::keygen(Some(&key_path)).expect("keygen");
    let key = SnapshotKey::load(&key_path).expect("key");

    println!("== write throughput, 1 KiB PUTs over 10k keys (store API, no HTTP)");
    let writes = 200_000;
    let keys = Arc::new(keys(10_000));
    for threads in [1, 2] {
        let off = Store::new(BUDGET);
        let off_rate = put_rate(&off, &keys, writes, threads);
        off.wipe_all();

        let dir = scratch();
        let encrypted = Store::new(BUDGET);
        let persistence = open(settings(dir.path(), Some(&key_path)), &encrypted);
        let encrypted_rate = put_rate(&encrypted, &keys, writes, threads);
        let metrics = persistence.metrics();
        let (records, bytes) = (metrics.journal_records, metrics.journal_bytes);
        encrypted.wipe_all();

        let dir = scratch();
        let plain = Store::new(BUDGET);
        open(settings(dir.path(), None), &plain);
        let plain_rate = put_rate(&plain, &keys, writes, threads);
        plain.wipe_all();

        println!(
            "{threads} thread(s): off {off_rate:>9.0}/s   journal encrypted {encrypted_rate:>9.0}/s \
             ({:.0}%)   journal plain {plain_rate:>9.0}/s ({:.0}%)",
            100.0 * encrypted_rate / off_rate,
            100.0 * plain_rate / off_rate,
        );
        println!(
            "    journal: {records} records, {:.1} MiB, {} bytes per 1 KiB record",
            mib(bytes),
            (bytes - 48) / records.max(1)
        );
    }

    for count in [10_000, 100_000] {
        println!("== {count} secrets of 1 KiB, encrypted");
        let dir = scratch();
        let store = Store::new(BUDGET);
        let persistence = open(settings(dir.path(), Some(&key_path)), &store);
        fill(&store, count);
        let started = Instant::now();
        persistence.snapshot(&store, false).expect("snapshot");
        let snapshot_time = started.elapsed();
        let path = dir.path().join(SNAPSHOT_FILE);
        let size = std::fs::metadata(&path).expect("snapshot").len();

        // Restore as a start does: read and authenticate, then import.
        let started = Instant::now();
        let file = File::open(&path).expect("open");
        let contents = snapshot::read_snapshot(file, size, Some(&key)).expect("read");
        let read_time = started.elapsed();
        let restored = Store::new(BUDGET);
        let (entries, _) = restored.import(contents.records).expect("import");
        let restore_time = started.elapsed();
        assert_eq!(entries, count as u64);

        // And the whole start: scan, restore, first snapshot, new journal.
        let copy = scratch();
        std::fs::copy(&path, copy.path().join(SNAPSHOT_FILE)).expect("copy");
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name().into_string().expect("name");
            if name.starts_with("tmpvault.journal.") {
                std::fs::copy(entry.path(), copy.path().join(name)).expect("copy");
            }
        }
        let started = Instant::now();
        let again = Store::new(BUDGET);
        let _persistence = open(settings(copy.path(), Some(&key_path)), &again);
        let start_time = started.elapsed();
        assert_eq!(again.stats().entries, count as u64);

        println!(
            "snapshot {:>7.1} ms   restore {:>7.1} ms (read+decrypt {:.1} ms)   whole start \
             {:>7.1} ms   file {:.1} MiB ({} bytes per secret)",
            snapshot_time.as_secs_f64() * 1e3,
            restore_time.as_secs_f64() * 1e3,
            read_time.as_secs_f64() * 1e3,
            start_time.as_secs_f64() * 1e3,
            mib(size),
            size / count as u64,
        );
        store.wipe_all();
        restored.wipe_all();
        again.wipe_all();
    }
}
