//! The client commands end to end: the real `tmpvault` binary, configured
//! through `TMPVAULT_*` exactly as a user would, against the real server
//! (in-process, over real mTLS with certificates made for each test).
//!
//! Every child process is bounded: it is killed when it outlives
//! [`CLI_TIMEOUT`] and killed on drop if a test fails while it runs.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::process::BIN;
use common::{Pki, TestServer};
use hyper::Method;
use tmpvault::cmd::client::PutOptions;
use tmpvault::tls::pki::ClientName;
use tmpvault::tls::ClientTlsFiles;

/// Longest any one CLI invocation may take before the test fails.
const CLI_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Running the binary, bounded

/// A child process that is killed and reaped when dropped, so a failing
/// assertion never leaves it running.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What one run of the binary did.
#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("UTF-8 stdout")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|error| {
            panic!("stdout is not JSON ({error}): {self:?}");
        })
    }

    /// Exit 0 with nothing on stderr.
    fn assert_success(&self) -> &Outcome {
        assert_eq!(self.code(), Some(0), "{self:?}");
        assert_eq!(self.stderr, "", "{self:?}");
        self
    }

    /// Exit 1, nothing on stdout, and stderr containing every `needle`.
    fn assert_failure(&self, needles: &[&str]) -> &Outcome {
        assert_eq!(self.code(), Some(1), "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        for needle in needles {
            assert!(self.stderr.contains(needle), "{needle:?} in {self:?}");
        }
        self
    }
}

fn read_all(mut source: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = source.read_to_end(&mut bytes);
        bytes
    })
}

/// A `tmpvault` command that inherits no `TMPVAULT_*` setting from the
/// test runner's environment.
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

/// Runs `command` with `stdin`, waiting at most [`CLI_TIMEOUT`].
fn run_bounded(mut command: Command, stdin: &[u8]) -> Outcome {
    let started = Instant::now();
    let mut child = ChildGuard(
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tmpvault"),
    );
    let mut input = child.0.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    // The child may exit without reading stdin; a broken pipe is fine.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let stdout = read_all(child.0.stdout.take().expect("stdout"));
    let stderr = read_all(child.0.stderr.take().expect("stderr"));
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < CLI_TIMEOUT,
            "{command:?} did not finish within {CLI_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().expect("stdin writer");
    Outcome {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// Runs the binary off the async runtime, so the in-process server keeps
/// serving while the test waits.
async fn run(command: Command, stdin: &[u8]) -> Outcome {
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || run_bounded(command, &stdin))
        .await
        .expect("CLI thread")
}

/// A client command configured the way a user would: `TMPVAULT_*`.
fn client_command(addr: &str, files: &ClientTlsFiles, args: &[&str]) -> Command {
    let mut command = tmpvault();
    command
        .args(args)
        .env("TMPVAULT_ADDR", addr)
        .env("TMPVAULT_CACERT", &files.ca)
        .env("TMPVAULT_CLIENT_CERT", &files.cert)
        .env("TMPVAULT_CLIENT_KEY", &files.key);
    command
}

/// Runs a client command against `server` as its default client.
async fn cli(server: &TestServer, args: &[&str], stdin: &[u8]) -> Outcome {
    run(
        client_command(&server.base, &server.client_files, args),
        stdin,
    )
    .await
}

fn parse_time(value: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(value.as_str().expect("an RFC 3339 string"))
        .unwrap_or_else(|error| panic!("{value} is not RFC 3339: {error}"))
}

/// Asserts `time` is `ttl` from now, give or take `slack`.
fn assert_expires_in(time: SystemTime, ttl: Duration, slack: Duration) {
    let expected = SystemTime::now() + ttl;
    let difference = match expected.duration_since(time) {
        Ok(early) => early,
        Err(late) => late.duration(),
    };
    assert!(
        difference <= slack,
        "expires at {time:?}, expected about {expected:?}"
    );
}

fn write_file(dir: &Path, name: &str, contents: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write input file");
    path
}

// ---------------------------------------------------------------------------
// put, get, rm

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_from_stdin_prints_the_metadata_and_stores_the_bytes() {
    let server = TestServer::start().await;
    let put = cli(
        &server,
        &["put", "db/password", "--ttl", "10m", "--max-reads", "3"],
        b"hunter2",
    )
    .await;
    put.assert_success();
    let meta = put.json();
    assert_eq!(meta["key"], "db/password", "{meta}");
    assert_eq!(meta["kind"], "secret", "{meta}");
    assert_eq!(meta["size"], 7, "{meta}");
    assert_eq!(meta["reads_left"], 3, "{meta}");
    assert_eq!(meta["version"], 1, "{meta}");
    assert_eq!(meta["content_type"], "application/octet-stream", "{meta}");
    assert_expires_in(
        parse_time(&meta["expires_at"]),
        Duration::from_secs(600),
        Duration::from_secs(30),
    );
    assert!(
        !put.stdout_text().contains("hunter2"),
        "the value is never printed: {put:?}"
    );
    // A HEAD does not use up a read: the server holds what the CLI sent.
    let head = server
        .client
        .request(Method::HEAD, "/v1/secrets/db/password", &[], Bytes::new())
        .await
        .expect("HEAD");
    assert_eq!(head.status.as_u16(), 200);
    assert_eq!(head.headers["x-tmpvault-reads-left"], "3");
    assert_eq!(head.headers["content-length"], "7");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_from_a_file_or_dash_reads_that_input() {
    let server = TestServer::start().await;
    let value: Vec<u8> = (0..=255u8).rev().collect();
    let file = write_file(server.pki.scratch_dir(), "value.bin", &value);
    let file = file.to_str().expect("UTF-8 path");
    let put = cli(&server, &["put", "blob/file", file, "--ttl", "90s"], b"").await;
    put.assert_success();
    let meta = put.json();
    assert_eq!(meta["key"], "blob/file", "{meta}");
    assert_eq!(meta["kind"], "secret", "{meta}");
    assert_eq!(meta["size"], 256, "{meta}");
    assert_eq!(meta["reads_left"], serde_json::Value::Null, "{meta}");
    assert_expires_in(
        parse_time(&meta["expires_at"]),
        Duration::from_secs(90),
        Duration::from_secs(30),
    );
    let stored = server.client.get("blob/file").await.expect("GET");
    assert_eq!(stored.as_slice(), value.as_slice());

    // `-` is stdin; without --ttl the server's default (1h here) applies.
    let dash = cli(&server, &["put", "blob/dash", "-"], b"from stdin").await;
    dash.assert_success();
    let meta = dash.json();
    assert_eq!(meta["size"], 10, "{meta}");
    assert_expires_in(
        parse_time(&meta["expires_at"]),
        Duration::from_secs(3600),
        Duration::from_secs(30),
    );
    let stored = server.client.get("blob/dash").await.expect("GET");
    assert_eq!(stored.as_slice(), b"from stdin");

    // Replacing is a put too; the version goes up.
    let again = cli(&server, &["put", "blob/dash"], b"v2").await;
    again.assert_success();
    assert_eq!(again.json()["version"], 2);

    let missing = cli(&server, &["put", "blob/none", "/nonexistent/value"], b"").await;
    missing.assert_failure(&["/nonexistent/value"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_value_is_refused_unless_allow_empty() {
    let server = TestServer::start().await;
    let dir = server.pki.scratch_dir();
    let empty_file = write_file(dir, "empty", b"");
    let empty_file = empty_file.to_str().expect("UTF-8 path");
    // Nothing piped in, `-`, an empty file, and a push: refused before any
    // request, saying which input was empty and how to store one anyway.
    for (args, source) in [
        (vec!["put", "empty/stdin"], "stdin gave 0 bytes"),
        (vec!["put", "empty/stdin", "-"], "stdin gave 0 bytes"),
        (vec!["put", "empty/file", empty_file], "gave 0 bytes"),
        (vec!["push", "empty/list"], "stdin gave 0 bytes"),
    ] {
        let refused = cli(&server, &args, b"").await;
        refused.assert_failure(&["refusing an empty value", source, "--allow-empty"]);
        assert_eq!(refused.code(), Some(1), "{args:?}");
    }
    for key in ["empty/stdin", "empty/file", "empty/list"] {
        let missing = server.client.get(key).await.expect_err("nothing stored");
        assert_eq!(missing.code(), Some("not_found"), "{key}");
    }
    // Asked for, it is stored: 0 bytes.
    let put = cli(&server, &["put", "empty/stdin", "--allow-empty"], b"").await;
    put.assert_success();
    assert_eq!(put.json()["size"], 0);
    assert!(server
        .client
        .get("empty/stdin")
        .await
        .expect("GET")
        .is_empty());
    let push = cli(&server, &["push", "empty/list", "--allow-empty"], b"").await;
    push.assert_success();
    assert_eq!(push.json()["size"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_writes_exactly_the_raw_bytes() {
    let server = TestServer::start().await;
    // Not UTF-8, a NUL, a CR, and no trailing newline.
    let value: &[u8] = b"\xff\xfe\x00raw\r\nbytes\x80";
    server
        .client
        .put(
            "raw/bytes",
            Bytes::from_static(value),
            &PutOptions::default(),
        )
        .await
        .expect("PUT");
    let get = cli(&server, &["get", "raw/bytes"], b"").await;
    get.assert_success();
    assert_eq!(get.stdout, value);

    // A value that is a single newline stays exactly that.
    server
        .client
        .put(
            "raw/newline",
            Bytes::from_static(b"\n"),
            &PutOptions::default(),
        )
        .await
        .expect("PUT");
    let newline = cli(&server, &["get", "raw/newline"], b"").await;
    newline.assert_success();
    assert_eq!(newline.stdout, b"\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_once_secret_put_by_the_cli_is_gone_after_one_get() {
    let server = TestServer::start().await;
    cli(
        &server,
        &["put", "once/token", "--max-reads", "1"],
        b"one-time",
    )
    .await
    .assert_success();
    let first = cli(&server, &["get", "once/token"], b"").await;
    first.assert_success();
    assert_eq!(first.stdout, b"one-time");
    cli(&server, &["get", "once/token"], b"")
        .await
        .assert_failure(&["not_found", "HTTP 404"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_removes_and_then_get_fails_with_not_found() {
    let server = TestServer::start().await;
    cli(&server, &["put", "gone/soon"], b"x")
        .await
        .assert_success();
    let rm = cli(&server, &["rm", "gone/soon"], b"").await;
    rm.assert_success();
    assert!(rm.stdout.is_empty(), "{rm:?}");
    assert_eq!(
        server
            .client
            .get("gone/soon")
            .await
            .expect_err("deleted")
            .code(),
        Some("not_found")
    );
    cli(&server, &["get", "gone/soon"], b"")
        .await
        .assert_failure(&["not_found"]);
    cli(&server, &["rm", "gone/soon"], b"")
        .await
        .assert_failure(&["not_found"]);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// ls, renew, push, pop

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_prints_one_line_per_key_and_never_a_value() {
    let server = TestServer::start().await;
    let marker = "value-that-ls-must-never-print";
    let mut metas = Vec::new();
    for key in ["app/b", "app/a", "app/c/deep"] {
        let meta = server
            .client
            .put(
                key,
                Bytes::from(marker),
                &PutOptions {
                    ttl: Some("10m"),
                    ..PutOptions::default()
                },
            )
            .await
            .expect("PUT");
        metas.push(meta);
    }
    let list = server
        .client
        .push("app/pool", Bytes::from(marker), None)
        .await
        .expect("push");
    server
        .client
        .push("app/pool", Bytes::from(marker), None)
        .await
        .expect("push");
    server
        .client
        .put("other/key", Bytes::from(marker), &PutOptions::default())
        .await
        .expect("PUT");

    let ls = cli(&server, &["ls", "app/"], b"").await;
    ls.assert_success();
    let text = ls.stdout_text();
    assert!(!text.contains(marker), "{text}");
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|line| line.split('\t').collect())
        .collect();
    let keys: Vec<&str> = lines.iter().map(|fields| fields[0]).collect();
    assert_eq!(keys, ["app/a", "app/b", "app/c/deep", "app/pool"], "{text}");
    for fields in &lines {
        assert_eq!(fields.len(), 4, "key, kind, size, expires_at: {text}");
        let meta = metas
            .iter()
            .chain([&list])
            .find(|meta| meta["key"] == fields[0])
            .expect("metadata of the key");
        assert_eq!(fields[3], meta["expires_at"], "{text}");
        parse_time(&serde_json::Value::from(fields[3]));
    }
    assert_eq!(
        lines[0][1..3],
        ["secret", marker.len().to_string().as_str()]
    );
    assert_eq!(lines[3][1..3], ["list", "2"], "{text}");

    let all = cli(&server, &["ls"], b"").await;
    all.assert_success();
    assert_eq!(all.stdout_text().lines().count(), 5, "{all:?}");
    assert!(all.stdout_text().contains("other/key\tsecret\t"), "{all:?}");

    let none = cli(&server, &["ls", "nothing/"], b"").await;
    none.assert_success();
    assert!(none.stdout.is_empty(), "{none:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_follows_next_past_a_full_page() {
    let server = TestServer::start().await;
    // One more page than the server's largest (1000), stored concurrently.
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let client = server.client.clone();
        tasks.spawn(async move {
            for index in (worker..1005).step_by(8) {
                client
                    .put(
                        &format!("many/{index:04}"),
                        Bytes::from_static(b"v"),
                        &PutOptions::default(),
                    )
                    .await
                    .expect("PUT");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer task");
    }
    let ls = cli(&server, &["ls", "many/"], b"").await;
    ls.assert_success();
    let keys: Vec<String> = ls
        .stdout_text()
        .lines()
        .map(|line| line.split('\t').next().unwrap_or("").to_owned())
        .collect();
    let expected: Vec<String> = (0..1005).map(|index| format!("many/{index:04}")).collect();
    assert_eq!(keys.len(), 1005);
    assert_eq!(keys, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_changes_expires_at() {
    let server = TestServer::start().await;
    let put = cli(&server, &["put", "renew/me", "--ttl", "10m"], b"x").await;
    put.assert_success();
    let before = parse_time(&put.json()["expires_at"]);
    assert_expires_in(before, Duration::from_secs(600), Duration::from_secs(30));

    let renew = cli(&server, &["renew", "renew/me", "--ttl", "2h"], b"").await;
    renew.assert_success();
    let meta = renew.json();
    assert_eq!(meta["key"], "renew/me", "{meta}");
    let after = parse_time(&meta["expires_at"]);
    assert_expires_in(after, Duration::from_secs(7200), Duration::from_secs(30));
    let head = server
        .client
        .request(Method::HEAD, "/v1/secrets/renew/me", &[], Bytes::new())
        .await
        .expect("HEAD");
    assert_eq!(
        head.headers["x-tmpvault-expires-at"]
            .to_str()
            .expect("ASCII"),
        meta["expires_at"]
    );

    cli(&server, &["renew", "renew/me", "--ttl", "100d"], b"")
        .await
        .assert_failure(&["invalid_ttl", "HTTP 400"]);
    cli(&server, &["renew", "renew/absent", "--ttl", "1m"], b"")
        .await
        .assert_failure(&["not_found"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pop_newest_and_oldest() {
    let server = TestServer::start().await;
    let first = cli(&server, &["push", "pool/creds", "--ttl", "5m"], b"first").await;
    first.assert_success();
    let meta = first.json();
    assert_eq!(meta["key"], "pool/creds", "{meta}");
    assert_eq!(meta["kind"], "list", "{meta}");
    assert_eq!(meta["size"], 1, "{meta}");
    assert_expires_in(
        parse_time(&meta["expires_at"]),
        Duration::from_secs(300),
        Duration::from_secs(30),
    );
    let file = write_file(server.pki.scratch_dir(), "item.bin", b"second\xff");
    let second = cli(
        &server,
        &["push", "pool/creds", file.to_str().expect("UTF-8 path")],
        b"",
    )
    .await;
    second.assert_success();
    assert_eq!(second.json()["size"], 2);
    let third = cli(&server, &["push", "pool/creds", "-"], b"third").await;
    third.assert_success();
    assert_eq!(third.json()["size"], 3);

    let newest = cli(&server, &["pop", "pool/creds"], b"").await;
    newest.assert_success();
    assert_eq!(newest.stdout, b"third");
    let oldest = cli(&server, &["pop", "pool/creds", "--oldest"], b"").await;
    oldest.assert_success();
    assert_eq!(oldest.stdout, b"first");
    let last = cli(&server, &["pop", "pool/creds"], b"").await;
    last.assert_success();
    assert_eq!(last.stdout, b"second\xff");
    // Popping the last item deleted the list.
    cli(&server, &["pop", "pool/creds"], b"")
        .await
        .assert_failure(&["not_found"]);

    // A secret is not a list.
    cli(&server, &["put", "pool/plain"], b"x")
        .await
        .assert_success();
    cli(&server, &["pop", "pool/plain"], b"")
        .await
        .assert_failure(&["wrong_kind", "HTTP 409"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_configure_the_client_instead_of_the_environment() {
    let server = TestServer::start().await;
    let files = &server.client_files;
    let with_flags = |args: &[&str]| {
        let mut command = tmpvault();
        command
            .args(args)
            .arg("--addr")
            .arg(&server.base)
            .arg("--cacert")
            .arg(&files.ca)
            .arg("--client-cert")
            .arg(&files.cert)
            .arg("--client-key")
            .arg(&files.key);
        command
    };
    run(with_flags(&["put", "flags/key"]), b"by flag")
        .await
        .assert_success();
    let get = run(with_flags(&["get", "flags/key"]), b"").await;
    get.assert_success();
    assert_eq!(get.stdout, b"by flag");

    // A flag wins over the environment.
    let mut mixed = client_command("https://127.0.0.1:1", files, &["get", "flags/key"]);
    mixed.arg("--addr").arg(&server.base);
    let get = run(mixed, b"").await;
    get.assert_success();
    assert_eq!(get.stdout, b"by flag");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_exits_1_with_invalid_key() {
    let server = TestServer::start().await;
    cli(&server, &["put", "a//b"], b"x")
        .await
        .assert_failure(&["invalid_key", "HTTP 400"]);
    cli(&server, &["get", "a//b"], b"")
        .await
        .assert_failure(&["invalid_key"]);
    cli(&server, &["get", "trailing/"], b"")
        .await
        .assert_failure(&["invalid_key"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_cacert_file_is_named() {
    let server = TestServer::start().await;
    let mut files = server.client_files.clone();
    files.ca = server.pki.scratch_dir().join("no-such-ca.pem");
    let missing = files.ca.to_str().expect("UTF-8 path").to_owned();
    let outcome = run(
        client_command(&server.base, &files, &["get", "some/key"]),
        b"",
    )
    .await;
    outcome.assert_failure(&[&missing, "No such file"]);
    assert_eq!(outcome.stderr.lines().count(), 1, "one line: {outcome:?}");

    // Unset entirely, clap names the variable.
    let mut unset = client_command(&server.base, &server.client_files, &["get", "some/key"]);
    unset.env_remove("TMPVAULT_CACERT");
    let outcome = run(unset, b"").await;
    assert_eq!(outcome.code(), Some(2), "{outcome:?}");
    assert!(outcome.stderr.contains("--cacert"), "{outcome:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_https_address_is_refused_clearly() {
    let pki = Pki::new();
    let files = pki.client_files("client", ClientName::CommonName("c".into()));
    for addr in ["http://x", "127.0.0.1:8443", "https://"] {
        let outcome = run(client_command(addr, &files, &["get", "some/key"]), b"").await;
        outcome.assert_failure(&["invalid server address", addr, "https://host:port"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_fast_naming_it() {
    let pki = Pki::new();
    let files = pki.client_files("client", ClientName::CommonName("c".into()));
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let addr = format!("https://127.0.0.1:{port}");
    let outcome = run(client_command(&addr, &files, &["get", "some/key"]), b"").await;
    outcome.assert_failure(&[&format!("talking to {addr}")]);
    assert!(outcome.elapsed < Duration::from_secs(5), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_fails_without_hanging() {
    let server = TestServer::start().await;
    let stranger = Pki::new();
    let mut files = stranger.client_files("stranger", ClientName::CommonName("tester".into()));
    // The server is trusted; only the client certificate is foreign.
    files.ca = server.pki.ca_path.clone();
    let outcome = run(
        client_command(&server.base, &files, &["put", "foreign/key"]),
        b"x",
    )
    .await;
    outcome.assert_failure(&[&format!("talking to {}", server.base)]);
    assert!(outcome.elapsed < Duration::from_secs(10), "{outcome:?}");
    assert_eq!(
        server
            .client
            .get("foreign/key")
            .await
            .expect_err("never stored")
            .code(),
        Some("not_found")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_cacert_does_not_vouch_for_is_refused() {
    let server = TestServer::start().await;
    let stranger = Pki::new();
    let mut files = server.client_files.clone();
    files.ca = stranger.ca_path.clone();
    let outcome = run(
        client_command(&server.base, &files, &["get", "some/key"]),
        b"",
    )
    .await;
    outcome.assert_failure(&[&format!("talking to {}", server.base), "certificate"]);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Help

/// Every `serve` flag PRODUCT.md names (all of them exist in src/cmd/cli.rs).
const SERVE_FLAGS: &[&str] = &[
    "--listen",
    "--scratch-dir",
    "--tls-cert",
    "--tls-key",
    "--client-ca",
    "--ops-listen",
    "--policy",
    "--default-ttl",
    "--max-ttl",
    "--max-value-bytes",
    "--max-memory",
    "--snapshot",
    "--snapshot-key-file",
    "--snapshot-interval",
    "--strict",
    "--log-format",
    "--rate-limit",
    "--allow-root",
];

#[test]
fn help_exits_0_and_lists_the_commands() {
    let help = run_bounded(
        {
            let mut command = tmpvault();
            command.arg("--help");
            command
        },
        b"",
    );
    help.assert_success();
    let text = help.stdout_text();
    for command in [
        "serve",
        "dev",
        "selfcheck",
        "put",
        "get",
        "rm",
        "ls",
        "renew",
        "push",
        "pop",
    ] {
        assert!(
            text.lines()
                .any(|line| line.trim_start().starts_with(&format!("{command} "))),
            "{command} in {text}"
        );
    }
}

#[test]
fn help_lists_healthcheck_and_keygen() {
    let mut command = tmpvault();
    command.arg("--help");
    let help = run_bounded(command, b"");
    help.assert_success();
    let text = help.stdout_text();
    for command in ["healthcheck", "keygen"] {
        assert!(
            text.lines()
                .any(|line| line.trim_start().starts_with(&format!("{command} "))),
            "{command} in {text}"
        );
    }
}

#[test]
fn serve_help_exits_0_and_mentions_every_serve_flag() {
    let mut command = tmpvault();
    command.args(["serve", "--help"]);
    let help = run_bounded(command, b"");
    help.assert_success();
    let text = help.stdout_text();
    for flag in SERVE_FLAGS {
        assert!(
            text.lines()
                .any(|line| line.trim_start().starts_with(&format!("{flag} "))
                    || line.trim() == *flag),
            "{flag} in {text}"
        );
        let variable = format!(
            "TMPVAULT_{}",
            flag.trim_start_matches('-')
                .replace('-', "_")
                .to_uppercase()
        );
        assert!(text.contains(&variable), "{variable} in {text}");
    }
}
