//! No trace in memory: once a secret is deleted, expired, popped, replaced
//! or read-once-consumed, and the connection that carried it has closed,
//! its bytes are nowhere in the server's memory; nor, with the connection
//! still open, after a PUT, GET and DELETE over HTTP/1.1 or HTTP/2, or a
//! PUT refused before its body was read.
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
use common::h2raw::H2Client;
use common::memscan::{
    find_all, open_connections, readable_regions, scan, start_server, wait_until_closed, Marker,
};
use common::process::{free_port, is_root, ServerProcess};
use common::{problem_code, raw_tls, read_response, Pki};
use tmpvault::cmd::client::{Client, ClientError, PutOptions};
use tmpvault::posture::alloc::ZeroizingAllocator;
use tmpvault::tls::pki::ClientName;
use tmpvault::tls::ClientTlsFiles;
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

/// A server with values on the heap, where the scan can see a stored
/// value (each test's control; tests/arena.rs scans with the arena), and
/// a client of it and its files; `None`, and the test skips, when not
/// root.
async fn heap_server() -> Option<(Pki, u16, ServerProcess, Client, ClientTlsFiles)> {
    if !is_root() {
        eprintln!("skipping: reading a non-dumpable process's memory needs root");
        return None;
    }
    let pki = Pki::new();
    let port = free_port();
    let mut server = start_server(&pki, port, &["--secret-arena", "heap"]);
    let files = pki.client_files("client", ClientName::CommonName("residue".into()));
    let client = Client::new(&format!("https://127.0.0.1:{port}"), &files).expect("client");
    server.wait_until_serving(&client).await;
    Some((pki, port, server, client, files))
}

#[tokio::test]
async fn no_secret_survives_in_server_memory() {
    let Some((_pki, port, mut server, client, _)) = heap_server().await else {
        return;
    };
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

/// A body of `len` bytes that is `marker` over and over: a value spread
/// over many TLS records, reads and chunks.
fn repeated(marker: &Marker, len: usize) -> Bytes {
    Bytes::from(
        marker
            .bytes()
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect::<Vec<u8>>(),
    )
}

/// One HTTP/1.1 request on an open raw connection; the response's status
/// line and body.
async fn http1(
    tls: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    method: &str,
    path: &str,
    body: &[u8],
) -> (String, Vec<u8>) {
    use tokio::io::AsyncWriteExt as _;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = Zeroizing::new(head.into_bytes());
    request.extend_from_slice(body);
    tls.write_all(&request).await.expect("send the request");
    let (head, body) = read_response(tls).await;
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body)
}

/// Scans with every connection still open: the `kept` marker (stored) is
/// found, and none of `gone` (deleted, or refused) is.
async fn assert_only_kept(
    pid: u32,
    port: u16,
    connections: usize,
    kept: &Marker,
    gone: &[&Marker],
    over: &str,
) {
    // Give the connection tasks a moment to go idle.
    sleep(Duration::from_millis(300)).await;
    assert_eq!(
        open_connections(port),
        connections,
        "the connections stay open"
    );
    let mut markers = vec![kept];
    markers.extend_from_slice(gone);
    let scan = scan(pid, &markers);
    eprintln!("{over}, connections open:\n{scan}");
    assert!(
        !scan.hits(kept).is_empty(),
        "the scan must find the stored marker\n{scan}"
    );
    let left: Vec<(&str, usize)> = gone
        .iter()
        .map(|marker| (marker.name, scan.hits(marker).len()))
        .filter(|(_, hits)| *hits > 0)
        .collect();
    assert!(
        left.is_empty(),
        "{over}: request bodies left in the memory of an open connection: {left:?}\n{scan}"
    );
}

#[tokio::test]
async fn no_copy_stays_on_an_open_connection() {
    let Some((_pki, port, mut server, client, files)) = heap_server().await else {
        return;
    };
    drop(client);
    wait_until_closed(port).await;
    let pid = server.pid();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    // HTTP/1.1, on one connection: a value kept, then PUT, GET and DELETE
    // of a large and a small value (last, so that nothing written after
    // them covers their traces).
    let small = Marker::new("H1 small (put, get, delete)");
    let large = Marker::new("H1 48 KiB (put, get, delete)");
    let kept = Marker::new("H1 kept");
    let mut tls = raw_tls(addr, &files).await;
    let (status, _) = http1(&mut tls, "PUT", "/v1/secrets/open/h1-kept", kept.bytes()).await;
    assert_eq!(status, "HTTP/1.1 201 Created");
    for (key, marker, body) in [
        ("large", &large, repeated(&large, 48 * 1024)),
        ("small", &small, small.body()),
    ] {
        let path = format!("/v1/secrets/open/h1-{key}");
        let (status, _) = http1(&mut tls, "PUT", &path, &body).await;
        assert_eq!(status, "HTTP/1.1 201 Created", "PUT {}", marker.name);
        let (status, value) = http1(&mut tls, "GET", &path, b"").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            value[..] == body[..],
            "{} comes back as stored",
            marker.name
        );
        drop(Zeroizing::new(value));
        let (status, _) = http1(&mut tls, "DELETE", &path, b"").await;
        assert_eq!(status, "HTTP/1.1 204 No Content");
    }
    assert_only_kept(pid, port, 1, &kept, &[&small, &large], "HTTP/1.1").await;

    // HTTP/2, the same on one connection, with the HTTP/1.1 one still open.
    let small2 = Marker::new("H2 small (put, get, delete)");
    let large2 = Marker::new("H2 48 KiB (put, get, delete)");
    let kept2 = Marker::new("H2 kept");
    let h2 = H2Client::connect(addr, &files).await;
    let (status, _) = h2
        .request("PUT", "/v1/secrets/open/h2-kept", Some(kept2.body()))
        .await
        .expect("PUT kept");
    assert_eq!(status, 201);
    for (key, marker, body) in [
        ("large", &large2, repeated(&large2, 48 * 1024)),
        ("small", &small2, small2.body()),
    ] {
        let path = format!("/v1/secrets/open/h2-{key}");
        let (status, _) = h2
            .request("PUT", &path, Some(body.clone()))
            .await
            .expect("PUT");
        assert_eq!(status, 201, "PUT {}", marker.name);
        let (status, value) = h2.request("GET", &path, None).await.expect("GET");
        assert_eq!(status, 200);
        assert!(
            value[..] == body[..],
            "{} comes back as stored",
            marker.name
        );
        drop(Zeroizing::new(value));
        let (status, _) = h2.request("DELETE", &path, None).await.expect("DELETE");
        assert_eq!(status, 204);
    }
    assert_only_kept(
        pid,
        port,
        2,
        &kept2,
        &[&small, &large, &small2, &large2],
        "HTTP/1.1 and HTTP/2",
    )
    .await;

    // A PUT refused before its body is read (400 for the TTL), the last
    // request on a new connection of each protocol.
    let refused = Marker::new("H1 refused (400 before the body)");
    let refused2 = Marker::new("H2 refused (400 before the body)");
    let kept3 = Marker::new("kept beside the refused");
    let mut tls3 = raw_tls(addr, &files).await;
    let (status, _) = http1(&mut tls3, "PUT", "/v1/secrets/open/kept3", kept3.bytes()).await;
    assert_eq!(status, "HTTP/1.1 201 Created");
    let (status, problem) = http1(
        &mut tls3,
        "PUT",
        "/v1/secrets/open/h1-refused?ttl=99d",
        refused.bytes(),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert_eq!(problem_code(&problem, 400), "invalid_ttl");
    let h2_3 = H2Client::connect(addr, &files).await;
    let (status, problem) = h2_3
        .request(
            "PUT",
            "/v1/secrets/open/h2-refused?ttl=99d",
            Some(refused2.body()),
        )
        .await
        .expect("refused PUT");
    assert_eq!(status, 400);
    assert_eq!(problem_code(&problem, 400), "invalid_ttl");
    assert_only_kept(
        pid,
        port,
        4,
        &kept3,
        &[&small, &large, &small2, &large2, &refused, &refused2],
        "a refused PUT last on each connection",
    )
    .await;
    drop((tls, tls3, h2, h2_3));
    assert!(
        server.is_running(),
        "the server is still running:\n{}",
        server.log()
    );
}
