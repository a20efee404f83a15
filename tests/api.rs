//! The v1 API over real mTLS: every route, every status code the contract
//! names, exact statuses, bytes and problem codes.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{problem_code, TestServer};
use hyper::{Method, StatusCode};
use tmpvault::cmd::client::RawResponse;

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    server
        .client
        .request(method, path, headers, Bytes::copy_from_slice(body))
        .await
        .expect("request answered")
}

async fn expect_problem(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    status: u16,
    code: &str,
) -> RawResponse {
    let response = call(server, method.clone(), path, headers, body).await;
    assert_eq!(
        response.status.as_u16(),
        status,
        "{method} {path}: {:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.headers["content-type"], "application/problem+json");
    assert_eq!(
        problem_code(&response.body, status),
        code,
        "{method} {path}"
    );
    response
}

fn json(response: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&response.body).expect("JSON body")
}

#[tokio::test]
async fn put_then_get_returns_the_bytes_with_every_header() {
    let server = TestServer::start().await;
    let put = call(
        &server,
        Method::PUT,
        "/v1/secrets/db/password?ttl=10m",
        &[("content-type", "text/plain")],
        b"hunter2",
    )
    .await;
    assert_eq!(put.status, StatusCode::CREATED);
    assert_eq!(put.headers["location"], "/v1/secrets/db/password");
    let meta = json(&put);
    assert_eq!(meta["key"], "db/password");
    assert_eq!(meta["kind"], "secret");
    assert_eq!(meta["size"], 7);
    assert_eq!(meta["version"], 1);
    assert_eq!(meta["reads_left"], serde_json::Value::Null);
    assert_eq!(meta["content_type"], "text/plain");
    let etag = put.headers["etag"].to_str().unwrap().to_owned();

    let get = call(&server, Method::GET, "/v1/secrets/db/password", &[], b"").await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(&get.body[..], b"hunter2");
    assert_eq!(get.headers["content-type"], "text/plain");
    assert_eq!(get.headers["cache-control"], "no-store");
    assert_eq!(get.headers["etag"].to_str().unwrap(), etag);
    assert_eq!(
        get.headers["x-tmpvault-expires-at"],
        meta["expires_at"].as_str().unwrap()
    );
    let expires = httpdate::parse_http_date(get.headers["expires"].to_str().unwrap()).unwrap();
    let in_ten_minutes = std::time::SystemTime::now() + Duration::from_secs(600);
    let skew = in_ten_minutes
        .duration_since(expires)
        .unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_secs(5),
        "Expires is about ten minutes out"
    );
    server.stop().await;
}

#[tokio::test]
async fn percent_encoded_keys_name_the_same_secret() {
    let server = TestServer::start().await;
    let put = call(&server, Method::PUT, "/v1/secrets/app%2Fdb", &[], b"v").await;
    assert_eq!(json(&put)["key"], "app/db");
    assert_eq!(
        &call(&server, Method::GET, "/v1/secrets/app/db", &[], b"")
            .await
            .body[..],
        b"v"
    );
    server.stop().await;
}

#[tokio::test]
async fn head_works_wherever_get_does_and_never_has_a_body() {
    let server = TestServer::start().await;
    for path in ["/v1/secrets", "/v1/openapi.json", "/v1/selfcheck"] {
        let get = call(&server, Method::GET, path, &[], b"").await;
        let head = call(&server, Method::HEAD, path, &[], b"").await;
        assert_eq!(head.status, StatusCode::OK, "{path}");
        assert!(head.body.is_empty());
        assert_eq!(
            head.headers["content-length"],
            get.body.len().to_string(),
            "{path}"
        );
    }
    let missing = call(&server, Method::HEAD, "/v1/secrets/absent", &[], b"").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn replacing_answers_200_and_bumps_the_version_and_etag() {
    let server = TestServer::start().await;
    let first = call(&server, Method::PUT, "/v1/secrets/k", &[], b"one").await;
    let second = call(&server, Method::PUT, "/v1/secrets/k", &[], b"two").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(json(&second)["version"], 2);
    assert_ne!(first.headers["etag"], second.headers["etag"]);
    assert_eq!(json(&second)["created_at"], json(&first)["created_at"]);
    assert_eq!(
        &call(&server, Method::GET, "/v1/secrets/k", &[], b"")
            .await
            .body[..],
        b"two"
    );
    server.stop().await;
}

#[tokio::test]
async fn curl_default_form_type_is_stored_as_octet_stream() {
    let server = TestServer::start().await;
    call(
        &server,
        Method::PUT,
        "/v1/secrets/k",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"v",
    )
    .await;
    let get = call(&server, Method::GET, "/v1/secrets/k", &[], b"").await;
    assert_eq!(get.headers["content-type"], "application/octet-stream");
    server.stop().await;
}

#[tokio::test]
async fn head_has_the_headers_no_body_and_does_not_count_as_a_read() {
    let server = TestServer::start().await;
    call(
        &server,
        Method::PUT,
        "/v1/secrets/once?max_reads=1",
        &[],
        b"12345",
    )
    .await;
    for _ in 0..3 {
        let head = call(&server, Method::HEAD, "/v1/secrets/once", &[], b"").await;
        assert_eq!(head.status, StatusCode::OK);
        assert!(head.body.is_empty());
        assert_eq!(head.headers["content-length"], "5");
        assert_eq!(head.headers["x-tmpvault-reads-left"], "1");
        assert_eq!(head.headers["cache-control"], "no-store");
    }
    let get = call(&server, Method::GET, "/v1/secrets/once", &[], b"").await;
    assert_eq!((get.status, &get.body[..]), (StatusCode::OK, &b"12345"[..]));
    assert_eq!(get.headers["x-tmpvault-reads-left"], "0");
    expect_problem(
        &server,
        Method::GET,
        "/v1/secrets/once",
        &[],
        b"",
        404,
        "not_found",
    )
    .await;
    let head = call(&server, Method::HEAD, "/v1/secrets/once", &[], b"").await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn read_once_under_eight_concurrent_readers_gives_exactly_one_200() {
    let server = TestServer::start().await;
    for round in 0..5 {
        let path = format!("/v1/secrets/race{round}");
        call(
            &server,
            Method::PUT,
            &format!("{path}?max_reads=1"),
            &[],
            b"only-once",
        )
        .await;
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let client = server.client.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    client
                        .request(Method::GET, &path, &[], Bytes::new())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for reader in readers {
            let response = reader.await.unwrap();
            if response.status == StatusCode::OK {
                assert_eq!(&response.body[..], b"only-once");
            }
            statuses.push(response.status.as_u16());
        }
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 404, 404, 404, 404, 404, 404, 404],
            "round {round}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn preconditions_create_only_update_only_and_compare_and_swap() {
    let server = TestServer::start().await;
    expect_problem(
        &server,
        Method::PUT,
        "/v1/secrets/k",
        &[("if-match", "*")],
        b"x",
        412,
        "precondition_failed",
    )
    .await;
    let created = call(
        &server,
        Method::PUT,
        "/v1/secrets/k",
        &[("if-none-match", "*")],
        b"v1",
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    expect_problem(
        &server,
        Method::PUT,
        "/v1/secrets/k",
        &[("if-none-match", "*")],
        b"x",
        412,
        "precondition_failed",
    )
    .await;
    let etag = created.headers["etag"].to_str().unwrap().to_owned();
    let swapped = call(
        &server,
        Method::PUT,
        "/v1/secrets/k",
        &[("if-match", &etag)],
        b"v2",
    )
    .await;
    assert_eq!(swapped.status, StatusCode::OK);
    // The old ETag no longer matches: a lost update is refused.
    expect_problem(
        &server,
        Method::PUT,
        "/v1/secrets/k",
        &[("if-match", &etag)],
        b"v3",
        412,
        "precondition_failed",
    )
    .await;
    let updated = call(
        &server,
        Method::PUT,
        "/v1/secrets/k",
        &[("if-match", "*")],
        b"v4",
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(
        &call(&server, Method::GET, "/v1/secrets/k", &[], b"")
            .await
            .body[..],
        b"v4"
    );
    expect_problem(
        &server,
        Method::PUT,
        "/v1/secrets/k",
        &[("if-match", "W/\"1\"")],
        b"x",
        400,
        "invalid_request",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_keys_are_400_invalid_key() {
    let server = TestServer::start().await;
    let long = format!("/v1/secrets/{}", "k".repeat(257));
    for path in [
        "/v1/secrets/a/../b",
        "/v1/secrets/a//b",
        "/v1/secrets/a/./b",
        "/v1/secrets/a%20b",
        "/v1/secrets/",
        "/v1/secrets/a/",
        long.as_str(),
    ] {
        expect_problem(&server, Method::PUT, path, &[], b"x", 400, "invalid_key").await;
        expect_problem(&server, Method::GET, path, &[], b"", 400, "invalid_key").await;
    }
    expect_problem(
        &server,
        Method::POST,
        "/v1/lists/a//b/push",
        &[],
        b"x",
        400,
        "invalid_key",
    )
    .await;
    expect_problem(
        &server,
        Method::GET,
        "/v1/secrets?prefix=a//",
        &[],
        b"",
        400,
        "invalid_key",
    )
    .await;
    expect_problem(
        &server,
        Method::GET,
        "/v1/secrets?after=../x",
        &[],
        b"",
        400,
        "invalid_key",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn bad_ttls_are_400_invalid_ttl_and_bad_parameters_invalid_request() {
    let server = TestServer::start().await;
    for ttl in [
        "5y",
        "0",
        "48h",
        "-1",
        "abc",
        "1.5h",
        "99999999999999999999",
    ] {
        expect_problem(
            &server,
            Method::PUT,
            &format!("/v1/secrets/k?ttl={ttl}"),
            &[],
            b"x",
            400,
            "invalid_ttl",
        )
        .await;
    }
    expect_problem(
        &server,
        Method::PUT,
        "/v1/secrets/k?max_reads=0",
        &[],
        b"x",
        400,
        "invalid_request",
    )
    .await;
    expect_problem(
        &server,
        Method::PUT,
        "/v1/secrets/k?tll=5m",
        &[],
        b"x",
        400,
        "invalid_request",
    )
    .await;
    expect_problem(
        &server,
        Method::PUT,
        "/v1/secrets/k?ttl=5m&ttl=1h",
        &[],
        b"x",
        400,
        "invalid_request",
    )
    .await;
    expect_problem(
        &server,
        Method::GET,
        "/v1/secrets?limit=0",
        &[],
        b"",
        400,
        "invalid_request",
    )
    .await;
    expect_problem(
        &server,
        Method::GET,
        "/v1/secrets?limit=1001",
        &[],
        b"",
        400,
        "invalid_request",
    )
    .await;
    expect_problem(
        &server,
        Method::POST,
        "/v1/lists/l/pop?from=middle",
        &[],
        b"",
        400,
        "invalid_request",
    )
    .await;
    // Nothing was stored by any of these.
    assert_eq!(server.store.stats().entries, 0);
    let ok = call(&server, Method::PUT, "/v1/secrets/k?ttl=90", &[], b"x").await;
    assert_eq!(ok.status, StatusCode::CREATED);
    server.stop().await;
}

#[tokio::test]
async fn oversize_bodies_are_413_and_the_limit_itself_fits() {
    let server = TestServer::start().await;
    let limit = 64 * 1024;
    let at_limit = vec![b'a'; limit];
    assert_eq!(
        call(&server, Method::PUT, "/v1/secrets/big", &[], &at_limit)
            .await
            .status,
        StatusCode::CREATED
    );
    let over = vec![b'a'; limit + 1];
    expect_problem(
        &server,
        Method::PUT,
        "/v1/secrets/big",
        &[],
        &over,
        413,
        "value_too_large",
    )
    .await;
    expect_problem(
        &server,
        Method::POST,
        "/v1/lists/l/push",
        &[],
        &over,
        413,
        "value_too_large",
    )
    .await;
    // The stored value is untouched.
    assert_eq!(
        call(&server, Method::GET, "/v1/secrets/big", &[], b"")
            .await
            .body
            .len(),
        limit
    );
    server.stop().await;
}

#[tokio::test]
async fn wrong_kind_is_409() {
    let server = TestServer::start().await;
    call(&server, Method::PUT, "/v1/secrets/s", &[], b"v").await;
    call(&server, Method::POST, "/v1/lists/l/push", &[], b"i").await;
    expect_problem(
        &server,
        Method::POST,
        "/v1/lists/s/push",
        &[],
        b"x",
        409,
        "wrong_kind",
    )
    .await;
    expect_problem(
        &server,
        Method::POST,
        "/v1/lists/s/pop",
        &[],
        b"",
        409,
        "wrong_kind",
    )
    .await;
    expect_problem(
        &server,
        Method::GET,
        "/v1/secrets/l",
        &[],
        b"",
        409,
        "wrong_kind",
    )
    .await;
    expect_problem(
        &server,
        Method::PUT,
        "/v1/secrets/l",
        &[],
        b"x",
        409,
        "wrong_kind",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn delete_is_204_then_404_and_works_for_lists() {
    let server = TestServer::start().await;
    call(&server, Method::PUT, "/v1/secrets/s", &[], b"v").await;
    call(&server, Method::POST, "/v1/lists/l/push", &[], b"i").await;
    for path in ["/v1/secrets/s", "/v1/secrets/l"] {
        let deleted = call(&server, Method::DELETE, path, &[], b"").await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert!(deleted.body.is_empty());
        expect_problem(&server, Method::DELETE, path, &[], b"", 404, "not_found").await;
    }
    assert_eq!(server.store.stats().entries, 0);
    server.stop().await;
}

#[tokio::test]
async fn renew_changes_the_expiry() {
    let server = TestServer::start().await;
    let put = json(&call(&server, Method::PUT, "/v1/secrets/k?ttl=1h", &[], b"v").await);
    let renewed = call(
        &server,
        Method::PATCH,
        "/v1/secrets/k",
        &[("content-type", "application/json")],
        br#"{"ttl": "2h"}"#,
    )
    .await;
    assert_eq!(renewed.status, StatusCode::OK);
    let renewed = json(&renewed);
    assert!(renewed["expires_at"].as_str() > put["expires_at"].as_str());
    assert_eq!(renewed["version"], 1, "renewing does not change the value");
    let seconds = call(
        &server,
        Method::PATCH,
        "/v1/secrets/k",
        &[],
        br#"{"ttl": 60}"#,
    )
    .await;
    assert_eq!(seconds.status, StatusCode::OK);
    assert!(json(&seconds)["expires_at"].as_str() < put["expires_at"].as_str());
    expect_problem(
        &server,
        Method::PATCH,
        "/v1/secrets/k",
        &[],
        br#"{"ttl": "48h"}"#,
        400,
        "invalid_ttl",
    )
    .await;
    expect_problem(
        &server,
        Method::PATCH,
        "/v1/secrets/k",
        &[],
        br#"{"ttl": "10m", "x": 1}"#,
        400,
        "invalid_request",
    )
    .await;
    expect_problem(
        &server,
        Method::PATCH,
        "/v1/secrets/k",
        &[],
        b"not json",
        400,
        "invalid_request",
    )
    .await;
    expect_problem(
        &server,
        Method::PATCH,
        "/v1/secrets/k",
        &[],
        br#"{}"#,
        400,
        "invalid_request",
    )
    .await;
    expect_problem(
        &server,
        Method::PATCH,
        "/v1/secrets/absent",
        &[],
        br#"{"ttl": "10m"}"#,
        404,
        "not_found",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn listing_pages_by_prefix_and_never_shows_values() {
    let server = TestServer::start().await;
    for i in 0..7 {
        call(
            &server,
            Method::PUT,
            &format!("/v1/secrets/app/k{i}"),
            &[],
            b"top-secret-value",
        )
        .await;
    }
    call(
        &server,
        Method::PUT,
        "/v1/secrets/other",
        &[],
        b"top-secret-value",
    )
    .await;
    let first = call(
        &server,
        Method::GET,
        "/v1/secrets?prefix=app/&limit=3",
        &[],
        b"",
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(!String::from_utf8_lossy(&first.body).contains("top-secret-value"));
    let first = json(&first);
    let keys = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys(&first), ["app/k0", "app/k1", "app/k2"]);
    assert_eq!(first["next"], "app/k2");
    let second = json(
        &call(
            &server,
            Method::GET,
            "/v1/secrets?prefix=app/&limit=3&after=app/k2",
            &[],
            b"",
        )
        .await,
    );
    assert_eq!(keys(&second), ["app/k3", "app/k4", "app/k5"]);
    let last = json(
        &call(
            &server,
            Method::GET,
            "/v1/secrets?prefix=app/&limit=3&after=app/k5",
            &[],
            b"",
        )
        .await,
    );
    assert_eq!(keys(&last), ["app/k6"]);
    assert_eq!(last["next"], serde_json::Value::Null);
    let all = json(&call(&server, Method::GET, "/v1/secrets", &[], b"").await);
    assert_eq!(all["items"].as_array().unwrap().len(), 8);
    server.stop().await;
}

#[tokio::test]
async fn lists_push_and_pop_one_time_credentials() {
    let server = TestServer::start().await;
    let first = call(
        &server,
        Method::POST,
        "/v1/lists/otp/push?ttl=10m",
        &[],
        b"111",
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(json(&first)["kind"], "list");
    let second = call(&server, Method::POST, "/v1/lists/otp/push", &[], b"222").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(json(&second)["size"], 2);
    call(&server, Method::POST, "/v1/lists/otp/push", &[], b"333").await;

    let newest = call(&server, Method::POST, "/v1/lists/otp/pop", &[], b"").await;
    assert_eq!(
        (newest.status, &newest.body[..]),
        (StatusCode::OK, &b"333"[..])
    );
    assert_eq!(newest.headers["x-tmpvault-items-left"], "2");
    assert_eq!(newest.headers["cache-control"], "no-store");
    let oldest = call(
        &server,
        Method::POST,
        "/v1/lists/otp/pop?from=oldest",
        &[],
        b"",
    )
    .await;
    assert_eq!(&oldest.body[..], b"111");
    let last = call(&server, Method::POST, "/v1/lists/otp/pop", &[], b"").await;
    assert_eq!(&last.body[..], b"222");
    assert_eq!(last.headers["x-tmpvault-items-left"], "0");
    // Popping the last item deleted the list.
    expect_problem(
        &server,
        Method::POST,
        "/v1/lists/otp/pop",
        &[],
        b"",
        404,
        "not_found",
    )
    .await;
    expect_problem(
        &server,
        Method::DELETE,
        "/v1/secrets/otp",
        &[],
        b"",
        404,
        "not_found",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let server = TestServer::start().await;
    expect_problem(
        &server,
        Method::GET,
        "/v2/secrets/k",
        &[],
        b"",
        404,
        "not_found",
    )
    .await;
    expect_problem(&server, Method::GET, "/", &[], b"", 404, "not_found").await;
    let cases = [
        (
            Method::POST,
            "/v1/secrets/k",
            "GET, HEAD, PUT, PATCH, DELETE",
        ),
        (Method::DELETE, "/v1/secrets", "GET, HEAD"),
        (Method::GET, "/v1/lists/l/push", "POST"),
        (Method::GET, "/v1/lists/l/pop", "POST"),
        (Method::PUT, "/v1/selfcheck", "GET, HEAD"),
        (Method::POST, "/v1/openapi.json", "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        let response =
            expect_problem(&server, method, path, &[], b"", 405, "method_not_allowed").await;
        assert_eq!(response.headers["allow"], allow, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_memory_budget_refuses_writes_with_507_and_keeps_existing_data() {
    let server = TestServer::start_with(|config| config.max_memory = 100 * 1024).await;
    let value = vec![b'v'; 30 * 1024];
    for i in 0..3 {
        let put = call(
            &server,
            Method::PUT,
            &format!("/v1/secrets/k{i}"),
            &[],
            &value,
        )
        .await;
        assert_eq!(put.status, StatusCode::CREATED, "k{i}");
    }
    expect_problem(
        &server,
        Method::PUT,
        "/v1/secrets/k3",
        &[],
        &value,
        507,
        "memory_budget_exceeded",
    )
    .await;
    expect_problem(
        &server,
        Method::POST,
        "/v1/lists/l/push",
        &[],
        &value,
        507,
        "memory_budget_exceeded",
    )
    .await;
    for i in 0..3 {
        let get = call(&server, Method::GET, &format!("/v1/secrets/k{i}"), &[], b"").await;
        assert_eq!((get.status, get.body.len()), (StatusCode::OK, value.len()));
    }
    // Freeing space makes room again.
    call(&server, Method::DELETE, "/v1/secrets/k0", &[], b"").await;
    assert_eq!(
        call(&server, Method::PUT, "/v1/secrets/k3", &[], &value)
            .await
            .status,
        StatusCode::CREATED
    );
    server.stop().await;
}

#[tokio::test]
async fn a_secret_is_gone_and_wiped_within_a_second_of_its_deadline() {
    let server = TestServer::start().await;
    let written = tokio::time::Instant::now();
    call(&server, Method::PUT, "/v1/secrets/short?ttl=1s", &[], b"v").await;
    call(&server, Method::PUT, "/v1/secrets/long?ttl=1h", &[], b"v").await;
    assert_eq!(server.store.stats().entries, 2);
    // Purged by the deadline index without anyone touching the key, within
    // a second of its deadline (two seconds after it was written).
    while server.store.stats().entries == 2 {
        assert!(
            written.elapsed() < Duration::from_secs(2),
            "the 1s secret outlived its deadline by a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.store.stats().entries, 1);
    assert_eq!(server.store.stats().expired, 1);
    expect_problem(
        &server,
        Method::GET,
        "/v1/secrets/short",
        &[],
        b"",
        404,
        "not_found",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn selfcheck_and_openapi_are_served() {
    let server = TestServer::start().await;
    let report = call(&server, Method::GET, "/v1/selfcheck", &[], b"").await;
    assert_eq!(report.status, StatusCode::OK);
    let report = json(&report);
    assert!(["pass", "warn", "fail"].contains(&report["status"].as_str().unwrap()));
    let ids: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, tmpvault::posture::selfcheck::CHECK_IDS);
    assert_eq!(
        report["checks"][0]["status"], "pass",
        "the test scratch dir is on tmpfs"
    );

    let openapi = call(&server, Method::GET, "/v1/openapi.json", &[], b"").await;
    assert_eq!(openapi.status, StatusCode::OK);
    assert_eq!(openapi.headers["content-type"], "application/json");
    assert!(json(&openapi)["openapi"]
        .as_str()
        .unwrap()
        .starts_with("3."));
    server.stop().await;
}
