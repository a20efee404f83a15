//! tmpvault: a hardened, container-first secrets scratch service.
//!
//! Secrets live only in zeroizing memory, each with a deadline, and are served
//! over HTTPS to clients that present a certificate (mTLS). The binary in
//! `main.rs` only parses the command line and calls into this library, so the
//! tests drive the real server in-process.
//!
//! # Layout
//!
//! - [`alloc`]: [`alloc::ZeroizingAllocator`], the binary's global allocator,
//!   which wipes every heap block as it is freed (the copies hyper and rustls
//!   make); the crate's one `unsafe` module.
//! - [`cli`]: the clap command line (`serve`, `dev`, `selfcheck`, client
//!   commands) and its `TMPVAULT_*` environment variables.
//! - [`config`]: the validated server configuration, built from the command
//!   line in two stages (raw flags, then typed and checked values).
//! - [`units`]: parsing of durations (`90s`, `15m`, `2h`, `1d`, plain seconds)
//!   and byte sizes (`64KiB`, `256M`).
//! - [`key`]: what a key is (`[A-Za-z0-9._-]` segments joined by `/`).
//! - [`secret`]: [`secret::SecretBytes`], the one type that holds secret bytes;
//!   zeroized on drop, redacted in `Debug`.
//! - [`store`], [`watch`]: the sharded in-memory store, its deadline index
//!   and purge task, and the memory budget; the waiters of `?wait=`, woken
//!   by a change of their key.
//! - [`snapshot`], [`journal`], [`persistence`]: snapshots of the store to
//!   the scratch dir. The file format (AES-256-GCM or plain) and the key;
//!   the append-only journal that makes every acknowledged change survive
//!   `kill -9`; and the files, atomic writes, restore at startup, periodic
//!   and final snapshots.
//! - [`problem`]: the API error type and the one place where it becomes an RFC
//!   9457 `application/problem+json` response.
//! - [`api`]: the v1 routes: request parsing, handlers, responses.
//! - [`app`]: wiring from a validated config to a running service; `serve`,
//!   `dev` and the tests all start through it.
//! - [`identity`]: a client's typed identity (`spiffe://...`, `dns:...`,
//!   `cn:...`) from its verified certificate.
//! - [`policy`], [`ratelimit`], [`audit`]: who may do what under which
//!   prefix, requests per second per identity, and the one JSON audit line
//!   per request.
//! - [`trusted`]: the rule for files that decide who is trusted (server
//!   certificate, client CA, policy): only their owners may write them.
//! - [`reload`]: SIGHUP and file-change reload of certificates, client CA
//!   and policy, keeping the old configuration when the new one is bad.
//! - [`json`]: JSON written by hand for the audit line and the metadata
//!   object, the two outputs of every request.
//! - [`timefmt`]: RFC 3339 timestamps without allocation, for responses
//!   and audit lines.
//! - [`tls`], [`kx`]: rustls server and client configuration (ring provider,
//!   TLS 1.3, client certificates with the clientAuth EKU and a valid
//!   identity required) and PEM loading; the post-quantum hybrid key
//!   exchange X25519MLKEM768 built from ring's X25519 and RustCrypto's
//!   ML-KEM.
//! - [`server`]: the accept loop with a deadline on every phase, the
//!   connection cap, and graceful shutdown.
//! - [`h2guard`]: below hyper, the HTTP/2 control-frame flood guard
//!   (PING, SETTINGS, WINDOW_UPDATE, PRIORITY, empty DATA beyond a rate end
//!   the connection with GOAWAY ENHANCE_YOUR_CALM).
//! - [`pki`]: certificate generation for `tmpvault dev` and for tests.
//! - [`dev`]: `tmpvault dev`, the zero-config start.
//! - [`client`]: [`client::Client`], the async mTLS client behind the CLI's
//!   `put`/`get`/... commands.
//! - [`run`]: `tmpvault run`, secrets into a program's environment or into
//!   0400 files on a private tmpfs, and `--watch` to keep them current.
//! - [`logging`]: tracing setup (`--log-format text|json`).
//! - [`ops`], [`metrics`]: the plain-HTTP ops listener (`/healthz`,
//!   `/readyz`, `/metrics`), the `healthcheck` client, and the lock-free
//!   counters and Prometheus rendering behind `/metrics`.
//! - [`selfcheck`], [`sysinfo`], [`harden`]: the startup self-check, the
//!   `/proc` and `statfs` readings it is built on, and the hardening the
//!   process applies to itself.

pub mod admission;
pub mod alloc;
pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod client;
pub mod config;
pub mod dev;
pub mod early;
pub mod h2guard;
pub mod harden;
pub mod identity;
pub mod journal;
pub mod json;
pub mod key;
pub mod kx;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod persistence;
pub mod pki;
pub mod policy;
pub mod problem;
pub mod ratelimit;
pub mod reload;
pub mod run;
pub mod secret;
pub mod selfcheck;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod sysinfo;
pub mod timefmt;
pub mod tls;
pub mod trusted;
pub mod units;
pub mod watch;
