//! Hostile clients: connections that never finish a handshake, huge headers,
//! bodies that trickle in, and more connections than the cap. Each must be
//! cut off by its limit or deadline while well-behaved clients keep being
//! served, and nothing may crash the server or lose stored data.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::{raw_tls, TestServer};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One GET by the well-behaved client; returns how long it took.
async fn timed_get(server: &TestServer) -> Duration {
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        server
            .client
            .request(Method::GET, "/v1/secrets/canary", &[], Bytes::new()),
    )
    .await
    .expect("the good client is answered")
    .expect("request");
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(&response.body[..], b"alive");
    started.elapsed()
}

async fn with_canary(server: &TestServer) {
    let put = server
        .client
        .request(
            Method::PUT,
            "/v1/secrets/canary",
            &[],
            Bytes::from_static(b"alive"),
        )
        .await
        .expect("put");
    assert_eq!(put.status, StatusCode::CREATED);
}

/// True when the peer closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 256];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {} // a TLS alert; keep reading until the close
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hundred_stalled_handshakes_are_cut_off_while_a_good_client_is_served() {
    let server = TestServer::start_with(|config| {
        config.limits.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    with_canary(&server).await;
    let mut stalled = Vec::with_capacity(400);
    for _ in 0..400 {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        // Half a ClientHello record header, then nothing.
        tcp.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
        stalled.push(tcp);
    }
    // Served promptly throughout the handshake deadline.
    let until = Instant::now() + Duration::from_millis(1_500);
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        slowest = slowest.max(timed_get(&server).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest good request took {slowest:?}"
    );
    // Every stalled connection has been closed by the deadline.
    for (index, tcp) in stalled.iter_mut().enumerate() {
        assert!(
            closed_within(tcp, Duration::from_secs(3)).await,
            "stalled connection {index} still open"
        );
    }
    // Each ended at its deadline, or earlier to let a newer one in: one
    // address has 64 handshakes in progress at most.
    let failed = server.health.handshake_failures.load(Ordering::Relaxed);
    let evicted = server.health.handshakes_evicted.load(Ordering::Relaxed);
    assert!(
        failed + evicted >= 400,
        "{failed} failed, {evicted} evicted"
    );
    assert!(evicted >= 400 - 64, "{evicted} evicted");
    assert!(timed_get(&server).await < Duration::from_secs(1));
    server.stop().await;
}

#[tokio::test]
async fn a_200_kb_header_gets_a_4xx_or_a_closed_connection() {
    let server = TestServer::start().await;
    with_canary(&server).await;
    let mut stream = raw_tls(server.addr, &server.client_files).await;
    let huge = "a".repeat(200 * 1024);
    let request =
        format!("GET /v1/secrets/canary HTTP/1.1\r\nHost: localhost\r\nX-Huge: {huge}\r\n\r\n");
    // The server may stop reading (and close) before all of it is written.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("answered or closed in time");
    let text = String::from_utf8_lossy(&response);
    assert!(
        response.is_empty() || text.starts_with("HTTP/1.1 4"),
        "expected a 4xx or a close, got {:?}",
        &text[..text.len().min(200)]
    );
    assert!(
        !text.contains("alive"),
        "the request must not have been served"
    );
    assert!(timed_get(&server).await < Duration::from_secs(1));
    server.stop().await;
}

#[tokio::test]
async fn a_trickling_body_hits_the_read_deadline_with_408() {
    let server = TestServer::start_with(|config| {
        config.api.body_read_timeout = Duration::from_secs(1);
    })
    .await;
    with_canary(&server).await;
    let mut stream = raw_tls(server.addr, &server.client_files).await;
    stream
        .write_all(
            b"PUT /v1/secrets/slow HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n",
        )
        .await
        .expect("headers");
    let started = Instant::now();
    let mut response = vec![0u8; 2048];
    let mut read = 0;
    // One byte every 200 ms: steady enough to dodge an idle timeout, far too
    // slow to finish 100 bytes within the 1 s body deadline.
    let answer = loop {
        let _ = stream.write_all(b"x").await;
        match tokio::time::timeout(
            Duration::from_millis(200),
            stream.read(&mut response[read..]),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                break String::from_utf8_lossy(&response[..read]).into_owned()
            }
            Ok(Ok(n)) => {
                read += n;
                let text = String::from_utf8_lossy(&response[..read]).into_owned();
                if text.contains("\r\n\r\n{") && text.ends_with('}') {
                    break text;
                }
            }
            Err(_) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "no answer to a trickling body"
            ),
        }
    };
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        server.store.stats().entries,
        1,
        "nothing half-written was stored"
    );
    assert!(timed_get(&server).await < Duration::from_secs(1));
    server.stop().await;
}

/// Sends a PUT's head and not its body: a request in flight.
async fn busy(server: &TestServer) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tls = raw_tls(server.addr, &server.client_files).await;
    tls.write_all(b"PUT /v1/secrets/busy HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\n")
        .await
        .expect("write");
    tls
}

async fn get_canary(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    within: Duration,
) -> bool {
    tls.write_all(b"GET /v1/secrets/canary HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut response = vec![0u8; 1024];
    match tokio::time::timeout(within, tls.read(&mut response)).await {
        Ok(Ok(read)) => response[..read].starts_with(b"HTTP/1.1 200"),
        _ => false,
    }
}

#[tokio::test]
async fn at_the_connection_cap_the_longest_idle_connection_makes_room() {
    let server = TestServer::start_with(|config| config.limits.max_connections = 3).await;
    with_canary(&server).await; // the pooled client holds one connection, idle now
    let mut held = [busy(&server).await, busy(&server).await];
    // A fourth: the idle pooled connection is closed for it, not a busy one.
    let mut fourth = raw_tls(server.addr, &server.client_files).await;
    assert!(get_canary(&mut fourth, Duration::from_secs(1)).await);
    assert_eq!(server.health.closed_for_room.load(Ordering::Relaxed), 1);
    // Every place busy: a fifth waits ...
    fourth
        .write_all(b"PUT /v1/secrets/busy HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\n")
        .await
        .expect("write");
    let mut fifth = raw_tls(server.addr, &server.client_files).await;
    let started = Instant::now();
    let answered =
        tokio::spawn(async move { get_canary(&mut fifth, Duration::from_secs(4)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !answered.is_finished(),
        "served over the cap with every connection busy"
    );
    // ... until a busy connection's request ends and it is idle.
    held[0].write_all(b"done").await.expect("write");
    assert!(
        answered.await.expect("task"),
        "served once a connection was idle"
    );
    println!(
        "the fifth connection was served after {:?}",
        started.elapsed()
    );
    assert_eq!(server.health.closed_for_room.load(Ordering::Relaxed), 2);
    // The busy ones were never cut: the second replaces what the first
    // stored.
    held[1].write_all(b"done").await.expect("write");
    let mut response = vec![0u8; 1024];
    let read = held[1].read(&mut response).await.expect("read");
    assert!(response[..read].starts_with(b"HTTP/1.1 200"));
    server.stop().await;
}

/// The flood: 1,500 sockets stalled in the handshake and 1,024 idle
/// authenticated connections (every place taken), then a legitimate client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_and_every_place_idle_still_serve_a_new_client_within_a_second() {
    let server = TestServer::start().await;
    with_canary(&server).await;
    let mut idle = Vec::with_capacity(1024);
    for _ in 0..1024 {
        idle.push(raw_tls(server.addr, &server.client_files).await);
    }
    let mut stalled = Vec::with_capacity(1500);
    for _ in 0..1500 {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        tcp.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
        stalled.push(tcp);
    }
    let newcomer = server.client_named(
        "newcomer",
        tmpvault::tls::pki::ClientName::CommonName("newcomer".into()),
    );
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            newcomer.request(Method::GET, "/v1/secrets/canary", &[], Bytes::new()),
        )
        .await
        .expect("answered")
        .expect("request");
        assert_eq!(response.status, StatusCode::OK);
        slowest = slowest.max(started.elapsed());
    }
    println!(
        "slowest GET {slowest:?}; handshakes evicted {}, idle connections closed for room {}",
        server.health.handshakes_evicted.load(Ordering::Relaxed),
        server.health.closed_for_room.load(Ordering::Relaxed)
    );
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    // Every place was taken: the newcomer's came from an idle connection.
    assert!(server.health.closed_for_room.load(Ordering::Relaxed) >= 1);
    assert!(server.health.handshakes_evicted.load(Ordering::Relaxed) >= 1500 - 64);
    drop((idle, stalled));
    server.stop().await;
}
