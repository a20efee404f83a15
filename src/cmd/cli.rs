//! The command line: `serve`, `dev`, `selfcheck`, `healthcheck`, `keygen`
//! and the client commands. Every `serve` flag also reads
//! `TMPVAULT_<FLAG_IN_CAPS>`; the client commands read `TMPVAULT_ADDR`,
//! `TMPVAULT_CACERT`, `TMPVAULT_CLIENT_CERT` and `TMPVAULT_CLIENT_KEY`.
//!
//! [`main`] is the whole program: parse, harden, run, map the outcome to an
//! exit code. Errors go to stderr as one line; `get` and `pop` write only
//! the raw bytes to stdout.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

use crate::cmd::client::{Client, ClientError, PutOptions};
use crate::cmd::dev::DevArgs;
use crate::cmd::flags::ArenaArgs;
use crate::config::ApiSettings;
use crate::config::Limits;
use crate::config::{self, LogFormat, ServeConfig, SnapshotOnError, SnapshotSetting};
use crate::posture::harden::{harden_process, HardeningReport};
use crate::store::arena::{Arena, ArenaSize};
use crate::text::units::{parse_bytes, parse_duration};
use crate::tls::{ClientTlsFiles, ServerTlsFiles};

/// Why a command failed. `main` prints it as `tmpvault: <message>` and
/// exits 1; each variant keeps its source.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag's value, or two flags together, that the command refuses.
    #[error("{0}")]
    Usage(String),
    /// Reading an input or writing an output.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// `put` or `push` of nothing without `--allow-empty`.
    #[error("refusing an empty value: {0} gave 0 bytes; pass --allow-empty to store one")]
    EmptyValue(String),
    /// The server could not start or serve.
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    /// `dev` could not start.
    #[error(transparent)]
    Dev(#[from] crate::cmd::dev::DevError),
    /// A client command's request, or its answer.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `healthcheck` found the service not ready, or no service.
    #[error(transparent)]
    Healthcheck(#[from] crate::ops::HealthcheckError),
    /// `run`, before or after the program started.
    #[error("run: {0}")]
    Run(#[from] crate::cmd::run::RunError),
    /// `keygen` could not write the key.
    #[error(transparent)]
    Keygen(#[from] crate::persist::snapshot::KeyFileError),
}

impl CliError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let what = what.into();
        move |source| CliError::Io { what, source }
    }
}

fn duration_arg(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|error| error.to_string())
}

fn bytes_arg(raw: &str) -> Result<u64, String> {
    parse_bytes(raw).map_err(|error| error.to_string())
}

/// tmpvault: secrets held in memory, briefly and safely, served over mTLS.
#[derive(Debug, Parser)]
#[command(name = "tmpvault", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (production).
    Serve(Box<ServeArgs>),
    /// Run a local server with generated certificates and print how to use it.
    Dev(DevArgs),
    /// Run the startup checks and print the report; exit 1 when they fail.
    Selfcheck(SelfcheckArgs),
    /// Exit 0 when the running server's /readyz answers 200 (for probes).
    Healthcheck(HealthcheckArgs),
    /// Make a new snapshot key: to FILE (mode 0600, never overwritten) or as base64 on stdout.
    Keygen(KeygenArgs),
    /// Fetch secrets and run a command with them in its environment or in
    /// files; with --watch, keep them current.
    Run(RunArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

/// Flags of `run`.
#[derive(Debug, Args)]
struct RunArgs {
    /// NAME=KEY: the secret KEY in the environment variable NAME
    /// (repeatable).
    #[arg(long = "env", value_name = "NAME=KEY")]
    env: Vec<String>,
    /// PATH=KEY: the secret KEY in the file PATH (mode 0400, in a private
    /// tmpfs directory; removed when the command exits) (repeatable).
    #[arg(long = "file", value_name = "PATH=KEY")]
    file: Vec<String>,
    /// Stay as the command's parent and follow changes of the secrets.
    #[arg(long)]
    watch: bool,
    /// With --watch: `restart` the command, or `signal:NAME` it (e.g.
    /// signal:HUP), after a secret changed (files are rewritten first).
    #[arg(
        long,
        value_name = "restart|signal:NAME",
        default_value = "restart",
        requires = "watch"
    )]
    on_change: String,
    /// Refuse environment values that are not UTF-8.
    #[arg(long)]
    require_utf8: bool,
    #[command(flatten)]
    client: ClientArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<std::ffi::OsString>,
}

impl RunArgs {
    fn plan(&self) -> Result<crate::cmd::run::Plan, CliError> {
        let mut secrets = Vec::new();
        for raw in &self.env {
            secrets.push(
                crate::cmd::run::parse_mapping("--env", raw)
                    .map_err(|error| CliError::Usage(error.to_string()))?,
            );
        }
        for raw in &self.file {
            secrets.push(
                crate::cmd::run::parse_mapping("--file", raw)
                    .map_err(|error| CliError::Usage(error.to_string()))?,
            );
        }
        let watch = if self.watch {
            Some(
                crate::cmd::run::parse_on_change(&self.on_change).map_err(|error| {
                    CliError::Usage(format!("--on-change {:?}: {error}", self.on_change))
                })?,
            )
        } else {
            None
        };
        Ok(crate::cmd::run::Plan {
            secrets,
            command: self.command.clone(),
            watch,
            require_utf8: self.require_utf8,
        })
    }
}

/// The client commands, which talk to a running server.
#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Store a secret from FILE or stdin.
    Put(PutArgs),
    /// Print a secret's raw bytes to stdout.
    Get(KeyArgs),
    /// Remove a secret or list.
    Rm(KeyArgs),
    /// List keys (metadata only) under an optional prefix.
    Ls(LsArgs),
    /// Set a new time to live on a key.
    Renew(RenewArgs),
    /// Append an item (from FILE or stdin) to a list.
    Push(PushArgs),
    /// Remove an item from a list and print its raw bytes.
    Pop(PopArgs),
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the TLS listener.
    #[arg(long, env = "TMPVAULT_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Scratch directory: must be a private tmpfs.
    #[arg(long, env = "TMPVAULT_SCRATCH_DIR", default_value = "/scratch")]
    scratch_dir: PathBuf,
    /// Server certificate chain (PEM).
    #[arg(long, env = "TMPVAULT_TLS_CERT")]
    tls_cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long, env = "TMPVAULT_TLS_KEY")]
    tls_key: PathBuf,
    /// CA bundle that signs client certificates (PEM).
    #[arg(long, env = "TMPVAULT_CLIENT_CA")]
    client_ca: PathBuf,
    /// Plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, env = "TMPVAULT_OPS_LISTEN")]
    ops_listen: Option<SocketAddr>,
    /// Access policy (JSON).
    #[arg(long, env = "TMPVAULT_POLICY")]
    policy: Option<PathBuf>,
    /// TTL of writes that give none.
    #[arg(long, env = "TMPVAULT_DEFAULT_TTL", default_value = "1h", value_parser = duration_arg)]
    default_ttl: Duration,
    /// Longest TTL a write may ask for.
    #[arg(long, env = "TMPVAULT_MAX_TTL", default_value = "24h", value_parser = duration_arg)]
    max_ttl: Duration,
    /// Largest secret or list item.
    #[arg(long, env = "TMPVAULT_MAX_VALUE_BYTES", default_value = "64KiB", value_parser = bytes_arg)]
    max_value_bytes: u64,
    /// Memory budget for stored data [default: half the cgroup memory limit, else 256MiB].
    #[arg(long, env = "TMPVAULT_MAX_MEMORY", value_parser = bytes_arg)]
    max_memory: Option<u64>,
    #[command(flatten)]
    arena: ArenaArgs,
    /// Snapshots of the store to the scratch directory.
    #[arg(long, env = "TMPVAULT_SNAPSHOT", value_enum, default_value = "off")]
    snapshot: SnapshotSetting,
    /// Key for encrypted snapshots (32 bytes, raw or base64).
    #[arg(long, env = "TMPVAULT_SNAPSHOT_KEY_FILE")]
    snapshot_key_file: Option<PathBuf>,
    /// Time between snapshots.
    #[arg(long, env = "TMPVAULT_SNAPSHOT_INTERVAL", default_value = "30s", value_parser = duration_arg)]
    snapshot_interval: Duration,
    /// A snapshot or journal that cannot be loaded (wrong key, tampered): refuse to start, or move it aside and start empty.
    #[arg(
        long,
        env = "TMPVAULT_SNAPSHOT_ON_ERROR",
        value_enum,
        default_value = "refuse"
    )]
    snapshot_on_error: SnapshotOnError,
    /// Refuse to start on self-check warnings, not only failures.
    #[arg(long, env = "TMPVAULT_STRICT")]
    strict: bool,
    /// Log format.
    #[arg(long, env = "TMPVAULT_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Requests a second allowed per client identity.
    #[arg(long, env = "TMPVAULT_RATE_LIMIT")]
    rate_limit: Option<u32>,
    /// Allow running as root.
    #[arg(long, env = "TMPVAULT_ALLOW_ROOT")]
    allow_root: bool,
    /// Append audit lines (JSON) to this file (mode 0600) instead of stderr.
    #[arg(long, env = "TMPVAULT_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// How often certificate, CA and policy files are checked for changes.
    #[arg(long, env = "TMPVAULT_RELOAD_INTERVAL", default_value = "5s", value_parser = duration_arg)]
    reload_interval: Duration,
    /// Require the clientAuth Extended Key Usage in client certificates
    /// (`--client-eku-required=false` accepts a certificate with no EKU at
    /// all, as RFC 5280 allows; one whose EKU lacks clientAuth never passes).
    #[arg(long, env = "TMPVAULT_CLIENT_EKU_REQUIRED", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    client_eku_required: bool,
    /// How long one connection may be used before it is closed gracefully
    /// (GOAWAY / `Connection: close`) and the client reconnects, so one
    /// handshake's identity does not last for ever.
    #[arg(long, env = "TMPVAULT_MAX_CONNECTION_AGE", default_value = "10m", value_parser = duration_arg)]
    max_connection_age: Duration,
    /// Longest a `GET ...?wait=D` may wait for a change (longer asks are
    /// shortened to it).
    #[arg(long, env = "TMPVAULT_MAX_WAIT", default_value = "5m", value_parser = duration_arg)]
    max_wait: Duration,
    /// Connections served at once (more wait in the backlog).
    #[arg(long, env = "TMPVAULT_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
}

impl ServeArgs {
    fn into_config(self) -> ServeConfig {
        let max_memory = self.max_memory.unwrap_or_else(config::default_max_memory);
        ServeConfig {
            listen: self.listen,
            scratch_dir: self.scratch_dir,
            tls: ServerTlsFiles {
                cert: self.tls_cert,
                key: self.tls_key,
                client_ca: self.client_ca,
            },
            client_eku_required: self.client_eku_required,
            ops_listen: self.ops_listen,
            policy: self.policy,
            api: ApiSettings {
                default_ttl: self.default_ttl,
                max_ttl: self.max_ttl,
                max_value_bytes: self.max_value_bytes,
                body_read_timeout: Limits::default().body_read_timeout,
                max_wait: self.max_wait,
            },
            max_memory,
            secret_arena: self.arena.secret_arena,
            snapshot: self.snapshot,
            snapshot_key_file: self.snapshot_key_file,
            snapshot_interval: self.snapshot_interval,
            snapshot_on_error: self.snapshot_on_error,
            strict: self.strict,
            rate_limit: self.rate_limit,
            audit_log: self.audit_log,
            reload_interval: self.reload_interval,
            allow_root: self.allow_root,
            limits: Limits {
                max_connections: self.max_connections,
                max_connection_age: self.max_connection_age,
                ..Limits::default()
            },
        }
    }
}

/// Flags of `selfcheck`: the ones that change what `serve` would check,
/// read from the same `TMPVAULT_*` variables so that an init step or exec
/// probe in the same container judges the same configuration.
#[derive(Debug, Args)]
pub struct SelfcheckArgs {
    /// Scratch directory: must be a private tmpfs.
    #[arg(long, env = "TMPVAULT_SCRATCH_DIR", default_value = "/scratch")]
    scratch_dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Fail on warnings too.
    #[arg(long, env = "TMPVAULT_STRICT")]
    strict: bool,
    /// Allow running as root.
    #[arg(long, env = "TMPVAULT_ALLOW_ROOT")]
    allow_root: bool,
    /// Server private key whose file mode is checked.
    #[arg(long, env = "TMPVAULT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Snapshot mode to check for.
    #[arg(long, env = "TMPVAULT_SNAPSHOT", value_enum, default_value = "off")]
    snapshot: SnapshotSetting,
    /// Snapshot key file to check.
    #[arg(long, env = "TMPVAULT_SNAPSHOT_KEY_FILE")]
    snapshot_key_file: Option<PathBuf>,
    /// Memory budget to compare with the cgroup limit.
    #[arg(long, env = "TMPVAULT_MAX_MEMORY", value_parser = bytes_arg)]
    max_memory: Option<u64>,
    #[command(flatten)]
    arena: ArenaArgs,
    /// Largest secret or list item (sizes the secret arena's blocks).
    #[arg(long, env = "TMPVAULT_MAX_VALUE_BYTES", default_value = "64KiB", value_parser = bytes_arg)]
    max_value_bytes: u64,
    /// Policy file (its presence, and that only its owner may write it).
    #[arg(long, env = "TMPVAULT_POLICY")]
    policy: Option<PathBuf>,
}

fn selfcheck_command(args: &SelfcheckArgs, hardening: &HardeningReport) -> ExitCode {
    let trusted_files: Vec<_> = args
        .policy
        .iter()
        .map(|path| crate::tls::trusted::TrustedFile {
            what: "policy",
            path: path.clone(),
        })
        .collect();
    let max_memory = args.max_memory.unwrap_or_else(config::default_max_memory);
    // Maps the arena `serve` would get, reports it, and unmaps it.
    let (_, arena) = Arena::open(
        args.arena.secret_arena,
        ArenaSize::for_process(max_memory, args.max_value_bytes),
    );
    let report = crate::posture::selfcheck::run(&crate::posture::selfcheck::Input {
        arena: &arena,
        trusted_files: &trusted_files,
        context: crate::posture::selfcheck::Context::Selfcheck,
        environment: crate::posture::selfcheck::Environment::detect(),
        scratch_dir: &args.scratch_dir,
        allow_root: args.allow_root,
        tls_key_file: args.tls_key.as_deref(),
        snapshot: args.snapshot,
        snapshot_key_file: args.snapshot_key_file.as_deref(),
        max_memory,
        policy_present: args.policy.is_some(),
        hardening,
        reload_error: None,
    });
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render_table());
    }
    if report.passes(args.strict) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Flags of `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the key here (base64, mode 0600); refuses an existing file. Without it the key goes to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn keygen_command(args: &KeygenArgs) -> Result<ExitCode, CliError> {
    let line = crate::persist::snapshot::keygen(args.out.as_deref())?;
    match (line, &args.out) {
        (Some(line), _) => {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes())
                .and_then(|()| out.flush())
                .map_err(CliError::io("writing stdout"))?;
        }
        (None, Some(path)) => eprintln!(
            "tmpvault: wrote a new snapshot key to {} (mode 0600); use it with --snapshot encrypted --snapshot-key-file {}",
            path.display(),
            path.display()
        ),
        (None, None) => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Flags of `healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The ops listener's address (`http://127.0.0.1:9090`, which asks /readyz) or a full URL to GET [default: /readyz on TMPVAULT_OPS_LISTEN, else http://127.0.0.1:9090/readyz].
    #[arg(long, env = "TMPVAULT_OPS_URL")]
    ops_url: Option<String>,
    /// The server's ops listener, to derive the default URL from.
    #[arg(long, env = "TMPVAULT_OPS_LISTEN", hide = true)]
    ops_listen: Option<SocketAddr>,
    /// Seconds to wait for an answer.
    #[arg(long, default_value = "3s", value_parser = duration_arg)]
    timeout: Duration,
}

/// Where the server is and how to prove who we are.
#[derive(Debug, Args)]
struct ClientArgs {
    /// Server address.
    #[arg(long, env = "TMPVAULT_ADDR", default_value = "https://127.0.0.1:8443")]
    addr: String,
    /// CA certificate that signed the server's certificate.
    #[arg(long, env = "TMPVAULT_CACERT")]
    cacert: PathBuf,
    /// Client certificate.
    #[arg(long, env = "TMPVAULT_CLIENT_CERT")]
    client_cert: PathBuf,
    /// Client private key.
    #[arg(long, env = "TMPVAULT_CLIENT_KEY")]
    client_key: PathBuf,
}

impl ClientArgs {
    fn client(&self) -> Result<Client, ClientError> {
        Client::new(
            &self.addr,
            &ClientTlsFiles {
                ca: self.cacert.clone(),
                cert: self.client_cert.clone(),
                key: self.client_key.clone(),
            },
        )
    }
}

#[derive(Debug, Args)]
struct KeyArgs {
    /// The key, e.g. `db/password`.
    key: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct PutArgs {
    /// The key, e.g. `db/password`.
    key: String,
    /// Read the value from this file; `-` or nothing reads stdin.
    file: Option<PathBuf>,
    /// Time to live, e.g. `10m` [default: the server's --default-ttl].
    #[arg(long)]
    ttl: Option<String>,
    /// Wipe the secret after this many reads.
    #[arg(long)]
    max_reads: Option<u32>,
    /// Media type served back on GET.
    #[arg(long)]
    content_type: Option<String>,
    /// Store an empty value (refused otherwise: an empty stdin is usually a missing pipe).
    #[arg(long)]
    allow_empty: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct LsArgs {
    /// Only keys starting with this prefix.
    #[arg(default_value = "")]
    prefix: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct RenewArgs {
    /// The key.
    key: String,
    /// The new time to live from now, e.g. `10m`.
    #[arg(long)]
    ttl: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct PushArgs {
    /// The list's key.
    key: String,
    /// Read the item from this file; `-` or nothing reads stdin.
    file: Option<PathBuf>,
    /// Time to live of the list if this push creates it.
    #[arg(long)]
    ttl: Option<String>,
    /// Push an empty item (refused otherwise: an empty stdin is usually a missing pipe).
    #[arg(long)]
    allow_empty: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct PopArgs {
    /// The list's key.
    key: String,
    /// Take the oldest item instead of the newest.
    #[arg(long)]
    oldest: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Reads a value from a file or stdin into wiped-on-drop memory. An empty
/// value is refused unless `allow_empty`: `tmpvault put KEY` with nothing
/// piped in (or a file truncated by mistake) would otherwise quietly store
/// an empty secret in place of the real one.
fn read_value(file: Option<&PathBuf>, allow_empty: bool) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let mut value = Zeroizing::new(Vec::new());
    let source = match file {
        Some(path) if path.as_os_str() != "-" => {
            let what = format!("reading {}", path.display());
            let mut file = std::fs::File::open(path).map_err(CliError::io(&what))?;
            file.read_to_end(&mut value).map_err(CliError::io(what))?;
            path.display().to_string()
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut value)
                .map_err(CliError::io("reading stdin"))?;
            "stdin".to_owned()
        }
    };
    if value.is_empty() && !allow_empty {
        return Err(CliError::EmptyValue(source));
    }
    Ok(value)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::io("starting the async runtime"))
}

/// The program: parse, run, map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tmpvault: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    // Hardening comes first, before the runtime starts any thread:
    // no_new_privs is per thread and only inherited by threads made later,
    // and nothing may have read a secret before core dumps are off.
    let hardening = match cli.command {
        Command::Serve(_) | Command::Dev(_) | Command::Selfcheck(_) | Command::Keygen(_) => {
            harden_process()
        }
        Command::Healthcheck(_) | Command::Client(_) | Command::Run(_) => {
            HardeningReport::not_run()
        }
    };
    match cli.command {
        Command::Selfcheck(args) => Ok(selfcheck_command(&args, &hardening)),
        Command::Keygen(args) => keygen_command(&args),
        Command::Healthcheck(args) => {
            let url = args
                .ops_url
                .clone()
                .unwrap_or_else(|| crate::ops::default_ops_url(args.ops_listen));
            // A current-thread runtime: a probe runs often and should be light.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(CliError::io("starting the async runtime"))?;
            runtime.block_on(crate::ops::healthcheck(&url, args.timeout))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            crate::ops::logging::init(args.log_format, args.audit_log.as_deref()).map_err(
                CliError::io(format!(
                    "opening the audit log {}",
                    args.audit_log
                        .as_deref()
                        .unwrap_or(std::path::Path::new(""))
                        .display()
                )),
            )?;
            let config = args.into_config();
            runtime()?.block_on(async {
                let running =
                    crate::app::start(&config, crate::app::Mode::Serve, hardening).await?;
                running.run(crate::http::server::shutdown_signal()).await;
                Ok::<(), CliError>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev(args) => {
            crate::ops::logging::init(args.log_format, None)
                .map_err(CliError::io("setting up logging"))?;
            runtime()?.block_on(crate::cmd::dev::run(args, hardening))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Client(command) => runtime()?.block_on(client_command(command)),
        // Its own runtime, single-threaded, and none at all when it execs.
        Command::Run(args) => {
            let plan = args.plan()?;
            let client = args.client.client()?;
            Ok(crate::cmd::run::run(&plan, &client)?)
        }
    }
}

async fn client_command(command: ClientCommand) -> Result<ExitCode, CliError> {
    let stdout = |bytes: &[u8]| {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(CliError::io("writing stdout"))
    };
    let print_json = |value: &serde_json::Value| {
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        stdout(format!("{text}\n").as_bytes())
    };
    match command {
        ClientCommand::Put(args) => {
            let value = read_value(args.file.as_ref(), args.allow_empty)?;
            let options = PutOptions {
                ttl: args.ttl.as_deref(),
                max_reads: args.max_reads,
                content_type: args.content_type.as_deref(),
            };
            let client = args.client.client()?;
            let meta = client
                .put(&args.key, Bytes::from_owner(value), &options)
                .await?;
            print_json(&meta)?;
        }
        ClientCommand::Get(args) => {
            let value = args.client.client()?.get(&args.key).await?;
            stdout(&value)?;
        }
        ClientCommand::Rm(args) => {
            args.client.client()?.delete(&args.key).await?;
        }
        ClientCommand::Ls(args) => {
            let client = args.client.client()?;
            let mut after: Option<String> = None;
            loop {
                let page = client
                    .list(
                        &args.prefix,
                        after.as_deref(),
                        Some(crate::http::api::MAX_LIST_LIMIT),
                    )
                    .await?;
                let mut lines = String::new();
                for item in page["items"].as_array().into_iter().flatten() {
                    lines.push_str(&format!(
                        "{}\t{}\t{}\t{}\n",
                        item["key"].as_str().unwrap_or(""),
                        item["kind"].as_str().unwrap_or(""),
                        item["size"],
                        item["expires_at"].as_str().unwrap_or(""),
                    ));
                }
                stdout(lines.as_bytes())?;
                match page["next"].as_str() {
                    Some(next) => after = Some(next.to_owned()),
                    None => break,
                }
            }
        }
        ClientCommand::Renew(args) => {
            let client = args.client.client()?;
            print_json(&client.renew(&args.key, &args.ttl).await?)?;
        }
        ClientCommand::Push(args) => {
            let item = read_value(args.file.as_ref(), args.allow_empty)?;
            let client = args.client.client()?;
            let meta = client
                .push(&args.key, Bytes::from_owner(item), args.ttl.as_deref())
                .await?;
            print_json(&meta)?;
        }
        ClientCommand::Pop(args) => {
            let client = args.client.client()?;
            stdout(&client.pop(&args.key, args.oldest).await?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The flags' defaults (clap needs them as text) are the named ones
    /// `ServeConfig::new` uses: a default changed in one place only fails
    /// here.
    #[test]
    fn serve_flags_default_to_the_named_defaults() {
        let cli = Cli::try_parse_from([
            "tmpvault",
            "serve",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--client-ca",
            "ca.pem",
        ])
        .expect("serve with only the required flags");
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        let from_flags = args.into_config();
        let named = ServeConfig::new(
            from_flags.listen,
            from_flags.scratch_dir.clone(),
            from_flags.tls.clone(),
        );
        assert_eq!(format!("{from_flags:?}"), format!("{named:?}"));
    }
}
