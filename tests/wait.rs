//! `GET /v1/secrets/{key}?wait=D` with `If-None-Match`: held until the
//! secret changes (200), goes (404) or the wait ends (304), released at
//! shutdown, and refused without an ETag to wait on.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{problem_code, TestServer};
use hyper::{Method, StatusCode};
use tmpvault::cmd::client::{Client, RawResponse};

async fn put(client: &Client, key: &str, value: &[u8]) -> String {
    let response = client
        .request(
            Method::PUT,
            &format!("/v1/secrets/{key}"),
            &[],
            Bytes::copy_from_slice(value),
        )
        .await
        .unwrap();
    assert!(response.status.is_success(), "{}", response.status);
    response.headers["etag"].to_str().unwrap().to_owned()
}

async fn wait(client: &Client, key: &str, wait: &str, etag: &str) -> RawResponse {
    client
        .request(
            Method::GET,
            &format!("/v1/secrets/{key}?wait={wait}"),
            &[("if-none-match", etag)],
            Bytes::new(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_waiting_get_returns_the_new_value_as_soon_as_it_is_written() {
    let server = TestServer::start().await;
    let etag = put(&server.client, "app/db", b"old").await;
    let waiter = {
        let client = server.client.clone();
        let etag = etag.clone();
        tokio::spawn(async move {
            let response = wait(&client, "app/db", "10s", &etag).await;
            (response, Instant::now())
        })
    };
    // The waiter is parked, not polling.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.store.waiting() == 0 {
        assert!(Instant::now() < deadline, "the GET never started waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new_etag = put(&server.client, "app/db", b"new").await;
    let written = Instant::now();
    let (response, answered) = waiter.await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(&response.body[..], b"new");
    assert_eq!(response.headers["etag"].to_str().unwrap(), new_etag);
    let latency = answered.saturating_duration_since(written);
    println!("waiting GET answered {latency:?} after the write");
    assert!(latency < Duration::from_millis(100), "{latency:?}");
    assert_eq!(server.store.waiting(), 0, "the watch is released");
    server.stop().await;
}

#[tokio::test]
async fn an_unchanged_secret_answers_304_when_the_wait_ends() {
    let server = TestServer::start().await;
    let etag = put(&server.client, "app/db", b"v").await;
    let started = Instant::now();
    let response = wait(&server.client, "app/db", "300ms", &etag).await;
    let waited = started.elapsed();
    assert_eq!(response.status, StatusCode::NOT_MODIFIED);
    assert!(response.body.is_empty());
    assert_eq!(response.headers["etag"].to_str().unwrap(), etag);
    assert!(waited >= Duration::from_millis(290), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_stale_etag_answers_at_once_and_a_delete_answers_404() {
    let server = TestServer::start().await;
    let first = put(&server.client, "app/db", b"one").await;
    put(&server.client, "app/db", b"two").await;
    let started = Instant::now();
    let response = wait(&server.client, "app/db", "10s", &first).await;
    assert_eq!(
        (response.status, &response.body[..]),
        (StatusCode::OK, &b"two"[..])
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let current = response.headers["etag"].to_str().unwrap().to_owned();
    let waiter = {
        let client = server.client.clone();
        tokio::spawn(async move { wait(&client, "app/db", "10s", &current).await })
    };
    while server.store.waiting() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deleted = server
        .client
        .request(Method::DELETE, "/v1/secrets/app/db", &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let response = waiter.await.unwrap();
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(problem_code(&response.body, 404), "not_found");
    // An absent key answers 404 at once.
    let response = wait(&server.client, "app/none", "10s", "\"1\"").await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn an_expiring_secret_ends_the_wait_with_404() {
    let server = TestServer::start().await;
    let response = server
        .client
        .request(
            Method::PUT,
            "/v1/secrets/app/short?ttl=1s",
            &[],
            Bytes::from_static(b"v"),
        )
        .await
        .unwrap();
    let etag = response.headers["etag"].to_str().unwrap().to_owned();
    let started = Instant::now();
    let response = wait(&server.client, "app/short", "20s", &etag).await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_wait_without_an_etag_answers_at_once_and_a_bad_etag_or_duration_is_400() {
    let server = TestServer::start().await;
    put(&server.client, "app/db", b"v").await;
    // Without an ETag there is nothing to wait on: the value, at once.
    let started = Instant::now();
    let response = server
        .client
        .request(
            Method::GET,
            "/v1/secrets/app/db?wait=10s",
            &[],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        (response.status, &response.body[..]),
        (StatusCode::OK, &b"v"[..])
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    for (query, headers) in [
        ("wait=10s", vec![("if-none-match", "*")]),
        ("wait=10s", vec![("if-none-match", "\"a\", \"b\"")]),
        ("wait=soon", vec![("if-none-match", "\"1\"")]),
        ("wait=10s&wait=1s", vec![("if-none-match", "\"1\"")]),
        ("wait=10s&tll=1s", vec![("if-none-match", "\"1\"")]),
    ] {
        let response = server
            .client
            .request(
                Method::GET,
                &format!("/v1/secrets/app/db?{query}"),
                &headers,
                Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{query} {headers:?}"
        );
        assert_eq!(problem_code(&response.body, 400), "invalid_request");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_server_maximum_bounds_the_wait() {
    let server = TestServer::start_with(|config| {
        config.api.max_wait = Duration::from_millis(200);
    })
    .await;
    let etag = put(&server.client, "app/db", b"v").await;
    let started = Instant::now();
    let response = wait(&server.client, "app/db", "1h", &etag).await;
    assert_eq!(response.status, StatusCode::NOT_MODIFIED);
    assert!(started.elapsed() < Duration::from_secs(3));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_releases_waiting_gets_at_once() {
    let mut server = TestServer::start().await;
    let etag = put(&server.client, "app/db", b"v").await;
    let waiter = {
        let client = server.client.clone();
        tokio::spawn(async move { wait(&client, "app/db", "60s", &etag).await })
    };
    while server.store.waiting() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    server.begin_shutdown();
    let response = waiter.await.unwrap();
    assert_eq!(response.status, StatusCode::NOT_MODIFIED);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_conditional_get_without_wait_answers_304_uncounted_and_refuses_a_bad_etag() {
    let server = TestServer::start().await;
    let response = server
        .client
        .request(
            Method::PUT,
            "/v1/secrets/app/once?max_reads=1",
            &[],
            Bytes::from_static(b"v"),
        )
        .await
        .unwrap();
    let etag = response.headers["etag"].to_str().unwrap().to_owned();
    let get = |headers: Vec<(&'static str, String)>| {
        let client = server.client.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            client
                .request(Method::GET, "/v1/secrets/app/once", &headers, Bytes::new())
                .await
                .unwrap()
        }
    };
    // The schemathesis case: a value that is not an ETag is refused.
    for bad in [
        "RPp0",
        "*",
        "W/\"1\"",
        "\"1\", \"2\"",
        "\"1",
        "1\"",
        "\"\"",
        "\"12345678901234567\"",
    ] {
        let response = get(vec![("if-none-match", bad.to_owned())]).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(problem_code(&response.body, 400), "invalid_request");
    }
    // The ETag the client holds: 304, no body, and the one read is kept.
    let response = get(vec![("if-none-match", etag.clone())]).await;
    assert_eq!(response.status, StatusCode::NOT_MODIFIED);
    assert!(response.body.is_empty());
    assert_eq!(response.headers["etag"].to_str().unwrap(), etag);
    // The same hex without its quotes (the OpenAPI pattern allows it, as
    // for If-Match, since some clients drop them): 304 as well.
    let response = get(vec![("if-none-match", etag.trim_matches('"').to_owned())]).await;
    assert_eq!(response.status, StatusCode::NOT_MODIFIED);
    // Another ETag: the value, which uses up the read.
    let response = get(vec![("if-none-match", "\"ffff\"".to_owned())]).await;
    assert_eq!(
        (response.status, &response.body[..]),
        (StatusCode::OK, &b"v"[..])
    );
    let response = get(vec![]).await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn a_wait_longer_than_the_idle_timeout_is_not_cut() {
    // Idle means no request in flight: a held GET is in flight.
    let server = TestServer::start_with(|config| {
        config.limits.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let etag = put(&server.client, "app/db", b"v").await;
    let started = Instant::now();
    let response = wait(&server.client, "app/db", "2s", &etag).await;
    assert_eq!(response.status, StatusCode::NOT_MODIFIED);
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}
