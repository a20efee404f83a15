//! The ops listener: liveness, readiness through a drain, and metrics read
//! back with a real Prometheus parser.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{http_get, raw_tls, TestServer};
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn with_ops() -> TestServer {
    TestServer::start_with(|config| {
        config.ops_listen = Some("127.0.0.1:0".parse().expect("address"))
    })
    .await
}

#[tokio::test]
async fn healthz_and_readyz_answer_and_other_paths_do_not() {
    let server = with_ops().await;
    let ops = server.ops_addr.expect("ops listener bound");
    assert_eq!(http_get(ops, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(http_get(ops, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(http_get(ops, "/v1/secrets").await.0, 404);
    assert_eq!(http_get(ops, "/").await.0, 404);
    server.stop().await;
}

#[tokio::test]
async fn readyz_turns_503_while_draining() {
    let mut server = with_ops().await;
    let ops = server.ops_addr.unwrap();
    // A request in flight holds the drain open: the server's "100 Continue"
    // proves the handler is reading the body, then half of it is sent.
    let mut stream = raw_tls(server.addr, &server.client_files).await;
    stream
        .write_all(b"PUT /v1/secrets/inflight HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut continued = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut continued))
        .await
        .expect("100 Continue in time")
        .unwrap();
    assert!(
        continued[..read].starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&continued[..read])
    );
    stream.write_all(b"12345").await.unwrap();
    stream.flush().await.unwrap();

    server.begin_shutdown();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = http_get(ops, "/readyz").await;
        if status == 503 {
            assert_eq!(body, "draining\n");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        http_get(ops, "/healthz").await.0,
        200,
        "still alive while draining"
    );

    // The in-flight request still completes.
    stream.write_all(b"67890").await.unwrap();
    let mut response = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(
        response[..read].starts_with(b"HTTP/1.1 201"),
        "{}",
        String::from_utf8_lossy(&response[..read])
    );
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_never_name_a_key() {
    let server = with_ops().await;
    let ops = server.ops_addr.unwrap();
    for _ in 0..3 {
        server
            .client
            .request(
                Method::PUT,
                "/v1/secrets/very-private-key-name",
                &[],
                Bytes::from_static(b"value-marker"),
            )
            .await
            .unwrap();
    }
    server
        .client
        .request(Method::GET, "/v1/secrets/absent", &[], Bytes::new())
        .await
        .unwrap();

    let (status, body) = http_get(ops, "/metrics").await;
    assert_eq!(status, 200);
    assert!(!body.contains("very-private-key-name"));
    assert!(!body.contains("value-marker"));
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");

    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{body}"));
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("unexpected value {other:?}"),
        }
    };
    assert_eq!(
        value(
            "tmpvault_requests_total",
            &[("route", "/v1/secrets/:key"), ("status", "201")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "tmpvault_requests_total",
            &[("route", "/v1/secrets/:key"), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "tmpvault_requests_total",
            &[("route", "/v1/secrets/:key"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(value("tmpvault_items", &[]), 1.0);
    assert!(value("tmpvault_stored_bytes", &[]) > 12.0);
    assert_eq!(
        value("tmpvault_memory_budget_bytes", &[]),
        f64::from(16u32 << 20)
    );
    // The shared arena of the in-process tests (tests/common): 1 GiB where
    // memory may be locked, else none; the stored value holds a block.
    let (arena, used) = (
        value("tmpvault_secret_arena_bytes", &[]),
        value("tmpvault_secret_arena_used_bytes", &[]),
    );
    assert!(
        (arena == f64::from(1u32 << 30) && used >= 16.0) || (arena == 0.0 && used == 0.0),
        "arena {arena}, used {used}"
    );
    assert_eq!(value("tmpvault_ready", &[]), 1.0);
    assert_eq!(
        value("tmpvault_selfcheck_status", &[("check", "scratch.tmpfs")]),
        0.0
    );
    assert!(value("tmpvault_connections_open", &[]) >= 1.0);
    assert!(value("process_resident_memory_bytes", &[]) > 0.0);
    server.stop().await;
}

#[tokio::test]
async fn failed_handshakes_are_counted() {
    let server = with_ops().await;
    let ops = server.ops_addr.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut sink)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (_, body) = http_get(ops, "/metrics").await;
        if body
            .lines()
            .any(|line| line == "tmpvault_tls_handshake_failures_total 1")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_exits_0_only_when_ready() {
    let server = with_ops().await;
    let ops = server.ops_addr.unwrap();
    let run = |url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tmpvault"))
            .args(["healthcheck", "--ops-url", &url, "--timeout", "2s"])
            .output()
            .unwrap()
    };
    let ready = tokio::task::spawn_blocking(move || run(format!("http://{ops}/readyz")))
        .await
        .unwrap();
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    // The ops listener's base address, as people write it, means /readyz.
    for base in [format!("http://{ops}"), format!("http://{ops}/")] {
        let shown = base.clone();
        let answer = tokio::task::spawn_blocking(move || run(base))
            .await
            .unwrap();
        assert!(
            answer.status.success(),
            "{shown}: {}",
            String::from_utf8_lossy(&answer.stderr)
        );
    }
    let missing = tokio::task::spawn_blocking(move || run(format!("http://{ops}/nope")))
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("answered 404"));
    server.stop().await;
    let down = tokio::task::spawn_blocking(move || run(format!("http://{ops}/readyz")))
        .await
        .unwrap();
    assert_eq!(down.status.code(), Some(1), "nothing listens any more");
    let bad = tokio::task::spawn_blocking(move || run("ftp://x".to_owned()))
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid ops URL"));
}

/// `tmpvault_waiting_requests` from a scrape (plain text: one sample).
async fn waiting_requests(ops: std::net::SocketAddr) -> String {
    let (status, body) = http_get(ops, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix("tmpvault_waiting_requests "))
        .unwrap_or_else(|| panic!("no tmpvault_waiting_requests in\n{body}"))
        .to_owned()
}

#[tokio::test]
async fn waiting_gets_are_counted_while_they_wait() {
    let server = with_ops().await;
    let ops = server.ops_addr.unwrap();
    let put = server
        .client
        .request(Method::PUT, "/v1/secrets/w", &[], Bytes::from_static(b"1"))
        .await
        .unwrap();
    let etag = put.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(waiting_requests(ops).await, "0");
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let client = server.client.clone();
            let etag = etag.clone();
            tokio::spawn(async move {
                client
                    .request(
                        Method::GET,
                        "/v1/secrets/w?wait=30s",
                        &[("if-none-match", etag.as_str())],
                        Bytes::new(),
                    )
                    .await
                    .unwrap()
                    .status
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while waiting_requests(ops).await != "3" {
        assert!(tokio::time::Instant::now() < deadline, "never 3 waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server
        .client
        .request(Method::PUT, "/v1/secrets/w", &[], Bytes::from_static(b"2"))
        .await
        .unwrap();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), 200);
    }
    assert_eq!(waiting_requests(ops).await, "0");
    server.stop().await;
}
