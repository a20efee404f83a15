//! The secret arena seen from outside: the real binary stores a random
//! marker, and its whole address space is read through `/proc/<pid>/mem`
//! (as root, the strongest reader there is short of the kernel).
//!
//! With the memfd_secret arena the stored value is nowhere readable: the
//! arena's pages are gone from the kernel's direct map, so the read of that
//! mapping fails, and no other copy is left once the connection that
//! carried it has closed. The control runs the same scan against
//! `--secret-arena heap`, which finds the value, so the scan can see it.
//! Also here: the 507 of a full arena, and the self-check's fallback where
//! no memory may be locked.
//!
//! Reading another process's memory and switching users need root; the
//! tests skip otherwise, and so do the memfd_secret ones on a kernel
//! without it.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use bytes::Bytes;
use common::memscan::{
    scan, server_scratch, start_server, start_server_in, wait_until_closed, Marker,
};
use common::process::{free_port, is_root, ServerProcess, BIN};
use common::Pki;
use hyper::Method;
use serde_json::Value;
use tmpvault::cmd::client::{Client, ClientError, PutOptions};
use tmpvault::posture::alloc::ZeroizingAllocator;
use tmpvault::tls::pki::ClientName;

/// The test's own copies of the marker are wiped as they are freed.
#[global_allocator]
static ALLOCATOR: ZeroizingAllocator = ZeroizingAllocator;

/// Whether this kernel gives out memfd_secret memory.
fn kernel_has_memfd_secret() -> bool {
    // SAFETY: the call takes one flags argument and returns a new fd or -1.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` is ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(fd as libc::c_int)
    };
    true
}

async fn serving(pki: &Pki, extra: &[&str]) -> (ServerProcess, Client, u16) {
    let port = free_port();
    let mut server = start_server(pki, port, extra);
    let files = pki.client_files("client", ClientName::CommonName("arena".into()));
    let client = Client::new(&format!("https://127.0.0.1:{port}"), &files).unwrap();
    server.wait_until_serving(&client).await;
    (server, client, port)
}

/// The `memory.secret_arena` check of the server's `/v1/selfcheck`.
async fn arena_check(client: &Client) -> Value {
    let response = client
        .request(Method::GET, "/v1/selfcheck", &[], Bytes::new())
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&response.body).unwrap();
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["id"] == "memory.secret_arena")
        .cloned()
        .unwrap_or_else(|| panic!("no memory.secret_arena in {report}"))
}

/// Stores the marker over one connection, closes it, and scans; then reads
/// it back over another, closes that, and scans again. Returns the hits of
/// both scans.
async fn store_and_scan(extra: &[&str]) -> (usize, usize, Value, String) {
    let pki = Pki::new();
    let (mut server, client, port) = serving(&pki, extra).await;
    let check = arena_check(&client).await;
    let marker = Marker::new("stored");
    client
        .put("arena/a", marker.body(), &PutOptions::default())
        .await
        .unwrap();
    drop(client);
    wait_until_closed(port).await;
    let pid = server.pid();
    let stored = scan(pid, &[&marker]);
    eprintln!("{extra:?}, stored:\n{stored}");

    let files = pki.client_files("reader", ClientName::CommonName("arena".into()));
    let client = Client::new(&format!("https://127.0.0.1:{port}"), &files).unwrap();
    let value = client.get("arena/a").await.unwrap();
    assert!(
        value[..] == *marker.bytes(),
        "the value comes back as stored"
    );
    drop(value);
    drop(client);
    wait_until_closed(port).await;
    let read = scan(pid, &[&marker]);
    eprintln!("{extra:?}, read back:\n{read}");
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(server.is_running(), "{}", server.log());
    (
        stored.hits(&marker).len(),
        read.hits(&marker).len(),
        check,
        maps,
    )
}

#[tokio::test]
async fn a_stored_value_is_nowhere_readable_in_the_servers_memory() {
    if !is_root() {
        eprintln!("skipping: reading a non-dumpable process's memory needs root");
        return;
    }
    if !kernel_has_memfd_secret() {
        eprintln!("skipping: this kernel refuses memfd_secret (Linux 5.14+, secretmem)");
        return;
    }
    let (stored, read, check, maps) = store_and_scan(&[]).await;
    assert_eq!(check["status"], "pass", "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("values live in a memfd_secret arena of "),
        "{detail}"
    );
    assert!(maps.contains("/secretmem"), "the arena is mapped:\n{maps}");
    assert_eq!(stored, 0, "a stored value was readable");
    assert_eq!(read, 0, "a value read back left a copy");

    // The control: the same scan finds the value on the heap.
    let (stored, read, check, _) = store_and_scan(&["--secret-arena", "heap"]).await;
    assert_eq!(check["status"], "warn", "{check}");
    assert!(stored >= 1, "the scan must find a value on the heap");
    assert!(read >= 1, "the scan must find a value on the heap");
}

#[tokio::test]
async fn a_full_arena_answers_507_and_keeps_what_it_holds() {
    if !is_root() {
        eprintln!("skipping: runs the server as root (--allow-root), as the scans do");
        return;
    }
    let pki = Pki::new();
    // 64 KiB of budget makes a 64 KiB arena: one block of the largest size.
    let (_server, client, _) =
        serving(&pki, &["--max-memory", "64KiB", "--secret-arena", "mlock"]).await;
    let big = Bytes::from(vec![b'x'; 40 << 10]);
    client
        .put("arena/big", big.clone(), &PutOptions::default())
        .await
        .unwrap();
    // Within the budget (40 KiB + 200 bytes of 64 KiB) but not the arena,
    // whose one block the first value took.
    let error = client
        .put(
            "arena/small",
            Bytes::from_static(b"small"),
            &PutOptions::default(),
        )
        .await
        .unwrap_err();
    match error {
        ClientError::Problem { status, code, .. } => {
            assert_eq!(status, 507);
            assert_eq!(code, "memory_budget_exceeded");
        }
        other => panic!("expected a 507 problem, got {other}"),
    }
    assert_eq!(client.get("arena/big").await.unwrap()[..], big[..]);
    client.delete("arena/big").await.unwrap();
    client
        .put(
            "arena/small",
            Bytes::from_static(b"small"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
}

/// A snapshot written under a larger arena is sound data: a restart whose
/// arena cannot hold it refuses to start, naming the limit, and never
/// moves the files aside, even with `--snapshot-on-error discard` (which
/// is for damaged files). With the arena it was written under, every value
/// comes back.
#[tokio::test]
async fn a_snapshot_too_big_for_the_arena_is_refused_and_never_discarded() {
    if !is_root() {
        eprintln!("skipping: runs the server as root (--allow-root), as the scans do");
        return;
    }
    let pki = Pki::new();
    let scratch = server_scratch(&pki);
    let files = pki.client_files("client", ClientName::CommonName("arena".into()));
    // Two 40 KiB values take two 64 KiB blocks: a 128 KiB arena holds
    // them, a 64 KiB one holds one.
    let big = Bytes::from(vec![b'x'; 40 << 10]);
    let serve = |max_memory: &'static str, port: u16| {
        start_server_in(
            &pki,
            port,
            &scratch,
            &[
                "--max-memory",
                max_memory,
                "--secret-arena",
                "mlock",
                "--snapshot",
                "plain",
                "--snapshot-on-error",
                "discard",
            ],
        )
    };
    let port = free_port();
    let mut server = serve("128KiB", port);
    let client = Client::new(&format!("https://127.0.0.1:{port}"), &files).unwrap();
    server.wait_until_serving(&client).await;
    for key in ["arena/one", "arena/two"] {
        client
            .put(key, big.clone(), &PutOptions::default())
            .await
            .unwrap();
    }
    assert!(server.terminate().await.success(), "{}", server.log());

    let mut small = serve("64KiB", free_port());
    let status = small
        .wait_exit(
            std::time::Duration::from_secs(20),
            "of a start that must fail",
        )
        .await;
    let log = small.log();
    assert!(
        !status.success(),
        "a 64 KiB arena cannot hold 80 KiB:\n{log}"
    );
    assert!(
        log.contains("the secret arena cannot take") && log.contains("the file is intact"),
        "{log}"
    );
    assert!(!log.contains("DISCARDED"), "{log}");
    let names: Vec<String> = fs::read_dir(&scratch)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|name| name == "tmpvault.snapshot"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|name| name.ends_with(".discarded")),
        "{names:?}"
    );

    let port = free_port();
    let mut again = serve("128KiB", port);
    let client = Client::new(&format!("https://127.0.0.1:{port}"), &files).unwrap();
    again.wait_until_serving(&client).await;
    for key in ["arena/one", "arena/two"] {
        assert_eq!(client.get(key).await.unwrap()[..], big[..], "{key}");
    }
}

#[test]
fn without_lockable_memory_values_go_to_the_heap_and_the_selfcheck_says_so() {
    if !is_root() {
        eprintln!("skipping: dropping to another user needs root");
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("tmpvault-arena-")
        .tempdir_in("/dev/shm")
        .unwrap();
    std::os::unix::fs::chown(scratch.path(), Some(65532), Some(65532)).unwrap();
    fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["selfcheck", "--json", "--scratch-dir"])
        .arg(scratch.path())
        .uid(65532)
        .gid(65532);
    // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK, 0, 0)
                .map_err(std::io::Error::from)
        });
    }
    let output = command.output().unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["id"] == "memory.secret_arena")
        .cloned()
        .unwrap();
    assert_eq!(check["status"], "warn", "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(detail.starts_with("values live on the heap"), "{detail}");
    assert!(detail.contains("RLIMIT_MEMLOCK 0 bytes"), "{detail}");
    assert!(detail.contains("`ulimit -l "), "the fix is named: {detail}");
}
