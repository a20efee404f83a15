//! The audit log: one JSON line per request on the `audit` tracing target.
//!
//! Each line carries the time (RFC 3339), a request id (also sent back as
//! `X-Request-Id`), the client identity, method, route template, operation,
//! key, status, bytes in and out, and latency: never a value, and never a
//! header (headers can carry credentials). It is the server's only
//! per-request line, so a request costs one log write, not two.
//!
//! Handlers say what they did in an [`AuditInfo`], returned with the response;
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

/// Writes the audit line for one request.
pub fn emit(record: &Record<'_>) {
    let request_id = request_id_hex(record.request_id);
    tracing::info!(
        target: TARGET,
        request_id = std::str::from_utf8(&request_id).unwrap_or_default(),
        identity = &**record.identity,
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

/// Where [`LineLayer`] writes its lines.
#[derive(Debug)]
pub enum Sink {
    /// The process's stderr, with the other logs.
    Stderr,
    /// A file opened for appending (`--audit-log`): each line is one
    /// `write(2)`, so concurrent lines never interleave.
    File(std::fs::File),
}

impl Sink {
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

/// A `tracing` layer that writes each event as one JSON object per line,
/// in the shape of `tracing-subscriber`'s JSON format with flattened
/// fields: `{"timestamp":…,"level":…,<fields>,"target":…}`.
///
/// It exists for speed: the audit line is written on every request, and
/// `tracing-subscriber`'s JSON formatter (serde, a UTF-8 check per write,
/// several passes through `fmt`) took about 14% of the server's CPU on a
/// keep-alive GET. This one formats into a reused per-thread buffer and
/// escapes strings in one pass.
#[derive(Debug)]
pub struct LineLayer {
    sink: Sink,
}

impl LineLayer {
    /// A layer that writes to `sink`.
    pub fn new(sink: Sink) -> LineLayer {
        LineLayer { sink }
    }

    /// Formats `event` as one line (with its `\n`) into `line`.
    fn format(event: &tracing::Event<'_>, line: &mut Vec<u8>) {
        let metadata = event.metadata();
        line.extend_from_slice(b"{\"timestamp\":\"");
        let now = std::time::SystemTime::now();
        line.extend_from_slice(
            crate::timefmt::rfc3339(now, crate::timefmt::Fraction::Micros)
                .as_str()
                .as_bytes(),
        );
        line.extend_from_slice(b"\",\"level\":\"");
        line.extend_from_slice(metadata.level().as_str().as_bytes());
        line.push(b'"');
        event.record(&mut Fields { line });
        line.extend_from_slice(b",\"target\":");
        push_json_str(line, metadata.target());
        line.extend_from_slice(b"}\n");
    }
}

/// The per-thread line buffer kept for reuse stays below this capacity.
const KEEP_CAPACITY: usize = 16 * 1024;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LineLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        use std::cell::RefCell;
        thread_local! {
            static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let write = |line: &mut Vec<u8>| {
            line.clear();
            LineLayer::format(event, line);
            self.sink.write_line(line);
        };
        // The buffer is busy only if writing a line logged another event
        // on this thread; that one gets a buffer of its own.
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
}

/// Writes each field as `,"name":value`.
struct Fields<'a> {
    line: &'a mut Vec<u8>,
}

impl Fields<'_> {
    fn name(&mut self, field: &tracing::field::Field) {
        self.line.push(b',');
        push_json_str(self.line, field.name());
        self.line.push(b':');
    }
}

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.name(field);
        push_json_str(self.line, value);
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.name(field);
        self.line
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.name(field);
        self.line
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.name(field);
        self.line
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        self.name(field);
        self.line.push(b'"');
        let _ = write!(Escaped(self.line), "{value:?}");
        self.line.push(b'"');
    }
}

/// A `fmt::Write` that appends JSON-string-escaped text.
struct Escaped<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        push_escaped(self.0, text);
        Ok(())
    }
}

/// Appends `text` as a JSON string, quotes included.
fn push_json_str(line: &mut Vec<u8>, text: &str) {
    line.push(b'"');
    push_escaped(line, text);
    line.push(b'"');
}

/// Appends `text` escaped for the inside of a JSON string (RFC 8259 §7):
/// `"`, `\` and the control characters; everything else as is.
fn push_escaped(line: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            _ => continue,
        };
        line.extend_from_slice(&bytes[start..index]);
        line.extend_from_slice(escape);
        start = index + 1;
    }
    line.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// The line `LineLayer` formats for the one event `emit_event` makes.
    fn line_of(emit_event: impl FnOnce()) -> String {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Collect(lines.clone()));
        tracing::subscriber::with_default(subscriber, emit_event);
        let lines = lines.lock().expect("lock");
        assert_eq!(lines.len(), 1, "one event, one line");
        String::from_utf8(lines[0].clone()).expect("UTF-8 line")
    }

    /// Formats every event as [`LineLayer`] does, into memory.
    struct Collect(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _context: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut line = Vec::new();
            LineLayer::format(event, &mut line);
            self.0.lock().expect("lock").push(line);
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let identity: Identity = std::sync::Arc::from("spiffe://example.org/ns/a \"q\"");
        let line = line_of(|| {
            tracing::info!(
                target: TARGET,
                request_id = %format_args!("{:016x}", 255),
                identity = %identity,
                method = "PUT",
                operation = Some("write"),
                prefix = None::<&str>,
                status = 201u16,
                signed = -3i64,
                flag = true,
            );
        });
        assert!(line.ends_with("}\n"), "{line}");
        assert_eq!(line.matches('\n').count(), 1, "exactly one line: {line}");
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        let names = [
            "timestamp",
            "level",
            "request_id",
            "identity",
            "method",
            "operation",
            "status",
            "signed",
            "flag",
            "target",
        ];
        assert_eq!(
            value.as_object().expect("object").len(),
            names.len(),
            "{line}"
        );
        let positions: Vec<usize> = names
            .iter()
            .map(|name| line.find(&format!("\"{name}\":")).expect("every field"))
            .collect();
        assert!(positions.is_sorted(), "fields in order: {line}");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["request_id"], "00000000000000ff");
        assert_eq!(value["identity"], "spiffe://example.org/ns/a \"q\"");
        assert_eq!(value["operation"], "write");
        assert_eq!(value["status"], 201);
        assert_eq!(value["signed"], -3);
        assert_eq!(value["flag"], true);
        assert_eq!(value["target"], "audit");
        let time = value["timestamp"].as_str().expect("string");
        assert!(humantime::parse_rfc3339(time).is_ok(), "RFC 3339: {time}");
        assert_eq!(time.len(), "2026-01-01T00:00:00.000000Z".len(), "{time}");
    }

    #[test]
    fn request_ids_are_sixteen_hex_digits() {
        assert_eq!(&request_id_hex(0), b"0000000000000000");
        assert_eq!(&request_id_hex(0xff), b"00000000000000ff");
        assert_eq!(&request_id_hex(u64::MAX), b"ffffffffffffffff");
        assert_eq!(&request_id_hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
    }

    #[test]
    fn strings_are_escaped_as_json_requires() {
        let nasty = "a\"b\\c\nd\re\tf\u{1}g\u{1f}h\u{7f}é😀/";
        let line = line_of(|| tracing::info!(target: TARGET, key = nasty));
        assert!(!line.trim_end().contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(value["key"], nasty);
        assert!(
            line.contains(r#""a\"b\\c\nd\re\tf\u0001g\u001fh"#),
            "{line}"
        );
    }
}
