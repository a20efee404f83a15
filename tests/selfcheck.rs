//! The self-check against real filesystems and a real process: directories
//! on `/dev/shm` and on disk, real modes set with `chmod`, real key files,
//! tmpfs mounts made in a private mount namespace, and the binary's own
//! hardening read back from `/proc`. No mocks.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use tempfile::TempDir;
use tmpvault::config::{SecretArena, SnapshotSetting};
use tmpvault::posture::harden::HardeningReport;
use tmpvault::posture::selfcheck::{self, Check, Context, Environment, Input, Report, Status};
use tmpvault::store::arena::{Arena, ArenaReport, ArenaSize};
use tmpvault::sys;

const BIN: &str = env!("CARGO_BIN_EXE_tmpvault");
/// Set on every run of the binary here, so that its fixes are spelled for a
/// host even where the tests run inside a container.
const ENVIRONMENT_VARIABLE: &str = "TMPVAULT_SELFCHECK_ENVIRONMENT";
const MIB: u64 = 1 << 20;

/// The ids in the documented order, spelled out here rather than taken from
/// the library so that a change there shows up as a test failure.
const IDS: [&str; 19] = [
    "scratch.tmpfs",
    "scratch.mode",
    "scratch.owner",
    "scratch.mount",
    "process.user",
    "process.core_dumps",
    "process.memory_lock",
    "memory.secret_arena",
    "host.swap",
    "process.no_new_privs",
    "process.capabilities",
    "process.seccomp",
    "cgroup.memory_limit",
    "rootfs.read_only",
    "tls.key_file",
    "config.files",
    "snapshot.key",
    "policy.present",
    "config.reload",
];

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A fresh directory on the `/dev/shm` tmpfs with `mode`.
fn shm_dir(mode: u32) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tmpvault-test-")
        .tempdir_in("/dev/shm")
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// A fresh directory on disk (not tmpfs), with `mode`.
fn disk_dir(mode: u32) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tmpvault-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// The arena report of `--secret-arena heap`: these tests judge the other
/// checks (`memory.secret_arena` has tests of its own).
fn heap_arena() -> &'static ArenaReport {
    static REPORT: OnceLock<ArenaReport> = OnceLock::new();
    REPORT.get_or_init(|| {
        let size = ArenaSize::for_process(256 * MIB, 64 << 10);
        Arena::open(SecretArena::Heap, size).1
    })
}

fn input<'a>(scratch_dir: &'a Path, hardening: &'a HardeningReport) -> Input<'a> {
    Input {
        arena: heap_arena(),
        context: Context::Serve,
        environment: Environment::Host,
        scratch_dir,
        allow_root: true,
        tls_key_file: None,
        trusted_files: &[],
        snapshot: SnapshotSetting::Off,
        snapshot_key_file: None,
        max_memory: 256 * MIB,
        policy_present: false,
        hardening,
        reload_error: None,
    }
}

fn check<'r>(report: &'r Report, id: &str) -> &'r Check {
    report
        .checks
        .iter()
        .find(|check| check.id == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:?}"))
}

fn run_scratch(dir: &Path) -> Report {
    selfcheck::run(&input(dir, &HardeningReport::not_run()))
}

// ---------------------------------------------------------------------------
// scratch.*, in-process

#[test]
fn a_0700_dir_on_dev_shm_passes_the_scratch_checks() {
    let dir = shm_dir(0o700);
    let report = run_scratch(dir.path());
    for id in ["scratch.tmpfs", "scratch.mode", "scratch.owner"] {
        assert_eq!(check(&report, id).status, Status::Pass, "{id}: {report:?}");
    }
    assert!(check(&report, "scratch.mode").detail.contains("0700"));
}

#[test]
fn a_dir_on_disk_fails_scratch_tmpfs_naming_the_filesystem() {
    let dir = disk_dir(0o700);
    let magic = sys::fs_magic(dir.path()).unwrap();
    if magic == sys::TMPFS_MAGIC {
        eprintln!("skipping: /var/tmp is a tmpfs on this machine, no disk dir to test with");
        return;
    }
    let fs_type = sys::mount_containing(dir.path()).unwrap().fs_type;
    let report = run_scratch(dir.path());
    let tmpfs = check(&report, "scratch.tmpfs");
    assert_eq!(tmpfs.status, Status::Fail, "{tmpfs:?}");
    assert!(
        tmpfs
            .detail
            .contains(&format!("is on {fs_type} ({magic:#x}), not tmpfs")),
        "{tmpfs:?}"
    );
    assert!(
        tmpfs.detail.contains(&format!(
            "on this host, `sudo mkdir -p {dir} && sudo mount -t tmpfs -o size=16m,mode=0700,",
            dir = dir.path().display()
        )),
        "the fix is missing: {tmpfs:?}"
    );
    // Mode and owner are judged on their own.
    assert_eq!(check(&report, "scratch.mode").status, Status::Pass);
    assert_eq!(check(&report, "scratch.owner").status, Status::Pass);
    assert_eq!(report.status, Status::Fail);
    assert!(!report.passes(false));
}

#[test]
fn scratch_modes_on_real_dirs() {
    for (mode, expected) in [
        (0o700, Status::Pass),
        (0o750, Status::Pass),
        (0o1770, Status::Pass),
        (0o777, Status::Fail),
        (0o1777, Status::Fail),
        (0o755, Status::Fail),
        (0o770, Status::Fail),
        // Others may only read: still access.
        (0o704, Status::Fail),
    ] {
        let dir = shm_dir(mode);
        let report = run_scratch(dir.path());
        let found = check(&report, "scratch.mode");
        assert_eq!(found.status, expected, "mode {mode:04o}: {found:?}");
        assert!(
            found.detail.contains(&format!("mode {mode:04o}")),
            "{found:?}"
        );
    }
}

#[test]
fn a_missing_scratch_dir_fails_without_panicking() {
    let parent = shm_dir(0o700);
    let missing = parent.path().join("not-there");
    let report = run_scratch(&missing);
    for id in ["scratch.tmpfs", "scratch.mode", "scratch.owner"] {
        assert_eq!(check(&report, id).status, Status::Fail, "{id}: {report:?}");
    }
    assert_eq!(check(&report, "scratch.mount").status, Status::Warn);
    assert_eq!(report.status, Status::Fail);
}

#[test]
fn a_scratch_path_that_is_a_file_fails_scratch_mode() {
    let parent = shm_dir(0o700);
    let file = parent.path().join("file");
    fs::write(&file, b"").unwrap();
    let report = run_scratch(&file);
    let mode = check(&report, "scratch.mode");
    assert_eq!(mode.status, Status::Fail);
    assert!(mode.detail.contains("not a directory"), "{mode:?}");
}

#[test]
fn non_utf8_and_control_characters_in_the_scratch_path_are_handled() {
    let parent = shm_dir(0o700);
    let odd = parent.path().join(OsStr::from_bytes(b"odd\xff\nname"));
    fs::create_dir(&odd).unwrap();
    fs::set_permissions(&odd, fs::Permissions::from_mode(0o700)).unwrap();
    let report = run_scratch(&odd);
    for id in ["scratch.tmpfs", "scratch.mode", "scratch.owner"] {
        assert_eq!(check(&report, id).status, Status::Pass, "{id}: {report:?}");
    }
    for found in &report.checks {
        assert!(!found.detail.contains('\n'), "{found:?}");
    }
    assert_eq!(report.render_table().lines().count(), 2 + IDS.len());
}

// ---------------------------------------------------------------------------
// The whole report, in-process

#[test]
fn checks_come_in_the_documented_order() {
    let dir = shm_dir(0o700);
    let report = run_scratch(dir.path());
    let ids: Vec<&str> = report.checks.iter().map(|check| check.id).collect();
    assert_eq!(ids, IDS);
    let worst = report
        .checks
        .iter()
        .map(|check| check.status)
        .max()
        .unwrap();
    assert_eq!(report.status, worst);
    // The table has a header, a column header and one row per check.
    let table = report.render_table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + IDS.len());
    assert!(lines[0].starts_with("tmpvault self-check: "), "{table}");
    for (line, found) in lines[2..].iter().zip(&report.checks) {
        assert!(line.contains(found.id), "{line}");
        assert!(line.ends_with(&found.detail), "{line}");
    }
    // All rows are aligned: the detail column starts at the same place.
    let detail_column = lines[1].find("DETAIL").unwrap();
    for (line, found) in lines[2..].iter().zip(&report.checks) {
        assert_eq!(line.find(&found.detail), Some(detail_column), "{line}");
    }
    // And the JSON says the same.
    let json: Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["checks"].as_array().unwrap().len(), IDS.len());
    assert_eq!(json["checks"][0]["id"], "scratch.tmpfs");
}

#[test]
fn without_hardening_memory_is_reported_unlocked() {
    let dir = shm_dir(0o700);
    let report = run_scratch(dir.path());
    assert_eq!(check(&report, "process.memory_lock").status, Status::Warn);
}

#[test]
fn root_fails_in_serve_unless_allowed() {
    let dir = shm_dir(0o700);
    let hardening = HardeningReport::not_run();
    let mut serve = input(dir.path(), &hardening);
    serve.allow_root = false;
    let dev = Input {
        context: Context::Dev,
        ..serve.clone()
    };
    let allowed = Input {
        allow_root: true,
        ..serve.clone()
    };
    let (expected_serve, expected_relaxed) = if is_root() {
        (Status::Fail, Status::Warn)
    } else {
        (Status::Pass, Status::Pass)
    };
    let status = |input: &Input<'_>| check(&selfcheck::run(input), "process.user").status;
    assert_eq!(status(&serve), expected_serve);
    assert_eq!(status(&dev), expected_relaxed);
    assert_eq!(status(&allowed), expected_relaxed);
}

#[test]
fn cgroup_limit_is_compared_with_the_budget() {
    let dir = shm_dir(0o700);
    let hardening = HardeningReport::not_run();
    match sys::cgroup_memory_limit() {
        Some(limit) => {
            let fits = Input {
                max_memory: limit,
                ..input(dir.path(), &hardening)
            };
            let found = check(&selfcheck::run(&fits), "cgroup.memory_limit").clone();
            assert_eq!(found.status, Status::Pass, "{found:?}");
            let too_big = Input {
                max_memory: limit + 1,
                ..input(dir.path(), &hardening)
            };
            let found = check(&selfcheck::run(&too_big), "cgroup.memory_limit").clone();
            assert_eq!(found.status, Status::Fail, "{found:?}");
            assert!(found.detail.contains("OOM"), "{found:?}");
        }
        None => {
            let found = check(&run_scratch(dir.path()), "cgroup.memory_limit").clone();
            assert_eq!(found.status, Status::Warn, "{found:?}");
            assert!(found.detail.contains("memory limit"), "{found:?}");
        }
    }
}

#[test]
fn rootfs_check_matches_statvfs() {
    let dir = shm_dir(0o700);
    let expected = if sys::is_read_only(Path::new("/")).unwrap() {
        Status::Pass
    } else {
        Status::Warn
    };
    assert_eq!(
        check(&run_scratch(dir.path()), "rootfs.read_only").status,
        expected
    );
}

#[test]
fn policy_presence() {
    let dir = shm_dir(0o700);
    let hardening = HardeningReport::not_run();
    let with_policy = Input {
        policy_present: true,
        ..input(dir.path(), &hardening)
    };
    assert_eq!(
        check(&selfcheck::run(&with_policy), "policy.present").status,
        Status::Pass
    );
    let without = check(&run_scratch(dir.path()), "policy.present").clone();
    assert_eq!(without.status, Status::Warn);
    assert!(without.detail.contains("no --policy"), "{without:?}");
}

// ---------------------------------------------------------------------------
// tls.key_file and snapshot.key, with real files

fn write_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn tls_status(scratch: &Path, key: Option<&Path>) -> Check {
    let hardening = HardeningReport::not_run();
    let with_key = Input {
        tls_key_file: key,
        ..input(scratch, &hardening)
    };
    check(&selfcheck::run(&with_key), "tls.key_file").clone()
}

#[test]
fn tls_key_file_modes() {
    let dir = shm_dir(0o700);
    let none = tls_status(dir.path(), None);
    assert_eq!(
        (none.status, none.detail.as_str()),
        (Status::Pass, "no key file configured")
    );

    let private = write_file(
        dir.path(),
        "private.pem",
        b"stand-in key bytes: the check reads only the mode\n",
        0o400,
    );
    assert_eq!(tls_status(dir.path(), Some(&private)).status, Status::Pass);
    let group = write_file(dir.path(), "group.pem", b"k", 0o640);
    assert_eq!(tls_status(dir.path(), Some(&group)).status, Status::Pass);

    let open = write_file(
        dir.path(),
        "open.pem",
        b"stand-in key bytes: the check reads only the mode\n",
        0o644,
    );
    let found = tls_status(dir.path(), Some(&open));
    assert_eq!(found.status, Status::Warn, "{found:?}");
    assert!(
        found.detail.contains("0644") && found.detail.contains("`chmod o-rwx "),
        "{found:?}"
    );
    assert!(
        !found.detail.contains("BEGIN"),
        "key content leaked: {found:?}"
    );
    let writable = write_file(dir.path(), "writable.pem", b"k", 0o602);
    assert_eq!(tls_status(dir.path(), Some(&writable)).status, Status::Warn);

    let missing = dir.path().join("missing.pem");
    assert_eq!(tls_status(dir.path(), Some(&missing)).status, Status::Fail);
    assert_eq!(
        tls_status(dir.path(), Some(dir.path())).status,
        Status::Fail
    );
}

fn snapshot_status(scratch: &Path, mode: SnapshotSetting, key: Option<&Path>) -> Check {
    let hardening = HardeningReport::not_run();
    let with_snapshot = Input {
        snapshot: mode,
        snapshot_key_file: key,
        ..input(scratch, &hardening)
    };
    check(&selfcheck::run(&with_snapshot), "snapshot.key").clone()
}

#[test]
fn snapshot_modes_off_and_plain() {
    let shm = shm_dir(0o700);
    let off = snapshot_status(shm.path(), SnapshotSetting::Off, None);
    assert_eq!(
        (off.status, off.detail.as_str()),
        (Status::Pass, "snapshots off")
    );
    assert_eq!(
        snapshot_status(shm.path(), SnapshotSetting::Plain, None).status,
        Status::Pass
    );

    let disk = disk_dir(0o700);
    if sys::fs_magic(disk.path()).unwrap() == sys::TMPFS_MAGIC {
        eprintln!("skipping the on-disk half: /var/tmp is a tmpfs here");
        return;
    }
    let plain = snapshot_status(disk.path(), SnapshotSetting::Plain, None);
    assert_eq!(plain.status, Status::Fail);
    assert!(
        plain
            .detail
            .contains("plaintext snapshots are refused outside tmpfs"),
        "{plain:?}"
    );
}

#[test]
fn encrypted_snapshot_keys() {
    let dir = shm_dir(0o700);
    let scratch = dir.path();
    let encrypted = |key: Option<&Path>| snapshot_status(scratch, SnapshotSetting::Encrypted, key);

    let no_file = encrypted(None);
    assert_eq!(no_file.status, Status::Fail);
    assert!(
        no_file.detail.contains("--snapshot-key-file"),
        "{no_file:?}"
    );

    let raw_key: Vec<u8> = (0xA0..0xC0).collect();
    let raw = write_file(scratch, "raw.key", &raw_key, 0o600);
    let found = encrypted(Some(&raw));
    assert_eq!(found.status, Status::Pass, "{found:?}");
    assert!(found.detail.contains("raw"), "{found:?}");

    let text = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let base64 = write_file(scratch, "b64.key", format!("{text}\n").as_bytes(), 0o400);
    let found = encrypted(Some(&base64));
    assert_eq!(found.status, Status::Pass, "{found:?}");
    assert!(found.detail.contains("base64"), "{found:?}");

    let short = write_file(scratch, "short.key", &[7u8; 31], 0o600);
    let found = encrypted(Some(&short));
    assert_eq!(found.status, Status::Fail);
    assert!(found.detail.contains("31 bytes"), "{found:?}");

    let shared = write_file(scratch, "shared.key", format!("{text}\n").as_bytes(), 0o640);
    let found = encrypted(Some(&shared));
    assert_eq!(found.status, Status::Fail);
    assert!(
        found.detail.contains("0640") && found.detail.contains("group/others"),
        "{found:?}"
    );
    // The key itself never appears in a detail, raw or encoded.
    assert!(!found.detail.contains(text), "key leaked: {found:?}");

    let huge = write_file(scratch, "huge.key", &vec![b'A'; 100_000], 0o600);
    let found = encrypted(Some(&huge));
    assert_eq!(found.status, Status::Fail);
    assert!(found.detail.contains("more than"), "{found:?}");

    let missing = scratch.join("missing.key");
    assert_eq!(encrypted(Some(&missing)).status, Status::Fail);
    assert_eq!(encrypted(Some(scratch)).status, Status::Fail);
}

// ---------------------------------------------------------------------------
// The binary: its hardening, its exit code, and real tmpfs mounts

struct Outcome {
    code: Option<i32>,
    report: Value,
}

impl Outcome {
    fn status_of(&self, id: &str) -> &str {
        self.report["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|check| check["id"] == id))
            .and_then(|check| check["status"].as_str())
            .unwrap_or_else(|| panic!("no check {id} in {}", self.report))
    }

    fn detail_of(&self, id: &str) -> &str {
        self.report["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|check| check["id"] == id))
            .and_then(|check| check["detail"].as_str())
            .unwrap_or_else(|| panic!("no check {id} in {}", self.report))
    }

    fn overall(&self) -> &str {
        self.report["status"].as_str().unwrap()
    }

    /// The exit code the contract asks for, given the report.
    fn assert_exit_code(&self, strict: bool) {
        let passes = match self.overall() {
            "pass" => true,
            "warn" => !strict,
            _ => false,
        };
        assert_eq!(
            self.code,
            Some(if passes { 0 } else { 1 }),
            "{}",
            self.report
        );
    }
}

fn parse_output(output: &std::process::Output) -> Outcome {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Outcome {
        code: output.status.code(),
        report,
    }
}

fn selfcheck_binary(scratch: &Path, extra: &[&str]) -> Outcome {
    let output = Command::new(BIN)
        .arg("selfcheck")
        .arg("--scratch-dir")
        .arg(scratch)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    parse_output(&output)
}

#[test]
fn the_binary_hardens_itself() {
    let dir = shm_dir(0o700);
    let outcome = selfcheck_binary(dir.path(), &["--allow-root"]);
    assert_eq!(
        outcome.status_of("process.core_dumps"),
        "pass",
        "{}",
        outcome.report
    );
    assert!(outcome
        .detail_of("process.core_dumps")
        .contains("dumpable 0, RLIMIT_CORE 1"));
    assert_eq!(
        outcome.status_of("process.no_new_privs"),
        "pass",
        "{}",
        outcome.report
    );
    // The child inherits this process's memlock limit and capabilities, so
    // whether it may lock is known here.
    let may_lock = sys::memlock_limit().unwrap().hard.is_none()
        || sys::proc_status().unwrap().has_cap_ipc_lock();
    let expected = if may_lock { "pass" } else { "warn" };
    assert_eq!(
        outcome.status_of("process.memory_lock"),
        expected,
        "{}",
        outcome.report
    );
    let user = if is_root() { "warn" } else { "pass" };
    assert_eq!(outcome.status_of("process.user"), user);
    outcome.assert_exit_code(false);
}

#[test]
fn the_binary_fails_as_root_without_allow_root() {
    if !is_root() {
        eprintln!("skipping: not running as root, so process.user cannot fail");
        return;
    }
    let dir = shm_dir(0o700);
    let outcome = selfcheck_binary(dir.path(), &[]);
    assert_eq!(outcome.status_of("process.user"), "fail");
    assert_eq!(outcome.overall(), "fail");
    assert_eq!(outcome.code, Some(1));
}

#[test]
fn strict_turns_warnings_into_exit_1() {
    let dir = shm_dir(0o700);
    let relaxed = selfcheck_binary(dir.path(), &["--allow-root"]);
    let strict = selfcheck_binary(dir.path(), &["--allow-root", "--strict"]);
    // policy.present always warns here (the binary passes no policy).
    assert_eq!(strict.status_of("policy.present"), "warn");
    assert_ne!(strict.overall(), "pass");
    assert_eq!(strict.code, Some(1));
    relaxed.assert_exit_code(false);
    strict.assert_exit_code(true);
}

#[test]
fn the_binary_prints_a_table_without_json() {
    let dir = shm_dir(0o700);
    let output = Command::new(BIN)
        .args(["selfcheck", "--allow-root", "--scratch-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2 + IDS.len(), "{stdout}");
    assert!(lines[0].starts_with("tmpvault self-check: "), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "no ANSI colours: {stdout}");
    for (line, id) in lines[2..].iter().zip(IDS) {
        assert!(line.contains(id), "{line}");
    }
    assert!(lines[2].starts_with("PASS    scratch.tmpfs"), "{stdout}");
}

/// How to get a private mount namespace here: plain `unshare -m` as root,
/// else a user namespace too; `None` (with the reason printed) when neither
/// works, or a tmpfs cannot be mounted inside.
fn mount_namespace_flags(probe_dir: &Path) -> Option<&'static str> {
    let mut reasons = Vec::new();
    for flags in ["-m", "-Urm"] {
        let probe = Command::new("unshare")
            .args([flags, "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size=16k tmpfs "$1""#)
            .arg("sh")
            .arg(probe_dir)
            .output();
        match probe {
            Ok(output) if output.status.success() => return Some(flags),
            Ok(output) => reasons.push(format!(
                "unshare {flags}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(error) => reasons.push(format!("unshare {flags}: {error}")),
        }
    }
    eprintln!("skipping: cannot mount a tmpfs in a private mount namespace: {reasons:?}");
    None
}

/// Mount a fresh tmpfs with `options` on a directory on disk, in a private
/// mount namespace, and run `selfcheck --json` on it there. `None` when the
/// machine cannot do this.
fn selfcheck_on_fresh_tmpfs(options: &str) -> Option<Outcome> {
    let dir = disk_dir(0o700);
    let flags = mount_namespace_flags(dir.path())?;
    let output = Command::new("unshare")
        .args([flags, "--propagation", "private", "sh", "-c"])
        .env(ENVIRONMENT_VARIABLE, "host")
        .arg(
            r#"mount -t tmpfs -o "$1" tmpfs "$2" || exit 97
exec "$3" selfcheck --scratch-dir "$2" --json --allow-root"#,
        )
        .args(["sh", options])
        .arg(dir.path())
        .arg(BIN)
        .output()
        .unwrap();
    assert_ne!(
        output.status.code(),
        Some(97),
        "mount -o {options} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(parse_output(&output))
}

#[test]
fn a_tmpfs_with_size_and_nosuid_nodev_noexec_passes_scratch_mount() {
    let Some(outcome) = selfcheck_on_fresh_tmpfs("size=16k,mode=1770,nosuid,nodev,noexec") else {
        return;
    };
    assert_eq!(
        outcome.status_of("scratch.tmpfs"),
        "pass",
        "{}",
        outcome.report
    );
    assert_eq!(
        outcome.status_of("scratch.mount"),
        "pass",
        "{}",
        outcome.report
    );
    assert!(outcome.detail_of("scratch.mount").contains("size=16k"));
    assert_eq!(
        outcome.status_of("scratch.mode"),
        "pass",
        "{}",
        outcome.report
    );
    assert!(outcome.detail_of("scratch.mode").contains("1770"));
    assert_eq!(
        outcome.status_of("scratch.owner"),
        "pass",
        "{}",
        outcome.report
    );
    outcome.assert_exit_code(false);
}

#[test]
fn a_tmpfs_without_the_options_warns_on_scratch_mount() {
    let Some(outcome) = selfcheck_on_fresh_tmpfs("mode=0700") else {
        return;
    };
    assert_eq!(
        outcome.status_of("scratch.tmpfs"),
        "pass",
        "{}",
        outcome.report
    );
    assert_eq!(
        outcome.status_of("scratch.mount"),
        "warn",
        "{}",
        outcome.report
    );
    let detail = outcome.detail_of("scratch.mount");
    assert!(
        detail.contains("lacks a size= limit, nosuid, nodev, noexec"),
        "{detail}"
    );
    outcome.assert_exit_code(false);
}

#[test]
fn a_tmpfs_missing_only_noexec_names_just_that() {
    let Some(outcome) = selfcheck_on_fresh_tmpfs("size=1m,mode=0700,nosuid,nodev") else {
        return;
    };
    assert_eq!(
        outcome.status_of("scratch.mount"),
        "warn",
        "{}",
        outcome.report
    );
    let detail = outcome.detail_of("scratch.mount");
    assert!(detail.contains("lacks noexec: "), "{detail}");
    assert!(
        detail.contains("`sudo mount -o remount,noexec "),
        "{detail}"
    );
}

// ---------------------------------------------------------------------------
// Following the printed fix: each failure users meet most on a host, made
// real on a tmpfs in a private mount namespace, its fix taken from the
// detail as printed (the commands in backquotes) and run, and the check run
// again. The Docker fixes are followed on a real engine in
// scripts/container-test.

/// The commands a detail gives, in backquotes.
fn commands_in(detail: &str) -> Vec<String> {
    detail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Runs `script` with sh as root in a private mount namespace, where `$DIR`
/// is `dir`, `$BIN` the binary and `sudo` runs its arguments (the test is
/// root already, and sudo may not be installed), and reads the JSON report
/// the script's last command prints. `None`, with the reason printed, when
/// not root: the fixes chown to other users.
fn in_namespace(dir: &Path, script: &str) -> Option<Outcome> {
    if !is_root() {
        eprintln!("skipping: following the fixes needs root (mounts, chown to other users)");
        return None;
    }
    mount_namespace_flags(dir)?;
    let output = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!("set -e\nsudo() {{ \"$@\"; }}\n{script}"))
        .env("DIR", dir)
        .env("BIN", BIN)
        .env(ENVIRONMENT_VARIABLE, "host")
        .output()
        .unwrap();
    Some(parse_output(&output))
}

const SCRATCH_IDS: [&str; 4] = [
    "scratch.tmpfs",
    "scratch.mode",
    "scratch.owner",
    "scratch.mount",
];

/// Sets up `setup`, checks that `id` is `status` with a fix, runs the fix's
/// commands after the same setup, and checks that `id` and every scratch
/// check then pass, with `selfcheck EXTRA` both times.
fn follow_fix(dir: &Path, setup: &str, id: &str, status: &str, extra: &str) {
    let selfcheck = format!("\"$BIN\" selfcheck --scratch-dir \"$DIR\" --json {extra} || true");
    let Some(before) = in_namespace(dir, &format!("{setup}\n{selfcheck}")) else {
        return;
    };
    assert_eq!(before.status_of(id), status, "{}", before.report);
    let detail = before.detail_of(id).to_owned();
    let commands = commands_in(&detail);
    assert!(!commands.is_empty(), "no command in the fix: {detail}");
    // `tmpvault ...` in a fix stands for the command being run: this one.
    let fix = commands
        .iter()
        .map(|command| command.replace("tmpvault ...", &selfcheck))
        .collect::<Vec<_>>()
        .join("\n");
    let last_runs_selfcheck = fix.ends_with(&selfcheck);
    let script = if last_runs_selfcheck {
        format!("{setup}\n{fix}")
    } else {
        format!("{setup}\n{fix}\n{selfcheck}")
    };
    let after = in_namespace(dir, &script).expect("a namespace, as before");
    for check in std::iter::once(id).chain(SCRATCH_IDS) {
        assert_eq!(
            after.status_of(check),
            "pass",
            "{check} after following {id}'s fix {commands:?}: {}",
            after.report
        );
    }
}

#[test]
fn following_the_fix_for_a_disk_dir_gives_a_private_tmpfs() {
    let dir = disk_dir(0o700);
    follow_fix(dir.path(), "", "scratch.tmpfs", "fail", "--allow-root");
}

#[test]
fn following_the_fix_for_a_missing_scratch_dir_makes_it() {
    let parent = disk_dir(0o755);
    let dir = parent.path().join("scratch");
    follow_fix(&dir, "", "scratch.tmpfs", "fail", "--allow-root");
    let Some(outcome) = in_namespace(
        &dir,
        "\"$BIN\" selfcheck --scratch-dir \"$DIR\" --json || true",
    ) else {
        return;
    };
    // Mode and owner say the same fix, not just "cannot stat".
    for id in ["scratch.mode", "scratch.owner"] {
        assert!(
            outcome.detail_of(id).contains("sudo mount -t tmpfs"),
            "{}",
            outcome.report
        );
    }
}

#[test]
fn following_the_fix_for_a_world_writable_tmpfs_makes_it_private() {
    let dir = disk_dir(0o700);
    let setup = "mount -t tmpfs -o size=1m,mode=0777,nosuid,nodev,noexec tmpfs \"$DIR\"";
    follow_fix(dir.path(), setup, "scratch.mode", "fail", "--allow-root");
}

#[test]
fn following_the_fix_for_a_tmpfs_of_another_user_gives_it_to_the_process() {
    let dir = disk_dir(0o700);
    let setup =
        "mount -t tmpfs -o size=1m,mode=0700,uid=1234,gid=1234,nosuid,nodev,noexec tmpfs \"$DIR\"";
    follow_fix(dir.path(), setup, "scratch.owner", "fail", "--allow-root");
}

#[test]
fn following_the_fix_for_a_tmpfs_without_options_adds_them() {
    let dir = disk_dir(0o700);
    let setup = "mount -t tmpfs -o mode=0700 tmpfs \"$DIR\"";
    follow_fix(dir.path(), setup, "scratch.mount", "warn", "--allow-root");
}

#[test]
fn following_the_fix_for_root_runs_as_another_user_that_owns_the_scratch_dir() {
    let dir = disk_dir(0o700);
    // The mount point's parent must be passable for the new user.
    fs::set_permissions(
        dir.path().parent().unwrap(),
        fs::Permissions::from_mode(0o1777),
    )
    .ok();
    let setup = "mount -t tmpfs -o size=1m,mode=0700,nosuid,nodev,noexec tmpfs \"$DIR\"";
    follow_fix(dir.path(), setup, "process.user", "fail", "");
}
