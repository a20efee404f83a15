//! Logging with `tracing`: human text or one JSON object per line, to
//! stderr. `RUST_LOG` overrides the default level (`info`).
//!
//! The audit line (one per request, see [`crate::access::audit`]) is always JSON,
//! since it is read by machines. It is formatted by [`crate::access::audit::emit`]
//! rather than as a `tracing` event, but `RUST_LOG` still decides, for the
//! `audit` target, whether it is written; it goes to stderr with the other
//! logs or, with `--audit-log FILE`, to that file (append, 0600).
//!
//! Nothing logs a secret value: handlers never pass one to a log macro, and
//! the only type that holds one ([`crate::store::secret::SecretBytes`]) prints as
//! `[redacted N bytes]`.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tracing_subscriber::filter::{filter_fn, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls
/// are ignored), which the in-process tests rely on.
pub fn init(format: LogFormat, audit_log: Option<&Path>) -> std::io::Result<()> {
    let filter = level_filter(std::env::var("RUST_LOG").ok().as_deref());
    let not_audit = filter_fn(|metadata| metadata.target() != crate::access::audit::TARGET);
    let only_audit = filter_fn(|metadata| metadata.target() == crate::access::audit::TARGET);
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
        Some(path) => crate::access::audit::Sink::File(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?,
        ),
        None => crate::access::audit::Sink::stderr(),
    };
    // Audit lines are not tracing events, but this layer lets `RUST_LOG`
    // decide about the `audit` target as for any other: `audit::install`
    // asks the subscriber whether that target is enabled.
    let audit_gate = AuditGate.with_filter(only_audit);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(main)
        .with(audit_gate)
        .try_init();
    crate::access::audit::install(sink);
    Ok(())
}

/// The filter `RUST_LOG` asks for: comma-separated `LEVEL` or
/// `TARGET=LEVEL` directives (`warn`, `info,audit=off`); unset or not
/// understood, `info`.
///
/// `Targets` rather than `EnvFilter`: it parses the same directives except
/// span and field filters, which nothing here needs, and it does not pull
/// in the `regex` crates, about 230 KiB of code in a binary whose code is
/// most of its resident memory.
fn level_filter(rust_log: Option<&str>) -> Targets {
    rust_log
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

/// A layer that does nothing with events: with its filter, it makes the
/// subscriber answer "enabled" for the `audit` target when `RUST_LOG` lets
/// that target through (see [`crate::access::audit::install`]).
struct AuditGate;

impl<S: tracing::Subscriber> Layer<S> for AuditGate {}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(filter: &Targets, target: &str, level: tracing::Level) -> bool {
        filter.would_enable(target, &level)
    }

    #[test]
    fn rust_log_directives_as_documented() {
        use tracing::Level;
        let default = level_filter(None);
        assert!(enabled(&default, "tmpvault", Level::INFO));
        assert!(!enabled(&default, "tmpvault", Level::DEBUG));
        assert!(enabled(&default, "audit", Level::INFO));

        let warn = level_filter(Some("warn"));
        assert!(enabled(&warn, "tmpvault", Level::WARN));
        assert!(!enabled(&warn, "audit", Level::INFO));

        let no_audit = level_filter(Some("info,audit=off"));
        assert!(enabled(&no_audit, "tmpvault::http", Level::INFO));
        assert!(!enabled(&no_audit, "audit", Level::ERROR));

        let debug = level_filter(Some("debug"));
        assert!(enabled(&debug, "hyper", Level::DEBUG));

        // Not understood: the default, as when unset.
        let garbled = level_filter(Some("info,=[bogus"));
        assert!(enabled(&garbled, "tmpvault", Level::INFO));
        assert!(!enabled(&garbled, "tmpvault", Level::DEBUG));
    }
}
