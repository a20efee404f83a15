//! Live reload of the server certificate and key, the client CA bundle and
//! the policy: on SIGHUP, and when one of those files changes on disk.
//!
//! Changes are found by polling each file's metadata (device, inode, size,
//! mtime) every `--reload-interval`. `metadata` follows symlinks, so the way
//! Kubernetes updates a mounted Secret (a new directory and a swapped
//! `..data` symlink) shows up as a new inode. A reload builds the new TLS
//! configuration and policy first and swaps them in only if both are good:
//! a bad file keeps the whole old configuration, logs why, and shows in
//! `/metrics` and the self-check. A certificate, CA bundle or policy that
//! others may write ([`crate::tls::trusted`]) is such a bad file. New handshakes
//! use the new certificate; open connections keep theirs, except that each
//! is checked against the new client CA bundle and closed (after its
//! in-flight requests) when its certificate no longer verifies.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::sync::watch;

use crate::access::policy::Policy;
use crate::access::Access;
use crate::tls::trusted;
use crate::tls::{self, ClientVerifier, ServerTlsFiles};

/// Outcome counters, shared with `/metrics` and the self-check.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    /// Successful reloads since start.
    pub reloads: AtomicU64,
    /// Failed reloads since start.
    pub failures: AtomicU64,
    /// Why the last attempt failed; `None` once one succeeds.
    pub last_error: Mutex<Option<String>>,
}

impl ReloadStatus {
    /// Why the last reload failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What one file looked like at the last check.
type Fingerprint = Option<(u64, u64, u64, i64, i64)>;

fn fingerprint(path: &Path) -> Fingerprint {
    let meta = std::fs::metadata(path).ok()?;
    Some((
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
    ))
}

/// What is reloaded, and how it is built.
#[derive(Clone, Debug)]
pub struct Watched {
    /// The server certificate, key and client CA bundle.
    pub files: ServerTlsFiles,
    /// `--client-eku-required`.
    pub client_eku_required: bool,
    /// `--policy`.
    pub policy: Option<PathBuf>,
}

/// Reloads TLS material and policy into the running server.
pub struct Reloader {
    files: ServerTlsFiles,
    client_eku_required: bool,
    policy: Option<PathBuf>,
    tls: Arc<ArcSwap<ServerConfig>>,
    trust: Arc<watch::Sender<Arc<ClientVerifier>>>,
    access: Arc<Access>,
    status: Arc<ReloadStatus>,
    seen: Vec<Fingerprint>,
}

impl Reloader {
    /// Watches the files of `watched`, swapping into `tls`, `trust` and
    /// `access`.
    pub fn new(
        watched: Watched,
        tls: Arc<ArcSwap<ServerConfig>>,
        trust: Arc<watch::Sender<Arc<ClientVerifier>>>,
        access: Arc<Access>,
        status: Arc<ReloadStatus>,
    ) -> Reloader {
        let mut reloader = Reloader {
            files: watched.files,
            client_eku_required: watched.client_eku_required,
            policy: watched.policy,
            tls,
            trust,
            access,
            status,
            seen: Vec::new(),
        };
        reloader.seen = reloader.fingerprints();
        reloader
    }

    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![
            self.files.cert.as_path(),
            self.files.key.as_path(),
            self.files.client_ca.as_path(),
        ];
        paths.extend(self.policy.as_deref());
        paths
    }

    fn fingerprints(&self) -> Vec<Fingerprint> {
        self.paths().into_iter().map(fingerprint).collect()
    }

    /// Builds everything anew and swaps it in, or changes nothing.
    pub fn reload(&mut self, why: &str) -> Result<(), String> {
        self.seen = self.fingerprints();
        let unsafe_files = trusted::problems(&trusted::files(&self.files, self.policy.as_deref()));
        let built = if unsafe_files.is_empty() {
            Ok(())
        } else {
            Err(format!("refused: {}", unsafe_files.join("; ")))
        };
        let built = built
            .and_then(|()| {
                tls::server_tls(&self.files, self.client_eku_required)
                    .map_err(|error| error.to_string())
            })
            .and_then(|tls| {
                let policy = match &self.policy {
                    Some(path) => Some(Policy::load(path).map_err(|error| error.to_string())?),
                    None => None,
                };
                Ok((tls, policy))
            });
        match built {
            Ok((tls, policy)) => {
                self.tls.store(tls.config);
                // Open connections check their certificates against it.
                self.trust.send_replace(tls.client_verifier);
                let rules = policy.as_ref().map(Policy::len);
                self.access.policy.store(policy.map(Arc::new));
                self.status.reloads.fetch_add(1, Ordering::Relaxed);
                *self
                    .status
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                tracing::info!(
                    trigger = why,
                    policy_rules = rules,
                    "reloaded certificates, client CA and policy"
                );
                Ok(())
            }
            Err(error) => {
                self.status.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(trigger = why, %error, "reload failed; keeping the previous configuration");
                *self
                    .status
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Reloads on SIGHUP and whenever a watched file changes.
    pub async fn run(mut self, interval: Duration) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reloading on file changes only");
                None
            }
        };
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => "SIGHUP",
                _ = ticker.tick() => {
                    if self.fingerprints() == self.seen {
                        continue;
                    }
                    "file change"
                }
            };
            let _ = self.reload(why);
        }
    }
}
