//! Logging with `tracing`: human text or one JSON object per line, to
//! stderr. `RUST_LOG` overrides the default level (`info`).
//!
//! Nothing logs a secret value: handlers never pass one to a log macro, and
//! the only type that holds one ([`crate::secret::SecretBytes`]) prints as
//! `[redacted N bytes]`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls
/// are ignored), which the in-process tests rely on.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
