//! Snapshots across real restarts of the real binary: `tmpvault serve
//! --snapshot encrypted` started as an operator would, with a key from
//! `tmpvault keygen`, stopped with SIGTERM or killed with SIGKILL, and
//! started again on the same scratch dir.
//!
//! Every process is owned by a [`Server`] guard that kills and reaps it on
//! drop, and every wait has a deadline.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::process::BIN;
use common::{http_get, Pki, TestServer};
use hyper::{Method, StatusCode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tmpvault::cmd::client::{Client, RawResponse};
use tmpvault::config::SnapshotSetting;
use tmpvault::persist::{JOURNAL_PREFIX, SNAPSHOT_FILE};
use tmpvault::tls::pki::ClientName;
use tmpvault::tls::ClientTlsFiles;

/// From spawn to "tmpvault is serving" (a debug build, restoring).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// For an exit: a refusal, or a drain with nothing in flight.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// For one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A `tmpvault` command that inherits no `TMPVAULT_*` setting and no
/// `RUST_LOG` from the test runner.
fn tmpvault() -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TMPVAULT_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// A scratch dir with certificates and a snapshot key made by `keygen`.
struct Setup {
    pki: Pki,
    key: PathBuf,
    client: ClientTlsFiles,
}

impl Setup {
    fn new() -> Setup {
        let pki = Pki::new();
        pki.make_scratch_private();
        // The key lives beside the scratch dir's files, as a mounted Secret
        // would; the snapshot files are only the tmpvault.* ones.
        let key = pki.scratch_dir().join("snapshot.key");
        keygen(&key);
        let client = pki.client_files("client", ClientName::CommonName("tester".into()));
        Setup { pki, key, client }
    }

    fn dir(&self) -> &Path {
        self.pki.scratch_dir()
    }

    fn serve(&self, extra: &[&str]) -> Result<Server, String> {
        let mut command = tmpvault();
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--scratch-dir")
            .arg(self.dir())
            .arg("--tls-cert")
            .arg(&self.pki.server.cert)
            .arg("--tls-key")
            .arg(&self.pki.server.key)
            .arg("--client-ca")
            .arg(&self.pki.server.client_ca)
            .arg("--allow-root")
            .args(["--snapshot", "encrypted", "--snapshot-key-file"])
            .arg(&self.key)
            .args(extra);
        Server::spawn(&mut command, &self.client)
    }

    fn serve_ok(&self, extra: &[&str]) -> Server {
        self.serve(extra)
            .unwrap_or_else(|stderr| panic!("the server did not start:\n{stderr}"))
    }

    /// Every snapshot and journal file's bytes.
    fn persisted_bytes(&self) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(self.dir()).expect("scratch dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == SNAPSHOT_FILE || name.starts_with(JOURNAL_PREFIX) {
                files.push((name, std::fs::read(entry.path()).expect("read")));
            }
        }
        files
    }

    fn journal_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir())
            .expect("scratch dir")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(JOURNAL_PREFIX))
            })
            .collect();
        paths.sort();
        paths
    }
}

fn keygen(path: &Path) {
    let output = tmpvault()
        .arg("keygen")
        .arg("--out")
        .arg(path)
        .output()
        .expect("run keygen");
    assert!(output.status.success(), "{output:?}");
}

/// A running `tmpvault serve`, killed and reaped on drop.
struct Server {
    child: Child,
    status: Option<ExitStatus>,
    stderr: Arc<Mutex<String>>,
    client: Client,
}

impl Server {
    /// Spawns `command` and waits until it serves, or until it exits (the
    /// error is its stderr).
    fn spawn(command: &mut Command, files: &ClientTlsFiles) -> Result<Server, String> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tmpvault");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().expect("stderr lock");
                text.push_str(&line);
                text.push('\n');
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut server = Server {
            child,
            status: None,
            stderr,
            client: Client::new("https://127.0.0.1:1", files).expect("client"),
        };
        loop {
            if let Some(addr) = server.listen_addr() {
                server.client = Client::new(&format!("https://{addr}"), files).expect("client");
                return Ok(server);
            }
            if server.try_status().is_some() {
                // Let the reader thread catch the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return Err(server.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "not serving after {START_TIMEOUT:?}:\n{}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// The TLS address from the "tmpvault is serving" log line.
    fn listen_addr(&self) -> Option<String> {
        self.stderr().lines().find_map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).ok()?;
            (json["message"] == "tmpvault is serving")
                .then(|| json["listen"].as_str().map(str::to_owned))
                .flatten()
        })
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    fn signal(&mut self, signal: Signal) -> ExitStatus {
        assert!(self.status.is_none(), "signalling an exited process");
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, signal).expect("kill(2)");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running {EXIT_TIMEOUT:?} after {signal}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9`: no drain, no final snapshot.
    fn kill9(mut self) {
        self.signal(Signal::SIGKILL);
    }

    /// SIGTERM: drain, final snapshot, wipe, exit 0.
    fn stop(mut self) -> String {
        let status = self.signal(Signal::SIGTERM);
        std::thread::sleep(Duration::from_millis(100));
        assert!(status.success(), "{status}:\n{}", self.stderr());
        self.stderr()
    }

    async fn request(&self, method: Method, path: &str, body: &[u8]) -> RawResponse {
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.client
                .request(method, path, &[], Bytes::copy_from_slice(body)),
        )
        .await
        .expect("an answer in time")
        .expect("a response")
    }

    async fn put(&self, key: &str, query: &str, value: &[u8]) -> StatusCode {
        self.request(Method::PUT, &format!("/v1/secrets/{key}{query}"), value)
            .await
            .status
    }

    async fn get(&self, key: &str) -> (StatusCode, Vec<u8>) {
        let response = self
            .request(Method::GET, &format!("/v1/secrets/{key}"), b"")
            .await;
        (response.status, response.body.to_vec())
    }

    /// Metadata of every key, by key.
    async fn metadata(&self) -> serde_json::Map<String, serde_json::Value> {
        let response = self
            .request(Method::GET, "/v1/secrets?limit=1000", b"")
            .await;
        assert_eq!(response.status, StatusCode::OK);
        let page: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| (item["key"].as_str().expect("key").to_owned(), item.clone()))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A value nobody else would store, so finding it in a file means a leak.
fn marker(name: &str) -> Vec<u8> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("random");
    let hex: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("MARKER-{name}-{hex}").into_bytes()
}

fn expiry(item: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(item["expires_at"].as_str().expect("expires_at")).expect("RFC 3339")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_the_process_keeps_values_deadlines_reads_and_metadata() {
    let setup = Setup::new();
    let server = setup.serve_ok(&[]);
    let (once, plain, item) = (marker("once"), marker("plain"), marker("item"));
    assert_eq!(
        server.put("app/once", "?ttl=1h&max_reads=3", &once).await,
        StatusCode::CREATED
    );
    assert_eq!(server.get("app/once").await, (StatusCode::OK, once.clone()));
    assert_eq!(
        server.put("app/plain", "?ttl=2h", b"first").await,
        StatusCode::CREATED
    );
    let typed = server
        .client
        .request(
            Method::PUT,
            "/v1/secrets/app/plain?ttl=2h",
            &[("content-type", "text/plain; charset=utf-8")],
            Bytes::from(plain.clone()),
        )
        .await
        .expect("PUT");
    assert_eq!(typed.status, StatusCode::OK, "version 2");
    for value in [&item[..], b"second", b"third"] {
        let pushed = server.request(Method::POST, "/v1/lists/pool/push?ttl=30m", value);
        assert!(pushed.await.status.is_success());
    }
    let popped = server
        .request(Method::POST, "/v1/lists/pool/pop", b"")
        .await;
    assert_eq!(&*popped.body, b"third");
    assert_eq!(
        server.put("gone", "", b"deleted").await,
        StatusCode::CREATED
    );
    let deleted = server
        .request(Method::DELETE, "/v1/secrets/gone", b"")
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let renewed = server
        .request(Method::PATCH, "/v1/secrets/app/plain", br#"{"ttl": "3h"}"#)
        .await;
    assert_eq!(renewed.status, StatusCode::OK);
    let before = server.metadata().await;
    assert_eq!(before.len(), 3);

    let stderr = server.stop();
    assert!(stderr.contains("final snapshot written"), "{stderr}");
    let server = setup.serve_ok(&[]);
    let after = server.metadata().await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (key, was) in &before {
        let now = &after[key];
        let drift = expiry(now)
            .duration_since(expiry(was))
            .or_else(|_| expiry(was).duration_since(expiry(now)))
            .expect("drift");
        assert!(drift <= Duration::from_millis(5), "{key}: {drift:?}");
        let mut now = now.clone();
        now["expires_at"] = was["expires_at"].clone();
        assert_eq!(&now, was, "{key}");
    }
    assert_eq!(before["app/once"]["reads_left"], 2);
    assert_eq!(before["app/plain"]["version"], 2);
    assert_eq!(
        before["app/plain"]["content_type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(server.get("app/plain").await, (StatusCode::OK, plain));
    assert_eq!(server.get("app/once").await, (StatusCode::OK, once.clone()));
    assert_eq!(server.get("app/once").await, (StatusCode::OK, once));
    assert_eq!(server.get("app/once").await.0, StatusCode::NOT_FOUND);
    let oldest = server
        .request(Method::POST, "/v1/lists/pool/pop?from=oldest", b"")
        .await;
    assert_eq!(*oldest.body, item);
    assert_eq!(server.get("gone").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_each_acknowledged_write_loses_nothing() {
    let setup = Setup::new();
    let mut values = Vec::new();
    let mut server = setup.serve_ok(&[]);
    // A read-once secret used up before the first crash must stay used up.
    assert_eq!(
        server.put("once", "?max_reads=1", b"one time").await,
        StatusCode::CREATED
    );
    assert_eq!(server.get("once").await.0, StatusCode::OK);
    for round in 0..10 {
        let value = marker(&format!("round{round}"));
        assert_eq!(
            server.put(&format!("k{round}"), "", &value).await,
            StatusCode::CREATED,
            "round {round}"
        );
        values.push(value);
        if round == 5 {
            let deleted = server.request(Method::DELETE, "/v1/secrets/k0", b"").await;
            assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        }
        server.kill9();
        server = setup.serve_ok(&[]);
        for (index, value) in values.iter().enumerate() {
            let expected = if index == 0 && round >= 5 {
                (StatusCode::NOT_FOUND, None)
            } else {
                (StatusCode::OK, Some(value.clone()))
            };
            let (status, body) = server.get(&format!("k{index}")).await;
            assert_eq!(
                (status, (status == StatusCode::OK).then_some(body)),
                expected,
                "k{index} after round {round}"
            );
        }
        assert_eq!(
            server.get("once").await.0,
            StatusCode::NOT_FOUND,
            "round {round}"
        );
    }
    // Each restart folded the journal into a fresh snapshot.
    assert_eq!(setup.journal_paths().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_never_hold_a_value_in_plaintext() {
    let setup = Setup::new();
    let server = setup.serve_ok(&[]);
    let values = [marker("secret"), marker("item"), marker("replaced")];
    assert_eq!(
        server.put("s", "?max_reads=5", &values[0]).await,
        StatusCode::CREATED
    );
    server.get("s").await;
    let pushed = server
        .request(Method::POST, "/v1/lists/l/push", &values[1])
        .await;
    assert!(pushed.status.is_success());
    server.put("r", "", &values[2]).await;
    server.put("r", "", b"newer").await;
    // Journal only (the startup snapshot was empty)...
    let journaled = setup.persisted_bytes();
    assert!(journaled.iter().any(|(_, bytes)| bytes.len() > 200));
    server.stop();
    // ...then a snapshot.
    let snapshotted = setup.persisted_bytes();
    let snapshot = snapshotted
        .iter()
        .find(|(name, _)| name == SNAPSHOT_FILE)
        .expect("a snapshot");
    assert!(snapshot.1.len() > 200);
    for (name, bytes) in journaled.iter().chain(&snapshotted) {
        for value in &values {
            assert!(
                !contains(bytes, value),
                "{name} holds {} in plaintext",
                String::from_utf8_lossy(value)
            );
        }
        assert!(!contains(bytes, b"MARKER"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_are_not_restored() {
    let setup = Setup::new();
    let server = setup.serve_ok(&[]);
    assert_eq!(
        server.put("short", "?ttl=1s", b"s").await,
        StatusCode::CREATED
    );
    assert_eq!(
        server.put("long", "?ttl=1h", b"l").await,
        StatusCode::CREATED
    );
    server.kill9();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let server = setup.serve_ok(&[]);
    assert_eq!(server.get("short").await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.get("long").await, (StatusCode::OK, b"l".to_vec()));
    let stderr = server.stop();
    assert!(stderr.contains("\"expired\":1"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_refuses_to_start_naming_the_file_unless_discard() {
    let setup = Setup::new();
    let server = setup.serve_ok(&[]);
    assert_eq!(server.put("k", "", b"v").await, StatusCode::CREATED);
    server.stop();
    let before = setup.persisted_bytes();

    std::fs::remove_file(&setup.key).expect("remove key");
    keygen(&setup.key);
    let stderr = match setup.serve(&[]) {
        Ok(_) => panic!("started with the wrong key"),
        Err(stderr) => stderr,
    };
    let snapshot = setup.dir().join(SNAPSHOT_FILE);
    assert!(
        stderr.contains(&format!("loading snapshot {}", snapshot.display())),
        "{stderr}"
    );
    assert!(stderr.contains("different key"), "{stderr}");
    assert_eq!(setup.persisted_bytes(), before, "nothing was touched");

    let server = setup.serve_ok(&["--snapshot-on-error", "discard"]);
    assert!(server.stderr().contains("DISCARDED"), "{}", server.stderr());
    assert_eq!(server.get("k").await.0, StatusCode::NOT_FOUND);
    let mut aside = snapshot.into_os_string();
    aside.push(".discarded");
    assert!(Path::new(&aside).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_snapshot_refuses_to_start() {
    let setup = Setup::new();
    let server = setup.serve_ok(&[]);
    assert_eq!(server.put("k", "", b"value").await, StatusCode::CREATED);
    server.stop();
    let path = setup.dir().join(SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&path).expect("snapshot");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    let stderr = setup.serve(&[]).err().expect("refused");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("failed authentication"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_journal_record_is_cut_off_with_a_warning() {
    let setup = Setup::new();
    let server = setup.serve_ok(&[]);
    assert_eq!(server.put("first", "", b"1").await, StatusCode::CREATED);
    assert_eq!(server.put("second", "", b"2").await, StatusCode::CREATED);
    server.kill9();
    // A crash in the middle of the last append: its frame is cut short.
    let journal = setup.journal_paths().pop().expect("a journal");
    let len = std::fs::metadata(&journal).expect("journal").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .and_then(|file| file.set_len(len - 5))
        .expect("truncate");
    let server = setup.serve_ok(&[]);
    let stderr = server.stderr();
    assert!(
        stderr.contains("WARN") && stderr.contains("torn"),
        "{stderr}"
    );
    assert_eq!(server.get("first").await, (StatusCode::OK, b"1".to_vec()));
    assert_eq!(server.get("second").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_snapshots_round_trip_on_tmpfs() {
    let setup = Setup::new();
    let mut command = tmpvault();
    let serve = |command: &mut Command| {
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--scratch-dir")
            .arg(setup.dir())
            .arg("--tls-cert")
            .arg(&setup.pki.server.cert)
            .arg("--tls-key")
            .arg(&setup.pki.server.key)
            .arg("--client-ca")
            .arg(&setup.pki.server.client_ca)
            .args(["--allow-root", "--snapshot", "plain"]);
    };
    serve(&mut command);
    let server = Server::spawn(&mut command, &setup.client).expect("starts");
    assert_eq!(
        server.put("k", "", b"plain value").await,
        StatusCode::CREATED
    );
    server.kill9();
    let mut command = tmpvault();
    serve(&mut command);
    let server = Server::spawn(&mut command, &setup.client).expect("restarts");
    assert_eq!(
        server.get("k").await,
        (StatusCode::OK, b"plain value".to_vec())
    );
}

#[test]
fn keygen_writes_0600_and_never_overwrites() {
    let dir = Pki::new();
    let path = dir.scratch_dir().join("new.key");
    keygen(&path);
    let metadata = std::fs::metadata(&path).expect("key file");
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    let content = std::fs::read(&path).expect("read");
    assert_eq!(content.len(), 45, "44 base64 characters and a newline");
    assert!(content.ends_with(b"=\n"));

    let again = tmpvault()
        .arg("keygen")
        .arg("--out")
        .arg(&path)
        .output()
        .expect("run keygen");
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&path).expect("read"), content, "unchanged");

    let printed = tmpvault().arg("keygen").output().expect("run keygen");
    assert!(printed.status.success());
    assert_eq!(printed.stdout.len(), 45);
    assert_ne!(printed.stdout, content, "a new key each time");
}

#[tokio::test]
async fn metrics_show_the_snapshot_and_the_journal() {
    let server = TestServer::start_with(|config| {
        let key = config.scratch_dir.join("snapshot.key");
        tmpvault::persist::snapshot::keygen(Some(&key)).expect("keygen");
        config.snapshot = SnapshotSetting::Encrypted;
        config.snapshot_key_file = Some(key);
        config.ops_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let ops = server.ops_addr.expect("ops listener");
    let put = server
        .client
        .request(
            Method::PUT,
            "/v1/secrets/metrics-test-key",
            &[],
            Bytes::from_static(b"v"),
        )
        .await
        .expect("PUT");
    assert_eq!(put.status, StatusCode::CREATED);
    let (status, body) = http_get(ops, "/metrics").await;
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
            .parse()
            .expect("a number")
    };
    assert_eq!(value("tmpvault_journal_records"), 1.0);
    assert!(value("tmpvault_journal_bytes") > 48.0);
    assert!(value("tmpvault_snapshot_age_seconds") < 60.0);
    assert!(value("tmpvault_snapshot_size_bytes") > 0.0);
    let duration = value("tmpvault_snapshot_duration_seconds");
    assert!(duration > 0.0 && duration < 60.0, "{duration}");
    assert_eq!(value("tmpvault_snapshots_total"), 1.0);
    assert_eq!(value("tmpvault_snapshot_failures_total"), 0.0);
    assert!(!body.contains("metrics-test-key"), "no key names");
    server.stop().await;
}
