//! `tmpvault run` end to end: the real binary against the real server.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{ServerProcess, BIN};
use common::TestServer;
use nix::sys::signal::Signal;
use nix::sys::statfs;
use tempfile::TempDir;

/// Runs `tmpvault run ARGS` as a user would, with the client settings in
/// the environment, off the async workers the server uses.
async fn run(server: &TestServer, args: &[&str]) -> Output {
    let files = server.client_files.clone();
    let base = server.base.clone();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("run")
            .args(&args)
            .env("TMPVAULT_ADDR", base)
            .env("TMPVAULT_CACERT", &files.ca)
            .env("TMPVAULT_CLIENT_CERT", &files.cert)
            .env("TMPVAULT_CLIENT_KEY", &files.key)
            .output()
            .expect("tmpvault run")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread")]
async fn env_gets_the_exact_bytes_and_the_exit_code_passes_through() {
    let server = TestServer::start().await;
    server
        .client
        .put(
            "app/db",
            bytes::Bytes::from_static(b"s3cr3t \n=x"),
            &Default::default(),
        )
        .await
        .expect("put");
    let output = run(
        &server,
        &[
            "--env",
            "DB=app/db",
            "--",
            "sh",
            "-c",
            "printf %s \"$DB\"; exit 7",
        ],
    )
    .await;
    assert_eq!(output.stdout, b"s3cr3t \n=x");
    assert_eq!(output.status.code(), Some(7));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_key_fails_before_the_program_starts() {
    let server = TestServer::start().await;
    let marker = server.pki.scratch_dir().join("side-effect");
    let script = format!("touch {}", marker.display());
    let output = run(
        &server,
        &["--env", "DB=app/absent", "--", "sh", "-c", &script],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("secret app/absent: HTTP 404 not_found"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the program ran");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Supervise mode: files, signals, --watch.

/// How long a program may take to start under `tmpvault run` (a loaded
/// machine, a debug build): generous, since only the change propagation
/// below has a tight bound.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// The acceptance bound: from the PUT's answer to the program seeing the
/// new value.
const CHANGE_BOUND: Duration = Duration::from_secs(1);

/// A fresh 0700 directory on the `/dev/shm` tmpfs, owned by us: what
/// `--file` asks of its directory. `None` (with the reason printed) where
/// `/dev/shm` is not a tmpfs.
fn private_tmpfs_dir() -> Option<TempDir> {
    let on_tmpfs =
        statfs::statfs("/dev/shm").is_ok_and(|fs| fs.filesystem_type() == statfs::TMPFS_MAGIC);
    if !on_tmpfs {
        eprintln!("skipping: /dev/shm is not a tmpfs here, and --file needs one");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("tmpvault-run-")
        .tempdir_in("/dev/shm")
        .expect("a temp dir on /dev/shm");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    Some(dir)
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read the dir")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// `tmpvault run ARGS` as a child of its own (stdout to `work/stdout`,
/// stderr to `work/stderr`, no pipes to block on), killed when dropped.
fn spawn_run(server: &TestServer, work: &Path, args: &[&str]) -> ServerProcess {
    let stdout = fs::File::create(work.join("stdout")).expect("stdout file");
    let stderr_path = work.join("stderr");
    let stderr = fs::File::create(&stderr_path).expect("stderr file");
    let child = Command::new(BIN)
        .arg("run")
        .args(args)
        .env("TMPVAULT_ADDR", &server.base)
        .env("TMPVAULT_CACERT", &server.client_files.ca)
        .env("TMPVAULT_CLIENT_CERT", &server.client_files.cert)
        .env("TMPVAULT_CLIENT_KEY", &server.client_files.key)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn tmpvault run");
    ServerProcess::new(child, stderr_path)
}

/// Polls `check` every 10 ms until it holds; panics with `what` (and the
/// run's stderr) after `deadline`. Returns when it first held.
async fn wait_until(
    run: &ServerProcess,
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> bool,
) -> Instant {
    let until = Instant::now() + deadline;
    loop {
        if check() {
            return Instant::now();
        }
        assert!(
            Instant::now() < until,
            "{what}: not within {deadline:?}; tmpvault run's stderr:\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

async fn put(server: &TestServer, key: &str, value: &'static [u8]) {
    server
        .client
        .put(key, Bytes::from_static(value), &Default::default())
        .await
        .expect("put");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_0400_on_tmpfs_with_the_exact_bytes_and_gone_after_exit() {
    let Some(dir) = private_tmpfs_dir() else {
        return;
    };
    let work = tempfile::tempdir().expect("work dir");
    let server = TestServer::start().await;
    // Any bytes go in a file: a NUL, bytes that are not UTF-8, no final
    // newline.
    put(&server, "app/db", b"s3cr3t\0\xff\xfe\n=x").await;
    put(&server, "app/api-key", b"k-123").await;
    let db = dir.path().join("db-password");
    let api = dir.path().join("api-key");
    let facts = work.path().join("facts");
    let db_arg = format!("{}=app/db", db.display());
    let api_arg = format!("{}=app/api-key", api.display());
    let output = run(
        &server,
        &[
            "--file",
            &db_arg,
            "--file",
            &api_arg,
            "--",
            "sh",
            "-c",
            // Mode and owner of each file, the file system, what else is in
            // the directory, then the bytes.
            r#"stat -c '%a %u' "$1" "$2" > "$3"; stat -f -c %T "$1" >> "$3"; ls -A "$4" >> "$3"; cat "$1" "$2"; exit 3"#,
            "sh",
            &db.to_string_lossy(),
            &api.to_string_lossy(),
            &facts.to_string_lossy(),
            &dir.path().to_string_lossy(),
        ],
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"s3cr3t\0\xff\xfe\n=xk-123");
    let uid = nix::unistd::geteuid();
    assert_eq!(
        read(&facts),
        format!("400 {uid}\n400 {uid}\ntmpfs\napi-key\ndb-password\n"),
        "mode and owner of each file, its file system, and nothing else in the directory (no temp file)"
    );
    assert!(
        names_in(dir.path()).is_empty(),
        "left behind: {:?}",
        names_in(dir.path())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_directory_others_may_enter_is_refused_before_the_program_starts() {
    let Some(dir) = private_tmpfs_dir() else {
        return;
    };
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    let server = TestServer::start().await;
    put(&server, "app/db", b"s3cr3t").await;
    let marker = server.pki.scratch_dir().join("side-effect");
    let script = format!("touch {}", marker.display());
    let file_arg = format!("{}=app/db", dir.path().join("db").display());
    let output = run(&server, &["--file", &file_arg, "--", "sh", "-c", &script]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("must be private tmpfs like the scratch dir")
            && stderr.contains("scratch.mode"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "the value is in the message");
    assert!(!marker.exists(), "the program ran");
    assert!(names_in(dir.path()).is_empty(), "a file was written");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_cannot_be_written_stops_the_run_and_removes_those_written() {
    let Some(dir) = private_tmpfs_dir() else {
        return;
    };
    let server = TestServer::start().await;
    put(&server, "app/one", b"s3cr3t-1").await;
    put(&server, "app/two", b"s3cr3t-2").await;
    // A directory where the second file should go: the rename fails.
    fs::create_dir(dir.path().join("two")).expect("mkdir");
    let marker = server.pki.scratch_dir().join("side-effect");
    let script = format!("touch {}", marker.display());
    let one = format!("{}=app/one", dir.path().join("one").display());
    let two = format!("{}=app/two", dir.path().join("two").display());
    let output = run(
        &server,
        &["--file", &one, "--file", &two, "--", "sh", "-c", &script],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("renaming into place"), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "a value is in the message");
    assert!(!marker.exists(), "the program ran");
    assert_eq!(
        names_in(dir.path()),
        ["two"],
        "the first file (or a temp file) was left behind"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_reaches_the_program_and_its_exit_code_passes_through() {
    let Some(dir) = private_tmpfs_dir() else {
        return;
    };
    let work = tempfile::tempdir().expect("work dir");
    let server = TestServer::start().await;
    put(&server, "app/db", b"s3cr3t").await;
    let ready = work.path().join("ready");
    let trapped = work.path().join("trapped");
    let file_arg = format!("{}=app/db", dir.path().join("db").display());
    // `sleep & wait`: a trapped signal ends `wait` at once (POSIX), where a
    // foreground `sleep` would first run to its end.
    let script = r#"trap 'echo TERM > "$2"; exit 42' TERM; echo > "$1"; while :; do sleep 1 & wait $!; done"#;
    let mut run = spawn_run(
        &server,
        work.path(),
        &[
            "--file",
            &file_arg,
            "--",
            "sh",
            "-c",
            script,
            "sh",
            &ready.to_string_lossy(),
            &trapped.to_string_lossy(),
        ],
    );
    wait_until(&run, "the program starts", START_DEADLINE, || {
        ready.exists()
    })
    .await;
    // To tmpvault's pid only: the program is not in a group of its own, so
    // only forwarding can bring it the signal.
    let status = run.terminate().await;
    assert_eq!(status.code(), Some(42), "{}", run.log());
    assert_eq!(read(&trapped), "TERM\n", "the program's trap did not run");
    assert!(names_in(dir.path()).is_empty(), "the file was not removed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_program_killed_by_a_forwarded_signal_gives_128_plus_the_signal() {
    let work = tempfile::tempdir().expect("work dir");
    let server = TestServer::start().await;
    put(&server, "app/db", b"s3cr3t").await;
    let ready = work.path().join("ready");
    // --watch with --env only: supervised, with no file at all.
    let mut run = spawn_run(
        &server,
        work.path(),
        &[
            "--watch",
            "--env",
            "DB=app/db",
            "--",
            "sh",
            "-c",
            r#"echo > "$1"; exec sleep 60"#,
            "sh",
            &ready.to_string_lossy(),
        ],
    );
    wait_until(&run, "the program starts", START_DEADLINE, || {
        ready.exists()
    })
    .await;
    let status = run.signal(Signal::SIGINT).await;
    assert_eq!(status.code(), Some(128 + 2), "{}", run.log());
    server.stop().await;
}

/// PUTs `value` and returns how long after the PUT's answer `seen` first
/// held (polled every 10 ms); panics when that is over [`CHANGE_BOUND`].
async fn change_latency(
    mode: &str,
    server: &TestServer,
    run: &ServerProcess,
    key: &str,
    value: &'static [u8],
    mut seen: impl FnMut() -> bool,
) -> Duration {
    put(server, key, value).await;
    let answered = Instant::now();
    // Past the bound the test has failed; the longer deadline only tells a
    // slow change from a lost one in the message.
    let seen_at = wait_until(
        run,
        "the program sees the new value",
        Duration::from_secs(10),
        &mut seen,
    )
    .await;
    let latency = seen_at - answered;
    eprintln!(
        "{mode}: change seen by the program {} ms after the PUT's answer",
        latency.as_millis()
    );
    assert!(
        latency < CHANGE_BOUND,
        "seen after {latency:?}, over {CHANGE_BOUND:?}"
    );
    latency
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_with_signal_hup_rewrites_the_file_and_the_program_rereads_it_within_a_second() {
    let Some(dir) = private_tmpfs_dir() else {
        return;
    };
    let work = tempfile::tempdir().expect("work dir");
    let server = TestServer::start().await;
    put(&server, "app/token", b"v1").await;
    let token = dir.path().join("token");
    let file_arg = format!("{}=app/token", token.display());
    // Prints the file's content (one line) at start and on every SIGHUP.
    let script = r#"show() { printf '%s\n' "$(cat "$1")"; }; trap 'show "$1"' HUP; show "$1"; while :; do sleep 1 & wait $!; done"#;
    let mut run = spawn_run(
        &server,
        work.path(),
        &[
            "--watch",
            "--on-change",
            "signal:HUP",
            "--file",
            &file_arg,
            "--",
            "sh",
            "-c",
            script,
            "sh",
            &token.to_string_lossy(),
        ],
    );
    let stdout = work.path().join("stdout");
    wait_until(&run, "the program prints v1", START_DEADLINE, || {
        read(&stdout) == "v1\n"
    })
    .await;
    change_latency(
        "--on-change signal:HUP",
        &server,
        &run,
        "app/token",
        b"v2",
        || read(&stdout) == "v1\nv2\n",
    )
    .await;
    // The ETag followed is the new one: a second change is seen too.
    change_latency(
        "--on-change signal:HUP",
        &server,
        &run,
        "app/token",
        b"v3",
        || read(&stdout) == "v1\nv2\nv3\n",
    )
    .await;
    assert_eq!(fs::read(&token).expect("the file"), b"v3");
    assert_eq!(names_in(dir.path()), ["token"], "a temp file was left");
    // No TERM trap: the program dies of it, and tmpvault says so.
    let status = run.terminate().await;
    assert_eq!(status.code(), Some(128 + 15), "{}", run.log());
    assert!(names_in(dir.path()).is_empty(), "the file was not removed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_with_restart_starts_the_program_again_with_the_new_value_within_a_second() {
    let Some(dir) = private_tmpfs_dir() else {
        return;
    };
    let work = tempfile::tempdir().expect("work dir");
    let server = TestServer::start().await;
    put(&server, "app/token", b"v1").await;
    let token = dir.path().join("token");
    let file_arg = format!("{}=app/token", token.display());
    // One line per start: the environment's value and the file's.
    let script = r#"printf '%s %s\n' "$TOKEN" "$(cat "$1")"; exec sleep 60"#;
    let mut run = spawn_run(
        &server,
        work.path(),
        &[
            "--watch",
            "--on-change",
            "restart",
            "--env",
            "TOKEN=app/token",
            "--file",
            &file_arg,
            "--",
            "sh",
            "-c",
            script,
            "sh",
            &token.to_string_lossy(),
        ],
    );
    let stdout = work.path().join("stdout");
    wait_until(&run, "the program prints v1", START_DEADLINE, || {
        read(&stdout) == "v1 v1\n"
    })
    .await;
    change_latency(
        "--on-change restart",
        &server,
        &run,
        "app/token",
        b"v2",
        || read(&stdout) == "v1 v1\nv2 v2\n",
    )
    .await;
    assert!(
        run.log().contains("a secret changed; restarting sh"),
        "{}",
        run.log()
    );
    let status = run.terminate().await;
    assert_eq!(status.code(), Some(128 + 15), "{}", run.log());
    assert!(names_in(dir.path()).is_empty(), "the file was not removed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_keeps_the_program_running_while_the_server_is_unreachable() {
    let work = tempfile::tempdir().expect("work dir");
    let server = TestServer::start().await;
    put(&server, "app/token", b"s3cr3t").await;
    let ready = work.path().join("ready");
    let mut run = spawn_run(
        &server,
        work.path(),
        &[
            "--watch",
            "--env",
            "TOKEN=app/token",
            "--",
            "sh",
            "-c",
            r#"echo > "$1"; exec sleep 60"#,
            "sh",
            &ready.to_string_lossy(),
        ],
    );
    wait_until(&run, "the program starts", START_DEADLINE, || {
        ready.exists()
    })
    .await;
    // Shutdown answers the waiting GET (304); the next one finds no server.
    server.stop().await;
    wait_until(
        &run,
        "tmpvault says it retries",
        Duration::from_secs(20),
        || {
            run.log()
                .contains("keeping the value the program has, retrying in")
        },
    )
    .await;
    assert!(run.is_running(), "the program stopped: {}", run.log());
    assert!(!run.log().contains("s3cr3t"), "the value is on stderr");
    let status = run.terminate().await;
    assert_eq!(status.code(), Some(128 + 15), "{}", run.log());
}
