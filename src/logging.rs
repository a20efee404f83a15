//! Logging with `tracing`: human text or one JSON object per line, to
//! stderr. `RUST_LOG` overrides the default level (`info`).
//!
//! The `audit` target (one line per request, see [`crate::audit`]) is always
//! JSON, since it is read by machines, formatted by
//! [`crate::audit::LineLayer`], and goes to stderr with the other logs or,
//! with `--audit-log FILE`, to that file (append, 0600).
//!
//! Nothing logs a secret value: handlers never pass one to a log macro, and
//! the only type that holds one ([`crate::secret::SecretBytes`]) prints as
//! `[redacted N bytes]`.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls
/// are ignored), which the in-process tests rely on.
pub fn init(format: LogFormat, audit_log: Option<&Path>) -> std::io::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let not_audit = filter_fn(|metadata| metadata.target() != crate::audit::TARGET);
    let only_audit = filter_fn(|metadata| metadata.target() == crate::audit::TARGET);
    let ansi = std::io::stderr().is_terminal();
    let main = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(not_audit)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(not_audit)
            .boxed(),
    };
    let sink = match audit_log {
        Some(path) => crate::audit::Sink::File(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?,
        ),
        None => crate::audit::Sink::Stderr,
    };
    let audit = crate::audit::LineLayer::new(sink).with_filter(only_audit);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(main)
        .with(audit)
        .try_init();
    Ok(())
}
