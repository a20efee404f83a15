//! Wiring: from a validated [`ServeConfig`] to a running service (store, TLS
//! configuration, API, listener). `serve`, `dev` and the tests all start the
//! server through [`start`], so they run the same code.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::Api;
use crate::config::{ConfigError, ServeConfig};
use crate::server::{Health, Server, ServerError};
use crate::store::Store;
use crate::tls::{self, TlsError};

/// Who is starting the server: `serve` refuses what `dev` only warns about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `tmpvault serve`: production.
    Serve,
    /// `tmpvault dev`: a local playground.
    Dev,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The flags do not fit together.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The TLS files could not be loaded.
    #[error("loading TLS configuration: {0}")]
    Tls(#[from] TlsError),
    /// The listener could not be bound.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Running as root without `--allow-root`.
    #[error("refusing to run as root (uid 0): run as an unprivileged user (the image uses 65532), or pass --allow-root")]
    Root,
}

/// A started service: the listener is bound, nothing is served yet.
pub struct Running {
    server: Server,
    addr: SocketAddr,
}

/// Builds and binds the service described by `config`.
pub async fn start(config: &ServeConfig, mode: Mode) -> Result<Running, AppError> {
    config.validate()?;
    if mode == Mode::Serve && !config.allow_root && nix::unistd::geteuid().is_root() {
        return Err(AppError::Root);
    }
    let tls = tls::server_config(&config.tls)?;
    let store = Store::new(config.max_memory);
    let api = Api::new(store, config.api.clone());
    let server = Server::bind(config.listen, tls, api, config.limits.clone()).await?;
    let addr = server.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    Ok(Running { server, addr })
}

impl Running {
    /// The bound TLS address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The store.
    pub fn store(&self) -> Store {
        self.server.store()
    }

    /// Health flags (draining, handshake failures).
    pub fn health(&self) -> Arc<Health> {
        self.server.health()
    }

    /// Serves until `shutdown` completes, drains, and wipes the store.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        tracing::info!(listen = %self.addr, "tmpvault is serving");
        self.server.run(shutdown).await;
        Ok(())
    }
}
