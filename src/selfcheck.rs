//! The startup self-check: is the scratch dir a private tmpfs, is the
//! process locked down, are the key files safe?
//!
//! [`run`] takes readings (from [`crate::sysinfo`]) and the
//! [`HardeningReport`] of what the process did to itself, and returns a
//! [`Report`]: one [`Check`] per concern, in a fixed order with stable ids,
//! each with a one-line detail that says what was found and, when it is not
//! a pass, what to do about it. `serve` refuses to start on a failure (and on
//! a warning with `--strict`); `selfcheck` prints the report; the API serves
//! it as JSON. A detail never holds secret material: key files are described
//! by their path, mode and length only. Nothing here panics: a reading that
//! cannot be taken becomes a warning or failure that quotes the error.

use std::fmt::Write as _;
use std::fs::{self, File, Metadata};
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::harden::{HardeningReport, MemoryLock, StepOutcome};
use crate::sysinfo::{self, SeccompMode, TMPFS_MAGIC};

mod hints;
pub use hints::Environment;

/// The ids of the checks, in the order [`run`] reports them.
pub const CHECK_IDS: [&str; 18] = [
    "scratch.tmpfs",
    "scratch.mode",
    "scratch.owner",
    "scratch.mount",
    "process.user",
    "process.core_dumps",
    "process.memory_lock",
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

/// How a check came out. Ordered so that the worst status is the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Pass,
    /// Works, but weaker than it should be; fatal only with `--strict`.
    Warn,
    /// Unsafe; `serve` refuses to start.
    Fail,
}

impl Status {
    /// The lowercase name used in JSON (`pass`, `warn`, `fail`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One check of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Stable id, e.g. `scratch.tmpfs`.
    pub id: &'static str,
    /// Its outcome.
    pub status: Status,
    /// One line: what was found, and the fix when it is not a pass.
    pub detail: String,
}

impl Check {
    fn new(id: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            id,
            status,
            detail: one_line(&detail.into()),
        }
    }

    fn pass(id: &'static str, detail: impl Into<String>) -> Self {
        Self::new(id, Status::Pass, detail)
    }

    fn warn(id: &'static str, detail: impl Into<String>) -> Self {
        Self::new(id, Status::Warn, detail)
    }

    fn fail(id: &'static str, detail: impl Into<String>) -> Self {
        Self::new(id, Status::Fail, detail)
    }
}

/// The whole self-check: the worst status and every check in order.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The worst status of all checks.
    pub status: Status,
    /// Every check, in the order of [`CHECK_IDS`].
    pub checks: Vec<Check>,
}

/// Which command runs the self-check; it decides how running as root counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// `tmpvault serve`: production.
    Serve,
    /// `tmpvault dev`: a developer's machine; root is only a warning.
    Dev,
    /// `tmpvault selfcheck`: judged as `serve` would be.
    Selfcheck,
}

/// The `--snapshot` setting, as the configuration spells it.
pub use crate::config::SnapshotSetting as SnapshotMode;

/// What the self-check needs to know about the configuration.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// Which command is running.
    pub context: Context,
    /// Where the process runs ([`Environment::detect`]); it decides how the
    /// fixes in the details are spelled.
    pub environment: Environment,
    /// `--scratch-dir`.
    pub scratch_dir: &'a Path,
    /// `--allow-root`.
    pub allow_root: bool,
    /// `--tls-key`, if any (`dev` generates its own).
    pub tls_key_file: Option<&'a Path>,
    /// The server certificate, client CA bundle and policy: files that
    /// decide who the server trusts ([`crate::trusted`]).
    pub trusted_files: &'a [crate::trusted::TrustedFile],
    /// `--snapshot`.
    pub snapshot: SnapshotMode,
    /// `--snapshot-key-file`, if any.
    pub snapshot_key_file: Option<&'a Path>,
    /// The store's memory budget in bytes (`--max-memory`).
    pub max_memory: u64,
    /// Whether `--policy` was given.
    pub policy_present: bool,
    /// What [`crate::harden::harden_process`] did.
    pub hardening: &'a HardeningReport,
    /// Why the last live reload failed, if it did (`None` also before any).
    pub reload_error: Option<&'a str>,
}

/// Largest snapshot key file read; a real one is 32 to 46 bytes.
const KEY_FILE_READ_LIMIT: u64 = 1024;
/// The length of an AES-256 key.
const SNAPSHOT_KEY_LEN: usize = 32;

/// Run every check now and build the report.
pub fn run(input: &Input<'_>) -> Report {
    let scratch = input.scratch_dir;
    // Read once, used by several checks; an error is quoted by each.
    let scratch_magic = sysinfo::fs_magic(scratch);
    let scratch_metadata = fs::metadata(scratch);
    let status = sysinfo::proc_status();
    let memory_locked = input.hardening.memory_locked();
    let place = input.environment;

    let checks = vec![
        scratch_tmpfs(place, scratch, &scratch_magic),
        scratch_mode(place, scratch, &scratch_metadata),
        scratch_owner(place, scratch, &scratch_metadata),
        scratch_mount(place, scratch),
        process_user(
            place,
            scratch,
            nix::unistd::geteuid().as_raw(),
            input.context,
            input.allow_root,
        ),
        process_core_dumps(input.hardening),
        process_memory_lock(place, &input.hardening.memory_lock),
        host_swap(place, sysinfo::swap_total(), memory_locked),
        process_no_new_privs(place, &status, &input.hardening.no_new_privs),
        process_capabilities(place, &status),
        process_seccomp(place, &status),
        cgroup_memory_limit(place, sysinfo::read_cgroup_memory(), input.max_memory),
        rootfs_read_only(place, sysinfo::is_read_only(Path::new("/"))),
        tls_key_file(place, input.tls_key_file),
        config_files(input.trusted_files),
        snapshot_key(input, &scratch_magic),
        policy_present(input.policy_present),
        config_reload(input.reload_error),
    ];
    Report::new(checks)
}

impl Report {
    /// A report over `checks`; its status is the worst of theirs.
    pub fn new(checks: Vec<Check>) -> Self {
        let status = checks
            .iter()
            .map(|check| check.status)
            .max()
            .unwrap_or(Status::Pass);
        Self { status, checks }
    }

    /// Whether the process may go on: no failure, and with `strict` no
    /// warning either.
    pub fn passes(&self, strict: bool) -> bool {
        match self.status {
            Status::Pass => true,
            Status::Warn => !strict,
            Status::Fail => false,
        }
    }

    /// The report as JSON:
    /// `{"status": "...", "checks": [{"id": "...", "status": "...", "detail": "..."}]}`.
    pub fn to_json(&self) -> String {
        match serde_json::to_string(self) {
            Ok(json) => json,
            // Only strings and enums are serialized, which cannot fail; keep
            // the contract's shape anyway rather than panic.
            Err(error) => format!(
                r#"{{"status":"fail","checks":[{{"id":"selfcheck","status":"fail","detail":{}}}]}}"#,
                serde_json::Value::String(error.to_string())
            ),
        }
    }

    /// The report as an aligned plain-text table: a header line with the
    /// overall status and counts, then one row per check.
    pub fn render_table(&self) -> String {
        let count = |status: Status| {
            self.checks
                .iter()
                .filter(|check| check.status == status)
                .count()
        };
        let id_width = self
            .checks
            .iter()
            .map(|check| check.id.len())
            .chain(["CHECK".len()])
            .max()
            .unwrap_or(0);
        let mut table = format!(
            "tmpvault self-check: {} ({} pass, {} warn, {} fail)\n",
            self.status.as_str().to_uppercase(),
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail),
        );
        // Writing to a String cannot fail.
        let _ = writeln!(table, "{:<6}  {:<id_width$}  DETAIL", "STATUS", "CHECK");
        for check in &self.checks {
            let _ = writeln!(
                table,
                "{:<6}  {:<id_width$}  {}",
                check.status.as_str().to_uppercase(),
                check.id,
                check.detail
            );
        }
        table
    }
}

/// Keep a detail on one line: control characters (a newline in a path, an
/// escape sequence) are shown escaped instead of breaking the table or a log
/// line.
fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for character in text.chars() {
        if character.is_control() {
            line.extend(character.escape_default());
        } else {
            line.push(character);
        }
    }
    line
}

/// A byte count the way people write them: `256 MiB`, `1.5 GiB`, `512 bytes`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut unit = 0;
    let mut divisor: u64 = 1024;
    while unit + 1 < UNITS.len() && bytes / divisor >= 1024 {
        unit += 1;
        divisor *= 1024;
    }
    if bytes % divisor == 0 {
        format!("{} {}", bytes / divisor, UNITS[unit])
    } else {
        #[allow(clippy::cast_precision_loss)]
        let value = bytes as f64 / divisor as f64;
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn mode_of(metadata: &Metadata) -> u32 {
    metadata.permissions().mode() & 0o7777
}

// ---------------------------------------------------------------------------
// scratch.*

/// The scratch dir's checks (tmpfs, private mode, owner) for any
/// directory: `tmpvault run --file` writes secrets only where the scratch
/// dir itself could be.
pub fn private_dir_checks(dir: &Path) -> Vec<Check> {
    let place = Environment::detect();
    let magic = sysinfo::fs_magic(dir);
    let metadata = fs::metadata(dir);
    vec![
        scratch_tmpfs(place, dir, &magic),
        scratch_mode(place, dir, &metadata),
        scratch_owner(place, dir, &metadata),
    ]
}

fn scratch_tmpfs(
    place: Environment,
    dir: &Path,
    magic: &Result<u64, sysinfo::SysinfoError>,
) -> Check {
    const ID: &str = "scratch.tmpfs";
    let shown = dir.display();
    let fix = hints::scratch_tmpfs(place, dir);
    match magic {
        Err(error) => Check::fail(
            ID,
            format!("cannot tell which filesystem scratch dir {shown} is on ({error}): {fix}"),
        ),
        Ok(magic) if *magic == TMPFS_MAGIC => {
            Check::pass(ID, format!("scratch dir {shown} is on tmpfs"))
        }
        Ok(magic) => {
            // The mount table names ext2/3/4 and friends exactly, where the
            // magic cannot; the magic is what decides.
            let name = sysinfo::mount_containing(dir)
                .ok()
                .map(|mount| mount.fs_type)
                .or_else(|| sysinfo::fs_magic_name(*magic).map(str::to_owned))
                .unwrap_or_else(|| "an unknown filesystem".to_owned());
            Check::fail(
                ID,
                format!("scratch dir {shown} is on {name} ({magic:#x}), not tmpfs: {fix}"),
            )
        }
    }
}

/// Whether a scratch dir mode is private enough: nothing for others, and
/// group write only with the sticky bit (so group members cannot remove or
/// replace each other's files).
fn scratch_mode_problem(mode: u32) -> Option<&'static str> {
    if mode & 0o007 != 0 {
        Some("others have access")
    } else if mode & 0o020 != 0 && mode & 0o1000 == 0 {
        Some("the group may write without the sticky bit")
    } else {
        None
    }
}

/// The detail of a scratch dir that cannot be looked at (most often: it
/// does not exist), with the fix that makes it: the scratch.tmpfs one.
fn unreadable_scratch(place: Environment, dir: &Path, error: &std::io::Error) -> String {
    format!(
        "cannot stat scratch dir {}: {error}: {}",
        dir.display(),
        hints::scratch_tmpfs(place, dir)
    )
}

fn scratch_mode(place: Environment, dir: &Path, metadata: &std::io::Result<Metadata>) -> Check {
    const ID: &str = "scratch.mode";
    let shown = dir.display();
    match metadata {
        Err(error) => Check::fail(ID, unreadable_scratch(place, dir, error)),
        Ok(metadata) if !metadata.is_dir() => {
            Check::fail(ID, format!("scratch dir {shown} is not a directory"))
        }
        Ok(metadata) => {
            let mode = mode_of(metadata);
            match scratch_mode_problem(mode) {
                None => Check::pass(ID, format!("scratch dir {shown} has mode {mode:04o}")),
                Some(problem) => Check::fail(
                    ID,
                    format!(
                        "scratch dir {shown} has mode {mode:04o}: {problem}; {}",
                        hints::scratch_mode(place, dir)
                    ),
                ),
            }
        }
    }
}

fn scratch_owner(place: Environment, dir: &Path, metadata: &std::io::Result<Metadata>) -> Check {
    const ID: &str = "scratch.owner";
    let shown = dir.display();
    let metadata = match metadata {
        Ok(metadata) => metadata,
        Err(error) => return Check::fail(ID, unreadable_scratch(place, dir, error)),
    };
    let (uid, gid) = (metadata.uid(), metadata.gid());
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    if uid == euid {
        Check::pass(
            ID,
            format!("scratch dir {shown} is owned by uid {uid}, the process's user"),
        )
    } else if gid == egid {
        Check::pass(
            ID,
            format!("scratch dir {shown} belongs to gid {gid}, the process's group"),
        )
    } else {
        Check::fail(
            ID,
            format!(
                "scratch dir {shown} is owned by {uid}:{gid}, the process runs as {euid}:{egid}: \
                 {}",
                hints::scratch_owner(place, dir)
            ),
        )
    }
}

fn scratch_mount(place: Environment, dir: &Path) -> Check {
    const ID: &str = "scratch.mount";
    let mount = match sysinfo::mount_containing(dir) {
        Ok(mount) => mount,
        Err(error) => {
            return Check::warn(
                ID,
                format!("cannot find the mount of the scratch dir: {error}"),
            )
        }
    };
    // tmpfs treats size=0 as "no limit".
    let size = mount.super_option("size").filter(|size| {
        size.trim_start_matches('0')
            .chars()
            .any(|c| c.is_ascii_digit())
    });
    // What is missing, as said in the detail and as the mount option to add.
    let mut missing: Vec<(&str, &str)> = Vec::new();
    if size.is_none() {
        missing.push(("a size= limit", "size=16m"));
    }
    for flag in ["nosuid", "nodev", "noexec"] {
        if !mount.has_mount_option(flag) {
            missing.push((flag, flag));
        }
    }
    let where_ = format!("{} mount on {}", mount.fs_type, mount.mount_point.display());
    match size {
        Some(size) if missing.is_empty() => Check::pass(
            ID,
            format!("{where_} has size={size}, nosuid, nodev, noexec"),
        ),
        _ => {
            let (said, options): (Vec<&str>, Vec<&str>) = missing.into_iter().unzip();
            Check::warn(
                ID,
                format!(
                    "{where_} lacks {}: {}",
                    said.join(", "),
                    hints::scratch_mount(place, dir, &mount.mount_point, &options)
                ),
            )
        }
    }
}

// ---------------------------------------------------------------------------
// process.*, host.*, cgroup.*, rootfs.*

fn process_user(
    place: Environment,
    scratch: &Path,
    euid: u32,
    context: Context,
    allow_root: bool,
) -> Check {
    const ID: &str = "process.user";
    let fix = hints::process_user(place, scratch);
    if euid != 0 {
        return Check::pass(ID, format!("running as uid {euid}"));
    }
    match (context, allow_root) {
        (Context::Dev, _) => Check::warn(
            ID,
            format!("running as root: acceptable for tmpvault dev, never in production; {fix}"),
        ),
        (Context::Serve | Context::Selfcheck, true) => Check::warn(
            ID,
            format!("running as root, allowed by --allow-root: {fix}"),
        ),
        (Context::Serve | Context::Selfcheck, false) => {
            Check::fail(ID, format!("running as root: {fix}; or pass --allow-root"))
        }
    }
}

/// The failures among hardening steps, for a detail; empty when none.
fn step_failures(steps: &[(&str, &StepOutcome)]) -> String {
    steps
        .iter()
        .filter_map(|(name, outcome)| match outcome {
            StepOutcome::Applied => None,
            StepOutcome::Failed(reason) => Some(reason.clone()),
            StepOutcome::NotRun => Some(format!("{name} was not run")),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn process_core_dumps(hardening: &HardeningReport) -> Check {
    const ID: &str = "process.core_dumps";
    let dumpable = sysinfo::dumpable();
    let core_limit = sysinfo::core_limit();
    let pattern = match sysinfo::core_pattern() {
        Ok(pattern) if sysinfo::core_pattern_is_pipe(&pattern) => {
            "core_pattern pipes to a helper, which the limit of 1 also stops"
        }
        Ok(_) => "core_pattern writes files",
        Err(_) => "core_pattern unreadable",
    };
    let dumpable_text = match &dumpable {
        Ok(true) => "dumpable 1".to_owned(),
        Ok(false) => "dumpable 0".to_owned(),
        Err(error) => error.to_string(),
    };
    let limit_text = match &core_limit {
        Ok(limit) => match limit.soft {
            Some(bytes) => format!("RLIMIT_CORE {bytes}"),
            None => "RLIMIT_CORE unlimited".to_owned(),
        },
        Err(error) => error.to_string(),
    };
    let off = matches!(dumpable, Ok(false))
        && matches!(&core_limit, Ok(limit) if limit.soft.is_some_and(|bytes| bytes <= 1));
    if off {
        Check::pass(
            ID,
            format!("core dumps off: {dumpable_text}, {limit_text} ({pattern})"),
        )
    } else {
        let failures = step_failures(&[
            ("setrlimit(RLIMIT_CORE)", &hardening.core_limit),
            ("prctl(PR_SET_DUMPABLE)", &hardening.dumpable_off),
        ]);
        let why = if failures.is_empty() {
            String::new()
        } else {
            format!(" ({failures})")
        };
        Check::fail(
            ID,
            format!(
                "core dumps possible: {dumpable_text}, {limit_text}; the process's own hardening \
                 did not hold{why}: allow prctl and prlimit64 in the seccomp profile"
            ),
        )
    }
}

fn process_memory_lock(place: Environment, lock: &MemoryLock) -> Check {
    const ID: &str = "process.memory_lock";
    let fix = hints::memory_lock(place);
    match lock {
        MemoryLock::Locked(why) => Check::pass(
            ID,
            format!("memory locked against swap with mlockall ({why})"),
        ),
        MemoryLock::Skipped(reason) | MemoryLock::Failed(reason) => {
            Check::warn(ID, format!("memory not locked: {reason}: {fix}"))
        }
        MemoryLock::NotRun => Check::warn(
            ID,
            "memory not locked: the process did not run its hardening step",
        ),
    }
}

fn host_swap(
    place: Environment,
    swap: Result<u64, sysinfo::SysinfoError>,
    memory_locked: bool,
) -> Check {
    const ID: &str = "host.swap";
    match swap {
        Err(error) => Check::warn(ID, format!("cannot tell whether swap is on: {error}")),
        Ok(0) => Check::pass(ID, "swap is off"),
        Ok(bytes) if memory_locked => Check::pass(
            ID,
            format!(
                "swap is on ({}), but memory is locked so secrets stay in RAM",
                human_bytes(bytes)
            ),
        ),
        Ok(bytes) => Check::warn(
            ID,
            format!(
                "swap is on ({}) and memory is not locked, so secrets may be written to swap: \
                 turn swap off (`swapoff -a`) or allow locking: {}",
                human_bytes(bytes),
                hints::memory_lock(place)
            ),
        ),
    }
}

fn process_no_new_privs(
    place: Environment,
    status: &Result<sysinfo::ProcStatus, sysinfo::SysinfoError>,
    step: &StepOutcome,
) -> Check {
    const ID: &str = "process.no_new_privs";
    match status.as_ref().map(|status| status.no_new_privs) {
        Ok(Some(true)) => Check::pass(ID, "no_new_privs is set"),
        Ok(Some(false)) => {
            let why = step_failures(&[("prctl(PR_SET_NO_NEW_PRIVS)", step)]);
            Check::warn(
                ID,
                format!(
                    "no_new_privs is not set ({why}): {}",
                    hints::process_no_new_privs(place)
                ),
            )
        }
        Ok(None) => Check::warn(ID, "no readable NoNewPrivs line in /proc/self/status"),
        Err(error) => Check::warn(ID, format!("cannot read NoNewPrivs: {error}")),
    }
}

fn process_capabilities(
    place: Environment,
    status: &Result<sysinfo::ProcStatus, sysinfo::SysinfoError>,
) -> Check {
    const ID: &str = "process.capabilities";
    match status.as_ref().map(|status| status.cap_eff) {
        Ok(Some(0)) => Check::pass(ID, "effective capability set is empty"),
        Ok(Some(caps)) => Check::warn(
            ID,
            format!(
                "effective capabilities {caps:#018x} ({}): {}",
                sysinfo::capability_names(caps).join(", "),
                hints::process_capabilities(place)
            ),
        ),
        Ok(None) => Check::warn(ID, "no readable CapEff line in /proc/self/status"),
        Err(error) => Check::warn(ID, format!("cannot read CapEff: {error}")),
    }
}

fn process_seccomp(
    place: Environment,
    status: &Result<sysinfo::ProcStatus, sysinfo::SysinfoError>,
) -> Check {
    const ID: &str = "process.seccomp";
    let fix = hints::process_seccomp(place);
    match status.as_ref().map(|status| status.seccomp) {
        Ok(Some(SeccompMode::Filter)) => Check::pass(ID, "a seccomp filter is active"),
        Ok(Some(SeccompMode::Disabled)) => Check::warn(ID, format!("no seccomp filter: {fix}")),
        Ok(Some(SeccompMode::Strict)) => Check::warn(
            ID,
            format!("seccomp is in strict mode, not a filter: {fix}"),
        ),
        Ok(Some(SeccompMode::Other(mode))) => {
            Check::warn(ID, format!("unknown seccomp mode {mode}: {fix}"))
        }
        Ok(None) => Check::warn(ID, "no readable Seccomp line in /proc/self/status"),
        Err(error) => Check::warn(ID, format!("cannot read the seccomp mode: {error}")),
    }
}

fn cgroup_memory_limit(
    place: Environment,
    cgroup: Result<sysinfo::CgroupMemory, sysinfo::SysinfoError>,
    max_memory: u64,
) -> Check {
    const ID: &str = "cgroup.memory_limit";
    let fix = hints::memory_limit(place);
    let budget = human_bytes(max_memory);
    match cgroup {
        Err(error) => Check::warn(
            ID,
            format!("cannot read the cgroup memory limit ({error}): {fix}"),
        ),
        Ok(cgroup) => match cgroup.limit {
            None => Check::warn(
                ID,
                format!(
                    "no cgroup memory limit ({} is unlimited): {fix}",
                    cgroup.file.display()
                ),
            ),
            Some(limit) if max_memory <= limit => Check::pass(
                ID,
                format!(
                    "--max-memory {budget} fits in the cgroup memory limit {} ({})",
                    human_bytes(limit),
                    cgroup.file.display()
                ),
            ),
            Some(limit) => Check::fail(
                ID,
                format!(
                    "--max-memory {budget} exceeds the cgroup memory limit {} ({}): the OOM \
                     killer would strike before the budget does; `--max-memory {}` or less (or \
                     leave it out: the default is half the limit), or raise the limit",
                    human_bytes(limit),
                    cgroup.file.display(),
                    suggested_budget(limit)
                ),
            ),
        },
    }
}

/// Half of a cgroup limit, spelled as `--max-memory` reads it (`32MiB`,
/// or plain bytes when it is not a whole number of MiB).
fn suggested_budget(limit: u64) -> String {
    let half = limit / 2;
    if half >= 1 << 20 && half % (1 << 20) == 0 {
        format!("{}MiB", half >> 20)
    } else {
        half.to_string()
    }
}

fn rootfs_read_only(place: Environment, read_only: Result<bool, sysinfo::SysinfoError>) -> Check {
    const ID: &str = "rootfs.read_only";
    match read_only {
        Ok(true) => Check::pass(ID, "/ is mounted read-only"),
        Ok(false) => Check::warn(
            ID,
            format!("/ is mounted read-write: {}", hints::read_only_root(place)),
        ),
        Err(error) => Check::warn(ID, format!("cannot tell whether / is read-only: {error}")),
    }
}

// ---------------------------------------------------------------------------
// tls.*, snapshot.*, policy.*

fn tls_key_file(place: Environment, key_file: Option<&Path>) -> Check {
    const ID: &str = "tls.key_file";
    let Some(path) = key_file else {
        return Check::pass(ID, "no key file configured");
    };
    let shown = path.display();
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => return Check::fail(ID, format!("TLS key file {shown}: {error}")),
    };
    if !metadata.is_file() {
        return Check::fail(ID, format!("TLS key file {shown} is not a regular file"));
    }
    // Opening proves the process can read it; the content is not read here.
    if let Err(error) = File::open(path) {
        return Check::fail(ID, format!("TLS key file {shown} cannot be read: {error}"));
    }
    let mode = mode_of(&metadata);
    if mode & 0o006 != 0 {
        Check::warn(
            ID,
            format!(
                "TLS key file {shown} has mode {mode:04o}, open to others: {}",
                hints::key_file_mode(place, path)
            ),
        )
    } else {
        Check::pass(ID, format!("TLS key file {shown} has mode {mode:04o}"))
    }
}

/// How a snapshot key file's content encodes the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyEncoding {
    Raw,
    Base64,
}

/// Recognise a 32-byte key by the loader's own rule
/// ([`crate::snapshot::SnapshotKey::parse`]: exactly 32 raw bytes, or base64
/// text, standard or URL-safe, padded or not, one trailing newline allowed,
/// that decodes to 32 bytes), so that what the self-check accepts loads.
/// The decoded key is wiped as it is dropped.
fn key_encoding(content: &[u8]) -> Option<KeyEncoding> {
    crate::snapshot::SnapshotKey::parse(content)?;
    Some(if content.len() == SNAPSHOT_KEY_LEN {
        KeyEncoding::Raw
    } else {
        KeyEncoding::Base64
    })
}

fn snapshot_key(input: &Input<'_>, scratch_magic: &Result<u64, sysinfo::SysinfoError>) -> Check {
    const ID: &str = "snapshot.key";
    match input.snapshot {
        SnapshotMode::Off => Check::pass(ID, "snapshots off"),
        SnapshotMode::Plain => match scratch_magic {
            Ok(magic) if *magic == TMPFS_MAGIC => {
                Check::pass(ID, "plaintext snapshots, kept on the tmpfs scratch dir")
            }
            _ => Check::fail(
                ID,
                format!(
                    "plaintext snapshots are refused outside tmpfs, and scratch dir {} is not on \
                     tmpfs: use --snapshot encrypted or a tmpfs scratch dir",
                    input.scratch_dir.display()
                ),
            ),
        },
        SnapshotMode::Encrypted => match input.snapshot_key_file {
            None => Check::fail(
                ID,
                "--snapshot encrypted needs --snapshot-key-file (make one with tmpvault keygen \
                 --out FILE)",
            ),
            Some(path) => encrypted_snapshot_key(path),
        },
    }
}

fn encrypted_snapshot_key(path: &Path) -> Check {
    const ID: &str = "snapshot.key";
    let shown = path.display();
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => return Check::fail(ID, format!("snapshot key file {shown}: {error}")),
    };
    if !metadata.is_file() {
        return Check::fail(
            ID,
            format!("snapshot key file {shown} is not a regular file"),
        );
    }
    let mode = mode_of(&metadata);
    let mut problems = Vec::new();
    if mode & 0o077 != 0 {
        problems.push(format!(
            "mode {mode:04o} gives group/others access (chmod 0400)"
        ));
    }
    // The key is held only long enough to measure it, and wiped on drop.
    let mut content = Zeroizing::new(Vec::new());
    let encoding = match File::open(path)
        .and_then(|file| file.take(KEY_FILE_READ_LIMIT + 1).read_to_end(&mut content))
    {
        Err(error) => {
            problems.push(format!("cannot be read: {error}"));
            None
        }
        Ok(_) => {
            let encoding = key_encoding(&content);
            if encoding.is_none() {
                let size = if content.len() as u64 > KEY_FILE_READ_LIMIT {
                    format!("more than {KEY_FILE_READ_LIMIT} bytes")
                } else {
                    format!("{} bytes", content.len())
                };
                problems.push(format!(
                    "holds {size}, neither a raw 32-byte key nor base64 of one (make one with \
                     tmpvault keygen)"
                ));
            }
            encoding
        }
    };
    match encoding {
        Some(encoding) if problems.is_empty() => {
            let encoding = match encoding {
                KeyEncoding::Raw => "raw",
                KeyEncoding::Base64 => "base64",
            };
            Check::pass(
                ID,
                format!(
                    "snapshot key file {shown} holds a 32-byte key ({encoding}), mode {mode:04o}"
                ),
            )
        }
        _ => Check::fail(
            ID,
            format!("snapshot key file {shown}: {}", problems.join("; ")),
        ),
    }
}

fn config_files(files: &[crate::trusted::TrustedFile]) -> Check {
    const ID: &str = "config.files";
    let problems = crate::trusted::problems(files);
    if problems.is_empty() {
        let names: Vec<_> = files.iter().map(|file| file.what).collect();
        Check::pass(
            ID,
            format!(
                "{} writable only by their owners (and this process's groups)",
                names.join(", ")
            ),
        )
    } else {
        Check::fail(ID, problems.join("; "))
    }
}

fn policy_present(present: bool) -> Check {
    const ID: &str = "policy.present";
    if present {
        Check::pass(ID, "access policy loaded")
    } else {
        Check::warn(
            ID,
            "no --policy: every client the CA trusts may read, write, delete and list every key",
        )
    }
}

fn config_reload(error: Option<&str>) -> Check {
    const ID: &str = "config.reload";
    match error {
        None => Check::pass(
            ID,
            "the running certificates, client CA and policy are the latest good ones",
        ),
        Some(error) => Check::warn(
            ID,
            format!(
                "the last reload failed, so the previous configuration is still in use: {error}"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Environment = Environment::Host;

    #[test]
    fn statuses_order_worst_last() {
        assert!(Status::Pass < Status::Warn && Status::Warn < Status::Fail);
        let report = Report::new(vec![
            Check::pass("a", "x"),
            Check::fail("b", "y"),
            Check::warn("c", "z"),
        ]);
        assert_eq!(report.status, Status::Fail);
        assert_eq!(Report::new(Vec::new()).status, Status::Pass);
    }

    #[test]
    fn passes_honours_strict() {
        let warn = Report::new(vec![Check::pass("a", ""), Check::warn("b", "")]);
        assert!(warn.passes(false));
        assert!(!warn.passes(true));
        let pass = Report::new(vec![Check::pass("a", "")]);
        assert!(pass.passes(true));
        let fail = Report::new(vec![Check::fail("a", "")]);
        assert!(!fail.passes(false));
    }

    #[test]
    fn json_has_the_contract_shape() {
        let report = Report::new(vec![
            Check::pass("scratch.tmpfs", "on tmpfs"),
            Check::warn("policy.present", "no \"policy\""),
        ]);
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap_or_default();
        assert_eq!(
            value,
            serde_json::json!({
                "status": "warn",
                "checks": [
                    {"id": "scratch.tmpfs", "status": "pass", "detail": "on tmpfs"},
                    {"id": "policy.present", "status": "warn", "detail": "no \"policy\""},
                ]
            })
        );
    }

    #[test]
    fn table_is_aligned() {
        let report = Report::new(vec![
            Check::pass("a", "first"),
            Check::fail("longer.id", "second"),
        ]);
        let table = report.render_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "tmpvault self-check: FAIL (1 pass, 0 warn, 1 fail)"
        );
        assert_eq!(lines[1], "STATUS  CHECK      DETAIL");
        assert_eq!(lines[2], "PASS    a          first");
        assert_eq!(lines[3], "FAIL    longer.id  second");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn details_stay_on_one_line() {
        let check = Check::fail("x", "dir /a\nb\u{1b}[31m");
        assert_eq!(check.detail, "dir /a\\nb\\u{1b}[31m");
    }

    #[test]
    fn scratch_modes() {
        for mode in [0o700, 0o750, 0o740, 0o1770, 0o1750, 0o2750, 0o500] {
            assert_eq!(scratch_mode_problem(mode), None, "{mode:o}");
        }
        for mode in [0o777, 0o1777, 0o755, 0o770, 0o701, 0o704, 0o2770, 0o720] {
            assert!(scratch_mode_problem(mode).is_some(), "{mode:o}");
        }
    }

    #[test]
    fn root_is_judged_by_context() {
        assert_eq!(
            process_user(H, Path::new("/scratch"), 1000, Context::Serve, false).status,
            Status::Pass
        );
        assert_eq!(
            process_user(H, Path::new("/scratch"), 0, Context::Serve, false).status,
            Status::Fail
        );
        assert_eq!(
            process_user(H, Path::new("/scratch"), 0, Context::Selfcheck, false).status,
            Status::Fail
        );
        assert_eq!(
            process_user(H, Path::new("/scratch"), 0, Context::Serve, true).status,
            Status::Warn
        );
        assert_eq!(
            process_user(H, Path::new("/scratch"), 0, Context::Dev, false).status,
            Status::Warn
        );
        assert!(
            process_user(H, Path::new("/scratch"), 0, Context::Serve, false)
                .detail
                .contains("--allow-root")
        );
    }

    #[test]
    fn memory_lock_and_swap() {
        let locked = MemoryLock::Locked("RLIMIT_MEMLOCK is unlimited".to_owned());
        assert_eq!(process_memory_lock(H, &locked).status, Status::Pass);
        let skipped = MemoryLock::Skipped("limit 8 MiB".to_owned());
        let check = process_memory_lock(H, &skipped);
        assert_eq!(check.status, Status::Warn);
        assert!(
            check.detail.contains("`ulimit -l unlimited`"),
            "{}",
            check.detail
        );
        let check = process_memory_lock(Environment::Docker, &skipped);
        assert!(
            check.detail.contains("`--ulimit memlock=-1`"),
            "{}",
            check.detail
        );
        assert_eq!(
            process_memory_lock(H, &MemoryLock::NotRun).status,
            Status::Warn
        );

        assert_eq!(host_swap(H, Ok(0), false).status, Status::Pass);
        let check = host_swap(H, Ok(1 << 30), true);
        assert_eq!(check.status, Status::Pass);
        assert!(check.detail.contains("locked"));
        assert_eq!(host_swap(H, Ok(1 << 30), false).status, Status::Warn);
    }

    fn status_with(
        cap_eff: Option<u64>,
        seccomp: Option<SeccompMode>,
        no_new_privs: Option<bool>,
    ) -> Result<sysinfo::ProcStatus, sysinfo::SysinfoError> {
        Ok(sysinfo::ProcStatus {
            no_new_privs,
            cap_eff,
            seccomp,
        })
    }

    #[test]
    fn status_checks() {
        let applied = StepOutcome::Applied;
        assert_eq!(
            process_no_new_privs(H, &status_with(None, None, Some(true)), &applied).status,
            Status::Pass
        );
        assert_eq!(
            process_no_new_privs(H, &status_with(None, None, Some(false)), &applied).status,
            Status::Warn
        );
        assert_eq!(
            process_no_new_privs(H, &status_with(None, None, None), &applied).status,
            Status::Warn
        );
        assert_eq!(
            process_capabilities(H, &status_with(Some(0), None, None)).status,
            Status::Pass
        );
        let check = process_capabilities(H, &status_with(Some(1 << 10), None, None));
        assert_eq!(check.status, Status::Warn);
        assert!(check
            .detail
            .contains("0x0000000000000400 (NET_BIND_SERVICE)"));
        assert_eq!(
            process_seccomp(H, &status_with(None, Some(SeccompMode::Filter), None)).status,
            Status::Pass
        );
        assert_eq!(
            process_seccomp(H, &status_with(None, Some(SeccompMode::Disabled), None)).status,
            Status::Warn
        );
        let unreadable = Err(sysinfo::SysinfoError::NoMount { path: "/x".into() });
        assert_eq!(process_seccomp(H, &unreadable).status, Status::Warn);
    }

    #[test]
    fn cgroup_limit_against_budget() {
        let cgroup = |limit| {
            Ok(sysinfo::CgroupMemory {
                version: sysinfo::CgroupVersion::V2,
                limit,
                file: "/sys/fs/cgroup/memory.max".into(),
            })
        };
        let check = cgroup_memory_limit(H, cgroup(Some(512 << 20)), 256 << 20);
        assert_eq!(check.status, Status::Pass);
        assert!(check.detail.contains("256 MiB"));
        assert!(check.detail.contains("512 MiB"));
        assert_eq!(
            cgroup_memory_limit(H, cgroup(Some(256 << 20)), 256 << 20).status,
            Status::Pass
        );
        let check = cgroup_memory_limit(H, cgroup(Some(128 << 20)), 256 << 20);
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("OOM"));
        assert!(
            check.detail.contains("`--max-memory 64MiB`"),
            "{}",
            check.detail
        );
        assert_eq!(
            cgroup_memory_limit(H, cgroup(None), 256 << 20).status,
            Status::Warn
        );
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(1024), "1 KiB");
        assert_eq!(human_bytes(256 << 20), "256 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn recognises_key_encodings() {
        assert_eq!(key_encoding(&[0u8; 32]), Some(KeyEncoding::Raw));
        assert_eq!(key_encoding(&[b'\n'; 32]), Some(KeyEncoding::Raw));
        let padded = b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert_eq!(key_encoding(padded), Some(KeyEncoding::Base64));
        assert_eq!(
            key_encoding(&[&padded[..], b"\n"].concat()),
            Some(KeyEncoding::Base64)
        );
        assert_eq!(
            key_encoding(&[&padded[..], b"\r\n"].concat()),
            Some(KeyEncoding::Base64)
        );
        assert_eq!(key_encoding(&padded[..43]), Some(KeyEncoding::Base64));
        let url_safe = b"-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_8=";
        assert_eq!(key_encoding(url_safe), Some(KeyEncoding::Base64));
        // Wrong lengths, bad symbols, non-canonical trailing bits, padding
        // in the wrong place.
        assert_eq!(key_encoding(&[0u8; 31]), None);
        assert_eq!(key_encoding(&[0u8; 33]), None);
        assert_eq!(key_encoding(b""), None);
        assert_eq!(
            key_encoding(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"),
            Some(KeyEncoding::Base64)
        );
        assert_eq!(
            key_encoding(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9="),
            None
        );
        assert_eq!(
            key_encoding(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh*="),
            None
        );
        assert_eq!(
            key_encoding(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n"),
            None
        );
        assert_eq!(
            key_encoding(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"),
            None
        );
    }
}
