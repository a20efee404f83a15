//! HTTP/2 answers as HTTP/1.1 does: an error known from a request's
//! headers (a bad key, TTL or query, a refused identity, a wrong method, an
//! oversize body, too many requests, oversize headers) reaches the client
//! whole, every time, while the client still holds its body; the stream then
//! ends cleanly, and an oversize body is never read to its end.
//!
//! The client is the `h2` crate, which can send a request's headers and
//! wait for the answer before sending the body; curl, whose HTTP/2 uploads
//! lost these answers, is run too when it is installed.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

mod common;

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use common::{problem_code, raw_tls, read_response, TestServer};
use h2::client::SendRequest;
use hyper::{HeaderMap, Method, Request, StatusCode};
use tmpvault::http::early::DRAIN_BYTES;
use tmpvault::tls::pki::write_private;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

const TRIES: usize = 50;
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A TLS connection offering only ALPN `h2`, with `files`' certificate.
async fn h2_tls(
    server: &TestServer,
    files: &tmpvault::tls::ClientTlsFiles,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = tmpvault::tls::client_config(files).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// One HTTP/2 connection (ALPN `h2`) with the test client's certificate.
async fn h2_connect(
    server: &TestServer,
    files: &tmpvault::tls::ClientTlsFiles,
) -> SendRequest<Bytes> {
    let tls = h2_tls(server, files).await;
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A request whose body is held back until the whole answer is in; then
/// the body is sent, which the server must take without resetting the
/// stream with an error.
async fn early(
    send: &mut SendRequest<Bytes>,
    method: &Method,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request.body(()).unwrap();
    let mut ready = send.clone().ready().await.unwrap();
    let (response, mut stream) = ready.send_request(request, body.is_empty()).unwrap();
    *send = ready;
    let response = timeout(ANSWER_WITHIN, response)
        .await
        .expect("answered before the body was sent")
        .expect("a response, not a reset");
    let (parts, mut recv) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = timeout(ANSWER_WITHIN, recv.data()).await.unwrap() {
        let chunk = chunk.expect("the answer's body is not cut off");
        recv.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    if !body.is_empty() {
        stream
            .send_data(Bytes::copy_from_slice(body), true)
            .expect("the held-back body is taken");
    }
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: bytes,
    }
}

/// An early answer: a request, the body held back, and the problem due.
struct Case {
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(method: Method, path: &'static str, status: u16, code: &'static str) -> Case {
    Case {
        method,
        path,
        headers: Vec::new(),
        body: b"v".to_vec(),
        status,
        code,
    }
}

/// The early answers a default server gives from the headers alone.
fn cases() -> Vec<Case> {
    vec![
        case(Method::PUT, "/v1/secrets/a/../b", 400, "invalid_key"),
        case(Method::PUT, "/v1/secrets/a?ttl=99d", 400, "invalid_ttl"),
        case(Method::PUT, "/v1/secrets/a?tll=1s", 400, "invalid_request"),
        case(Method::POST, "/v1/secrets/a", 405, "method_not_allowed"),
        Case {
            headers: vec![("content-length", (128 * 1024).to_string())],
            body: vec![0; 128 * 1024],
            ..case(Method::PUT, "/v1/secrets/a", 413, "value_too_large")
        },
        Case {
            headers: vec![("x-big", "x".repeat(100_000))],
            ..case(Method::PUT, "/v1/secrets/a", 431, "headers_too_large")
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_early_answer_reaches_an_http2_client_fifty_times_in_fifty() {
    let server = TestServer::start().await;
    let mut send = h2_connect(&server, &server.client_files).await;
    for Case {
        method,
        path,
        headers,
        body,
        status,
        code,
    } in cases()
    {
        for _ in 0..TRIES {
            let answer = early(&mut send, &method, path, &headers, &body).await;
            assert_eq!(answer.status.as_u16(), status, "{method} {path}");
            assert_eq!(problem_code(&answer.body, status), code, "{method} {path}");
            assert_eq!(answer.headers["content-type"], "application/problem+json");
        }
    }
    // The same connection still serves: nothing above ended it.
    let answer = early(&mut send, &Method::GET, "/v1/openapi.json", &[], b"").await;
    assert_eq!(answer.status, StatusCode::OK);
    // And nothing refused was stored.
    assert_eq!(server.store.stats().entries, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_early_answers_reach_an_http1_client_before_its_body() {
    let server = TestServer::start().await;
    for Case {
        method,
        path,
        headers,
        status,
        code,
        ..
    } in cases()
    {
        if status == 431 {
            continue; // HTTP/1.1's 431 is hyper's own, tested in tests/abuse.rs
        }
        for _ in 0..TRIES {
            let mut tls = raw_tls(server.addr, &server.client_files).await;
            let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n");
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            if !headers.iter().any(|(name, _)| *name == "content-length") {
                head.push_str("content-length: 1\r\n");
            }
            head.push_str("\r\n");
            tls.write_all(head.as_bytes()).await.unwrap();
            let (response_head, body) = timeout(ANSWER_WITHIN, read_response(&mut tls))
                .await
                .expect("answered before the body was sent");
            assert!(
                response_head.starts_with(&format!("HTTP/1.1 {status} ")),
                "{method} {path}: {response_head}"
            );
            assert_eq!(problem_code(&body, status), code);
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_refusal_and_a_rate_limit_are_early_answers_over_http2() {
    let dir = tempfile::Builder::new()
        .prefix("tmpvault-h2-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let policy = dir.path().join("policy.json");
    write_private(
        &policy,
        br#"{"rules": [{"identity": "cn:tester", "prefix": "mine/", "allow": ["read", "write"]}]}"#,
    )
    .unwrap();
    let server = TestServer::start_with(|config| config.policy = Some(policy)).await;
    let mut send = h2_connect(&server, &server.client_files).await;
    for _ in 0..TRIES {
        let answer = early(&mut send, &Method::PUT, "/v1/secrets/theirs/a", &[], b"v").await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(problem_code(&answer.body, 403), "forbidden");
    }
    server.stop().await;

    let server = TestServer::start_with(|config| config.rate_limit = Some(1)).await;
    let mut send = h2_connect(&server, &server.client_files).await;
    // A POST is 405 when let through and 429 when limited: both early.
    let first = early(&mut send, &Method::POST, "/v1/secrets/a", &[], b"v").await;
    assert_eq!(first.status, StatusCode::METHOD_NOT_ALLOWED);
    let mut limited = 0;
    for _ in 0..TRIES {
        let answer = early(&mut send, &Method::POST, "/v1/secrets/a", &[], b"w").await;
        // The bucket refills once a second; a slow run may see a refill.
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(problem_code(&answer.body, 429), "rate_limited");
            assert!(answer.headers.contains_key("retry-after"));
            limited += 1;
        } else {
            assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        }
    }
    assert!(limited >= TRIES - 5, "{limited} of {TRIES} were limited");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_body_is_never_read_to_its_end() {
    let server = TestServer::start().await;
    let mut send = h2_connect(&server, &server.client_files).await;
    let request = Request::builder()
        .method(Method::PUT)
        .uri("https://localhost/v1/secrets/a")
        .body(())
        .unwrap();
    let mut ready = send.clone().ready().await.unwrap();
    let (response, mut stream) = ready.send_request(request, false).unwrap();
    send = ready;
    // No Content-Length: the 413 comes with the first chunk past the limit.
    let chunk = Bytes::from(vec![0u8; 16 * 1024]);
    let mut sent = 0u64;
    let mut response = std::pin::pin!(response);
    let mut answered = None;
    let reason = loop {
        stream.reserve_capacity(chunk.len());
        // The stream's reset, or window to send more into.
        let next = std::future::poll_fn(|cx| {
            if let Poll::Ready(reset) = stream.poll_reset(cx) {
                return Poll::Ready(Err(reset.unwrap()));
            }
            stream.poll_capacity(cx).map(Ok)
        });
        let capacity = tokio::select! {
            next = next => match next {
                Err(reason) => break reason,
                Ok(Some(Ok(capacity))) => capacity,
                Ok(_) => break std::future::poll_fn(|cx| stream.poll_reset(cx)).await.unwrap(),
            },
            got = &mut response, if answered.is_none() => {
                answered = Some(got.unwrap().status());
                continue;
            }
        };
        stream.send_data(chunk.slice(..capacity), false).unwrap();
        sent += capacity as u64;
        assert!(
            sent < 64 << 20,
            "the server read 64 MiB of an oversize body"
        );
    };
    if answered.is_none() {
        answered = Some(response.await.unwrap().status());
    }
    assert_eq!(answered, Some(StatusCode::PAYLOAD_TOO_LARGE));
    // The answer, then the reset RFC 9113 §8.1 allows, after at most the
    // drain bound plus the windows the server had granted.
    assert_eq!(reason, h2::Reason::NO_ERROR);
    println!("an oversize body was cut off after {sent} bytes");
    assert!(sent <= DRAIN_BYTES + (3 << 20), "{sent} bytes were taken");
    // The connection goes on.
    let answer = early(&mut send, &Method::GET, "/v1/openapi.json", &[], b"").await;
    assert_eq!(answer.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_over_http2_gets_every_early_answer() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: curl is not installed (.ci/run installs it)");
        return;
    }
    let server = TestServer::start().await;
    let files = server.client_files.clone();
    let base = server.base.clone();
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(big.path(), vec![0u8; 3 << 20]).unwrap();
    let big = big.path().to_str().unwrap().to_owned();
    let results = tokio::task::spawn_blocking(move || {
        let cases: [(&[&str], &str, &str); 4] = [
            (
                &["-X", "PUT", "--path-as-is", "--data-binary", "v"],
                "/v1/secrets/a/../b",
                "400",
            ),
            (
                &["-X", "PUT", "--data-binary", "v"],
                "/v1/secrets/a?ttl=99d",
                "400",
            ),
            (
                &["-X", "POST", "--data-binary", "v"],
                "/v1/secrets/a",
                "405",
            ),
            (&["-X", "PUT", "--data-binary"], "/v1/secrets/a", "413"),
        ];
        let mut failures = Vec::new();
        for (args, path, status) in cases {
            for _ in 0..TRIES {
                let mut command = std::process::Command::new("curl");
                command
                    .args(["-sS", "--http2", "-o", "/dev/null", "-w", "%{http_code}"])
                    .args(["--cacert", files.ca.to_str().unwrap()])
                    .args(["--cert", files.cert.to_str().unwrap()])
                    .args(["--key", files.key.to_str().unwrap()])
                    .args(args);
                if status == "413" {
                    command.arg(format!("@{big}"));
                }
                let output = command.arg(format!("{base}{path}")).output().unwrap();
                let got = String::from_utf8_lossy(&output.stdout).into_owned();
                if got != status {
                    failures.push(format!(
                        "{path}: {got} {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    ));
                }
            }
        }
        failures
    })
    .await
    .unwrap();
    assert!(results.is_empty(), "lost answers: {results:?}");
    server.stop().await;
}

/// The stalled-response attack: GETs of 64 KiB secrets on a connection
/// whose window stays shut, each secret deleted after its GET. The values
/// stay charged while the responses hold them, and the connection is ended
/// at the response deadline, which lets them go.
#[tokio::test(flavor = "multi_thread")]
async fn responses_that_make_no_progress_end_at_the_deadline_and_stay_charged_until_then() {
    let server = TestServer::start_with(|config| {
        config.limits.response_timeout = Duration::from_secs(1);
    })
    .await;
    let value = Bytes::from(vec![7u8; 64 * 1024]);
    for n in 0..8 {
        server
            .client
            .put(&format!("big/{n}"), value.clone(), &Default::default())
            .await
            .unwrap();
    }
    let tls = h2_tls(&server, &server.client_files).await;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tls)
        .await
        .unwrap();
    let ended = tokio::spawn(connection);
    let mut responses = Vec::new();
    for n in 0..8 {
        let request = Request::builder()
            .uri(format!("https://localhost/v1/secrets/big/{n}"))
            .body(())
            .unwrap();
        let (response, _) = send
            .clone()
            .ready()
            .await
            .unwrap()
            .send_request(request, true)
            .unwrap();
        let response = timeout(ANSWER_WITHIN, response).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        responses.push(response);
        let deleted = server
            .client
            .request(
                Method::DELETE,
                &format!("/v1/secrets/big/{n}"),
                &[],
                Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    }
    // Deleted, but held by the stalled responses: still charged.
    let stats = server.store.stats();
    assert_eq!(stats.entries, 0);
    assert!(stats.bytes >= 8 * 64 * 1024, "{stats:?}");
    let started = std::time::Instant::now();
    let ended = timeout(Duration::from_secs(10), ended).await;
    assert!(
        ended.is_ok(),
        "the stalled connection is still open: {} closed as stalled",
        server
            .health
            .closed_stalled
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "the stalled connection was ended after {:?}",
        started.elapsed()
    );
    assert_eq!(
        server
            .health
            .closed_stalled
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Let go: uncharged.
    drop(responses);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while server.store.stats().bytes > 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            server.store.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// Values that differ from answer to answer (the request id, reads left)
/// are sent as never-indexed literals, so they stay out of the
/// connection's HPACK table; the headers that repeat are then found in it.
#[tokio::test(flavor = "multi_thread")]
async fn per_answer_headers_stay_out_of_the_hpack_table() {
    use common::h2raw::{self, flag, hpack, kind, H2Raw};
    let server = TestServer::start().await;
    let options = tmpvault::cmd::client::PutOptions {
        ttl: None,
        max_reads: Some(5),
        content_type: None,
    };
    server
        .client
        .put("once", Bytes::from_static(b"s3cr3t"), &options)
        .await
        .unwrap();
    let mut raw = H2Raw::connect(server.addr, &server.client_files, &[]).await;
    let mut seen = Vec::new();
    for stream in [1u32, 3, 5] {
        let block = hpack::request("GET", "/v1/secrets/once");
        raw.send(&h2raw::headers(stream, &block, true, true))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        loop {
            let frame = raw.reader.next(deadline).await.unwrap();
            if frame.kind == kind::HEADERS && frame.stream == stream {
                assert_ne!(frame.flags & flag::END_HEADERS, 0);
                seen.push(hpack::representations(&frame.payload));
                break;
            }
        }
    }
    // x-request-id and x-tmpvault-reads-left, in every answer.
    for counts in &seen {
        assert_eq!(counts[3], 2, "never-indexed fields: {seen:?}");
    }
    // By the third answer nothing but the `date` may still be new to the
    // table: content-type, cache-control, the expiry and nosniff are
    // indexed references.
    assert!(seen[2][1] <= 1, "fields added to the table: {seen:?}");
    drop(raw);
    server.stop().await;
}
