//! tmpvault: a hardened, container-first secrets scratch service.
//!
//! Secrets live only in zeroizing memory, each with a deadline, and are served
//! over HTTPS to clients that present a certificate (mTLS). The binary in
//! `main.rs` only parses the command line and calls into this library, so the
//! tests drive the real server in-process.
//!
//! # Layout
//!
//! One folder per layer; a module imports only from the layers below it
//! (top to bottom here), never from a layer above, and no two files import
//! each other.
//!
//! - [`cmd`]: the command line (`serve`, `dev`, `selfcheck`, `run`, the
//!   client commands) and its `TMPVAULT_*` variables.
//! - [`app`]: wiring from a validated config to a running service, and its
//!   end: drain, final snapshot, wipe. `serve`, `dev` and the tests all
//!   start through it.
//! - [`ops`]: the plain-HTTP ops listener (`/healthz`, `/readyz`,
//!   `/metrics`), the `healthcheck` client, Prometheus rendering, logging.
//! - [`http`]: the HTTPS server (accept loop, deadlines, admission, HTTP/2
//!   guards), the v1 routes and the RFC 9457 problem responses.
//! - [`posture`]: the startup self-check, the process's hardening and the
//!   wiping global allocator (one of the crate's three `unsafe` modules).
//! - [`access`]: who may do what (policy), rate limits, the audit line, and
//!   the live reload of certificates, client CA and policy.
//! - [`persist`]: snapshots and the journal in the scratch dir, the file
//!   format, restore at startup.
//! - [`store`]: the sharded in-memory store, keys, [`store::secret::SecretBytes`],
//!   the secret arena its bytes live in ([`store::arena`]: `memfd_secret`),
//!   the one allocation per entry (`store::block`; these two are the other
//!   `unsafe` modules) and the waiters of `?wait=`.
//! - [`config`]: the validated settings of every layer and every default,
//!   named once.
//! - [`tls`]: rustls configuration, the post-quantum key exchange, client
//!   identities, certificate generation and the rule for trusted files.
//! - [`sys`]: readings of `/proc`, `statfs`, cgroups and resource limits.
//! - [`text`]: durations and sizes, RFC 3339 times, hand-written JSON.

pub mod access;
pub mod app;
pub mod cmd;
pub mod config;
pub mod http;
pub mod ops;
pub mod persist;
pub mod posture;
pub mod store;
pub mod sys;
pub mod text;
pub mod tls;
