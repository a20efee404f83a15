//! `tmpvault dev`: the zero-config start for a newcomer.
//!
//! Makes a fresh 0700 directory on tmpfs (under `/dev/shm` unless
//! `--scratch-dir` is given), generates a CA, a server certificate for
//! localhost and a client certificate there, serves on 127.0.0.1:8443, and
//! prints `export` lines and `curl` commands that work as pasted. On Ctrl-C
//! the store is wiped and the generated directory removed.

use std::fs::DirBuilder;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::app::{self, AppError, Mode};
use crate::cmd::flags::ArenaArgs;
use crate::config::{LogFormat, ServeConfig};
use crate::posture::harden::HardeningReport;
use crate::tls::pki::{ClientName, DevPki, PkiError};
use crate::tls::ServerTlsFiles;

/// Flags of `dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address of the TLS listener.
    #[arg(long, env = "TMPVAULT_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Directory for the generated certificates [default: a new private dir under /dev/shm].
    #[arg(long, env = "TMPVAULT_SCRATCH_DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "TMPVAULT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Where stored values live, as for `serve`.
    #[command(flatten)]
    pub arena: ArenaArgs,
}

/// Why `dev` could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The scratch directory could not be made.
    #[error("creating the dev directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Certificates could not be generated.
    #[error("generating dev certificates: {0}")]
    Pki(#[from] PkiError),
    /// The server could not start.
    #[error(transparent)]
    App(#[from] AppError),
}

/// The identity of the generated client certificate.
pub const DEV_CLIENT: &str = "dev-client";

fn fresh_dir(requested: Option<&Path>) -> Result<PathBuf, DevError> {
    let create = |path: PathBuf| {
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map(|()| path.clone())
            .map_err(|source| DevError::Directory { path, source })
    };
    if let Some(dir) = requested {
        // A given directory is the user's: make a private subdirectory in it
        // and remove only that.
        return create(dir.join(format!("tmpvault-dev-{}", std::process::id())));
    }
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        tracing::warn!("/dev/shm is missing; using the temp dir, which may not be tmpfs");
        std::env::temp_dir()
    };
    let mut suffix = [0u8; 4];
    let _ = getrandom::fill(&mut suffix);
    let name = format!("tmpvault-dev-{}", u32::from_le_bytes(suffix));
    create(base.join(name))
}

fn banner(addr: std::net::SocketAddr, pki: &DevPki) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let url = if addr.is_ipv6() {
        format!("https://[{host}]:{}", addr.port())
    } else {
        format!("https://{host}:{}", addr.port())
    };
    format!(
        r#"
tmpvault dev server on {url} (Ctrl-C to stop; the store and these files are wiped on exit)

# Point the CLI and curl at it:
export TMPVAULT_ADDR={url}
export TMPVAULT_CACERT={ca}
export TMPVAULT_CLIENT_CERT={cert}
export TMPVAULT_CLIENT_KEY={key}

# Store a secret for 10 minutes, then read it back:
curl --cacert "$TMPVAULT_CACERT" --cert "$TMPVAULT_CLIENT_CERT" --key "$TMPVAULT_CLIENT_KEY" \
  -X PUT --data-binary 's3cr3t' "$TMPVAULT_ADDR/v1/secrets/demo/db-password?ttl=10m"
curl --cacert "$TMPVAULT_CACERT" --cert "$TMPVAULT_CLIENT_CERT" --key "$TMPVAULT_CLIENT_KEY" \
  "$TMPVAULT_ADDR/v1/secrets/demo/db-password"

# Or with the CLI (in another terminal, after the exports; from a checkout,
# install it with `cargo install --path .`, or write
# `cargo run --release --` in place of `tmpvault`):
#   echo -n s3cr3t | tmpvault put demo/db-password --ttl 10m
#   tmpvault get demo/db-password
"#,
        ca = pki.ca_cert.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
    )
}

/// Runs the dev server until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs, hardening: HardeningReport) -> Result<(), DevError> {
    let dir = fresh_dir(args.scratch_dir.as_deref())?;
    let result = serve(&args, &dir, hardening).await;
    if let Err(error) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), %error, "could not remove the dev directory");
    }
    result
}

async fn serve(args: &DevArgs, dir: &Path, hardening: HardeningReport) -> Result<(), DevError> {
    let pki = DevPki::generate(dir, &ClientName::CommonName(DEV_CLIENT.into()))?;
    let config = ServeConfig {
        // dev runs wherever a developer is, root included (a warning).
        allow_root: true,
        secret_arena: args.arena.secret_arena,
        ..ServeConfig::new(
            args.listen,
            dir.to_owned(),
            ServerTlsFiles {
                cert: pki.server_cert.clone(),
                key: pki.server_key.clone(),
                client_ca: pki.ca_cert.clone(),
            },
        )
    };
    let running = app::start(&config, Mode::Dev, hardening).await?;
    println!("{}", banner(running.local_addr(), &pki));
    running
        .run(crate::http::server::shutdown_signal_or_hangup())
        .await;
    Ok(())
}
