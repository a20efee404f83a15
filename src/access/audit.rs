//! The audit log: one JSON line per request.
//!
//! Each line carries the time (RFC 3339), a request id (also sent back as
//! `X-Request-Id`), the client identity, method, route template, operation,
//! key, status, bytes in and out, and latency: never a value, and never a
//! header (headers can carry credentials). It is the server's only
//! per-request line, so a request costs one log write, not two.
//!
//! Handlers say what they did in an [`AuditInfo`], returned with the response;
//! the server forms the line in one place ([`emit`]).
//!
//! The line is in the shape of `tracing-subscriber`'s JSON format with
//! flattened fields (`{"timestamp":…,"level":"INFO",<fields>,"target":"audit"}`)
//! and `RUST_LOG` decides whether it is written, as for a `tracing` event on
//! the `audit` target. But it is formatted straight from the [`Record`], with
//! its field names as constants, into a reused per-thread buffer: it is
//! written on every request, and going through a `tracing` event and its
//! field visitor cost about 3,000 instructions a line (callgrind), where
//! this costs about a third of that.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::store::key::Key;
use crate::tls::identity::Identity;

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

/// Request ids a thread takes from the shared counter at a time.
const ID_BLOCK: u64 = 1024;

/// A request id: unique in the process, not in arrival order (the line's
/// timestamp orders them). Each thread takes ids in blocks of
/// [`ID_BLOCK`], so the shared counter is touched once per block and not on
/// every request from every core.
pub fn next_request_id() -> u64 {
    use std::cell::Cell;
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        /// The next id of this thread's block, and the end of the block.
        static BLOCK: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    BLOCK.with(|block| {
        let (mut next, mut end) = block.get();
        if next == end {
            next = NEXT_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        block.set((next + 1, end));
        next
    })
}

/// A request id as the 16 lowercase hex digits of the audit line and the
/// `X-Request-Id` header.
pub fn request_id_hex(id: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (index, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((id >> (60 - 4 * index)) & 0xf) as usize];
    }
    digits
}

/// Where audit lines go: set once by [`install`]; `None` when `RUST_LOG`
/// leaves the `audit` target out. Unset (no line) until then, as in tests
/// that start a server without installing logging.
static SINK: OnceLock<Option<Sink>> = OnceLock::new();

/// Sends audit lines to `sink` from now on, if the installed `tracing`
/// subscriber enables the `audit` target at INFO (so `RUST_LOG=warn`, or
/// `RUST_LOG=audit=off`, turns them off). Only the first call counts.
pub fn install(sink: Sink) {
    let enabled = tracing::enabled!(target: TARGET, tracing::Level::INFO);
    let _ = SINK.set(enabled.then_some(sink));
}

/// The per-thread line buffer kept for reuse stays below this capacity.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Writes the audit line for one request.
pub fn emit(record: &Record<'_>) {
    let Some(Some(sink)) = SINK.get() else {
        return;
    };
    thread_local! {
        static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let write = |line: &mut Vec<u8>| {
        line.clear();
        format(record, std::time::SystemTime::now(), line);
        sink.write_line(line);
        // The reused buffer keeps no key name between requests (so none
        // outlives its DELETE in memory); a line is a few hundred bytes.
        crate::store::secret::wipe(line.as_mut_slice());
    };
    // The buffer is busy only if this thread is already writing a line
    // (it cannot be, but a second buffer is better than a panic).
    let reused = LINE.try_with(|cell| match cell.try_borrow_mut() {
        Ok(mut line) => {
            write(&mut line);
            if line.capacity() > KEEP_CAPACITY {
                *line = Vec::new();
            }
            true
        }
        Err(_) => false,
    });
    if reused != Ok(true) {
        write(&mut Vec::new());
    }
}

/// Formats the line for `record` at `now` (with its `\n`) into `line`.
fn format(record: &Record<'_>, now: std::time::SystemTime, line: &mut Vec<u8>) {
    use crate::text::json::{push_plain_str, push_str, push_u64};
    // Routes and operations are constants and keys are `[A-Za-z0-9._/-]`
    // by construction: none needs escaping, so none is scanned for it.
    let optional = |line: &mut Vec<u8>, name: &[u8], value: Option<&str>| {
        if let Some(value) = value {
            line.extend_from_slice(name);
            push_plain_str(line, value);
        }
    };
    line.extend_from_slice(b"{\"timestamp\":\"");
    line.extend_from_slice(
        crate::text::timefmt::rfc3339(now, crate::text::timefmt::Fraction::Micros).as_bytes(),
    );
    line.extend_from_slice(b"\",\"level\":\"INFO\",\"request_id\":\"");
    line.extend_from_slice(&request_id_hex(record.request_id));
    line.extend_from_slice(b"\",\"identity\":");
    push_str(line, record.identity);
    line.extend_from_slice(b",\"method\":");
    push_str(line, record.method);
    line.extend_from_slice(b",\"route\":");
    push_plain_str(line, record.route);
    let info = record.info;
    optional(line, b",\"operation\":", info.operation);
    optional(line, b",\"key\":", info.key.as_ref().map(Key::as_str));
    // A prefix is escaped: it is recorded as the request gave it.
    if let Some(prefix) = info.prefix.as_deref() {
        line.extend_from_slice(b",\"prefix\":");
        push_str(line, prefix);
    }
    line.extend_from_slice(b",\"status\":");
    push_u64(line, u64::from(record.status));
    line.extend_from_slice(b",\"bytes_in\":");
    push_u64(line, info.bytes_in);
    line.extend_from_slice(b",\"bytes_out\":");
    push_u64(line, record.bytes_out);
    line.extend_from_slice(b",\"latency_us\":");
    push_u64(line, record.latency_us);
    line.extend_from_slice(b",\"target\":\"audit\"}\n");
}

/// Where audit lines are written.
#[derive(Debug)]
pub enum Sink {
    /// The process's stderr, with the other logs, through its lock (when
    /// [`Sink::stderr`] could not have a descriptor of its own).
    Stderr,
    /// A file opened for appending (`--audit-log`), or a descriptor of
    /// stderr: each line is one `write(2)`, so concurrent lines never
    /// interleave.
    File(std::fs::File),
}

impl Sink {
    /// Standard error, through a descriptor of its own when one can be
    /// had: `std::io::stderr()` takes a process-wide lock for every write,
    /// a counter that would otherwise pass between cores on every request.
    /// Each line is still one `write(2)` on the same open file.
    pub fn stderr() -> Sink {
        use std::os::fd::AsFd;
        match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(descriptor) => Sink::File(std::fs::File::from(descriptor)),
            Err(_) => Sink::Stderr,
        }
    }

    fn write_line(&self, line: &[u8]) {
        use std::io::Write;
        // A log line that cannot be written is dropped, as tracing's own
        // writers do: failing the request would not bring it back.
        let _ = match self {
            Sink::Stderr => std::io::stderr().write_all(line),
            Sink::File(file) => (&*file).write_all(line),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(info: &AuditInfo, identity: &str) -> String {
        let identity: Identity = std::sync::Arc::from(identity);
        let record = Record {
            request_id: 255,
            identity: &identity,
            method: "PUT",
            route: "/v1/secrets/{key}",
            info,
            status: 201,
            bytes_out: 243,
            latency_us: 84,
        };
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_767_225_600_123_456);
        let mut line = Vec::new();
        format(&record, now, &mut line);
        String::from_utf8(line).expect("UTF-8 line")
    }

    #[test]
    fn a_line_is_one_exact_json_object() {
        let info = AuditInfo {
            operation: Some("write"),
            key: Some(Key::parse("team-a/db").expect("a key")),
            prefix: None,
            bytes_in: 6,
        };
        assert_eq!(
            line(&info, "cn:deployer"),
            concat!(
                r#"{"timestamp":"2026-01-01T00:00:00.123456Z","level":"INFO","#,
                r#""request_id":"00000000000000ff","identity":"cn:deployer","method":"PUT","#,
                r#""route":"/v1/secrets/{key}","operation":"write","key":"team-a/db","#,
                r#""status":201,"bytes_in":6,"bytes_out":243,"latency_us":84,"target":"audit"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn absent_fields_are_left_out_and_strings_escaped() {
        let info = AuditInfo {
            operation: Some("list"),
            key: None,
            prefix: Some("team-a/".into()),
            bytes_in: 0,
        };
        let nasty = "spiffe://example.org/ns/a \"q\"\\\n\u{1}é";
        let text = line(&info, nasty);
        assert!(text.ends_with("}\n"), "{text}");
        assert_eq!(text.matches('\n').count(), 1, "exactly one line: {text}");
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(value["identity"], nasty);
        assert_eq!(value["prefix"], "team-a/");
        assert!(value.get("key").is_none(), "{text}");
        assert_eq!(value.as_object().expect("object").len(), 13, "{text}");
    }

    #[test]
    fn request_ids_are_unique_across_threads() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..3 * ID_BLOCK)
                        .map(|_| next_request_id())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        for thread in threads {
            for id in thread.join().expect("a thread") {
                assert!(id > 0, "0 is never an id");
                assert!(ids.insert(id), "id {id} given twice");
            }
        }
        assert_eq!(ids.len() as u64, 4 * 3 * ID_BLOCK);
    }

    #[test]
    fn request_ids_are_sixteen_hex_digits() {
        assert_eq!(&request_id_hex(0), b"0000000000000000");
        assert_eq!(&request_id_hex(0xff), b"00000000000000ff");
        assert_eq!(&request_id_hex(u64::MAX), b"ffffffffffffffff");
        assert_eq!(&request_id_hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
    }
}
