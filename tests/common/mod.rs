//! The one test harness: starts the real server in-process on 127.0.0.1:0,
//! over real TLS, with a CA and certificates generated for each test (no
//! private key is ever committed), and hands out real mTLS clients.
#![allow(dead_code)] // each test crate uses a different part of it

pub mod h2raw;
pub mod memscan;
pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tmpvault::app::{self, Mode};
use tmpvault::cmd::client::Client;
use tmpvault::config::{Limits, SecretArena, ServeConfig};
use tmpvault::http::server::Health;
use tmpvault::posture::harden::HardeningReport;
use tmpvault::store::arena::{self, ArenaSize};
use tmpvault::store::Store;
use tmpvault::tls::pki::{write_private, Authority, ClientName, Issued};
use tmpvault::tls::{ClientTlsFiles, ServerTlsFiles};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A CA with its server certificate, written to a private tmpfs directory.
pub struct Pki {
    pub dir: TempDir,
    pub ca: Authority,
    pub ca_path: PathBuf,
    pub server: ServerTlsFiles,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("tmpvault-test-")
            .tempdir_in("/dev/shm")
            .expect("a temp dir on /dev/shm");
        // A private scratch dir, as `serve` requires (tempfile makes 0700,
        // but say so: the self-check depends on it).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod 0700");
        let ca = Authority::new("tmpvault test CA").expect("CA");
        let server = ca
            .issue_server(&["localhost", "127.0.0.1"])
            .expect("server cert");
        let ca_path = dir.path().join("ca.pem");
        write_private(&ca_path, ca.cert_pem().as_bytes()).expect("write CA");
        let files = ServerTlsFiles {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server-key.pem"),
            client_ca: ca_path.clone(),
        };
        write_private(&files.cert, server.cert_pem.as_bytes()).expect("write cert");
        write_private(&files.key, server.key_pem.as_bytes()).expect("write key");
        Pki {
            dir,
            ca,
            ca_path,
            server: files,
        }
    }

    /// Writes an issued client certificate and returns the client's files.
    pub fn write_client(&self, name: &str, issued: &Issued) -> ClientTlsFiles {
        let files = ClientTlsFiles {
            ca: self.ca_path.clone(),
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}-key.pem")),
        };
        write_private(&files.cert, issued.cert_pem.as_bytes()).expect("write client cert");
        write_private(&files.key, issued.key_pem.as_bytes()).expect("write client key");
        files
    }

    /// A fresh client certificate from this CA.
    pub fn client_files(&self, file_name: &str, name: ClientName) -> ClientTlsFiles {
        let issued = self.ca.issue_client(&name).expect("client cert");
        self.write_client(file_name, &issued)
    }

    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Makes the directory mode 0700, so that `tmpvault serve` can use it as
    /// its scratch dir: `Pki::new` leaves it at the umask's 0755, and
    /// `serve` rightly refuses a scratch dir others can enter.
    pub fn make_scratch_private(&self) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(self.scratch_dir(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700");
    }
}

/// The configuration the tests start from: small limits, short deadlines.
pub fn test_config(pki: &Pki) -> ServeConfig {
    let limits = Limits {
        handshake_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    ServeConfig {
        max_memory: 16 << 20,
        allow_root: true,
        limits,
        ..ServeConfig::new(
            "127.0.0.1:0".parse().expect("address"),
            pki.scratch_dir().to_owned(),
            pki.server.clone(),
        )
    }
}

/// The in-process servers of one test binary share one secret arena (the
/// first `install` of a process decides it). Sized by the first server's
/// 16 MiB budget, it would fill up as tests run side by side, so it is made
/// here first, large enough for them all: a 1 GiB memfd_secret mapping
/// (pages become resident only as values use them) where the process may
/// lock that much (as root in CI), else the heap, which keeps a run under a
/// small memlock limit free of 507s that the tests did not ask for.
/// `tests/arena.rs` checks the arena of the real binary.
pub fn install_shared_arena() {
    let size = ArenaSize::for_process(1 << 30, tmpvault::config::MAX_VALUE_BYTES_CEILING);
    let setting = if size.lockable.is_none() {
        SecretArena::Auto
    } else {
        SecretArena::Heap
    };
    arena::install(setting, size);
}

/// A running in-process server and a client for it.
pub struct TestServer {
    pub pki: Pki,
    pub addr: SocketAddr,
    pub ops_addr: Option<SocketAddr>,
    pub base: String,
    pub client: Client,
    pub client_files: ClientTlsFiles,
    pub store: Store,
    pub health: Arc<Health>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts with the test configuration changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let pki = Pki::new();
        let mut config = test_config(&pki);
        adjust(&mut config);
        install_shared_arena();
        // `dev` mode: the in-process tests do not harden the test runner
        // itself, so the self-check may only warn here, never refuse.
        let running = app::start(&config, Mode::Dev, HardeningReport::not_run())
            .await
            .expect("server starts");
        let addr = running.local_addr();
        let ops_addr = running.ops_addr();
        let store = running.store();
        let health = running.health();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            running
                .run(async {
                    let _ = rx.await;
                })
                .await;
        });
        let client_files = pki.client_files("client", ClientName::CommonName("tester".into()));
        let base = format!("https://127.0.0.1:{}", addr.port());
        let client = Client::new(&base, &client_files).expect("client");
        TestServer {
            pki,
            addr,
            ops_addr,
            base,
            client,
            client_files,
            store,
            health,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A client with its own certificate from the server's CA.
    pub fn client_named(&self, file_name: &str, name: ClientName) -> Client {
        let files = self.pki.client_files(file_name, name);
        Client::new(&self.base, &files).expect("client")
    }

    /// Sends the shutdown signal without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Sends the shutdown signal and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

/// Parses a problem document and returns its `code`, checking the members
/// RFC 9457 asks for.
pub fn problem_code(body: &[u8], status: u16) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).expect("problem JSON");
    assert_eq!(json["status"], status, "{json}");
    assert!(json["title"].is_string(), "{json}");
    assert!(json["detail"].is_string(), "{json}");
    let code = json["code"].as_str().expect("code").to_owned();
    assert_eq!(json["type"], format!("urn:tmpvault:problem:{code}"));
    code
}

/// A raw mTLS connection (HTTP/1.1 by ALPN) for requests the pooled client
/// cannot make: bodies sent slowly, partial requests, raw bytes.
pub async fn raw_tls(
    addr: SocketAddr,
    files: &ClientTlsFiles,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = tmpvault::tls::client_config(files).expect("client TLS config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// GETs a plain-HTTP URL (the ops listener); returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect ops");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response))
        .await
        .expect("ops answers in time")
        .expect("read");
    let text = String::from_utf8(response).expect("UTF-8 response");
    let status = text[9..12].parse().expect("status code");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Reads exactly one HTTP/1.1 response (head, then `Content-Length` bytes)
/// from a raw connection, with a deadline; returns the head and the body.
pub async fn read_response<S>(stream: &mut S) -> (String, Vec<u8>)
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before the end of the response head");
            bytes.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while bytes.len() < head_end + length {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before the end of the response body");
            bytes.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(
            bytes.len(),
            head_end + length,
            "more than one response arrived"
        );
        (head, bytes[head_end..].to_vec())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a whole response in time")
}
