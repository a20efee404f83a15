//! `/metrics`: every subsystem's counters, gathered at scrape time and
//! rendered in the Prometheus text format. The counters live with their
//! subsystem (requests in [`crate::http::counters`], snapshots and the
//! journal in [`crate::persist`], the store's in [`crate::store::Stats`]).
//! Labels are route templates and check ids, never a key or a value.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::access::reload::ReloadStatus;
use crate::http::counters::RequestCounters;
use crate::persist::PersistenceMetrics;
use crate::posture::selfcheck::{Report, Status};
use crate::store::Stats;

/// Everything `/metrics` shows, gathered at scrape time.
pub struct Scrape<'a> {
    /// Request counts.
    pub requests: &'a RequestCounters,
    /// Store counters.
    pub store: Stats,
    /// The store's budget.
    pub memory_budget: u64,
    /// Snapshot and journal numbers, when snapshots are on.
    pub persistence: Option<PersistenceMetrics>,
    /// Failed or timed-out TLS handshakes.
    pub handshake_failures: u64,
    /// Completed TLS handshakes.
    pub handshakes: u64,
    /// Of those, the ones with the post-quantum hybrid key exchange.
    pub handshakes_post_quantum: u64,
    /// Connections closed because a client CA reload no longer trusts them.
    pub closed_untrusted: u64,
    /// Connections closed at `--max-connection-age`.
    pub closed_max_age: u64,
    /// Handshakes ended to let newer ones in (the handshake allowance).
    pub handshakes_evicted: u64,
    /// Idle connections closed to make room for a new one.
    pub closed_for_room: u64,
    /// Authenticated connections closed for want of a place.
    pub refused_no_place: u64,
    /// Connections ended because their responses made no progress.
    pub closed_stalled: u64,
    /// HTTP/2 connections ended for a control-frame flood.
    pub http2_flood_closed: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Whether /readyz would answer 200.
    pub ready: bool,
    /// Whether shutdown has begun.
    pub draining: bool,
    /// The self-check, re-run for this scrape.
    pub selfcheck: &'a Report,
    /// Live reloads: counts and the last error.
    pub reload: &'a ReloadStatus,
}

fn render_persistence(out: &mut String, persistence: &PersistenceMetrics) {
    let floats = [
        (
            "tmpvault_snapshot_age_seconds",
            "Seconds since the last successful snapshot (absent before the first).",
            persistence.snapshot_age_seconds,
        ),
        (
            "tmpvault_snapshot_duration_seconds",
            "How long the last snapshot took.",
            Some(persistence.snapshot_duration_seconds),
        ),
    ];
    for (name, help, value) in floats {
        if let Some(value) = value {
            family(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
    }
    let integers = [
        (
            "tmpvault_snapshot_size_bytes",
            "gauge",
            "Size of the last snapshot file.",
            persistence.snapshot_bytes,
        ),
        (
            "tmpvault_snapshot_entries",
            "gauge",
            "Secrets and lists in the last scrape.",
            persistence.snapshot_entries,
        ),
        (
            "tmpvault_snapshots_total",
            "counter",
            "Snapshots written.",
            persistence.snapshots_total,
        ),
        (
            "tmpvault_snapshot_failures_total",
            "counter",
            "Snapshots that failed (the previous one and the journal still hold every change).",
            persistence.snapshot_failures_total,
        ),
        (
            "tmpvault_journal_records",
            "gauge",
            "Changes journaled since the last scrape.",
            persistence.journal_records,
        ),
        (
            "tmpvault_journal_bytes",
            "gauge",
            "Size of the current journal file.",
            persistence.journal_bytes,
        ),
        (
            "tmpvault_journal_failures_total",
            "counter",
            "Journal writes that failed; each refused its change with 503.",
            persistence.journal_failures_total,
        ),
    ];
    for (name, kind, help, value) in integers {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(
        pages
            * nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
                .ok()??
                .unsigned_abs(),
    )
}

/// Renders the Prometheus text exposition format (version 0.0.4).
pub fn render(scrape: &Scrape<'_>) -> String {
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "tmpvault_requests_total",
        "counter",
        "API requests answered, by route template and status.",
    );
    for (route, status, count) in scrape.requests.nonzero() {
        let _ = writeln!(
            out,
            "tmpvault_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
        );
    }
    let arena = crate::store::arena::installed();
    let gauges: [(&str, &str, &str, u64); 23] = [
        (
            "tmpvault_reloads_total",
            "counter",
            "Successful reloads of certificates, client CA and policy.",
            scrape.reload.reloads.load(Ordering::Relaxed),
        ),
        (
            "tmpvault_reload_failures_total",
            "counter",
            "Reloads that failed and kept the previous configuration.",
            scrape.reload.failures.load(Ordering::Relaxed),
        ),
        (
            "tmpvault_config_last_reload_ok",
            "gauge",
            "0 when the last reload failed, else 1.",
            u64::from(scrape.reload.last_error().is_none()),
        ),
        (
            "tmpvault_items",
            "gauge",
            "Secrets and lists stored.",
            scrape.store.entries,
        ),
        (
            "tmpvault_stored_bytes",
            "gauge",
            "Bytes charged against the memory budget.",
            scrape.store.bytes,
        ),
        (
            "tmpvault_memory_budget_bytes",
            "gauge",
            "The memory budget (--max-memory).",
            scrape.memory_budget,
        ),
        (
            "tmpvault_secret_arena_bytes",
            "gauge",
            "Size of the secret arena stored values live in (0 on the heap).",
            arena.map_or(0, |arena| arena.capacity() as u64),
        ),
        (
            "tmpvault_secret_arena_used_bytes",
            "gauge",
            "Bytes of the secret arena's blocks in use (values round up to a power of two).",
            arena.map_or(0, |arena| arena.used() as u64),
        ),
        (
            "tmpvault_waiting_requests",
            "gauge",
            "GET ?wait= requests held now, waiting for their key to change.",
            scrape.store.waiting,
        ),
        (
            "tmpvault_expired_total",
            "counter",
            "Items removed because their TTL ran out.",
            scrape.store.expired,
        ),
        (
            "tmpvault_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
            scrape.handshake_failures,
        ),
        (
            "tmpvault_tls_handshakes_total",
            "counter",
            "TLS handshakes completed.",
            scrape.handshakes,
        ),
        (
            "tmpvault_tls_handshakes_post_quantum_total",
            "counter",
            "TLS handshakes whose key exchange was X25519MLKEM768 (post-quantum hybrid).",
            scrape.handshakes_post_quantum,
        ),
        (
            "tmpvault_connections_closed_untrusted_total",
            "counter",
            "Connections closed because a client CA reload no longer trusts their certificate.",
            scrape.closed_untrusted,
        ),
        (
            "tmpvault_connections_closed_max_age_total",
            "counter",
            "Connections closed gracefully at --max-connection-age.",
            scrape.closed_max_age,
        ),
        (
            "tmpvault_handshakes_evicted_total",
            "counter",
            "TLS handshakes ended to let newer ones in: the handshake allowance (256, 64 per address) was used up.",
            scrape.handshakes_evicted,
        ),
        (
            "tmpvault_connections_closed_for_room_total",
            "counter",
            "Idle connections closed gracefully to make room at --max-connections.",
            scrape.closed_for_room,
        ),
        (
            "tmpvault_connections_refused_no_place_total",
            "counter",
            "Authenticated connections closed because no place freed up within 5 s.",
            scrape.refused_no_place,
        ),
        (
            "tmpvault_connections_closed_stalled_total",
            "counter",
            "Connections ended because a response wrote nothing for the response deadline (30 s).",
            scrape.closed_stalled,
        ),
        (
            "tmpvault_http2_flood_closed_total",
            "counter",
            "HTTP/2 connections ended with GOAWAY ENHANCE_YOUR_CALM for a control-frame flood.",
            scrape.http2_flood_closed,
        ),
        (
            "tmpvault_connections_open",
            "gauge",
            "TLS connections open now.",
            scrape.connections_open,
        ),
        (
            "tmpvault_ready",
            "gauge",
            "1 when /readyz answers 200.",
            u64::from(scrape.ready),
        ),
        (
            "tmpvault_draining",
            "gauge",
            "1 once shutdown has begun.",
            u64::from(scrape.draining),
        ),
    ];
    for (name, kind, help, value) in gauges {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "tmpvault_selfcheck_status",
        "gauge",
        "Self-check result per check: 0 pass, 1 warn, 2 fail.",
    );
    for check in &scrape.selfcheck.checks {
        let value = match check.status {
            Status::Pass => 0,
            Status::Warn => 1,
            Status::Fail => 2,
        };
        let _ = writeln!(
            out,
            "tmpvault_selfcheck_status{{check=\"{}\"}} {value}",
            check.id
        );
    }
    if let Some(persistence) = &scrape.persistence {
        render_persistence(&mut out, persistence);
    }
    if let Some(rss) = resident_memory_bytes() {
        family(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    }
    out
}
