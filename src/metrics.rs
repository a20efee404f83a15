//! Counters for `/metrics`, rendered in the Prometheus text format.
//!
//! Request counts live in fixed tables of atomics indexed by route template
//! and status code: counting a request is one relaxed `fetch_add`, with no
//! lock and no allocation on the request path. There is one table per
//! group of threads, summed at scrape time, so that two cores counting at
//! once do not pass the same cache line back and forth on every request. Labels are route templates
//! and check ids, never a key or a value.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::reload::ReloadStatus;
use crate::selfcheck::{Report, Status};
use crate::store::Stats;

/// Route templates (as the API and the logs spell them) and their metric
/// labels, in the order of the counter table. The labels avoid `{` and `}`:
/// the text format allows them in label values, but many small scrapers
/// split samples at the first `}`.
pub const ROUTES: [(&str, &str); 7] = [
    ("/v1/secrets/{key}", "/v1/secrets/:key"),
    ("/v1/secrets", "/v1/secrets"),
    ("/v1/lists/{key}/push", "/v1/lists/:key/push"),
    ("/v1/lists/{key}/pop", "/v1/lists/:key/pop"),
    ("/v1/selfcheck", "/v1/selfcheck"),
    ("/v1/openapi.json", "/v1/openapi.json"),
    ("unknown", "unknown"),
];

/// Status codes the API can answer with; anything else counts as `other`.
const STATUSES: [u16; 17] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 409, 412, 413, 429, 431, 503, 507,
];

/// Counters in one table: a route's row of statuses, plus `other`.
const CELLS: usize = ROUTES.len() * (STATUSES.len() + 1);
/// Tables: threads are spread over them round-robin.
const TABLES: usize = 8;
/// Counters per cache line.
const PER_LINE: usize = 8;
/// Cache lines per table (tables never share a line).
const LINES: usize = CELLS.div_ceil(PER_LINE);

/// One cache line of counters.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Line([AtomicU64; PER_LINE]);

/// Requests served, by route template and status.
#[derive(Debug)]
pub struct RequestCounters {
    /// `TABLES` tables of `LINES` lines each.
    lines: Vec<Line>,
}

impl Default for RequestCounters {
    fn default() -> RequestCounters {
        RequestCounters {
            lines: (0..TABLES * LINES).map(|_| Line::default()).collect(),
        }
    }
}

/// The table this thread counts in.
fn table() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static TABLE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % TABLES;
    }
    TABLE.with(|table| *table)
}

impl RequestCounters {
    /// The counter of `cell` in `table`.
    fn counter(&self, table: usize, cell: usize) -> &AtomicU64 {
        &self.lines[table * LINES + cell / PER_LINE].0[cell % PER_LINE]
    }

    /// Counts one request answered on `route` (a template) with `status`.
    pub fn record(&self, route: &str, status: u16) {
        let route_index = ROUTES
            .iter()
            .position(|(template, _)| *template == route)
            .unwrap_or(ROUTES.len() - 1);
        let status_index = STATUSES
            .iter()
            .position(|known| *known == status)
            .unwrap_or(STATUSES.len());
        let cell = route_index * (STATUSES.len() + 1) + status_index;
        self.counter(table(), cell).fetch_add(1, Ordering::Relaxed);
    }

    /// Every non-zero count as (route, status label, count).
    fn nonzero(&self) -> impl Iterator<Item = (&'static str, String, u64)> + '_ {
        (0..CELLS).filter_map(|cell| {
            let count = (0..TABLES)
                .map(|table| self.counter(table, cell).load(Ordering::Relaxed))
                .sum::<u64>();
            if count == 0 {
                return None;
            }
            let route = ROUTES[cell / (STATUSES.len() + 1)].1;
            let status = STATUSES
                .get(cell % (STATUSES.len() + 1))
                .map_or_else(|| "other".to_owned(), u16::to_string);
            Some((route, status, count))
        })
    }
}

/// Everything `/metrics` shows, gathered at scrape time.
pub struct Snapshot<'a> {
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

/// Snapshot and journal numbers (see [`crate::persistence`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PersistenceMetrics {
    /// Seconds since the last successful snapshot; `None` before the first.
    pub snapshot_age_seconds: Option<f64>,
    /// Size of the last snapshot.
    pub snapshot_bytes: u64,
    /// Entries in the last snapshot.
    pub snapshot_entries: u64,
    /// How long the last snapshot took.
    pub snapshot_duration_seconds: f64,
    /// Snapshots written since start.
    pub snapshots_total: u64,
    /// Snapshots that failed since start.
    pub snapshot_failures_total: u64,
    /// Records in the current journal (changes since the last snapshot).
    pub journal_records: u64,
    /// Bytes in the current journal.
    pub journal_bytes: u64,
    /// Journal appends that failed (each refused a change with 503).
    pub journal_failures_total: u64,
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
            "Secrets and lists in the last snapshot.",
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
            "Changes journaled since the last snapshot.",
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
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "tmpvault_requests_total",
        "counter",
        "API requests answered, by route template and status.",
    );
    for (route, status, count) in snapshot.requests.nonzero() {
        let _ = writeln!(
            out,
            "tmpvault_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
        );
    }
    let gauges: [(&str, &str, &str, u64); 21] = [
        (
            "tmpvault_reloads_total",
            "counter",
            "Successful reloads of certificates, client CA and policy.",
            snapshot.reload.reloads.load(Ordering::Relaxed),
        ),
        (
            "tmpvault_reload_failures_total",
            "counter",
            "Reloads that failed and kept the previous configuration.",
            snapshot.reload.failures.load(Ordering::Relaxed),
        ),
        (
            "tmpvault_config_last_reload_ok",
            "gauge",
            "0 when the last reload failed, else 1.",
            u64::from(snapshot.reload.last_error().is_none()),
        ),
        (
            "tmpvault_items",
            "gauge",
            "Secrets and lists stored.",
            snapshot.store.entries,
        ),
        (
            "tmpvault_stored_bytes",
            "gauge",
            "Bytes charged against the memory budget.",
            snapshot.store.bytes,
        ),
        (
            "tmpvault_memory_budget_bytes",
            "gauge",
            "The memory budget (--max-memory).",
            snapshot.memory_budget,
        ),
        (
            "tmpvault_waiting_requests",
            "gauge",
            "GET ?wait= requests held now, waiting for their key to change.",
            snapshot.store.waiting,
        ),
        (
            "tmpvault_expired_total",
            "counter",
            "Items removed because their TTL ran out.",
            snapshot.store.expired,
        ),
        (
            "tmpvault_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
            snapshot.handshake_failures,
        ),
        (
            "tmpvault_tls_handshakes_total",
            "counter",
            "TLS handshakes completed.",
            snapshot.handshakes,
        ),
        (
            "tmpvault_tls_handshakes_post_quantum_total",
            "counter",
            "TLS handshakes whose key exchange was X25519MLKEM768 (post-quantum hybrid).",
            snapshot.handshakes_post_quantum,
        ),
        (
            "tmpvault_connections_closed_untrusted_total",
            "counter",
            "Connections closed because a client CA reload no longer trusts their certificate.",
            snapshot.closed_untrusted,
        ),
        (
            "tmpvault_connections_closed_max_age_total",
            "counter",
            "Connections closed gracefully at --max-connection-age.",
            snapshot.closed_max_age,
        ),
        (
            "tmpvault_handshakes_evicted_total",
            "counter",
            "TLS handshakes ended to let newer ones in: the handshake allowance (256, 64 per address) was used up.",
            snapshot.handshakes_evicted,
        ),
        (
            "tmpvault_connections_closed_for_room_total",
            "counter",
            "Idle connections closed gracefully to make room at --max-connections.",
            snapshot.closed_for_room,
        ),
        (
            "tmpvault_connections_refused_no_place_total",
            "counter",
            "Authenticated connections closed because no place freed up within 5 s.",
            snapshot.refused_no_place,
        ),
        (
            "tmpvault_connections_closed_stalled_total",
            "counter",
            "Connections ended because a response wrote nothing for the response deadline (30 s).",
            snapshot.closed_stalled,
        ),
        (
            "tmpvault_http2_flood_closed_total",
            "counter",
            "HTTP/2 connections ended with GOAWAY ENHANCE_YOUR_CALM for a control-frame flood.",
            snapshot.http2_flood_closed,
        ),
        (
            "tmpvault_connections_open",
            "gauge",
            "TLS connections open now.",
            snapshot.connections_open,
        ),
        (
            "tmpvault_ready",
            "gauge",
            "1 when /readyz answers 200.",
            u64::from(snapshot.ready),
        ),
        (
            "tmpvault_draining",
            "gauge",
            "1 once shutdown has begun.",
            u64::from(snapshot.draining),
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
    for check in &snapshot.selfcheck.checks {
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
    if let Some(persistence) = &snapshot.persistence {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_route_and_status() {
        let counters = RequestCounters::default();
        counters.record("/v1/secrets/{key}", 200);
        counters.record("/v1/secrets/{key}", 200);
        counters.record("/v1/secrets", 599);
        counters.record("no such template", 404);
        let rows: Vec<_> = counters.nonzero().collect();
        assert_eq!(
            rows,
            [
                ("/v1/secrets/:key", "200".to_owned(), 2),
                ("/v1/secrets", "other".to_owned(), 1),
                ("unknown", "404".to_owned(), 1),
            ]
        );
    }

    #[test]
    fn counts_from_many_threads_are_summed() {
        let counters = std::sync::Arc::new(RequestCounters::default());
        let threads: Vec<_> = (0..2 * TABLES + 1)
            .map(|_| {
                let counters = std::sync::Arc::clone(&counters);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counters.record("/v1/lists/{key}/pop", 507);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a thread");
        }
        let rows: Vec<_> = counters.nonzero().collect();
        assert_eq!(
            rows,
            [(
                "/v1/lists/:key/pop",
                "507".to_owned(),
                (2 * TABLES as u64 + 1) * 1000
            )]
        );
    }
}
