//! The validated server configuration.
//!
//! Built in two stages, like aws-secretsmanager-agent's config: clap parses
//! each flag into a typed value (one clear message per malformed flag), then
//! [`ServeConfig::validate`] checks how the flags fit together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::text::units::{format_duration, ByteSize};
use crate::tls::ServerTlsFiles;

/// Default budget when no cgroup memory limit is found.
pub const DEFAULT_MAX_MEMORY: u64 = 256 << 20;
/// Half the cgroup memory limit if there is one, else 256 MiB.
pub fn default_max_memory() -> u64 {
    crate::sys::cgroup_memory_limit().map_or(DEFAULT_MAX_MEMORY, |limit| limit / 2)
}

/// Largest `--max-value-bytes` accepted.
pub const MAX_VALUE_BYTES_CEILING: u64 = 16 << 20;

/// The default `--default-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The default `--max-ttl`.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(86_400);
/// The default `--max-value-bytes`.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 64 << 10;
/// The default `--max-wait`: Consul's default blocking-query wait.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);

/// The default `--snapshot-interval`.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);
/// The default `--reload-interval`.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Limits and defaults the handlers apply.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// TTL when a write gives none.
    pub default_ttl: Duration,
    /// Longest TTL a write may ask for.
    pub max_ttl: Duration,
    /// Largest secret or list item, in bytes.
    pub max_value_bytes: u64,
    /// Deadline for receiving a whole request body.
    pub body_read_timeout: Duration,
    /// Longest `?wait=` a GET may hold (longer asks are shortened to it).
    pub max_wait: Duration,
}

impl Default for ApiSettings {
    fn default() -> ApiSettings {
        ApiSettings {
            default_ttl: DEFAULT_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            body_read_timeout: Limits::default().body_read_timeout,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

/// Deadlines and caps on every phase of a connection.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From TCP accept to a finished TLS handshake.
    pub handshake_timeout: Duration,
    /// For a request's headers to arrive (HTTP/1.1).
    pub header_read_timeout: Duration,
    /// With no bytes in either direction, the connection is closed.
    pub idle_timeout: Duration,
    /// For a whole request body to arrive.
    pub body_read_timeout: Duration,
    /// For in-flight requests to finish after a shutdown signal.
    pub drain_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Largest request head (HTTP/1.1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// How long one connection (and so one handshake's identity) may be
    /// used; then it is closed gracefully and the client reconnects.
    pub max_connection_age: Duration,
    /// A connection with a response in flight that writes nothing for this
    /// long is ended, its streams reset: a client that stops reading (a
    /// zero HTTP/2 window) cannot hold responses, and the values in them.
    pub response_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
            max_connection_age: Duration::from_secs(600),
            response_timeout: Duration::from_secs(30),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether and how the store is written to the scratch directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SnapshotSetting {
    /// Memory only.
    Off,
    /// Plaintext snapshots, only on tmpfs.
    Plain,
    /// AES-256-GCM encrypted snapshots.
    Encrypted,
}

/// Where stored values live (`--secret-arena`; see [`crate::store::arena`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecretArena {
    /// The best the kernel and the limits allow: memfd_secret, else an
    /// mlocked mapping, else the heap.
    #[default]
    Auto,
    /// memfd_secret only: the heap when the kernel refuses it.
    MemfdSecret,
    /// An mlocked, undumpable anonymous mapping only.
    Mlock,
    /// The heap (wiped on free): no arena.
    Heap,
}

/// What to do when the snapshot or journal cannot be loaded at startup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SnapshotOnError {
    /// Refuse to start, naming the file and the reason.
    #[default]
    Refuse,
    /// Move the files aside (`*.discarded`), log it loudly, and start empty.
    Discard,
}

/// Everything `serve` needs, checked.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The TLS listener.
    pub listen: SocketAddr,
    /// The scratch directory (a tmpfs).
    pub scratch_dir: PathBuf,
    /// Certificate, key and client CA files.
    pub tls: ServerTlsFiles,
    /// `--client-eku-required`: client certificates must carry the
    /// clientAuth Extended Key Usage.
    pub client_eku_required: bool,
    /// The plain-HTTP listener for probes and metrics, if any.
    pub ops_listen: Option<SocketAddr>,
    /// The policy file, if any.
    pub policy: Option<PathBuf>,
    /// TTLs and size limits of the API.
    pub api: ApiSettings,
    /// The store's memory budget in bytes.
    pub max_memory: u64,
    /// Where stored values live.
    pub secret_arena: SecretArena,
    /// Snapshot mode.
    pub snapshot: SnapshotSetting,
    /// Snapshot key file.
    pub snapshot_key_file: Option<PathBuf>,
    /// Time between snapshots.
    pub snapshot_interval: Duration,
    /// What to do with a snapshot or journal that cannot be loaded.
    pub snapshot_on_error: SnapshotOnError,
    /// Refuse to start on self-check warnings too.
    pub strict: bool,
    /// Requests a second per identity, if limited.
    pub rate_limit: Option<u32>,
    /// Where audit lines go instead of stderr.
    pub audit_log: Option<PathBuf>,
    /// How often the TLS files and the policy are checked for changes.
    pub reload_interval: Duration,
    /// Allow running as root.
    pub allow_root: bool,
    /// Connection deadlines and caps.
    pub limits: Limits,
}

impl ServeConfig {
    /// A configuration with every setting at its default (the flags'
    /// defaults, named above) but the three that have none. `max_memory`
    /// follows the cgroup limit as `--max-memory` does. `dev` and the tests
    /// start from here and change what they need.
    pub fn new(listen: SocketAddr, scratch_dir: PathBuf, tls: ServerTlsFiles) -> ServeConfig {
        ServeConfig {
            listen,
            scratch_dir,
            tls,
            client_eku_required: true,
            ops_listen: None,
            policy: None,
            api: ApiSettings::default(),
            max_memory: default_max_memory(),
            secret_arena: SecretArena::Auto,
            snapshot: SnapshotSetting::Off,
            snapshot_key_file: None,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            snapshot_on_error: SnapshotOnError::Refuse,
            strict: false,
            rate_limit: None,
            audit_log: None,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            allow_root: false,
            limits: Limits::default(),
        }
    }
}

/// A combination of flags that does not work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A flag's value is out of range or conflicts with another.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// A flag that this build does not implement yet.
    #[error("{flag} {value} is not supported by this version of tmpvault yet")]
    Unsupported {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
    },
}

impl ServeConfig {
    /// Checks how the flags fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |flag, reason: String| Err(ConfigError::Invalid { flag, reason });
        if self.api.default_ttl.is_zero() {
            return invalid("--default-ttl", "must be greater than zero".into());
        }
        if self.api.default_ttl > self.api.max_ttl {
            return invalid(
                "--default-ttl",
                format!(
                    "{} is longer than --max-ttl {}",
                    format_duration(self.api.default_ttl),
                    format_duration(self.api.max_ttl)
                ),
            );
        }
        if self.api.max_value_bytes == 0 || self.api.max_value_bytes > MAX_VALUE_BYTES_CEILING {
            return invalid(
                "--max-value-bytes",
                format!(
                    "must be from 1 byte to {}",
                    ByteSize(MAX_VALUE_BYTES_CEILING)
                ),
            );
        }
        if self.max_memory < self.api.max_value_bytes {
            return invalid(
                "--max-memory",
                format!(
                    "{} cannot hold even one value of --max-value-bytes {}",
                    ByteSize(self.max_memory),
                    ByteSize(self.api.max_value_bytes)
                ),
            );
        }
        if self.limits.max_connections == 0 {
            return invalid("--max-connections", "must be at least 1".into());
        }
        if self.snapshot != SnapshotSetting::Off {
            self.validate_snapshot()?;
        }
        if self.rate_limit == Some(0) {
            return invalid("--rate-limit", "must be at least 1 request a second".into());
        }
        Ok(())
    }

    /// Checks the `--snapshot*` flags. The key file's content, and whether
    /// a plaintext snapshot would stay on tmpfs, are the self-check's
    /// `snapshot.key`.
    fn validate_snapshot(&self) -> Result<(), ConfigError> {
        let invalid = |flag, reason: &str| {
            Err(ConfigError::Invalid {
                flag,
                reason: reason.to_owned(),
            })
        };
        match (self.snapshot, &self.snapshot_key_file) {
            (SnapshotSetting::Encrypted, None) => {
                return invalid(
                    "--snapshot-key-file",
                    "--snapshot encrypted needs a key file (make one with tmpvault keygen --out \
                     FILE)",
                )
            }
            (SnapshotSetting::Plain, Some(_)) => {
                return invalid(
                    "--snapshot-key-file",
                    "a key file is only used with --snapshot encrypted; --snapshot plain writes \
                     unencrypted files",
                )
            }
            _ => {}
        }
        if self.snapshot_interval.is_zero() {
            return invalid("--snapshot-interval", "must be greater than zero");
        }
        Ok(())
    }
}
