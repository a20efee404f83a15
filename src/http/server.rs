//! The TLS server: accept loop, a deadline on every phase, the connection
//! cap, and graceful shutdown.
//!
//! Shaped after tokio-rustls's `examples/server.rs` and hyper-util's
//! `examples/server_graceful.rs`:
//!
//! - every connection is accepted; handshakes have their own allowance and
//!   places are taken only after one, with the longest idle connection
//!   closed to make room (`admission`), so clients that never finish a
//!   handshake cannot starve authenticated ones;
//! - accept errors (EMFILE, ENFILE, ECONNABORTED) back off exponentially
//!   instead of spinning;
//! - each connection has a handshake deadline, hyper's header-read deadline,
//!   an idle deadline (no request in flight), a response deadline (a
//!   response in flight that writes nothing is ended), a maximum age (one handshake's
//!   identity does not last for ever) and, in the API, a body deadline;
//! - after a client CA reload, a connection whose certificate no longer
//!   verifies against the new bundle is closed (after its in-flight
//!   requests), so removing a CA removes its clients, not only new ones;
//! - on shutdown the listener closes, every connection is told to finish its
//!   in-flight requests (GOAWAY / `Connection: close`), and the drain has its
//!   own deadline; then the store is wiped.
//!
//! Each of those ends a connection the same way: hyper's graceful shutdown
//! (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close` on the response in flight,
//! or at once when idle), so clients reconnect cleanly.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::access::audit::{self, AuditInfo};
use crate::config::Limits;
use crate::http::admission::{Activity, Admission, Delivery, Expired, Slot};
use crate::http::api::{route_template, unindexed, Api, ResponseBody};
use crate::http::counters::RequestCounters;
use crate::http::early::Drained;
use crate::http::h2guard::H2Guard;
use crate::http::onwake::OnWake;
use crate::http::problem::ApiError;
use crate::http::wipe::ZeroedReads;
use crate::store::Store;
use crate::tls::identity::{self, Identity};
use crate::tls::{ClientVerifier, ServerTls};
use hyper::body::Body;
use hyper::header::{HeaderName, HeaderValue};

/// The response header that carries the audit line's request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How large an HTTP/2 header block is decoded. Past `--max-header-bytes`
/// and up to this, the stream is answered 431 (a problem document) and the
/// connection goes on serving its other streams; past this, h2 answers 431
/// itself where it can keep its HPACK state, else the connection ends with
/// GOAWAY COMPRESSION_ERROR. 128 KiB takes the 100 KB header of a
/// misconfigured client (a cookie jar, a token pasted twice) and still
/// bounds what one stream's headers can cost.
const H2_HEADER_DECODE_LIMIT: u32 = 128 * 1024;

/// Gives `builder` tmpvault's HTTP/2 settings. Each limit is set rather
/// than left to hyper's and h2's defaults; the values and the reasons are
/// at their constants (and in the README, "HTTP/2 limits"). The
/// control-frame flood guard is below hyper, in `Connection::serve`.
/// Public so that the benchmark's baseline serves HTTP/2 exactly so.
pub fn configure_http2(builder: &mut auto::Builder<TokioExecutor>, max_header_bytes: usize) {
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS)
        // Decoded past `--max-header-bytes` so that the stream, not the
        // connection, is refused (431 in the service).
        .max_header_list_size(
            H2_HEADER_DECODE_LIMIT.max(u32::try_from(max_header_bytes).unwrap_or(u32::MAX)),
        )
        .max_frame_size(HTTP2_MAX_FRAME_SIZE)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .adaptive_window(false)
        .max_send_buf_size(HTTP2_MAX_SEND_BUF_SIZE)
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT);
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("binding the TLS listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// Flags and counters shared by the TLS server, the ops listener and tests.
#[derive(Debug)]
pub struct Health {
    /// True once shutdown has begun.
    pub draining: AtomicBool,
    /// True once the drain is over (every connection closed, or the drain
    /// deadline passed): what is stored is about to be snapshotted and
    /// wiped, so a request that starts now is answered 503.
    pub stopped: AtomicBool,
    /// True once the snapshot (if any) has been loaded.
    pub snapshot_loaded: AtomicBool,
    /// TLS handshakes that failed or timed out.
    pub handshake_failures: AtomicU64,
    /// TLS connections open now.
    pub connections_open: AtomicU64,
    /// TLS handshakes completed.
    pub handshakes: AtomicU64,
    /// Of those, the ones whose key exchange was post-quantum hybrid
    /// (X25519MLKEM768).
    pub handshakes_post_quantum: AtomicU64,
    /// Connections closed because a client CA reload no longer trusts them.
    pub closed_untrusted: AtomicU64,
    /// Connections closed at `--max-connection-age`.
    pub closed_max_age: AtomicU64,
    /// Handshakes ended because newer ones needed the allowance.
    pub handshakes_evicted: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub closed_for_room: AtomicU64,
    /// Authenticated connections closed because no place freed up.
    pub refused_no_place: AtomicU64,
    /// Connections ended because their responses made no progress.
    pub closed_stalled: AtomicU64,
    /// HTTP/2 connections ended with GOAWAY ENHANCE_YOUR_CALM for a
    /// control-frame flood (see [`crate::http::h2guard`]).
    pub http2_flood_closed: AtomicU64,
    /// Requests by route and status.
    pub requests: RequestCounters,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            draining: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            snapshot_loaded: AtomicBool::new(true),
            handshake_failures: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            handshakes_post_quantum: AtomicU64::new(0),
            closed_untrusted: AtomicU64::new(0),
            closed_max_age: AtomicU64::new(0),
            handshakes_evicted: AtomicU64::new(0),
            closed_for_room: AtomicU64::new(0),
            refused_no_place: AtomicU64::new(0),
            closed_stalled: AtomicU64::new(0),
            http2_flood_closed: AtomicU64::new(0),
            requests: RequestCounters::default(),
        }
    }
}

impl Health {
    /// What `/readyz` answers: snapshot loaded and not draining. (The
    /// self-check needs no flag: `serve` never starts when it fails.)
    pub fn ready(&self) -> bool {
        self.snapshot_loaded.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection(Arc<Health>);

impl OpenConnection {
    fn new(health: &Arc<Health>) -> OpenConnection {
        health.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(health))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

// ---- HTTP/2 limits (hyper's `http2()` builder in `Server::run`)

/// Streams a client may have open at once on one connection (hyper: 200).
/// A sidecar's client multiplexes a few requests at a time; 64 leaves
/// room for a busy pool while bounding what one connection can pin:
/// 64 streams x (a 64 KiB value in flight + the send buffer below). More
/// are refused with RST_STREAM REFUSED_STREAM (RFC 9113 §5.1.2).
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 64;

/// Streams the client resets before hyper has accepted them, at once,
/// before GOAWAY ENHANCE_YOUR_CALM: the rapid-reset defence
/// (CVE-2023-44487). h2's own default, written down: a client that resets
/// 20 requests it has only just sent is not fetching secrets.
pub const HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Streams the server itself resets for the client's errors (malformed
/// headers, streams over the concurrency limit), per connection, before
/// GOAWAY ENHANCE_YOUR_CALM (hyper: 1,024). A correct client causes none,
/// except for the streams it opens before it has read our SETTINGS (at
/// most its own default of 100); 256 covers that twice over and still
/// ends a client that keeps provoking resets long before it costs much.
pub const HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;

/// Largest frame the client may send: the RFC's minimum and h2's default,
/// 16 KiB. h2 reads each frame whole before acting on it, so this bounds
/// that buffer, and with the header list limit it sets how many
/// CONTINUATION frames h2 accepts before GOAWAY (the CVE-2024-27316
/// class): 10 with [`H2_HEADER_DECODE_LIMIT`]'s 128 KiB.
pub const HTTP2_MAX_FRAME_SIZE: u32 = 16 * 1024;

/// Bytes a client may send on one stream before the server has read them
/// (hyper: 1 MiB). Request bodies are at most `--max-value-bytes` (64 KiB
/// by default); 256 KiB lets a default-sized PUT arrive in one round trip
/// and bounds what a stream whose body is not read can queue.
pub const HTTP2_STREAM_WINDOW: u32 = 256 * 1024;

/// Bytes a client may send on all its streams together before the server
/// has read them: the bound on unread request data per connection
/// (hyper's default, 1 MiB, written down). The adaptive (BDP) window is
/// off, so it never grows.
pub const HTTP2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Response bytes h2 queues per stream beyond what the client's window
/// lets it send (hyper: 400 KiB). 64 KiB is one default-sized value: a
/// stream waiting on a client that does not open its window queues that
/// much, not six times it.
pub const HTTP2_MAX_SEND_BUF_SIZE: usize = 64 * 1024;

/// How often an HTTP/2 connection with no frames from the client is
/// PINGed, to find peers that vanished without a FIN.
pub const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a keep-alive PING may go unanswered before the connection is
/// closed. Within the 60 s idle timeout, so a dead peer is found by one.
pub const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    tls: Arc<ArcSwap<ServerConfig>>,
    trust: Arc<watch::Sender<Arc<ClientVerifier>>>,
    api: Arc<Api>,
    limits: Limits,
    health: Arc<Health>,
}

impl Server {
    /// Binds the listener. Nothing is accepted until [`Server::run`].
    pub async fn bind(
        addr: SocketAddr,
        tls: ServerTls,
        api: Api,
        limits: Limits,
        health: Arc<Health>,
    ) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server {
            listener,
            tls: Arc::new(ArcSwap::new(tls.config)),
            trust: Arc::new(watch::Sender::new(tls.client_verifier)),
            api: Arc::new(api),
            limits,
            health,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The store behind the API.
    pub fn store(&self) -> Store {
        self.api.store().clone()
    }

    /// Health flags shared with the ops listener.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// The TLS configuration new handshakes use; store a new one to reload
    /// (open connections keep the one they were made with).
    pub fn tls_handle(&self) -> Arc<ArcSwap<ServerConfig>> {
        Arc::clone(&self.tls)
    }

    /// The client verifier open connections are held to; send a new one
    /// after a client CA reload, and every connection checks its
    /// certificate against it.
    pub fn trust_handle(&self) -> Arc<watch::Sender<Arc<ClientVerifier>>> {
        Arc::clone(&self.trust)
    }

    /// Serves until `shutdown` completes, then drains: waiting GETs are
    /// answered, connections get until `drain_timeout` to finish, and
    /// [`Health::stopped`] is set. What is stored is the caller's to
    /// snapshot and wipe (`app::Service::run`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listener,
            tls,
            trust,
            api,
            limits,
            health,
        } = self;
        let limits = Arc::new(limits);
        let admission = Arc::new(Admission::new(limits.max_connections));
        // `true` once draining; every connection watches it. Each connection
        // task holds a clone of `live`, so `all_closed` ends when the last
        // one is gone.
        let (draining, _) = watch::channel(false);
        let (live, mut all_closed) = mpsc::channel::<()>(1);
        let builder = Arc::new(connection_builder(&limits));

        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(5);
        loop {
            let (tcp, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => {
                        backoff = Duration::from_millis(5);
                        accepted
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            let acceptor = TlsAcceptor::from(tls.load_full());
            let connection = Connection {
                api: Arc::clone(&api),
                limits: Arc::clone(&limits),
                health: Arc::clone(&health),
                builder: Arc::clone(&builder),
                draining: draining.subscribe(),
                trust: trust.subscribe(),
                admission: Arc::clone(&admission),
            };
            let open = OpenConnection::new(&health);
            let live = live.clone();
            tokio::spawn(async move {
                connection.serve(tcp, peer, acceptor).await;
                drop(open);
                drop(live);
            });
        }

        drop(listener);
        drop(live);
        health.draining.store(true, Ordering::Release);
        // Waiting GETs answer now (304), or they would hold up the drain.
        api.store().release_waiters();
        draining.send_replace(true);
        tracing::info!(
            connections = health.connections_open.load(Ordering::Relaxed),
            "shutting down: draining connections"
        );
        tokio::select! {
            _ = all_closed.recv() => tracing::info!("all connections drained"),
            () = tokio::time::sleep(limits.drain_timeout) => {
                tracing::warn!(timeout_s = limits.drain_timeout.as_secs(), "drain deadline passed; closing remaining connections");
            }
        }
        health.stopped.store(true, Ordering::Release);
    }
}

/// hyper's connection builder with every HTTP/1.1 and HTTP/2 setting of
/// `limits`.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(100)
        // Without it, once a request's body is in, hyper reads ahead to
        // notice a client hanging up mid-request. That read finds the
        // buffer still referenced by the request in flight, so hyper
        // allocates a fresh 8 KiB one: per request, an allocation and a
        // wipe of the old buffer on free (~8,700 instructions, a fifth
        // of a PUT). With it, the buffer is reused, and a client that
        // shuts down its sending side after a request gets its answer.
        .half_close(true);
    configure_http2(&mut builder, limits.max_header_bytes);
    builder
}

/// What one connection task needs.
struct Connection {
    api: Arc<Api>,
    limits: Arc<Limits>,
    health: Arc<Health>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// Becomes `true` when the server drains.
    draining: watch::Receiver<bool>,
    /// The client verifier of the latest good client CA bundle.
    trust: watch::Receiver<Arc<ClientVerifier>>,
    /// The handshake allowance and the places.
    admission: Arc<Admission>,
}

impl Connection {
    /// The TLS handshake, under its deadline and the handshake allowance
    /// (a newer handshake from the same address may evict this one): the
    /// stream, the client's chain (kept to check it again after a client
    /// CA reload), its identity, and the handshake slot, held until the
    /// connection has a place. `None` when the connection is over.
    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        acceptor: TlsAcceptor,
    ) -> Option<(
        TlsStream<ZeroedReads<TcpStream>>,
        Vec<CertificateDer<'static>>,
        Identity,
        Slot,
    )> {
        // Small responses must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let slot = self.admission.begin_handshake(peer.ip());
        let handshake = tokio::time::timeout(
            self.limits.handshake_timeout,
            acceptor.accept(ZeroedReads::new(tcp)),
        );
        let handshake = tokio::select! {
            result = handshake => result,
            () = slot.evicted() => {
                self.health.handshakes_evicted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "TLS handshake ended to let a newer one in");
                return None;
            }
        };
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                self.health
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                self.health
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "TLS handshake timed out");
                return None;
            }
        };
        let session = tls.get_ref().1;
        self.health.handshakes.fetch_add(1, Ordering::Relaxed);
        let group = session
            .negotiated_key_exchange_group()
            .map(|group| group.name());
        if group == Some(rustls::NamedGroup::X25519MLKEM768) {
            self.health
                .handshakes_post_quantum
                .fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(%peer, key_exchange = ?group, "TLS handshake done");
        // The chain is kept to check it again after a client CA reload.
        let chain: Vec<_> = session.peer_certificates().unwrap_or_default().to_vec();
        let identity: Identity = match chain.first().map(identity::from_certificate) {
            Some(Ok(identity)) => identity,
            // The verifier has already refused such a certificate.
            Some(Err(error)) => {
                tracing::debug!(%peer, %error, "client certificate names no identity");
                return None;
            }
            None => Arc::from(identity::ANONYMOUS),
        };
        Some((tls, chain, identity, slot))
    }

    async fn serve(mut self, tcp: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor) {
        let Some((tls, chain, identity, slot)) = self.handshake(tcp, peer, acceptor).await else {
            return;
        };
        // For the log line if a CA reload (or a flood) closes this connection.
        let named = Arc::clone(&identity);
        let named_for_flood = Arc::clone(&identity);

        let activity = Arc::new(Activity::new());
        // A place among the established connections; the handshake slot is
        // kept until then, so waiting for one is bounded by the allowance.
        let place = tokio::select! {
            place = self.admission.place(Arc::clone(&activity)) => place,
            () = slot.evicted() => None,
        };
        drop(slot);
        let Some(place) = place else {
            self.health.refused_no_place.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "no place for the connection: every connection is busy");
            return;
        };
        let health = Arc::clone(&self.health);
        let flooded = move || {
            health.http2_flood_closed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, identity = %named_for_flood, "closing HTTP/2 connection: control-frame flood (GOAWAY ENHANCE_YOUR_CALM)");
        };
        let io = TokioIo::new(Tracked {
            inner: H2Guard::new(tls, flooded),
            activity: Arc::clone(&activity),
        });
        // What every request on this connection needs, behind one
        // per-connection `Arc`: cloning it for each request touches a
        // counter only this connection uses, where cloning the shared `Api`
        // and `Health` would bounce their counters between cores.
        let context = Arc::new(RequestContext {
            api: Arc::clone(&self.api),
            health: Arc::clone(&self.health),
            identity,
            max_header_bytes: self.limits.max_header_bytes,
            activity: Arc::clone(&activity),
        });
        let service = service_fn(move |request: Request<Incoming>| {
            let context = Arc::clone(&context);
            async move { Ok::<_, Infallible>(context.answer(request).await) }
        });
        let connection = self.builder.serve_connection(io, service).into_owned();
        tokio::pin!(connection);
        let (idle_timeout, response_timeout) =
            (self.limits.idle_timeout, self.limits.response_timeout);
        let too_old = tokio::time::sleep(self.limits.max_connection_age);
        tokio::pin!(too_old);
        // Once set, hyper has been told to finish and close; only the
        // connection's end and the idle deadline are waited for then.
        let mut closing = false;
        loop {
            // Requests start and end without waking this loop, so it looks
            // again at least every response deadline: a stall is seen
            // within two of them, an idle connection within the idle
            // timeout plus one.
            let look_again = Instant::now() + response_timeout.min(idle_timeout);
            let wake_at = activity
                .deadline(idle_timeout, response_timeout)
                .map_or(look_again, |(at, _)| at.min(look_again));
            // The timers and watches are polled only when one of them has
            // fired, not at each of the socket's wake-ups (`onwake`).
            let (draining, trust) = (&mut self.draining, &mut self.trust);
            let side = OnWake::new(async {
                tokio::select! {
                    () = tokio::time::sleep_until(wake_at) => Side::Deadline,
                    () = place.evicted(), if !closing => Side::Evicted,
                    changed = draining.wait_for(|draining| *draining), if !closing => {
                        Side::Draining { gone: changed.is_err() }
                    }
                    changed = trust.changed(), if !closing => Side::Trust { gone: changed.is_err() },
                    () = &mut too_old, if !closing => Side::TooOld,
                }
            });
            let side = tokio::select! {
                biased;
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                side = side => side,
            };
            match side {
                Side::Deadline => {
                    match activity.expired(idle_timeout, response_timeout) {
                        Some(Expired::Idle) => {
                            tracing::debug!(%peer, "closing idle connection");
                        }
                        Some(Expired::Stalled) => {
                            self.health.closed_stalled.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "ending a connection whose responses made no progress");
                        }
                        None => continue,
                    }
                    return;
                }
                Side::Evicted => {
                    self.health.closed_for_room.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "closing the longest idle connection to make room");
                }
                // The server is gone without draining: stop.
                Side::Draining { gone: true } => return,
                Side::Draining { gone: false } => {}
                Side::Trust { gone } => {
                    if gone || self.trust.borrow_and_update().verifies(&chain) {
                        continue;
                    }
                    self.health.closed_untrusted.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, identity = %named, "closing connection: its client certificate does not verify against the reloaded client CA");
                }
                Side::TooOld => {
                    self.health.closed_max_age.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "closing connection at --max-connection-age");
                }
            }
            // GOAWAY (HTTP/2) or `Connection: close` (HTTP/1.1) after the
            // requests in flight; keep polling until hyper is done.
            closing = true;
            connection.as_mut().graceful_shutdown();
        }
    }
}

/// What ended a connection's wait, other than hyper's connection.
enum Side {
    /// The idle or stall deadline, or the time to look again.
    Deadline,
    /// Its place was taken for a newer connection.
    Evicted,
    /// The drain began (`gone`: the server ended without one).
    Draining { gone: bool },
    /// The client CA changed (`gone`: the server is ending).
    Trust { gone: bool },
    /// `--max-connection-age` passed.
    TooOld,
}

/// What a connection's requests share.
struct RequestContext {
    api: Arc<Api>,
    health: Arc<Health>,
    identity: Identity,
    max_header_bytes: usize,
    activity: Arc<Activity>,
}

impl RequestContext {
    /// One request, start to end: refused after the drain or for an
    /// HTTP/2 header list over the limit, else handled; counted, audited,
    /// and given its request id. The body is delivered under the
    /// connection's response deadline.
    async fn answer(&self, request: Request<Incoming>) -> Response<Delivery<ResponseBody>> {
        let RequestContext {
            api,
            health,
            identity,
            max_header_bytes,
            activity,
        } = self;
        let flight = activity.begin();
        let started = Instant::now();
        let request_id = audit::next_request_id();
        let method = request.method().clone();
        let route = route_template(request.uri().path());
        // Over HTTP/2 a body the handler does not read to its end is
        // drained, so an early answer is not lost (`early`).
        let http2 = request.version() == Version::HTTP_2;
        let request = request.map(|body| Drained::new(body, http2));
        let refused = if health.stopped.load(Ordering::Acquire) {
            // On a connection still open after the drain: the store
            // is about to be snapshotted and wiped, so nothing new
            // is taken on. (During the drain, requests are served.)
            Some(ApiError::Unavailable("the server is shutting down"))
        } else if http2 && header_bytes(&request) > *max_header_bytes {
            Some(ApiError::HeadersTooLarge {
                limit: *max_header_bytes,
            })
        } else {
            None
        };
        let (mut response, info) = match refused {
            Some(error) => (error.into_response(), AuditInfo::default()),
            None => api.handle(identity, request).await,
        };
        let status = response.status().as_u16();
        health.requests.record(route, status);
        audit::emit(&audit::Record {
            request_id,
            identity,
            method: method.as_str(),
            route,
            info: &info,
            status,
            bytes_out: response.body().size_hint().exact().unwrap_or(0),
            latency_us: started.elapsed().as_micros() as u64,
        });
        if let Ok(value) = HeaderValue::from_bytes(&audit::request_id_hex(request_id)) {
            response.headers_mut().insert(REQUEST_ID, unindexed(value));
        }
        response.map(|body| Delivery::new(body, flight))
    }
}

/// An HTTP/2 request's header list size as RFC 9113 §6.5.2 counts it
/// (name, value and 32 bytes per field), pseudo-headers included.
fn header_bytes<B>(request: &Request<B>) -> usize {
    let pseudo = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(0, |path| path.as_str().len())
        + request
            .uri()
            .authority()
            .map_or(0, |authority| authority.as_str().len())
        + 4 * 32;
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum::<usize>()
        + pseudo
}

/// An I/O wrapper that records writes for the response deadline.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Reads do not count: a peer that only sends (PINGs, say) is idle.
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.wrote();
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.wrote();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Completes on SIGTERM, SIGINT (Ctrl-C) or SIGHUP (the terminal closed):
/// for `tmpvault dev`, where SIGHUP must not leave keys behind.
pub async fn shutdown_signal_or_hangup() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::select! {
                () = shutdown_signal() => {}
                _ = hangup.recv() => tracing::info!("SIGHUP received (terminal closed)"),
            }
        }
        Err(_) => shutdown_signal().await,
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
