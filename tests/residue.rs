//! No trace in memory: once a secret is deleted, expired, popped, replaced
//! or read-once-consumed, and the connection that carried it has closed,
//! its bytes are nowhere in the server's memory.
//!
//! The test runs the real binary (whose global allocator wipes freed heap
//! blocks), drives it over mTLS with random markers as values, and then
//! reads the whole address space through `/proc/<pid>/mem` looking for
//! them. That needs root (the server makes itself non-dumpable, and only
//! `CAP_SYS_PTRACE` reads a non-dumpable process), so the test skips
//! otherwise. Two controls keep it from passing vacuously: a marker is
//! found while it is still stored, and a marker that is never deleted is
//! still found at the end.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::memscan::{find_all, readable_regions, scan, start_server, wait_until_closed, Marker};
use common::process::{free_port, is_root};
use common::Pki;
use tmpvault::cmd::client::{Client, ClientError, PutOptions};
use tmpvault::posture::alloc::ZeroizingAllocator;
use tmpvault::tls::pki::ClientName;
use tokio::time::{sleep, Instant};
use zeroize::Zeroizing;

/// The test's own copies of the markers (request bodies, responses) are
/// wiped as they are freed too. Only the server is scanned, so this is
/// hygiene, not what the test relies on.
#[global_allocator]
static ALLOCATOR: ZeroizingAllocator = ZeroizingAllocator;

/// The product wipes an expired secret within a second of its deadline.
const EXPIRY_GRACE: Duration = Duration::from_secs(1);
fn is_not_found(result: &Result<Zeroizing<Vec<u8>>, ClientError>) -> bool {
    matches!(result, Err(ClientError::Problem { status: 404, .. }))
}

/// GETs `key` until it answers 404, or panics after `deadline`.
async fn wait_for_not_found(client: &Client, key: &str, deadline: Instant) {
    loop {
        if is_not_found(&client.get(key).await) {
            return;
        }
        assert!(Instant::now() < deadline, "{key} still served");
        sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn find_all_finds_every_occurrence() {
    assert_eq!(find_all(b"abcabcab", b"abc"), [0, 3]);
    assert_eq!(find_all(b"aabc", b"abc"), [1]);
    assert_eq!(find_all(b"xyz", b"abc"), Vec::<usize>::new());
    assert_eq!(find_all(b"ab", b"abc"), Vec::<usize>::new());
    assert_eq!(find_all(b"", b"abc"), Vec::<usize>::new());
}

#[test]
fn regions_of_this_process_are_listed() {
    let regions = readable_regions(std::process::id());
    assert!(regions.iter().any(|region| region.label == "[stack]"));
    assert!(regions.iter().all(|region| region.start < region.end));
    assert!(!regions
        .iter()
        .any(|region| region.label.starts_with("[vvar")));
}

#[tokio::test]
async fn no_secret_survives_in_server_memory() {
    if !is_root() {
        eprintln!("skipping: reading a non-dumpable process's memory needs root");
        return;
    }
    let pki = Pki::new();
    let port = free_port();
    // On the heap, where the scan can see a stored value (the control
    // below); tests/arena.rs scans with the arena.
    let mut server = start_server(&pki, port, &["--secret-arena", "heap"]);
    let files = pki.client_files("client", ClientName::CommonName("residue".into()));
    let client = Client::new(&format!("https://127.0.0.1:{port}"), &files).expect("client");
    server.wait_until_serving(&client).await;
    let pid = server.pid();

    let deleted = Marker::new("A (deleted)");
    let expired = Marker::new("B (expired)");
    let popped = Marker::new("C (popped)");
    let replaced = Marker::new("D (replaced)");
    let read_once = Marker::new("E (read once)");
    let kept = Marker::new("F (kept)");
    let all = [&deleted, &expired, &popped, &replaced, &read_once, &kept];
    let defaults = PutOptions::default();

    // B first, so its deadline and the purge after it have long passed by
    // the time of the final scan.
    let ttl = PutOptions {
        ttl: Some("1s"),
        ..PutOptions::default()
    };
    client
        .put("residue/b", expired.body(), &ttl)
        .await
        .expect("put B");
    let expiry_deadline = Instant::now() + Duration::from_secs(1);

    client
        .put("residue/a", deleted.body(), &defaults)
        .await
        .expect("put A");
    let value = client.get("residue/a").await.expect("get A");
    assert!(value[..] == *deleted.bytes(), "A comes back as stored");
    drop(value);

    // Control: a stored secret is found, so the scan can see the heap.
    let stored = scan(pid, &all);
    eprintln!("while A is stored:\n{stored}");
    assert!(
        !stored.hits(&deleted).is_empty(),
        "the scan must find a stored marker\n{stored}"
    );

    client.delete("residue/a").await.expect("delete A");

    client
        .push("residue/c", popped.body(), None)
        .await
        .expect("push C");
    let item = client.pop("residue/c", false).await.expect("pop C");
    assert!(item[..] == *popped.bytes(), "C pops as pushed");
    drop(item);

    client
        .put("residue/d", replaced.body(), &defaults)
        .await
        .expect("put D");
    client
        .put(
            "residue/d",
            Bytes::from_static(b"a replacement value"),
            &defaults,
        )
        .await
        .expect("replace D");

    let once = PutOptions {
        max_reads: Some(1),
        ..PutOptions::default()
    };
    client
        .put("residue/e", read_once.body(), &once)
        .await
        .expect("put E");
    let value = client.get("residue/e").await.expect("get E");
    assert!(value[..] == *read_once.bytes(), "E comes back as stored");
    drop(value);
    assert!(is_not_found(&client.get("residue/e").await), "E is used up");

    client
        .put("residue/f", kept.body(), &defaults)
        .await
        .expect("put F");

    wait_for_not_found(
        &client,
        "residue/b",
        expiry_deadline + Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep_until(expiry_deadline + EXPIRY_GRACE).await;

    // Close every connection and wait until the server has closed its end
    // too, then give the connection tasks a moment to finish dropping.
    drop(client);
    wait_until_closed(port).await;

    let after = scan(pid, &all);
    eprintln!("after deletion, connections closed:\n{after}");
    assert!(
        !after.hits(&kept).is_empty(),
        "the scan must still find the marker that was never deleted\n{after}"
    );
    let survivors: Vec<&str> = all
        .iter()
        .filter(|marker| marker.name != kept.name && !after.hits(marker).is_empty())
        .map(|marker| marker.name)
        .collect();
    assert!(
        survivors.is_empty(),
        "secret bytes survived in server memory: {survivors:?}\n{after}"
    );
    assert!(
        server.is_running(),
        "the server is still running:\n{}",
        server.log()
    );
}
