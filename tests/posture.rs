//! The process posture, seen from outside: the real binary started the way
//! a container runtime would (uid 65532, no capabilities, no_new_privs) and
//! then inspected through `/proc` and its own `/v1/selfcheck`.
//!
//! Dropping to another user needs root, so the test skips otherwise.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use common::process::{free_port, is_root, ServerProcess, BIN};
use common::Pki;
use hyper::Method;
use serde_json::Value;
use tempfile::TempDir;
use tmpvault::cmd::client::Client;
use tmpvault::tls::pki::ClientName;

/// The unprivileged user and group the server runs as (distroless `nonroot`).
const UID: u32 = 65532;
const GID: u32 = 65532;

/// Checks that must pass for a server run this way; the others depend on
/// the machine (seccomp, cgroup limit, read-only root, mount options).
const MUST_PASS: [&str; 9] = [
    "process.user",
    "memory.secret_arena",
    "process.no_new_privs",
    "process.capabilities",
    "process.core_dumps",
    "scratch.tmpfs",
    "scratch.mode",
    "scratch.owner",
    "tls.key_file",
];

/// A directory on the `/dev/shm` tmpfs owned by the server's user, mode 0700.
fn private_dir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/dev/shm")
        .expect("a temp dir on /dev/shm");
    std::os::unix::fs::chown(dir.path(), Some(UID), Some(GID)).expect("chown the dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod the dir");
    dir
}

/// Copies `from` into `dir`, owned by the server's user, mode 0600.
fn copy_private(from: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(from.file_name().expect("a file name"));
    fs::copy(from, &to).expect("copy a TLS file");
    std::os::unix::fs::chown(&to, Some(UID), Some(GID)).expect("chown a TLS file");
    fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).expect("chmod a TLS file");
    to
}

/// The value of the first line of `text` that starts with `name`.
fn field<'t>(text: &'t str, name: &str) -> &'t str {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name:?} line in:\n{text}"))
        .trim()
}

/// The soft and hard "Max core file size" of `/proc/<pid>/limits`, in bytes
/// (`None` for unlimited).
fn core_limits(limits: &str) -> (Option<u64>, Option<u64>) {
    let mut values = field(limits, "Max core file size")
        .split_whitespace()
        .map(|value| (value != "unlimited").then(|| value.parse().expect("a byte count")));
    (
        values.next().expect("a soft limit"),
        values.next().expect("a hard limit"),
    )
}

#[test]
fn core_limits_are_parsed() {
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max cpu time              unlimited            unlimited            seconds   \n\
                  Max core file size        1                    1                    bytes     \n";
    assert_eq!(core_limits(limits), (Some(1), Some(1)));
    let open = "Max core file size        0                    unlimited            bytes\n";
    assert_eq!(core_limits(open), (Some(0), None));
}

#[tokio::test]
async fn an_unprivileged_server_is_locked_down() {
    if !is_root() {
        eprintln!("skipping: starting the server as uid {UID} needs root");
        return;
    }
    let pki = Pki::new();
    let scratch = private_dir("tmpvault-scratch-");
    let tls = private_dir("tmpvault-tls-");
    let cert = copy_private(&pki.server.cert, tls.path());
    let key = copy_private(&pki.server.key, tls.path());
    let client_ca = copy_private(&pki.server.client_ca, tls.path());
    let port = free_port();

    let log = pki.scratch_dir().join("server.log");
    let log_file = File::create(&log).expect("create the server log");
    let child = Command::new("setpriv")
        .arg(format!("--reuid={UID}"))
        .arg(format!("--regid={GID}"))
        .args([
            "--clear-groups",
            "--no-new-privs",
            "--bounding-set=-all",
            "--inh-caps=-all",
        ])
        .arg(BIN)
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--scratch-dir")
        .arg(scratch.path())
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--client-ca")
        .arg(&client_ca)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone the log file"))
        .stderr(log_file)
        .spawn()
        .expect("start setpriv tmpvault serve");
    let mut server = ServerProcess::new(child, log);

    let files = pki.client_files("client", ClientName::CommonName("posture".into()));
    let client = Client::new(&format!("https://127.0.0.1:{port}"), &files).expect("client");
    server.wait_until_serving(&client).await;
    // setpriv execs the server, so the pid is the server's.
    let proc_dir = PathBuf::from(format!("/proc/{}", server.pid()));

    // A non-dumpable process's /proc files belong to root, not to its user.
    let mem = fs::metadata(proc_dir.join("mem")).expect("stat /proc/<pid>/mem");
    assert_eq!(mem.uid(), 0, "/proc/<pid>/mem owner");

    let status = fs::read_to_string(proc_dir.join("status")).expect("read /proc/<pid>/status");
    assert_eq!(
        field(&status, "Uid:").split_whitespace().nth(1),
        Some("65532")
    );
    assert_eq!(field(&status, "NoNewPrivs:"), "1");
    assert_eq!(field(&status, "CapEff:"), "0000000000000000");

    let limits = fs::read_to_string(proc_dir.join("limits")).expect("read /proc/<pid>/limits");
    let (soft, hard) = core_limits(&limits);
    assert!(soft.is_some_and(|bytes| bytes <= 1), "{limits}");
    assert!(hard.is_some_and(|bytes| bytes <= 1), "{limits}");

    let response = client
        .request(Method::GET, "/v1/selfcheck", &[], Bytes::new())
        .await
        .expect("GET /v1/selfcheck");
    assert!(response.status.is_success(), "{:?}", response.status);
    let report: Value = serde_json::from_slice(&response.body).expect("self-check JSON");
    eprintln!(
        "self-check of the unprivileged server:\n{}",
        serde_json::to_string_pretty(&report).expect("JSON")
    );
    let checks = report["checks"].as_array().expect("a checks array");
    for id in MUST_PASS {
        let check = checks
            .iter()
            .find(|check| check["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {report}"));
        assert_eq!(check["status"], "pass", "{check}");
    }

    drop(client);
    let exit = server.terminate().await;
    assert!(exit.success(), "exit {exit}:\n{}", server.log());
}
