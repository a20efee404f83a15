//! Wiring: from a validated [`ServeConfig`] to a running service (store, TLS
//! configuration, API, listener). `serve`, `dev` and the tests all start the
//! server through [`start`], so they run the same code.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::access::policy::{Policy, PolicyError};
use crate::access::ratelimit::RateLimiter;
use crate::access::reload::{ReloadStatus, Reloader, Watched};
use crate::access::Access;
use crate::config::{ConfigError, ServeConfig};
use crate::http::api::Api;
use crate::http::server::{Health, Server, ServerError};
use crate::ops::Ops;
use crate::posture::harden::HardeningReport;
use crate::posture::selfcheck::{self, Context, SelfcheckInputs};
use crate::store::arena::ArenaSize;
use crate::store::Store;
use crate::tls::{self, TlsError};
use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;

/// Who is starting the server: `serve` refuses what `dev` only warns about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `tmpvault serve`: production.
    Serve,
    /// `tmpvault dev`: a local playground.
    Dev,
}

impl Mode {
    /// The self-check's judgement for this mode.
    fn context(self) -> Context {
        match self {
            Mode::Serve => Context::Serve,
            Mode::Dev => Context::Dev,
        }
    }
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
    /// The policy file is unreadable or invalid.
    #[error("loading the policy: {0}")]
    Policy(#[from] PolicyError),
    /// The ops listener could not be bound.
    #[error("binding the ops listener on {addr}: {source}")]
    OpsBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The self-check failed (or warned, with `--strict`).
    #[error("refusing to start: the self-check {verdict} on {checks} (report above)")]
    SelfCheck {
        /// `failed`, or `warned` under `--strict`.
        verdict: &'static str,
        /// The ids of the checks that stopped it.
        checks: String,
    },
    /// The snapshot could not be restored, or the scratch dir not written.
    #[error("snapshots: {0}")]
    Persistence(#[from] crate::persist::PersistenceError),
}

/// A started service: the listeners are bound, nothing is served yet.
pub struct Running {
    server: Server,
    addr: SocketAddr,
    ops: Option<(TcpListener, Arc<Ops>)>,
    ops_addr: Option<SocketAddr>,
    reloader: Option<(Reloader, std::time::Duration)>,
}

/// Builds and binds the service described by `config`, after the
/// self-check: printed to stderr as a table, and fatal in `serve` when a
/// check fails (or warns, with `--strict`). `hardening` is what the process
/// did to itself before the runtime started ([`HardeningReport::not_run`]
/// for in-process tests).
pub async fn start(
    config: &ServeConfig,
    mode: Mode,
    hardening: HardeningReport,
) -> Result<Running, AppError> {
    config.validate()?;
    // Files first: a missing or bad file is the error to show, not buried
    // under the self-check table.
    let tls = tls::server_tls(&config.tls, config.client_eku_required)?;
    let policy = config.policy.as_deref().map(Policy::load).transpose()?;
    let reload_status = Arc::new(ReloadStatus::default());
    // Before the store, the snapshot and the listener: every value, restored
    // or received, goes to the arena.
    let arena = crate::store::arena::install(
        config.secret_arena,
        ArenaSize::for_process(config.max_memory, config.api.max_value_bytes),
    );
    let checks = SelfcheckInputs::new(
        config,
        mode.context(),
        hardening,
        arena.clone(),
        Arc::clone(&reload_status),
    );
    let report = checks.run();
    eprint!("{}", report.render_table());
    if mode == Mode::Serve {
        passes(&report, config.strict)?;
    }
    let store = Store::new(config.max_memory);
    let access = Arc::new(Access {
        policy: ArcSwapOption::from(policy.map(Arc::new)),
        limiter: config.rate_limit.map(RateLimiter::new),
    });
    let live_checks = checks.clone();
    let api = Api::new(store.clone(), config.api.clone())
        .with_access(Arc::clone(&access))
        .with_selfcheck(Arc::new(move || live_checks.run().to_json()));
    let health = Arc::new(Health::default());
    // Restored before any listener is bound, so nothing is served (and
    // /readyz cannot answer) until the store is whole: `snapshot_loaded`
    // never needs to be false.
    let persistence = match crate::persist::Settings::from_config(config) {
        Some(settings) => Some(crate::persist::start(settings, &store).await?),
        None => None,
    };
    let ops = match config.ops_listen {
        Some(addr) => Some(
            bind_ops(
                addr,
                Ops {
                    health: Arc::clone(&health),
                    store,
                    persistence,
                    selfcheck: checks,
                },
            )
            .await?,
        ),
        None => None,
    };
    let server = Server::bind(config.listen, tls, api, config.limits.clone(), health).await?;
    let reloader = Reloader::new(
        Watched {
            files: config.tls.clone(),
            client_eku_required: config.client_eku_required,
            policy: config.policy.clone(),
        },
        server.tls_handle(),
        server.trust_handle(),
        access,
        reload_status,
    );
    let addr = server.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let ops_addr = ops
        .as_ref()
        .and_then(|(listener, _)| listener.local_addr().ok());
    Ok(Running {
        server,
        addr,
        ops,
        ops_addr,
        // In `dev` SIGHUP also stops the server (a closed terminal); a
        // reload just before that is harmless.
        reloader: Some((reloader, config.reload_interval)),
    })
}

/// `serve` starts only on a report that passes (`--strict`: without
/// warnings either); the error names the checks that stopped it.
fn passes(report: &selfcheck::Report, strict: bool) -> Result<(), AppError> {
    if report.passes(strict) {
        return Ok(());
    }
    let worst = report.status;
    Err(AppError::SelfCheck {
        verdict: if worst == selfcheck::Status::Fail {
            "failed"
        } else {
            "warned"
        },
        checks: report
            .checks
            .iter()
            .filter(|check| check.status == worst)
            .map(|check| check.id)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The ops listener, bound (it is served once the service runs).
async fn bind_ops(addr: SocketAddr, ops: Ops) -> Result<(TcpListener, Arc<Ops>), AppError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::OpsBind { addr, source })?;
    Ok((listener, Arc::new(ops)))
}

impl Running {
    /// The bound TLS address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound ops listener address, if there is one.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
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
    ///
    /// The ops listener outlives the drain, so `/readyz` answers 503 while
    /// in-flight requests finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let ops_task = self.ops.map(|(listener, ops)| {
            tracing::info!(listen = ?self.ops_addr, "ops listener serving /healthz, /readyz, /metrics");
            tokio::spawn(crate::ops::serve(listener, ops))
        });
        let reload_task = self
            .reloader
            .map(|(reloader, interval)| tokio::spawn(reloader.run(interval)));
        tracing::info!(listen = %self.addr, "tmpvault is serving");
        let store = self.server.store();
        self.server.run(shutdown).await;
        // The drain is over: with snapshots on, the final one, then the wipe.
        // It is blocking file I/O (and may wait for a periodic snapshot), so
        // it runs off the async workers that late connections still use.
        let snapshotting = store.clone();
        if tokio::task::spawn_blocking(move || snapshotting.before_wipe())
            .await
            .is_err()
        {
            tracing::error!("the final snapshot task panicked");
        }
        store.wipe_all();
        tracing::info!("store wiped");
        for task in ops_task.into_iter().chain(reload_task) {
            task.abort();
        }
    }
}
