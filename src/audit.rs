//! The audit log: one JSON line per request on the `audit` tracing target.
//!
//! Each line carries the time (RFC 3339), a request id (also sent back as
//! `X-Request-Id`), the client identity, method, route template, operation,
//! key, status, bytes in and out, and latency: never a value, and never a
//! header (headers can carry credentials). It is the server's only
//! per-request line, so a request costs one log write, not two.
//!
//! Handlers say what they did by attaching an [`AuditInfo`] to the response;
//! the server forms the line in one place ([`emit`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::identity::Identity;
use crate::key::Key;

/// The `tracing` target audit lines go to.
pub const TARGET: &str = "audit";

/// What a handler did, attached to its response as an extension.
#[derive(Clone, Debug, Default)]
pub struct AuditInfo {
    /// `read`, `write`, `delete`, `list`, or none for non-key routes.
    pub operation: Option<&'static str>,
    /// The key, when the request named one.
    pub key: Option<Key>,
    /// The prefix of a listing.
    pub prefix: Option<Box<str>>,
    /// Bytes of request body taken in.
    pub bytes_in: u64,
}

/// Everything one audit line says.
#[derive(Debug)]
pub struct Record<'a> {
    /// The request id.
    pub request_id: u64,
    /// The client identity.
    pub identity: &'a Identity,
    /// The HTTP method.
    pub method: &'a str,
    /// The route template.
    pub route: &'static str,
    /// What the handler said it did.
    pub info: &'a AuditInfo,
    /// The status answered.
    pub status: u16,
    /// Bytes of response body.
    pub bytes_out: u64,
    /// Time spent in the handler, in microseconds.
    pub latency_us: u64,
}

/// A process-wide request id source: unique per process, cheap.
pub fn next_request_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Writes the audit line for one request.
pub fn emit(record: &Record<'_>) {
    tracing::info!(
        target: TARGET,
        request_id = %format_args!("{:016x}", record.request_id),
        identity = %record.identity,
        method = record.method,
        route = record.route,
        operation = record.info.operation,
        key = record.info.key.as_ref().map(Key::as_str),
        prefix = record.info.prefix.as_deref(),
        status = record.status,
        bytes_in = record.info.bytes_in,
        bytes_out = record.bytes_out,
        latency_us = record.latency_us,
    );
}
