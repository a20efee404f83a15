//! The startup self-check: is the scratch dir a private tmpfs, is the
//! process locked down, are the key files safe?
//!
//! [`run`] takes readings (from [`crate::sys`]) and the
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

use std::sync::Arc;

use crate::access::reload::ReloadStatus;
use crate::config::{SecretArena, ServeConfig, SnapshotSetting};
use crate::posture::harden::{HardeningReport, MemoryLock, StepOutcome};
use crate::store::arena::{ArenaMode, ArenaReport};
use crate::sys::{self, SeccompMode, TMPFS_MAGIC};

mod hints;
mod keys;
mod process;
mod scratch;

pub use self::hints::Environment;
use self::keys::*;
use self::process::*;
pub use self::scratch::*;

/// The ids of the checks, in the order [`run`] reports them.
pub const CHECK_IDS: [&str; 19] = [
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
    /// decide who the server trusts ([`crate::tls::trusted`]).
    pub trusted_files: &'a [crate::tls::trusted::TrustedFile],
    /// `--snapshot`.
    pub snapshot: SnapshotSetting,
    /// `--snapshot-key-file`, if any.
    pub snapshot_key_file: Option<&'a Path>,
    /// The store's memory budget in bytes (`--max-memory`).
    pub max_memory: u64,
    /// Whether `--policy` was given.
    pub policy_present: bool,
    /// What [`crate::posture::harden::harden_process`] did.
    pub hardening: &'a HardeningReport,
    /// Where stored values live ([`crate::store::arena`]).
    pub arena: &'a ArenaReport,
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
    let scratch_magic = sys::fs_magic(scratch);
    let scratch_metadata = fs::metadata(scratch);
    let status = sys::proc_status();
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
        memory_secret_arena(place, input.arena, input.max_memory),
        host_swap(place, sys::swap_total(), memory_locked),
        process_no_new_privs(place, &status, &input.hardening.no_new_privs),
        process_capabilities(place, &status),
        process_seccomp(place, &status),
        cgroup_memory_limit(place, sys::read_cgroup_memory(), input.max_memory),
        rootfs_read_only(place, sys::is_read_only(Path::new("/"))),
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

/// Everything the self-check needs, owned, so `/v1/selfcheck` can re-run it.
#[derive(Clone, Debug)]
pub struct SelfcheckInputs {
    context: Context,
    config: ServeConfig,
    hardening: HardeningReport,
    arena: ArenaReport,
    reload: Arc<ReloadStatus>,
}

impl SelfcheckInputs {
    /// The inputs of a check of `config` in `context`.
    pub fn new(
        config: &ServeConfig,
        context: Context,
        hardening: HardeningReport,
        arena: ArenaReport,
        reload: Arc<ReloadStatus>,
    ) -> SelfcheckInputs {
        SelfcheckInputs {
            context,
            config: config.clone(),
            hardening,
            arena,
            reload,
        }
    }

    /// Why the last reload failed, if it did.
    pub fn reload_status(&self) -> &ReloadStatus {
        &self.reload
    }

    /// Runs every check now.
    pub fn run(&self) -> Report {
        let config = &self.config;
        let reload_error = self.reload.last_error();
        let trusted_files = crate::tls::trusted::files(&config.tls, config.policy.as_deref());
        run(&Input {
            reload_error: reload_error.as_deref(),
            context: self.context,
            environment: Environment::detect(),
            scratch_dir: &config.scratch_dir,
            allow_root: config.allow_root,
            tls_key_file: Some(&config.tls.key),
            trusted_files: &trusted_files,
            snapshot: config.snapshot,
            snapshot_key_file: config.snapshot_key_file.as_deref(),
            max_memory: config.max_memory,
            policy_present: config.policy.is_some(),
            hardening: &self.hardening,
            arena: &self.arena,
        })
    }
}

#[cfg(test)]
mod tests;
