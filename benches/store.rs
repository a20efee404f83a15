//! Micro-benchmarks of [`tmpvault::store::Store`] (`cargo bench --bench store`):
//! insert, get, expire (a purge of N entries) and list (one page).
//!
//! They measure the store alone, without HTTP or TLS, so a regression in the
//! sharded maps or the deadline index shows here before it drowns in the
//! noise of a whole-server run (`tmpvault-bench`). The measurement time is
//! short on purpose: the machines this runs on have two shared cores, and
//! the numbers are for spotting a change, not for a datasheet.

use std::hint::black_box;
use std::time::Duration;

use clap::ValueEnum as _;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tmpvault::config::SecretArena;
use tmpvault::store::arena::{self, ArenaSize};
use tmpvault::store::key::Key;
use tmpvault::store::secret::SecretBytes;
use tmpvault::store::{Precondition, PutOptions, Store};

/// Budget large enough that no benchmark ever hits it.
const BUDGET: u64 = 1 << 32;

fn key(index: usize) -> Key {
    Key::parse(&format!("bench/app/key-{index:07}")).expect("a valid key")
}

fn options(ttl: Duration) -> PutOptions {
    PutOptions {
        ttl,
        max_reads: None,
        content_type: tmpvault::store::MediaType::Default,
        precondition: Precondition::None,
    }
}

/// A current-thread runtime with paused time: `Store::new` spawns its purge
/// task on the current runtime, and paused time lets the expiry benchmark
/// jump past every deadline without sleeping.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a tokio runtime")
}

/// A store holding `count` secrets of 32 bytes that live for an hour.
fn filled(count: usize) -> (Store, Vec<Key>) {
    let store = Store::new(BUDGET);
    let keys: Vec<Key> = (0..count).map(key).collect();
    for key in &keys {
        store
            .put(
                key,
                SecretBytes::copy_from(&[7; 32]).expect("room in the arena"),
                options(Duration::from_secs(3600)),
            )
            .expect("the put fits the budget");
    }
    (store, keys)
}

fn insert(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("store/insert");
    for size in [32usize, 1024] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(
            BenchmarkId::new("cycling 100k keys, value bytes", size),
            |b| {
                let store = Store::new(BUDGET);
                let keys: Vec<Key> = (0..100_000).map(key).collect();
                let value = vec![7u8; size];
                let mut next = 0usize;
                b.iter(|| {
                    // Cycle over 100k keys: after the first lap this is a
                    // replace, which is what a steady PUT workload does too.
                    let key = &keys[next % keys.len()];
                    next += 1;
                    store
                        .put(
                            key,
                            SecretBytes::copy_from(&value).expect("room in the arena"),
                            options(Duration::from_secs(3600)),
                        )
                        .expect("the put fits the budget")
                });
            },
        );
    }
    group.finish();
}

fn get(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("store/get");
    group.throughput(Throughput::Elements(1));
    for count in [1_000usize, 100_000] {
        let (store, keys) = filled(count);
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("of entries", count), |b| {
            b.iter(|| {
                let key = &keys[next % keys.len()];
                next += 1;
                black_box(store.get(key, true).expect("the key is there"))
            });
        });
    }
    group.finish();
}

fn expire(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("store/expire");
    for count in [1_000usize, 10_000] {
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(BenchmarkId::new("purge of entries", count), |b| {
            b.iter_batched(
                || {
                    let _guard = runtime.enter();
                    let store = Store::new(BUDGET);
                    for index in 0..count {
                        store
                            .put(
                                &key(index),
                                SecretBytes::copy_from(&[7; 32]).expect("room in the arena"),
                                options(Duration::from_secs(1)),
                            )
                            .expect("the put fits the budget");
                    }
                    store
                },
                |store| {
                    // Jump past every deadline and let the purge task run
                    // until it has removed them all.
                    runtime.block_on(async {
                        tokio::time::advance(Duration::from_millis(1_001)).await;
                        while store.stats().entries > 0 {
                            tokio::task::yield_now().await;
                        }
                    });
                    store
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn list(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("store/list");
    let (store, _keys) = filled(100_000);
    for limit in [100usize, 1000] {
        group.throughput(Throughput::Elements(limit as u64));
        group.bench_function(BenchmarkId::new("page of 100k", limit), |b| {
            b.iter(|| black_box(store.list("bench/app/key-005", None, limit)));
        });
    }
    group.finish();
}

/// Values go to the secret arena as in `serve` (`--secret-arena auto`), or
/// where `TMPVAULT_SECRET_ARENA` says (`heap` for the numbers without it).
fn install_arena() {
    let setting = std::env::var("TMPVAULT_SECRET_ARENA")
        .ok()
        .and_then(|raw| SecretArena::from_str(&raw, true).ok())
        .unwrap_or_default();
    let report = arena::install(setting, ArenaSize::for_process(1 << 30, 64 << 10));
    eprintln!("secret arena: {} of {} bytes", report.mode, report.capacity);
}

fn short() -> Criterion {
    install_arena();
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20)
}

criterion_group! {
    name = store;
    config = short();
    targets = insert, get, expire, list
}
criterion_main!(store);
