//! Requests served, by route template and status, for `/metrics`.
//!
//! The counts live in fixed tables of atomics indexed by route template
//! and status code: counting a request is one relaxed `fetch_add`, with no
//! lock and no allocation on the request path. There is one table per
//! group of threads, summed at scrape time, so that two cores counting at
//! once do not pass the same cache line back and forth on every request.

use std::sync::atomic::{AtomicU64, Ordering};

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
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, String, u64)> + '_ {
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
