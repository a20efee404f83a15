//! The TLS layer: who gets in, which protocols, and requests refused before
//! their body is read.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{raw_tls, Pki, TestServer};
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tmpvault::cmd::client::{Client, ClientError};
use tmpvault::tls::pki::{Authority, ClientName, Validity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The outcome of one GET with a given client: the status, or the error.
async fn try_get(client: &Client) -> Result<StatusCode, ClientError> {
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(Method::GET, "/v1/secrets", &[], Bytes::new()),
    )
    .await
    .expect("no hang");
    response.map(|r| r.status)
}

/// The server counted a failed handshake (the client may see its error a
/// moment before the server finishes counting).
async fn refused_in_the_handshake(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while server
        .health
        .handshake_failures
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server counted no failed handshake"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_in_the_handshake() {
    let server = TestServer::start().await;
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        for cert in tmpvault::tls::load_certs("CA", &server.pki.ca_path).unwrap() {
            roots.add(cert).unwrap();
        }
        roots
    };
    let config = rustls::ClientConfig::builder_with_provider(tmpvault::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    // TLS 1.3: the client may finish its side before the server's alert
    // arrives, so the refusal shows on the handshake or on the first read.
    // Refused either way; what must not happen is an answer.
    if let Ok(mut stream) = connector.connect(name, tcp).await {
        let _ = stream
            .write_all(b"GET /v1/secrets HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .unwrap();
        if let Ok(n @ 1..) = read {
            panic!(
                "served without a certificate: {:?}",
                String::from_utf8_lossy(&buffer[..n])
            );
        }
    }
    assert_eq!(
        server
            .health
            .handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let server = TestServer::start().await;
    let other = Authority::new("some other CA").unwrap();
    let issued = other
        .issue_client(&ClientName::CommonName("intruder".into()))
        .unwrap();
    let mut files = server.pki.write_client("intruder", &issued);
    files.ca = server.pki.ca_path.clone(); // it trusts the right server
    let client = Client::new(&server.base, &files).unwrap();
    assert!(try_get(&client).await.is_err());
    refused_in_the_handshake(&server).await;
    // The legitimate client is unaffected.
    assert_eq!(try_get(&server.client).await.unwrap(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let server = TestServer::start().await;
    let issued = server
        .pki
        .ca
        .issue_client_with_validity(&ClientName::CommonName("stale".into()), Validity::expired())
        .unwrap();
    let files = server.pki.write_client("stale", &issued);
    let client = Client::new(&server.base, &files).unwrap();
    assert!(try_get(&client).await.is_err());
    refused_in_the_handshake(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn the_client_refuses_a_server_it_does_not_trust() {
    let server = TestServer::start().await;
    let other = Pki::new();
    let mut files = server.client_files.clone();
    files.ca = other.ca_path.clone();
    let client = Client::new(&server.base, &files).unwrap();
    let error = try_get(&client).await.unwrap_err();
    assert!(error.to_string().contains("certificate"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_head_errors_have_no_body() {
    let server = TestServer::start().await;
    server
        .client
        .request(
            Method::PUT,
            "/v1/secrets/h2",
            &[],
            Bytes::from_static(b"over-h2"),
        )
        .await
        .unwrap();
    let mut config = tmpvault::tls::client_config(&server.client_files).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let uri = format!("https://localhost:{}", server.addr.port());
    for (method, path, status, body) in [
        (Method::GET, "/v1/secrets/h2", 200, &b"over-h2"[..]),
        (Method::HEAD, "/v1/secrets/h2", 200, b""),
        (Method::HEAD, "/v1/secrets/absent", 404, b""),
        (Method::HEAD, "/v1/secrets/a//b", 400, b""),
        (Method::HEAD, "/v1/lists/x/push", 405, b""),
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri(format!("{uri}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], body, "{method} {path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_oversize_content_length_is_refused_before_the_body_is_sent() {
    let server = TestServer::start().await;
    let mut stream = raw_request(
        &server,
        b"PUT /v1/secrets/huge HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n\r\n",
    )
    .await;
    let mut response = vec![0u8; 2048];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut response))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&response[..read]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("value_too_large"), "{text}");
    assert_eq!(server.store.stats().entries, 0);
    server.stop().await;
}

#[tokio::test]
async fn plaintext_http_on_the_tls_port_is_closed_and_service_continues() {
    let server = TestServer::start().await;
    for junk in [
        &b"GET /v1/secrets HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3][..],
        &[0u8; 512][..],
    ] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(junk).await.unwrap();
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "the connection is closed, not left hanging");
        assert!(
            !String::from_utf8_lossy(&sink).contains("HTTP/1.1"),
            "no HTTP answer in plaintext"
        );
    }
    assert_eq!(try_get(&server.client).await.unwrap(), StatusCode::OK);
    server.stop().await;
}

/// Opens a raw mTLS connection and writes `request` on it as it is.
async fn raw_request(
    server: &TestServer,
    request: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut stream = raw_tls(server.addr, &server.client_files).await;
    stream.write_all(request).await.expect("write the request");
    stream
}

/// A client may shut down its sending side once its request is out (TLS
/// close_notify, then FIN): the request is still carried out and answered.
/// The server does not read ahead for an early EOF while a request is in
/// flight (hyper's `half_close`), which is also what lets hyper reuse its
/// read buffer instead of allocating, and wiping, a new 8 KiB one per
/// request.
#[tokio::test]
async fn a_request_followed_by_a_half_close_is_carried_out_and_answered() {
    let server = TestServer::start().await;
    let mut stream = raw_request(
        &server,
        b"PUT /v1/secrets/half/closed HTTP/1.1\r\nHost: localhost\r\n\
          Content-Length: 5\r\n\r\nhello",
    )
    .await;
    stream.shutdown().await.unwrap();
    let (head, _) = common::read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 201 "), "{head}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "closed after the answer, not left open");
    assert!(rest.is_empty(), "nothing after the one answer");
    let read = server
        .client
        .request(Method::GET, "/v1/secrets/half/closed", &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(&read.body[..], b"hello");
    server.stop().await;
}
