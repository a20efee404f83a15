//! Every way a request is refused, with its exact status and problem code:
//! identities from certificates, the policy, listing filtered by it, the
//! rate limit, the audit trail, and live reload of policy and certificate.
//! (Refusals in the TLS handshake itself, where there is no HTTP status, are
//! in `tests/tls.rs`: no certificate, another CA, an expired certificate.)

mod common;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::{problem_code, raw_tls, read_response, TestServer};
use hyper::{Method, StatusCode};
use tmpvault::cmd::client::{Client, RawResponse};
use tmpvault::tls::pki::ClientName;
use tokio::io::AsyncWriteExt;

const POLICY: &str = r#"{"rules": [
  {"identity": "spiffe://example.org/ns/payments/*", "prefix": "payments/", "allow": ["read", "list"]},
  {"identity": "cn:deployer", "prefix": "", "allow": ["read", "write", "delete", "list"]},
  {"identity": "dns:billing.example.org", "prefix": "billing/", "allow": ["read", "write", "list"]}
]}"#;

struct Secured {
    _dir: tempfile::TempDir,
    server: TestServer,
    policy_path: PathBuf,
    deployer: Client,
    payments: Client,
    billing: Client,
}

async fn secured(adjust: impl FnOnce(&mut tmpvault::config::ServeConfig)) -> Secured {
    let dir = tempfile::Builder::new()
        .prefix("tmpvault-policy-")
        .tempdir_in("/dev/shm")
        .expect("a temp dir");
    let policy_path = dir.path().join("policy.json");
    std::fs::write(&policy_path, POLICY).expect("write policy");
    let path = policy_path.clone();
    let server = TestServer::start_with(move |config| {
        config.policy = Some(path);
        config.reload_interval = Duration::from_millis(100);
        adjust(config);
    })
    .await;
    let deployer = server.client_named("deployer", ClientName::CommonName("deployer".into()));
    let payments = server.client_named(
        "payments",
        ClientName::Uri("spiffe://example.org/ns/payments/sa/api".into()),
    );
    let billing = server.client_named("billing", ClientName::Dns("billing.example.org".into()));
    Secured {
        _dir: dir,
        server,
        policy_path,
        deployer,
        payments,
        billing,
    }
}

async fn call(client: &Client, method: Method, path: &str, body: &[u8]) -> RawResponse {
    client
        .request(method, path, &[], Bytes::copy_from_slice(body))
        .await
        .expect("answered")
}

async fn forbidden(client: &Client, method: Method, path: &str) {
    let response = call(client, method.clone(), path, b"x").await;
    assert_eq!(response.status, StatusCode::FORBIDDEN, "{method} {path}");
    assert_eq!(
        problem_code(&response.body, 403),
        "forbidden",
        "{method} {path}"
    );
}

#[tokio::test]
async fn a_cn_only_certificate_is_cn_colon_name_and_may_do_what_its_rule_allows() {
    let s = secured(|_| {}).await;
    for path in [
        "/v1/secrets/payments/db",
        "/v1/secrets/billing/db",
        "/v1/secrets/anything",
    ] {
        assert_eq!(
            call(&s.deployer, Method::PUT, path, b"v").await.status,
            StatusCode::CREATED,
            "{path}"
        );
        assert_eq!(
            call(&s.deployer, Method::GET, path, b"").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        call(&s.deployer, Method::DELETE, "/v1/secrets/anything", b"")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    s.server.stop().await;
}

#[tokio::test]
async fn a_spiffe_wildcard_matches_its_namespace_only() {
    let s = secured(|_| {}).await;
    call(&s.deployer, Method::PUT, "/v1/secrets/payments/db", b"pay").await;
    let read = call(&s.payments, Method::GET, "/v1/secrets/payments/db", b"").await;
    assert_eq!((read.status, &read.body[..]), (StatusCode::OK, &b"pay"[..]));
    let other_namespace = s.server.client_named(
        "other-ns",
        ClientName::Uri("spiffe://example.org/ns/billing/sa/api".into()),
    );
    forbidden(&other_namespace, Method::GET, "/v1/secrets/payments/db").await;
    // The prefix before the * is matched as text: a look-alike domain is out.
    let look_alike = s.server.client_named(
        "look-alike",
        ClientName::Uri("spiffe://example.org.evil/ns/payments/sa/api".into()),
    );
    forbidden(&look_alike, Method::GET, "/v1/secrets/payments/db").await;
    s.server.stop().await;
}

#[tokio::test]
async fn an_identity_with_no_matching_rule_is_403() {
    let s = secured(|_| {}).await;
    let stranger = s
        .server
        .client_named("stranger", ClientName::CommonName("stranger".into()));
    for (method, path) in [
        (Method::GET, "/v1/secrets/payments/db"),
        (Method::PUT, "/v1/secrets/payments/db"),
        (Method::DELETE, "/v1/secrets/payments/db"),
        (Method::POST, "/v1/lists/payments/otp/push"),
        (Method::POST, "/v1/lists/payments/otp/pop"),
        (Method::PATCH, "/v1/secrets/payments/db"),
    ] {
        forbidden(&stranger, method, path).await;
    }
    // A near-miss of an exact identity is a stranger too.
    let near = s
        .server
        .client_named("near", ClientName::CommonName("deployer2".into()));
    forbidden(&near, Method::GET, "/v1/secrets/x").await;
    s.server.stop().await;
}

#[tokio::test]
async fn the_right_identity_outside_its_prefix_is_403() {
    let s = secured(|_| {}).await;
    call(&s.deployer, Method::PUT, "/v1/secrets/billing/db", b"v").await;
    forbidden(&s.payments, Method::GET, "/v1/secrets/billing/db").await;
    forbidden(&s.payments, Method::GET, "/v1/secrets/payments").await; // "payments" lacks the "/"
    forbidden(&s.billing, Method::PUT, "/v1/secrets/payments/x").await;
    s.server.stop().await;
}

#[tokio::test]
async fn the_right_prefix_with_an_operation_not_allowed_is_403() {
    let s = secured(|_| {}).await;
    call(&s.deployer, Method::PUT, "/v1/secrets/payments/db", b"v").await;
    forbidden(&s.payments, Method::PUT, "/v1/secrets/payments/db").await; // read-only
    forbidden(&s.payments, Method::DELETE, "/v1/secrets/payments/db").await;
    forbidden(&s.payments, Method::PATCH, "/v1/secrets/payments/db").await;
    forbidden(&s.payments, Method::POST, "/v1/lists/payments/otp/push").await;
    forbidden(&s.billing, Method::DELETE, "/v1/secrets/billing/db").await; // no delete
                                                                           // The value is intact after all those refusals.
    assert_eq!(
        &call(&s.deployer, Method::GET, "/v1/secrets/payments/db", b"")
            .await
            .body[..],
        b"v"
    );
    // A dns SAN identity can write inside its prefix.
    assert_eq!(
        call(&s.billing, Method::PUT, "/v1/secrets/billing/new", b"w")
            .await
            .status,
        StatusCode::CREATED
    );
    s.server.stop().await;
}

#[tokio::test]
async fn listing_shows_only_what_the_identity_may_list() {
    let s = secured(|_| {}).await;
    for key in ["payments/a", "payments/b", "billing/a", "other/a"] {
        call(
            &s.deployer,
            Method::PUT,
            &format!("/v1/secrets/{key}"),
            b"v",
        )
        .await;
    }
    let keys = |response: &RawResponse| -> Vec<String> {
        let page: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap().to_owned())
            .collect()
    };
    let payments = call(&s.payments, Method::GET, "/v1/secrets", b"").await;
    assert_eq!(payments.status, StatusCode::OK);
    assert_eq!(keys(&payments), ["payments/a", "payments/b"]);
    // A page is never short because of the filter.
    let one = call(&s.payments, Method::GET, "/v1/secrets?limit=1", b"").await;
    assert_eq!(keys(&one), ["payments/a"]);
    let billing = call(&s.billing, Method::GET, "/v1/secrets?prefix=", b"").await;
    assert_eq!(keys(&billing), ["billing/a"]);
    let stranger = s
        .server
        .client_named("stranger", ClientName::CommonName("stranger".into()));
    assert!(keys(&call(&stranger, Method::GET, "/v1/secrets", b"").await).is_empty());
    assert_eq!(
        keys(&call(&s.deployer, Method::GET, "/v1/secrets", b"").await).len(),
        4
    );
    s.server.stop().await;
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_gets_429_with_retry_after_and_recovers() {
    let server = TestServer::start_with(|config| config.rate_limit = Some(5)).await;
    for i in 0..5 {
        let response = call(&server.client, Method::GET, "/v1/secrets", b"").await;
        assert_eq!(response.status, StatusCode::OK, "request {i} of the burst");
    }
    let limited = call(&server.client, Method::GET, "/v1/secrets", b"").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(problem_code(&limited.body, 429), "rate_limited");
    assert_eq!(limited.headers["retry-after"], "1");
    // Another identity has its own bucket.
    let other = server.client_named("other", ClientName::CommonName("other".into()));
    assert_eq!(
        call(&other, Method::GET, "/v1/secrets", b"").await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        call(&server.client, Method::GET, "/v1/secrets", b"")
            .await
            .status,
        StatusCode::OK
    );
    server.stop().await;
}

/// The serial of the certificate a new connection is served with.
async fn served_serial(server: &TestServer) -> String {
    let stream = raw_tls(server.addr, &server.client_files).await;
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a server certificate")[0]
        .clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).expect("parsable");
    // Without leading zeros, as the issued certificate's serial is compared:
    // the DER integer can start with a zero nibble or a 00 sign byte.
    parsed
        .raw_serial_as_string()
        .replace(':', "")
        .trim_start_matches('0')
        .to_owned()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn replace_file(path: &std::path::Path, contents: &[u8]) {
    // Like Kubernetes: write elsewhere, then rename over (a new inode).
    let staging = path.with_extension("new");
    let _ = std::fs::remove_file(&staging);
    tmpvault::tls::pki::write_private(&staging, contents).expect("write");
    std::fs::rename(&staging, path).expect("rename");
}

#[tokio::test]
async fn a_changed_policy_and_certificate_are_picked_up_and_old_connections_keep_working() {
    let s = secured(|_| {}).await;
    call(&s.deployer, Method::PUT, "/v1/secrets/payments/db", b"v").await;
    let old_serial = served_serial(&s.server).await;

    // A keep-alive connection made before the reload.
    let deployer_files = tmpvault::tls::ClientTlsFiles {
        ca: s.server.pki.ca_path.clone(),
        cert: s.server.pki.dir.path().join("deployer.pem"),
        key: s.server.pki.dir.path().join("deployer-key.pem"),
    };
    let mut old = raw_tls(s.server.addr, &deployer_files).await;
    old.write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut old).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // New policy: payments may now write; new server certificate.
    replace_file(
        &s.policy_path,
        POLICY
            .replace(
                r#""allow": ["read", "list"]"#,
                r#""allow": ["read", "write", "list"]"#,
            )
            .as_bytes(),
    );
    let fresh = s
        .server
        .pki
        .ca
        .issue_server(&["localhost", "127.0.0.1"])
        .unwrap();
    replace_file(&s.server.pki.server.key, fresh.key_pem.as_bytes());
    replace_file(&s.server.pki.server.cert, fresh.cert_pem.as_bytes());

    eventually("the new policy applies", async || {
        call(&s.payments, Method::PUT, "/v1/secrets/payments/db", b"w")
            .await
            .status
            == StatusCode::OK
    })
    .await;
    // The files change one by one, so a poll can land between the policy
    // and the certificate (or between key and certificate, a pair that does
    // not match and is refused): the certificate may arrive a poll later.
    let fresh_serial = fresh.serial_hex.trim_start_matches('0').to_owned();
    eventually("new connections get the new certificate", async || {
        served_serial(&s.server).await == fresh_serial
    })
    .await;
    assert_ne!(fresh_serial, old_serial);

    // The old connection still works.
    old.write_all(b"GET /v1/secrets/payments/db HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut old).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"w");
    s.server.stop().await;
}

#[tokio::test]
async fn a_broken_policy_on_reload_changes_nothing_and_is_reported() {
    let s = secured(|_| {}).await;
    call(&s.deployer, Method::PUT, "/v1/secrets/payments/db", b"v").await;
    replace_file(
        &s.policy_path,
        br#"{"rules": [{"identity": "*", "prefix": "", "allow": ["everything"]}]}"#,
    );
    eventually("the failed reload is reported", async || {
        let report = call(&s.deployer, Method::GET, "/v1/selfcheck", b"").await;
        let report: serde_json::Value = serde_json::from_slice(&report.body).unwrap();
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "config.reload")
            .cloned()
            .unwrap();
        check["status"] == "warn"
            && check["detail"]
                .as_str()
                .unwrap()
                .contains("unknown operation \"everything\"")
    })
    .await;
    // The old policy still holds, in both directions.
    forbidden(&s.payments, Method::PUT, "/v1/secrets/payments/db").await;
    assert_eq!(
        call(&s.payments, Method::GET, "/v1/secrets/payments/db", b"")
            .await
            .status,
        StatusCode::OK
    );
    s.server.stop().await;
}

#[tokio::test]
async fn audit_lines_are_json_with_every_field_and_never_the_value() {
    let dir = tempfile::Builder::new()
        .prefix("tmpvault-audit-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let audit_path = dir.path().join("audit.log");
    // This test binary's global subscriber: audit lines go to the file.
    tmpvault::ops::logging::init(tmpvault::config::LogFormat::Json, Some(&audit_path)).unwrap();
    let s = secured(|_| {}).await;
    let marker = "audit-marker-value-6f1d0c";
    call(
        &s.deployer,
        Method::PUT,
        "/v1/secrets/payments/audited",
        marker.as_bytes(),
    )
    .await;
    call(
        &s.payments,
        Method::GET,
        "/v1/secrets/payments/audited",
        b"",
    )
    .await;
    forbidden(&s.payments, Method::DELETE, "/v1/secrets/payments/audited").await;
    call(
        &s.payments,
        Method::GET,
        "/v1/secrets?prefix=payments/",
        b"",
    )
    .await;
    s.server.stop().await;

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&audit_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&audit_path).unwrap();
    assert!(!text.contains(marker), "the value is in the audit log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    // The other tests in this binary run in parallel and their audit lines
    // go to the same file: match this test's key too.
    let find = |identity: &str, method: &str, status: u16| {
        lines
            .iter()
            .find(|l| {
                l["identity"] == identity
                    && l["method"] == method
                    && l["status"] == status
                    && l["target"] == "audit"
                    && l["key"] == "payments/audited"
            })
            .unwrap_or_else(|| panic!("no audit line for {identity} {method} {status} in\n{text}"))
            .clone()
    };
    let put = find("cn:deployer", "PUT", 201);
    assert_eq!(put["operation"], "write");
    assert_eq!(put["key"], "payments/audited");
    assert_eq!(put["bytes_in"], marker.len());
    assert_eq!(put["route"], "/v1/secrets/{key}");
    assert!(
        put["timestamp"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC time"
    );
    assert_eq!(put["request_id"].as_str().unwrap().len(), 16);
    let get = find("spiffe://example.org/ns/payments/sa/api", "GET", 200);
    assert_eq!(get["operation"], "read");
    assert_eq!(get["bytes_out"], marker.len());
    let denied = find("spiffe://example.org/ns/payments/sa/api", "DELETE", 403);
    assert_eq!(denied["operation"], "delete");
    assert_eq!(denied["key"], "payments/audited");
    let list = lines
        .iter()
        .find(|l| l["operation"] == "list" && l["prefix"] == "payments/")
        .expect("a list line with its prefix");
    assert_eq!(list["status"], 200);
    let ids: std::collections::HashSet<_> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), lines.len(), "request ids are unique");
}
