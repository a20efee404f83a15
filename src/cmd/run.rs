//! `tmpvault run`: secrets into a program that does not speak HTTP.
//!
//! ```text
//! tmpvault run --env DB_PASSWORD=app/db-password --file /scratch/app/api-key=app/api-key -- ./app --flag
//! ```
//!
//! Every named secret is fetched first, over one mTLS connection of the
//! client settings; a missing, refused or unusable one stops everything
//! before the program starts (the message names the key and the reason,
//! never a value). Then:
//!
//! - with `--env` only, tmpvault `execve`s the program with the values in
//!   its environment: the program takes tmpvault's place (same PID, signals
//!   reach it directly, the exit code is its own) and nothing of tmpvault
//!   stays in memory;
//! - with `--file`, each value is written as a 0400 file (temp file, then
//!   rename) in a directory that must pass the scratch dir's checks
//!   (tmpfs, private mode, owner); tmpvault stays as the program's parent,
//!   forwards SIGTERM, SIGINT and SIGHUP to it, removes the files when it
//!   exits and exits with its code (128 + N for a signal);
//! - with `--watch`, tmpvault also waits for changes of every secret
//!   (`GET ?wait=` with the ETag it has) and, on a change, rewrites the
//!   files and restarts the program (`--on-change restart`, the default)
//!   or sends it a signal (`--on-change signal:HUP`). While the server is
//!   unreachable the program keeps running on what it has, and tmpvault
//!   retries with backoff, saying so on stderr.
//!
//! An environment variable is readable by the same user through
//! `/proc/PID/environ` for the program's whole life, and is inherited by
//! every child it starts; a file on a private tmpfs is readable only
//! through the file system's permissions and can be rotated. README,
//! "`tmpvault run`", says which to choose.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use zeroize::Zeroizing;

use crate::cmd::client::{Client, ClientError};
use crate::posture::selfcheck::{private_dir_checks, Status};
use crate::store::key::Key;

/// One secret and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An environment variable of this name.
    Env(String),
    /// A file at this path.
    File(PathBuf),
}

/// What to do when a watched secret changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnChange {
    /// Stop the program (SIGTERM, then SIGKILL after 10 s) and start it
    /// again with the new values.
    Restart,
    /// Send the program this signal (its files are already rewritten).
    Signal(Signal),
}

/// A validated `tmpvault run` command line.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Each mapping, in command-line order.
    pub secrets: Vec<(Target, Key)>,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// `--watch`, with its `--on-change`.
    pub watch: Option<OnChange>,
    /// `--require-utf8`: environment values must be UTF-8.
    pub require_utf8: bool,
}

/// Why `tmpvault run` stopped before (or while) running the program.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A mapping on the command line is malformed.
    #[error("{flag} {raw:?}: {reason}")]
    Usage {
        /// `--env` or `--file`.
        flag: &'static str,
        /// What was given.
        raw: String,
        /// What is wrong.
        reason: String,
    },
    /// A secret could not be fetched.
    #[error("secret {key}: {reason}")]
    Fetch {
        /// The key.
        key: String,
        /// Why (status and problem code, or the transport error).
        reason: String,
    },
    /// A value cannot go where it was asked to.
    #[error("secret {key} cannot be the environment variable {name}: {reason}")]
    Value {
        /// The key.
        key: String,
        /// The variable.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A file's directory is not private tmpfs, or the file could not be
    /// written.
    #[error("{0}")]
    File(String),
    /// The program could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The client settings are unusable (files, address).
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Parses `NAME=KEY` (for `--env`) or `PATH=KEY` (for `--file`). The key is
/// after the last `=`, since keys have none and paths may.
pub fn parse_mapping(flag: &'static str, raw: &str) -> Result<(Target, Key), RunError> {
    let usage = |reason: String| RunError::Usage {
        flag,
        raw: raw.to_owned(),
        reason,
    };
    let (left, key) = raw
        .rsplit_once('=')
        .ok_or_else(|| usage("expected NAME=KEY".into()))?;
    let key = Key::parse(key).map_err(|error| usage(format!("the key: {error}")))?;
    let target = if flag == "--env" {
        let mut bytes = left.bytes();
        let valid = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(usage(
                "a variable name is a letter or _ followed by letters, digits and _".into(),
            ));
        }
        Target::Env(left.to_owned())
    } else {
        if left.is_empty() || left.ends_with('/') {
            return Err(usage("expected a file path before =".into()));
        }
        Target::File(PathBuf::from(left))
    };
    Ok((target, key))
}

/// A fetched secret: its value and the ETag it had.
struct Fetched {
    value: Zeroizing<Vec<u8>>,
    etag: String,
}

/// Fetches one secret; a non-200 answer is an error naming the key.
async fn fetch(client: &Client, key: &Key) -> Result<Fetched, RunError> {
    let response = client
        .request(
            Method::GET,
            &format!("/v1/secrets/{}", key.as_str()),
            &[],
            Bytes::new(),
        )
        .await
        .map_err(|error| RunError::Fetch {
            key: key.as_str().to_owned(),
            reason: error.to_string(),
        })?;
    if response.status != StatusCode::OK {
        return Err(RunError::Fetch {
            key: key.as_str().to_owned(),
            reason: refusal(response.status, &response.body),
        });
    }
    let etag = response
        .headers
        .get("etag")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok(Fetched {
        value: response.body,
        etag,
    })
}

/// `HTTP 404 not_found: ...` from a problem answer (never a value: only
/// errors are read this way).
fn refusal(status: StatusCode, body: &[u8]) -> String {
    let problem: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = problem["code"].as_str().unwrap_or("error");
    let detail = problem["detail"].as_str().unwrap_or_default();
    format!("HTTP {} {code}: {detail}", status.as_u16())
}

/// The environment value of a secret, or why it cannot be one.
fn env_value(value: &[u8], require_utf8: bool) -> Result<OsString, &'static str> {
    if value.contains(&0) {
        return Err("it contains a NUL byte, which no environment variable can hold");
    }
    if require_utf8 && std::str::from_utf8(value).is_err() {
        return Err("it is not UTF-8 (--require-utf8)");
    }
    Ok(OsString::from_vec(value.to_vec()))
}

/// Checks that every file's directory is a private tmpfs, as the scratch
/// dir must be.
fn check_directories(plan: &Plan) -> Result<(), RunError> {
    let mut seen = Vec::new();
    for (target, _) in &plan.secrets {
        let Target::File(path) = target else { continue };
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if seen.contains(&dir) {
            continue;
        }
        seen.push(dir);
        let failed: Vec<String> = private_dir_checks(dir)
            .into_iter()
            .filter(|check| check.status == Status::Fail)
            .map(|check| format!("{}: {}", check.id, check.detail))
            .collect();
        if !failed.is_empty() {
            return Err(RunError::File(format!(
                "--file {}: its directory {} must be private tmpfs like the scratch dir: {}",
                path.display(),
                dir.display(),
                failed.join("; ")
            )));
        }
    }
    Ok(())
}

/// Writes `value` to `path` as a 0400 file, atomically: a new temp file in
/// the same directory (never following a link), then a rename over `path`.
fn write_file(path: &Path, value: &[u8]) -> Result<(), RunError> {
    let error = |step: &str, source: std::io::Error| {
        RunError::File(format!("{step} {}: {source}", path.display()))
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.tmpvault-{}", std::process::id()));
    let _ = fs::remove_file(&temp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temp)
        .map_err(|source| error("creating a temp file for", source))?;
    if let Err(source) = file.write_all(value) {
        let _ = fs::remove_file(&temp);
        return Err(error("writing", source));
    }
    drop(file);
    fs::rename(&temp, path).map_err(|source| {
        let _ = fs::remove_file(&temp);
        error("renaming into place", source)
    })
}

/// The files a run wrote, removed when it is dropped: also those written
/// before a later one failed.
#[derive(Default)]
struct Written(Vec<PathBuf>);

impl Written {
    fn record(&mut self, path: &Path) {
        if !self.0.iter().any(|written| written == path) {
            self.0.push(path.to_owned());
        }
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// The current values, by position in `plan.secrets`.
struct Values(Vec<Fetched>);

impl Values {
    fn environment(&self, plan: &Plan) -> Result<Vec<(String, OsString)>, RunError> {
        let mut environment = Vec::new();
        for ((target, key), fetched) in plan.secrets.iter().zip(&self.0) {
            if let Target::Env(name) = target {
                let value = env_value(&fetched.value, plan.require_utf8).map_err(|reason| {
                    RunError::Value {
                        key: key.as_str().to_owned(),
                        name: name.clone(),
                        reason,
                    }
                })?;
                environment.push((name.clone(), value));
            }
        }
        Ok(environment)
    }

    /// Writes every file, recording each in `written` as soon as it is
    /// there, so that a failure of a later one still removes it.
    fn write_files(&self, plan: &Plan, written: &mut Written) -> Result<(), RunError> {
        for ((target, _), fetched) in plan.secrets.iter().zip(&self.0) {
            if let Target::File(path) = target {
                write_file(path, &fetched.value)?;
                written.record(path);
            }
        }
        Ok(())
    }
}

/// Runs the plan with `client`; returns the program's exit code, or does
/// not return at all (exec).
pub fn run(plan: &Plan, client: &Client) -> Result<ExitCode, RunError> {
    // This process holds secret values: no core dump, no ptrace by others
    // of the same user. (Reset by execve, so the program is unaffected.)
    let _ = nix::sys::prctl::set_dumpable(false);
    check_directories(plan)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RunError::Spawn {
            program: "the async runtime".into(),
            source,
        })?;
    let values = runtime.block_on(async {
        let mut values = Vec::with_capacity(plan.secrets.len());
        for (_, key) in &plan.secrets {
            values.push(fetch(client, key).await?);
        }
        Ok::<_, RunError>(Values(values))
    })?;
    let environment = values.environment(plan)?;
    let has_files = plan
        .secrets
        .iter()
        .any(|(target, _)| matches!(target, Target::File(_)));
    if plan.watch.is_none() && !has_files {
        drop(runtime);
        let error = command(plan, &environment).exec();
        return Err(RunError::Spawn {
            program: program_name(plan),
            source: error,
        });
    }
    runtime.block_on(async {
        // Listening before the first file or the program exists: a signal
        // from then on is forwarded (or ends the run with the files
        // removed), never the default action that would kill tmpvault and
        // leave both behind.
        let signals = Signals::listen()?;
        let mut written = Written::default();
        values.write_files(plan, &mut written)?;
        supervise(plan, client, values, environment, signals, &mut written).await
    })
}

fn program_name(plan: &Plan) -> String {
    plan.command
        .first()
        .map(|program| program.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn command(plan: &Plan, environment: &[(String, OsString)]) -> Command {
    let mut command = Command::new(&plan.command[0]);
    command.args(&plan.command[1..]);
    command.envs(environment.iter().map(|(name, value)| (name, value)));
    command
}

fn spawn(
    plan: &Plan,
    environment: &[(String, OsString)],
) -> Result<tokio::process::Child, RunError> {
    tokio::process::Command::from(command(plan, environment))
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: program_name(plan),
            source,
        })
}

/// The exit code tmpvault passes on for `status`.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Sends `signal` to the child, if it is still there.
fn signal_child(child: &tokio::process::Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// How long a restarted program has to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long one `?wait=` asks for. Under the server's idle deadline (60 s,
/// fixed): over HTTP/1.1 a held request sends no byte, and a wait as long
/// as that deadline loses the race with it about half the time, which
/// would read here as the server dropping the connection.
const WAIT: &str = "30s";
/// Retry delays while the server is unreachable.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The signals forwarded to the program.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Replaces the default actions of SIGTERM, SIGINT and SIGHUP.
    fn listen() -> Result<Signals, RunError> {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind| {
            signal(kind).map_err(|source| RunError::Spawn {
                program: "the signal handlers".into(),
                source,
            })
        };
        Ok(Signals {
            terminate: listen(SignalKind::terminate())?,
            interrupt: listen(SignalKind::interrupt())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }
}

/// Runs the program as a child: forwards signals, and with `--watch`
/// follows changes (rewriting the files in `written`), until the program
/// exits.
async fn supervise(
    plan: &Plan,
    client: &Client,
    mut values: Values,
    mut environment: Vec<(String, OsString)>,
    signals: Signals,
    written: &mut Written,
) -> Result<ExitCode, RunError> {
    let Signals {
        mut terminate,
        mut interrupt,
        mut hangup,
    } = signals;
    let mut child = spawn(plan, &environment)?;
    let (changes, mut changed) = tokio::sync::mpsc::channel::<(usize, Fetched)>(16);
    let watchers: Vec<_> = match plan.watch {
        None => Vec::new(),
        Some(_) => plan
            .secrets
            .iter()
            .enumerate()
            .map(|(index, (_, key))| {
                tokio::spawn(follow(
                    client.clone(),
                    key.clone(),
                    values.0[index].etag.clone(),
                    index,
                    changes.clone(),
                ))
            })
            .collect(),
    };
    drop(changes);
    let code = loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|source| RunError::Spawn { program: program_name(plan), source })?;
                break exit_code(status);
            }
            _ = terminate.recv() => signal_child(&child, Signal::SIGTERM),
            _ = interrupt.recv() => signal_child(&child, Signal::SIGINT),
            _ = hangup.recv() => signal_child(&child, Signal::SIGHUP),
            Some((index, fetched)) = changed.recv() => {
                values.0[index] = fetched;
                // Several secrets often change together: take what else
                // arrives in the next moment, and act once.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while let Ok((index, fetched)) = changed.try_recv() {
                    values.0[index] = fetched;
                }
                values.write_files(plan, written)?;
                match plan.watch {
                    Some(OnChange::Signal(signal)) => signal_child(&child, signal),
                    Some(OnChange::Restart) | None => {
                        environment = values.environment(plan)?;
                        eprintln!("tmpvault run: a secret changed; restarting {}", program_name(plan));
                        signal_child(&child, Signal::SIGTERM);
                        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                            let _ = child.kill().await;
                        }
                        child = spawn(plan, &environment)?;
                    }
                }
            }
        }
    };
    for watcher in watchers {
        watcher.abort();
    }
    Ok(code)
}

/// Follows one secret: waits for each change and sends the new value.
/// Unreachable servers and deleted secrets are retried with backoff; the
/// program keeps what it has meanwhile.
async fn follow(
    client: Client,
    key: Key,
    mut etag: String,
    index: usize,
    changes: tokio::sync::mpsc::Sender<(usize, Fetched)>,
) {
    let client = client.with_timeout(Duration::from_secs(90));
    let path = format!("/v1/secrets/{}?wait={WAIT}", key.as_str());
    let mut backoff = BACKOFF_START;
    loop {
        let answer = client
            .request(
                Method::GET,
                &path,
                &[("if-none-match", etag.as_str())],
                Bytes::new(),
            )
            .await;
        let problem = match answer {
            Ok(response) if response.status == StatusCode::OK => {
                backoff = BACKOFF_START;
                let fetched = Fetched {
                    etag: response
                        .headers
                        .get("etag")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                    value: response.body,
                };
                etag.clone_from(&fetched.etag);
                if changes.send((index, fetched)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(response) if response.status == StatusCode::NOT_MODIFIED => {
                backoff = BACKOFF_START;
                continue;
            }
            Ok(response) => refusal(response.status, &response.body),
            Err(error) => error.to_string(),
        };
        eprintln!(
            "tmpvault run: following {}: {problem}; keeping the value the program has, retrying in {} ms",
            key.as_str(),
            backoff.as_millis()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Parses `--on-change`: `restart`, or `signal:NAME` (`HUP`, `SIGHUP`,
/// `USR1`, ...).
pub fn parse_on_change(raw: &str) -> Result<OnChange, String> {
    if raw == "restart" {
        return Ok(OnChange::Restart);
    }
    let Some(name) = raw.strip_prefix("signal:") else {
        return Err("expected restart or signal:NAME (e.g. signal:HUP)".into());
    };
    let name = name.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<Signal>()
        .map(OnChange::Signal)
        .map_err(|_| format!("{name} is not a signal name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_name_or_path_then_key() {
        let (target, key) = parse_mapping("--env", "DB_PASSWORD=app/db").unwrap();
        assert_eq!(target, Target::Env("DB_PASSWORD".into()));
        assert_eq!(key.as_str(), "app/db");
        let (target, _) = parse_mapping("--file", "/s/a=b/c=app/db").unwrap();
        assert_eq!(target, Target::File("/s/a=b/c".into()));
        for bad in [
            "DB",
            "1DB=app/db",
            "D-B=app/db",
            "=app/db",
            "DB=../x",
            "DB=",
        ] {
            assert!(parse_mapping("--env", bad).is_err(), "{bad}");
        }
        assert!(parse_mapping("--file", "/s/=app/db").is_err());
    }

    #[test]
    fn environment_values_hold_no_nul_and_utf8_when_asked() {
        assert!(env_value(b"a\0b", false).is_err());
        assert!(env_value(&[0xff, 0xfe], true).is_err());
        assert_eq!(env_value(&[0xff], false).unwrap().into_vec(), vec![0xff]);
        assert_eq!(env_value(b"s3cr3t", true).unwrap(), "s3cr3t");
    }

    #[test]
    fn on_change_is_restart_or_a_signal() {
        assert_eq!(parse_on_change("restart"), Ok(OnChange::Restart));
        assert_eq!(
            parse_on_change("signal:HUP"),
            Ok(OnChange::Signal(Signal::SIGHUP))
        );
        assert_eq!(
            parse_on_change("signal:SIGUSR1"),
            Ok(OnChange::Signal(Signal::SIGUSR1))
        );
        assert!(parse_on_change("signal:NOPE").is_err());
        assert!(parse_on_change("reload").is_err());
    }
}
