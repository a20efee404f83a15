//! Our X25519MLKEM768 ([`tmpvault::tls::kx`]: RustCrypto's ML-KEM, ring's
//! X25519) against an implementation it shares no code with: a client on
//! rustls's aws-lc-rs provider, whose ML-KEM and X25519 are AWS-LC's and
//! whose hybrid is rustls's own. The tests in `kx.rs` and
//! tests/identity.rs have our group on both ends, where a mistake made on
//! both (which share comes first, a length, how the two secrets are joined)
//! cancels out; here it fails the handshake.
//!
//! aws-lc-rs is a dev-dependency: the shipped binary stays on ring (README,
//! "Crypto provider").

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

mod common;

use std::sync::Arc;

use common::{http_get, read_response, TestServer};
use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::NamedGroup;
use tokio::io::AsyncWriteExt;

/// The real server with its ops listener, where the handshake counters are.
async fn with_ops() -> TestServer {
    TestServer::start_with(|config| {
        config.ops_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

/// An mTLS handshake from a client on aws-lc-rs that offers only `group`,
/// then one GET, which must answer 200; returns the group negotiated.
async fn get_from_aws_lc_client(
    server: &TestServer,
    group: &'static dyn SupportedKxGroup,
) -> NamedGroup {
    let files = &server.client_files;
    let provider = CryptoProvider {
        kx_groups: vec![group],
        ..aws_lc_rs::default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in tmpvault::tls::load_certs("CA", &files.ca).unwrap() {
        roots.add(cert).unwrap();
    }
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
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("the handshake completes");
    tls.write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tls.get_ref()
        .1
        .negotiated_key_exchange_group()
        .expect("a group")
        .name()
}

/// A counter as the ops listener's `/metrics` reports it. The server counts
/// a handshake before it reads the first request, so after an answer the
/// count is final.
async fn counter(server: &TestServer, name: &str) -> u64 {
    let (status, body) = http_get(server.ops_addr.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

#[tokio::test]
async fn an_aws_lc_rs_client_offering_only_the_hybrid_gets_in_and_is_counted_as_post_quantum() {
    let server = with_ops().await;
    let group = get_from_aws_lc_client(&server, aws_lc_rs::kx_group::X25519MLKEM768).await;
    assert_eq!(group, NamedGroup::X25519MLKEM768);
    assert_eq!(counter(&server, "tmpvault_tls_handshakes_total").await, 1);
    assert_eq!(
        counter(&server, "tmpvault_tls_handshakes_post_quantum_total").await,
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn an_aws_lc_rs_client_offering_only_x25519_gets_in_and_is_not_counted_as_post_quantum() {
    let server = with_ops().await;
    let group = get_from_aws_lc_client(&server, aws_lc_rs::kx_group::X25519).await;
    assert_eq!(group, NamedGroup::X25519);
    assert_eq!(counter(&server, "tmpvault_tls_handshakes_total").await, 1);
    assert_eq!(
        counter(&server, "tmpvault_tls_handshakes_post_quantum_total").await,
        0
    );
    server.stop().await;
}
