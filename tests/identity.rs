//! Identities as an attacker would try them: certificates from the trusted
//! CA whose SANs read like another kind of identity, several URI SANs, no
//! clientAuth EKU; trusted files others may write; connections that outlive
//! the CA that signed them or their maximum age; and the key exchange,
//! post-quantum hybrid first.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{problem_code, raw_tls, read_response, Pki, TestServer};
use hyper::{Method, StatusCode};
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, SanType};
use tmpvault::cmd::client::{Client, RawResponse};
use tmpvault::tls::pki::{write_private, Authority, ClientName, Issued};
use tmpvault::tls::ClientTlsFiles;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POLICY: &str = r#"{"rules": [
  {"identity": "cn:deployer", "prefix": "", "allow": ["read", "write", "delete", "list"]},
  {"identity": "spiffe://example.org/ns/payments/*", "prefix": "payments/", "allow": ["read"]}
]}"#;

/// Certificate parameters with a subject CN and the given SANs.
fn params(common_name: &str, sans: Vec<SanType>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("IA5 string"))
}

fn uri(uri: &str) -> SanType {
    SanType::URI(uri.try_into().expect("IA5 string"))
}

fn client(server: &TestServer, file_name: &str, issued: &Issued) -> Client {
    let files = server.pki.write_client(file_name, issued);
    Client::new(&server.base, &files).expect("client")
}

async fn call(client: &Client, method: Method, path: &str, body: &[u8]) -> RawResponse {
    client
        .request(method, path, &[], Bytes::copy_from_slice(body))
        .await
        .expect("answered")
}

/// Starts a server with [`POLICY`] and an audit log file; returns it with
/// the deployer's client, after storing `admin/db`.
async fn secured() -> (TestServer, Client, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("tmpvault-identity-")
        .tempdir_in("/dev/shm")
        .expect("temp dir");
    let policy = dir.path().join("policy.json");
    write_private(&policy, POLICY.as_bytes()).expect("policy");
    let server = TestServer::start_with(|config| config.policy = Some(policy)).await;
    let deployer = server.client_named("deployer", ClientName::CommonName("deployer".into()));
    let stored = call(&deployer, Method::PUT, "/v1/secrets/admin/db", b"top").await;
    assert_eq!(stored.status, StatusCode::CREATED);
    (server, deployer, dir)
}

/// Whether a client with `issued` completes a request at all.
async fn refused_in_handshake(server: &TestServer, file_name: &str, issued: &Issued) -> bool {
    let files = server.pki.write_client(file_name, issued);
    let before = server.health.handshake_failures.load(Ordering::Relaxed);
    let client = Client::new(&server.base, &files).expect("client");
    let answered = client
        .request(Method::GET, "/v1/secrets/admin/db", &[], Bytes::new())
        .await;
    answered.is_err() && server.health.handshake_failures.load(Ordering::Relaxed) > before
}

#[tokio::test]
async fn a_dns_san_spelled_like_another_kind_is_refused_in_the_handshake() {
    let (server, _deployer, _dir) = secured().await;
    let ca = &server.pki.ca;
    for (file_name, san) in [
        ("dns-as-cn", dns("cn:deployer")),
        (
            "dns-as-spiffe",
            dns("spiffe://example.org/ns/payments/sa/api"),
        ),
        ("dns-as-anonymous-dot", dns("anonymous.")),
        ("dns-wildcard", dns("*.example.org")),
        ("uri-as-cn", uri("cn:deployer")),
        ("uri-as-dns", uri("dns:deployer")),
        ("uri-cn-scheme", uri("cn://deployer")),
        (
            "uri-dot-dot",
            uri("spiffe://example.org/ns/payments/../admin"),
        ),
    ] {
        let issued = ca
            .issue_client_params(params("nobody", vec![san]))
            .expect("certificate");
        assert!(
            refused_in_handshake(&server, file_name, &issued).await,
            "{file_name} was not refused"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_valid_dns_san_is_dns_colon_name_and_never_a_cn_or_spiffe_identity() {
    let dir = tempfile::Builder::new()
        .prefix("tmpvault-audit-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let audit_path = dir.path().join("audit.log");
    tmpvault::ops::logging::init(tmpvault::config::LogFormat::Json, Some(&audit_path)).unwrap();
    let (server, _deployer, _policy_dir) = secured().await;
    // A DNS name that equals the deployer's CN, and one that equals the
    // SPIFFE trust domain: both are dns: identities, which no rule names.
    for (file_name, name) in [("dns-deployer", "deployer"), ("dns-example", "Example.org")] {
        let issued = server
            .pki
            .ca
            .issue_client_params(params("deployer", vec![dns(name)]))
            .unwrap();
        let impostor = client(&server, file_name, &issued);
        // Keys only this test uses: the audit log is the test binary's, and
        // other tests write 403 lines to it at the same time.
        let read = call(&impostor, Method::GET, "/v1/secrets/admin/dns-probe", b"").await;
        assert_eq!(read.status, StatusCode::FORBIDDEN, "{name}");
        assert_eq!(problem_code(&read.body, 403), "forbidden");
        let read = call(
            &impostor,
            Method::GET,
            "/v1/secrets/payments/dns-probe",
            b"",
        )
        .await;
        assert_eq!(read.status, StatusCode::FORBIDDEN, "{name}");
    }
    server.stop().await;
    let text = std::fs::read_to_string(&audit_path).unwrap();
    let identities: Vec<String> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["status"] == 403)
        .filter(|line| {
            line["key"]
                .as_str()
                .is_some_and(|key| key.ends_with("/dns-probe"))
        })
        .map(|line| line["identity"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        identities,
        [
            "dns:deployer",
            "dns:deployer",
            "dns:example.org",
            "dns:example.org"
        ],
        "{text}"
    );
}

#[tokio::test]
async fn two_uri_sans_are_refused_and_one_uri_beats_dns_and_cn() {
    let (server, deployer, _dir) = secured().await;
    let ca = &server.pki.ca;
    let two = ca
        .issue_client_params(params(
            "deployer",
            vec![
                uri("spiffe://example.org/ns/payments/sa/api"),
                uri("spiffe://example.org/ns/admin/sa/root"),
            ],
        ))
        .unwrap();
    assert!(refused_in_handshake(&server, "two-uris", &two).await);

    // URI SAN, DNS SAN and CN together: the URI names the client.
    call(&deployer, Method::PUT, "/v1/secrets/payments/db", b"pay").await;
    let all = ca
        .issue_client_params(params(
            "deployer",
            vec![
                dns("deployer"),
                uri("spiffe://example.org/ns/payments/sa/api"),
            ],
        ))
        .unwrap();
    let payments = client(&server, "all-three", &all);
    let read = call(&payments, Method::GET, "/v1/secrets/payments/db", b"").await;
    assert_eq!((read.status, &read.body[..]), (StatusCode::OK, &b"pay"[..]));
    let read = call(&payments, Method::GET, "/v1/secrets/admin/db", b"").await;
    assert_eq!(read.status, StatusCode::FORBIDDEN, "the CN does not count");
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_without_the_client_auth_eku_is_refused_unless_allowed() {
    let server = TestServer::start().await;
    let no_eku = server.pki.ca.issue_client_params(no_eku_params()).unwrap();
    assert!(refused_in_handshake(&server, "no-eku", &no_eku).await);
    let server_only = server
        .pki
        .ca
        .issue_client_params(server_only_params())
        .unwrap();
    assert!(refused_in_handshake(&server, "server-eku", &server_only).await);
    server.stop().await;

    // --client-eku-required=false: no EKU at all passes, a wrong one never.
    let server = TestServer::start_with(|config| config.client_eku_required = false).await;
    let no_eku = server.pki.ca.issue_client_params(no_eku_params()).unwrap();
    let lenient = client(&server, "no-eku", &no_eku);
    let answer = call(&lenient, Method::GET, "/v1/secrets/absent", b"").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let server_only = server
        .pki
        .ca
        .issue_client_params(server_only_params())
        .unwrap();
    assert!(refused_in_handshake(&server, "server-eku", &server_only).await);
    server.stop().await;
}

fn no_eku_params() -> CertificateParams {
    let mut params = params("deployer", vec![]);
    params.extended_key_usages = vec![];
    params
}

fn server_only_params() -> CertificateParams {
    let mut params = params("deployer", vec![]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn selfcheck_check(report: &[u8], id: &str) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_slice(report).unwrap();
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no {id}"))
}

#[tokio::test]
async fn a_policy_others_may_write_fails_the_selfcheck_and_is_kept_out_on_reload() {
    let dir = tempfile::Builder::new()
        .prefix("tmpvault-policy-")
        .tempdir_in("/dev/shm")
        .unwrap();
    chmod(dir.path(), 0o755);
    let policy = dir.path().join("policy.json");
    write_private(&policy, POLICY.as_bytes()).unwrap();
    let path = policy.clone();
    let server = TestServer::start_with(move |config| {
        config.policy = Some(path);
        config.reload_interval = Duration::from_millis(100);
    })
    .await;
    let deployer = server.client_named("deployer", ClientName::CommonName("deployer".into()));
    let report = call(&deployer, Method::GET, "/v1/selfcheck", b"").await;
    assert_eq!(
        selfcheck_check(&report.body, "config.files")["status"],
        "pass"
    );

    // Anyone may now write it, and someone gives everyone everything.
    std::fs::write(
        &policy,
        br#"{"rules": [{"identity": "*", "prefix": "", "allow": ["read", "write", "delete", "list"]}]}"#,
    )
    .unwrap();
    chmod(&policy, 0o666);
    let stranger = server.client_named("stranger", ClientName::CommonName("stranger".into()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let report = call(&deployer, Method::GET, "/v1/selfcheck", b"").await;
        let reload = selfcheck_check(&report.body, "config.reload");
        if reload["status"] == "warn" {
            let detail = reload["detail"].as_str().unwrap();
            assert!(
                detail.contains("mode 0666: every user may write it"),
                "{detail}"
            );
            let files = selfcheck_check(&report.body, "config.files");
            assert_eq!(files["status"], "fail", "{files}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed reload reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old policy still holds.
    let read = call(&stranger, Method::PUT, "/v1/secrets/x", b"x").await;
    assert_eq!(read.status, StatusCode::FORBIDDEN);
    server.stop().await;
}

/// Reads from a raw connection until it closes (or 5 s pass).
async fn closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn after_a_client_ca_reload_drops_a_ca_its_open_connections_are_closed() {
    // The bundle trusts two CAs; the second one's clients connect.
    let other = Authority::new("tmpvault other CA").unwrap();
    let pki_bundle = |pki: &Pki, cas: &[&Authority]| {
        let bundle: String = cas.iter().map(|ca| ca.cert_pem()).collect();
        let staging = pki.ca_path.with_extension("new");
        write_private(&staging, bundle.as_bytes()).unwrap();
        std::fs::rename(&staging, &pki.ca_path).unwrap();
    };
    let other_for_setup = other.cert_pem().to_owned();
    let server = TestServer::start_with(|config| {
        config.reload_interval = Duration::from_millis(100);
        let mut bundle = std::fs::read_to_string(&config.tls.client_ca).unwrap();
        bundle.push_str(&other_for_setup);
        std::fs::write(&config.tls.client_ca, bundle).unwrap();
    })
    .await;
    let outsider = other
        .issue_client(&ClientName::CommonName("outsider".into()))
        .unwrap();
    let outsider_files = server.pki.write_client("outsider", &outsider);
    let insider_files = server
        .pki
        .client_files("insider", ClientName::CommonName("insider".into()));
    let request = b"GET /v1/openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut outsider_conn = raw_tls(server.addr, &outsider_files).await;
    let mut insider_conn = raw_tls(server.addr, &insider_files).await;
    for conn in [&mut outsider_conn, &mut insider_conn] {
        conn.write_all(request).await.unwrap();
        let (head, _) = read_response(conn).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    let this_ca = server.pki.ca.cert_pem().to_owned();
    pki_bundle(&server.pki, &[&server.pki.ca]);
    assert_eq!(
        std::fs::read_to_string(&server.pki.ca_path).unwrap(),
        this_ca
    );

    assert!(
        closed(&mut outsider_conn).await,
        "the dropped CA's connection stays open"
    );
    assert_eq!(server.health.closed_untrusted.load(Ordering::Relaxed), 1);
    // The trusted CA's connection goes on.
    insider_conn.write_all(request).await.unwrap();
    let (head, _) = read_response(&mut insider_conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // And the dropped CA's clients cannot come back.
    let again = Client::new(&server.base, &outsider_files).unwrap();
    assert!(again
        .request(Method::GET, "/v1/openapi.json", &[], Bytes::new())
        .await
        .is_err());
    server.stop().await;
}

#[tokio::test]
async fn a_connection_is_closed_gracefully_at_its_maximum_age() {
    let server = TestServer::start_with(|config| {
        config.limits.max_connection_age = Duration::from_millis(400);
    })
    .await;
    let mut conn = raw_tls(server.addr, &server.client_files).await;
    conn.write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut conn).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let started = std::time::Instant::now();
    assert!(closed(&mut conn).await, "still open after its maximum age");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.health.closed_max_age.load(Ordering::Relaxed), 1);
    // A new connection is served as usual.
    let answer = call(&server.client, Method::GET, "/v1/secrets/absent", b"").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// A handshake with a client that offers only `group`; returns what the
/// client negotiated.
async fn handshake_offering(
    server: &TestServer,
    group: &'static dyn rustls::crypto::SupportedKxGroup,
) -> rustls::NamedGroup {
    let files: &ClientTlsFiles = &server.client_files;
    let mut provider = (*tmpvault::tls::provider()).clone();
    provider.kx_groups = vec![group];
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        for cert in tmpvault::tls::load_certs("CA", &files.ca).unwrap() {
            roots.add(cert).unwrap();
        }
        roots
    };
    let certs = tmpvault::tls::load_certs("client certificate", &files.cert).unwrap();
    let key = tmpvault::tls::load_key("client key", &files.key).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(b"GET /v1/secrets/absent HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    tls.get_ref()
        .1
        .negotiated_key_exchange_group()
        .expect("a group")
        .name()
}

#[tokio::test]
async fn the_post_quantum_hybrid_is_negotiated_and_x25519_still_works() {
    let server = TestServer::start().await;
    let group = handshake_offering(&server, tmpvault::tls::kx::X25519MLKEM768).await;
    assert_eq!(group, rustls::NamedGroup::X25519MLKEM768);
    assert_eq!(
        server
            .health
            .handshakes_post_quantum
            .load(Ordering::Relaxed),
        1
    );
    let group = handshake_offering(&server, rustls::crypto::ring::kx_group::X25519).await;
    assert_eq!(group, rustls::NamedGroup::X25519);
    assert_eq!(
        server
            .health
            .handshakes_post_quantum
            .load(Ordering::Relaxed),
        1
    );
    // tmpvault's own client prefers the hybrid too.
    let answer = call(&server.client, Method::GET, "/v1/secrets/absent", b"").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        server
            .health
            .handshakes_post_quantum
            .load(Ordering::Relaxed),
        2
    );
    server.stop().await;
}
