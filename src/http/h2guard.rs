//! The HTTP/2 control-frame flood guard: an I/O wrapper between TLS and
//! hyper that ends a connection whose client sends control frames faster
//! than any legitimate client needs to.
//!
//! h2 0.4 answers every PING with an ACK and every SETTINGS frame with an
//! ACK, and applies every WINDOW_UPDATE and PRIORITY frame, without
//! counting any of them (`proto/ping_pong.rs`, `proto/settings.rs`): one
//! connection got 66 million PING ACKs in 15 s, a core busy answering them
//! (issue 20). It does bound empty DATA frames (100 per connection) and
//! rapid resets, but not these. So the guard counts, below hyper:
//!
//! - it reads the inbound byte stream as hyper will see it: the 24-byte
//!   client preface, then 9-byte frame headers, skipping each payload by
//!   its length across reads (a payload is never buffered or copied);
//! - PING, SETTINGS, PRIORITY and WINDOW_UPDATE frames, and empty DATA
//!   frames that do not end their stream, each take a token from a bucket
//!   of [`CONTROL_FRAME_BURST`] tokens refilled at
//!   [`CONTROL_FRAMES_PER_SECOND`]; each DATA frame the server sends gives
//!   back [`CREDIT_PER_DATA_FRAME_SENT`], since a client that reads a body
//!   legitimately answers it with a stream and a connection WINDOW_UPDATE;
//! - the frame that finds the bucket empty is not given to hyper, nor is
//!   anything after it. The guard waits for hyper to finish the frame it is
//!   writing (it tracks outbound frame boundaries: hyper may write part of
//!   a frame per `poll_write`), writes GOAWAY with ENHANCE_YOUR_CALM and
//!   the highest client stream id seen, flushes, sends TLS close_notify,
//!   and ends hyper's input [`LINGER`] later. Closing at once with unread
//!   bytes would send a TCP RST, which can make the client drop the GOAWAY
//!   unread; so the connection stays open that long, reading and
//!   discarding at most [`LINGER_DISCARD_BYTES`] (enough to notice a
//!   client that closes) and then not reading at all, so that a client
//!   still flooding is held back by TCP flow control at no cost to us.
//!
//! Whether a connection is HTTP/2 is decided the way hyper-util's `auto`
//! builder decides it: by whether it starts with the client preface. ALPN
//! does not decide it there (a client that negotiated `http/1.1`, or no
//! ALPN at all, may still send the preface and be served HTTP/2), so the
//! guard must not rely on ALPN either. Anything else passes through
//! untouched after its first bytes are compared.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Control frames a connection may send per second, sustained. A
/// legitimate client sends a handful per connection: its SETTINGS, an ACK
/// of ours, a keep-alive PING every few seconds at most, a few PRIORITY
/// frames; WINDOW_UPDATEs for bodies it reads are paid for by the DATA
/// frames they acknowledge. 100 a second is ten times the busiest of those.
pub const CONTROL_FRAMES_PER_SECOND: f64 = 100.0;

/// Control frames a connection may send at once (the bucket's size). Big
/// enough for any start-up burst; small enough that a flood is stopped
/// after a millisecond or so of work (1,000 ACKs are 17 KB).
pub const CONTROL_FRAME_BURST: f64 = 1_000.0;

/// Tokens returned for each DATA frame the server sends: the client may
/// acknowledge it with one stream and one connection WINDOW_UPDATE.
pub const CREDIT_PER_DATA_FRAME_SENT: f64 = 2.0;

/// After the GOAWAY, how long the connection stays open for the client to
/// read it before it is dropped.
pub const LINGER: Duration = Duration::from_secs(1);

/// During the linger, how much of what the client still sends is read
/// (and discarded) to notice it closing: each byte read costs a
/// decryption, so a client that keeps flooding is then not read at all.
pub const LINGER_DISCARD_BYTES: usize = 64 * 1024;

/// From the flood to the GOAWAY flushed: a client that does not read its
/// socket may keep it from being written, and is then simply dropped.
pub const GOAWAY_DEADLINE: Duration = Duration::from_secs(2);

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// The GOAWAY's debug data, for whoever reads a frame trace.
const GOAWAY_DEBUG: &[u8] = b"control_frame_flood";

/// A frame's 9-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameHead {
    length: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> FrameHead {
        FrameHead {
            length: usize::from(bytes[0]) << 16
                | usize::from(bytes[1]) << 8
                | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    /// Whether the frame is one a flood is made of.
    fn is_control(&self) -> bool {
        match self.kind {
            PING | SETTINGS | PRIORITY | WINDOW_UPDATE => true,
            DATA => self.length == 0 && self.flags & END_STREAM == 0,
            _ => false,
        }
    }
}

/// Where a byte stream of frames is: inside a header (and how much of it
/// has arrived) or inside a payload (and how much of it is left).
#[derive(Debug, Default)]
struct FrameScanner {
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: usize,
}

impl FrameScanner {
    /// Consumes `bytes` up to and including the next complete frame
    /// header; returns how many bytes were consumed and that header, if
    /// one was completed. Never consumes nothing from non-empty input.
    fn advance(&mut self, bytes: &[u8]) -> (usize, Option<FrameHead>) {
        let mut used = self.payload_left.min(bytes.len());
        self.payload_left -= used;
        if self.payload_left > 0 || used == bytes.len() {
            return (used, None);
        }
        let take = (FRAME_HEADER_LEN - self.header_len).min(bytes.len() - used);
        self.header[self.header_len..self.header_len + take]
            .copy_from_slice(&bytes[used..used + take]);
        self.header_len += take;
        used += take;
        if self.header_len < FRAME_HEADER_LEN {
            return (used, None);
        }
        self.header_len = 0;
        let head = FrameHead::parse(&self.header);
        self.payload_left = head.length;
        (used, Some(head))
    }

    /// True between two frames.
    fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }

    /// Bytes that may be written before the next header completes or the
    /// current frame ends (whichever comes first).
    fn until_next_step(&self) -> usize {
        if self.payload_left > 0 {
            self.payload_left
        } else {
            FRAME_HEADER_LEN - self.header_len
        }
    }
}

/// Tokens for control frames, refilled with time.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: CONTROL_FRAME_BURST,
            refilled: now,
        }
    }

    /// Takes one token; false when there is none.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.credit(elapsed * CONTROL_FRAMES_PER_SECOND);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn credit(&mut self, tokens: f64) {
        self.tokens = (self.tokens + tokens).min(CONTROL_FRAME_BURST);
    }
}

/// What the guard is doing on a guarded connection.
enum Phase {
    /// Counting.
    Open,
    /// Flooded: waiting for hyper to finish the frame it is writing.
    Tripped,
    /// Writing the GOAWAY frame.
    GoAway {
        written: usize,
    },
    Flushing,
    ShuttingDown,
    /// GOAWAY sent: waiting for the client to read it (and close).
    Lingering {
        discarded: usize,
    },
    /// Nothing more is read or written.
    Closed,
}

/// The state of a connection known to be HTTP/2.
struct Guard {
    inbound: FrameScanner,
    outbound: FrameScanner,
    bucket: TokenBucket,
    /// The highest stream id a client HEADERS frame opened (handed to hyper).
    last_client_stream: u32,
    phase: Phase,
    /// From the flood: the GOAWAY deadline, then the linger deadline.
    deadline: Option<Pin<Box<Sleep>>>,
    on_flood: Option<Box<dyn FnOnce() + Send>>,
}

enum Mode {
    /// Comparing the first bytes with the client preface.
    Detecting {
        matched: usize,
    },
    /// Not HTTP/2: every call is passed through.
    PassThrough,
    Guarded(Box<Guard>),
}

/// An I/O wrapper that ends an HTTP/2 connection flooding control frames
/// with GOAWAY ENHANCE_YOUR_CALM (see the module docs).
pub struct H2Guard<T> {
    inner: T,
    mode: Mode,
    /// Taken when the connection turns out to be HTTP/2.
    on_flood: Option<Box<dyn FnOnce() + Send>>,
}

impl<T> H2Guard<T> {
    /// Wraps a connection's stream; `on_flood` runs once if it is ended
    /// for a flood (to count and log it).
    pub fn new(inner: T, on_flood: impl FnOnce() + Send + 'static) -> H2Guard<T> {
        H2Guard {
            inner,
            mode: Mode::Detecting { matched: 0 },
            on_flood: Some(Box::new(on_flood)),
        }
    }

    /// Follows the first bytes read; returns how many of `bytes` the
    /// guard must still scan as frames (after the preface), if guarded.
    fn detect(&mut self, bytes: &[u8]) -> usize {
        let Mode::Detecting { matched } = &mut self.mode else {
            return 0;
        };
        let start = *matched;
        let take = (PREFACE.len() - start).min(bytes.len());
        if bytes[..take] != PREFACE[start..start + take] {
            self.mode = Mode::PassThrough;
            self.on_flood = None;
            return 0;
        }
        *matched += take;
        if *matched < PREFACE.len() {
            return 0;
        }
        self.mode = Mode::Guarded(Box::new(Guard {
            inbound: FrameScanner::default(),
            outbound: FrameScanner::default(),
            bucket: TokenBucket::new(Instant::now()),
            last_client_stream: 0,
            phase: Phase::Open,
            deadline: None,
            on_flood: self.on_flood.take(),
        }));
        bytes.len() - take
    }
}

impl Guard {
    /// Scans bytes read from the client; when they flood, returns how many
    /// of them may still be handed to hyper (those before the frame that
    /// found the bucket empty) and trips.
    fn scan_inbound(&mut self, bytes: &[u8]) -> Option<usize> {
        let now = Instant::now();
        let mut offset = 0;
        while offset < bytes.len() {
            let (used, head) = self.inbound.advance(&bytes[offset..]);
            offset += used;
            let Some(head) = head else { continue };
            if head.kind == HEADERS && head.stream % 2 == 1 {
                self.last_client_stream = self.last_client_stream.max(head.stream);
            }
            if head.is_control() && !self.bucket.take(now) {
                self.trip();
                return Some(offset.saturating_sub(FRAME_HEADER_LEN));
            }
        }
        None
    }

    /// Follows bytes written to the client (hyper's frames).
    fn scan_outbound(&mut self, bytes: &[u8]) {
        let mut offset = 0;
        while offset < bytes.len() {
            let (used, head) = self.outbound.advance(&bytes[offset..]);
            offset += used;
            if head.is_some_and(|head| head.kind == DATA) {
                self.bucket.credit(CREDIT_PER_DATA_FRAME_SENT);
            }
        }
    }

    /// Flooded, and hyper is still in the middle of writing a frame.
    fn finishing_a_frame(&self) -> bool {
        matches!(self.phase, Phase::Tripped) && !self.outbound.at_boundary()
    }

    fn trip(&mut self) {
        self.phase = Phase::Tripped;
        self.deadline = Some(Box::pin(tokio::time::sleep(GOAWAY_DEADLINE)));
        if let Some(on_flood) = self.on_flood.take() {
            on_flood();
        }
    }

    fn goaway_frame(&self) -> Vec<u8> {
        let length = 8 + GOAWAY_DEBUG.len();
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + length);
        frame.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(&[GOAWAY, 0, 0, 0, 0, 0]);
        frame.extend_from_slice(&self.last_client_stream.to_be_bytes());
        frame.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        frame.extend_from_slice(GOAWAY_DEBUG);
        frame
    }

    /// Moves from the flood to the linger: GOAWAY at a frame boundary,
    /// flush, TLS close. Ready once the outbound side is done with.
    fn drive<T: AsyncWrite + Unpin>(&mut self, inner: &mut T, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let before_linger = matches!(
                self.phase,
                Phase::Tripped | Phase::GoAway { .. } | Phase::Flushing | Phase::ShuttingDown
            );
            if before_linger && self.deadline_passed(cx) {
                self.phase = Phase::Closed;
            }
            match self.phase {
                Phase::Open | Phase::Lingering { .. } | Phase::Closed => return Poll::Ready(()),
                Phase::Tripped => {
                    if !self.outbound.at_boundary() {
                        // hyper is blocked writing the rest of its frame and
                        // will be woken to finish it.
                        return Poll::Pending;
                    }
                    self.phase = Phase::GoAway { written: 0 };
                }
                Phase::GoAway { written } => {
                    let frame = self.goaway_frame();
                    match Pin::new(&mut *inner).poll_write(cx, &frame[written..]) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(0) | Err(_)) => self.phase = Phase::Closed,
                        Poll::Ready(Ok(n)) if written + n == frame.len() => {
                            self.phase = Phase::Flushing;
                        }
                        Poll::Ready(Ok(n)) => {
                            self.phase = Phase::GoAway {
                                written: written + n,
                            };
                        }
                    }
                }
                Phase::Flushing => match Pin::new(&mut *inner).poll_flush(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => self.phase = Phase::ShuttingDown,
                    Poll::Ready(Err(_)) => self.phase = Phase::Closed,
                },
                Phase::ShuttingDown => match Pin::new(&mut *inner).poll_shutdown(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(_) => {
                        self.phase = Phase::Lingering { discarded: 0 };
                        self.deadline = Some(Box::pin(tokio::time::sleep(LINGER)));
                    }
                },
            }
        }
    }

    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready())
    }

    /// Waits for the client to close or the linger to end, reading and
    /// discarding a bounded amount; Ready when nothing more will be read.
    fn linger<T: AsyncRead + Unpin>(&mut self, inner: &mut T, cx: &mut Context<'_>) -> Poll<()> {
        let mut scratch = [0u8; 4096];
        while let Phase::Lingering { discarded } = &mut self.phase {
            if *discarded >= LINGER_DISCARD_BYTES {
                break;
            }
            let mut discard = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *inner).poll_read(cx, &mut discard) {
                Poll::Ready(Ok(())) if !discard.filled().is_empty() => {
                    *discarded += discard.filled().len();
                }
                Poll::Ready(_) => {
                    self.phase = Phase::Closed;
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
        }
        if self.deadline_passed(cx) {
            self.phase = Phase::Closed;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for H2Guard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let guard = match &mut this.mode {
                Mode::PassThrough => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Mode::Detecting { .. } => {
                    let before = buf.filled().len();
                    let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
                    let read = buf.filled().len() - before;
                    let frames = this.detect(&buf.filled()[before..]);
                    if let Mode::Guarded(guard) = &mut this.mode {
                        let start = buf.filled().len() - frames;
                        if let Some(keep) = guard.scan_inbound(&buf.filled()[start..]) {
                            buf.set_filled(start + keep);
                        }
                    }
                    if read == 0 || buf.filled().len() > before {
                        return poll;
                    }
                    // Everything read was a flood: handle it below.
                    continue;
                }
                Mode::Guarded(guard) => guard,
            };
            match guard.phase {
                Phase::Open => {
                    let before = buf.filled().len();
                    let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
                    let Some(keep) = guard.scan_inbound(&buf.filled()[before..]) else {
                        return poll;
                    };
                    buf.set_filled(before + keep);
                    if keep > 0 {
                        // hyper reads again until Pending, which drives the
                        // GOAWAY.
                        return poll;
                    }
                }
                Phase::Lingering { .. } => {
                    if guard.linger(&mut this.inner, cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                // The end of hyper's input.
                Phase::Closed => return Poll::Ready(Ok(())),
                Phase::Tripped | Phase::GoAway { .. } | Phase::Flushing | Phase::ShuttingDown => {
                    if guard.drive(&mut this.inner, cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for H2Guard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Mode::Guarded(guard) = &mut this.mode else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        match guard.phase {
            Phase::Open => {
                let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
                if let Poll::Ready(Ok(written)) = poll {
                    guard.scan_outbound(&buf[..written]);
                }
                poll
            }
            Phase::Tripped if guard.finishing_a_frame() => {
                // Let hyper finish its frame, and not one byte more.
                let limit = guard.outbound.until_next_step().min(buf.len());
                let poll = Pin::new(&mut this.inner).poll_write(cx, &buf[..limit]);
                if let Poll::Ready(Ok(written)) = poll {
                    guard.scan_outbound(&buf[..written]);
                }
                poll
            }
            _ => match guard.drive(&mut this.inner, cx) {
                Poll::Pending => Poll::Pending,
                // The connection is ending: what hyper still writes is
                // dropped.
                Poll::Ready(()) => Poll::Ready(Ok(buf.len())),
            },
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match &mut this.mode {
            Mode::Guarded(guard) if matches!(guard.phase, Phase::Open) => {
                let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
                if let Poll::Ready(Ok(mut written)) = poll {
                    for slice in bufs {
                        let take = written.min(slice.len());
                        guard.scan_outbound(&slice[..take]);
                        written -= take;
                    }
                }
                poll
            }
            Mode::Guarded(_) => {
                let first = bufs.iter().find(|slice| !slice.is_empty());
                Pin::new(this).poll_write(cx, first.map_or(&[][..], |slice| &slice[..]))
            }
            _ => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.mode {
            Mode::Guarded(guard)
                if !matches!(guard.phase, Phase::Open) && !guard.finishing_a_frame() =>
            {
                guard.drive(&mut this.inner, cx).map(Ok)
            }
            _ => Pin::new(&mut this.inner).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.mode {
            Mode::Guarded(guard) if !matches!(guard.phase, Phase::Open) => {
                if guard.finishing_a_frame() {
                    // A frame cut short: nothing more can be said.
                    guard.phase = Phase::Closed;
                }
                match guard.drive(&mut this.inner, cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        guard.phase = Phase::Closed;
                        Poll::Ready(Ok(()))
                    }
                }
            }
            _ => Pin::new(&mut this.inner).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        bytes.push(kind);
        bytes.push(flags);
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Every header the scanner finds in `bytes` fed in `chunk`-byte reads.
    fn heads(bytes: &[u8], chunk: usize) -> Vec<FrameHead> {
        let mut scanner = FrameScanner::default();
        let mut found = Vec::new();
        for piece in bytes.chunks(chunk) {
            let mut offset = 0;
            while offset < piece.len() {
                let (used, head) = scanner.advance(&piece[offset..]);
                assert!(used > 0, "the scanner made no progress");
                offset += used;
                found.extend(head);
            }
        }
        assert!(scanner.at_boundary(), "the input ended mid-frame");
        found
    }

    fn sample() -> Vec<u8> {
        let mut bytes = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        bytes.extend(frame(HEADERS, 0x5, 1, &[0x82; 40]));
        bytes.extend(frame(DATA, 0, 1, &vec![0xaa; 70_000]));
        bytes.extend(frame(PING, 0, 0, &[7; 8]));
        bytes.extend(frame(DATA, END_STREAM, 3, &[]));
        bytes
    }

    #[test]
    fn frames_are_found_however_the_reads_split_them() {
        let whole = heads(&sample(), usize::MAX);
        let kinds: Vec<_> = whole.iter().map(|head| head.kind).collect();
        assert_eq!(kinds, [SETTINGS, HEADERS, DATA, PING, DATA]);
        assert_eq!(whole[2].length, 70_000);
        assert_eq!(whole[1].stream, 1);
        assert_eq!(whole[4].flags, END_STREAM);
        for chunk in [1, 2, 5, 8, 9, 10, 17, 4096] {
            assert_eq!(heads(&sample(), chunk), whole, "in reads of {chunk} bytes");
        }
    }

    #[test]
    fn the_reserved_bit_of_the_stream_id_is_ignored() {
        let bytes = frame(HEADERS, 0, 0x8000_0005, &[]);
        assert_eq!(heads(&bytes, 3)[0].stream, 5);
    }

    #[test]
    fn control_frames_are_the_flood_kinds_only() {
        let head = |kind, flags, length| FrameHead {
            length,
            kind,
            flags,
            stream: 1,
        };
        assert!(head(PING, 0, 8).is_control());
        assert!(head(SETTINGS, 1, 0).is_control());
        assert!(head(PRIORITY, 0, 5).is_control());
        assert!(head(WINDOW_UPDATE, 0, 4).is_control());
        assert!(head(DATA, 0, 0).is_control());
        assert!(!head(DATA, END_STREAM, 0).is_control(), "ends a body");
        assert!(!head(DATA, 0, 1).is_control());
        assert!(!head(HEADERS, 0, 0).is_control());
        assert!(!head(0x3, 0, 4).is_control(), "RST_STREAM is h2's to count");
    }

    #[test]
    fn the_outbound_writer_is_let_to_the_end_of_its_frame_only() {
        let mut scanner = FrameScanner::default();
        let bytes = frame(DATA, 0, 1, &[1; 20]);
        let (used, _) = scanner.advance(&bytes[..4]);
        assert_eq!(used, 4);
        assert_eq!(scanner.until_next_step(), 5, "the rest of the header");
        let (used, head) = scanner.advance(&bytes[4..]);
        assert_eq!((used, head.map(|head| head.length)), (5, Some(20)));
        assert_eq!(scanner.until_next_step(), 20, "the payload");
        scanner.advance(&bytes[9..20]);
        assert_eq!(scanner.until_next_step(), 9);
        scanner.advance(&bytes[20..]);
        assert!(scanner.at_boundary());
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start);
        let burst = CONTROL_FRAME_BURST as usize;
        assert_eq!((0..burst * 2).filter(|_| bucket.take(start)).count(), burst);
        let later = start + Duration::from_millis(100);
        let per_tenth = (CONTROL_FRAMES_PER_SECOND / 10.0) as usize;
        assert_eq!((0..burst).filter(|_| bucket.take(later)).count(), per_tenth);
        bucket.credit(CREDIT_PER_DATA_FRAME_SENT);
        assert!(bucket.take(later) && bucket.take(later) && !bucket.take(later));
    }

    #[tokio::test(start_paused = true)]
    async fn the_preface_decides_and_the_flooding_frame_is_withheld() {
        let mut guard = H2Guard::new(tokio::io::empty(), || {});
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(frame(HEADERS, 0x5, 3, &[0x82]));
        // The preface split across two reads.
        assert_eq!(guard.detect(&bytes[..10]), 0);
        assert!(matches!(guard.mode, Mode::Detecting { matched: 10 }));
        let frames = guard.detect(&bytes[10..]);
        assert_eq!(frames, bytes.len() - PREFACE.len());
        let Mode::Guarded(state) = &mut guard.mode else {
            panic!("not guarded")
        };
        assert_eq!(state.scan_inbound(&bytes[PREFACE.len()..]), None);
        assert_eq!(state.last_client_stream, 3);
        let ping = frame(PING, 0, 0, &[0; 8]);
        let flood: Vec<u8> = (0..CONTROL_FRAME_BURST as usize + 5)
            .flat_map(|_| ping.clone())
            .collect();
        let keep = state.scan_inbound(&flood).expect("a flood");
        assert_eq!(keep, ping.len() * (CONTROL_FRAME_BURST as usize - 1));
        assert!(matches!(state.phase, Phase::Tripped));
        let goaway = state.goaway_frame();
        assert_eq!(goaway[3], GOAWAY);
        assert_eq!(&goaway[9..13], &3u32.to_be_bytes());
        assert_eq!(&goaway[13..17], &ENHANCE_YOUR_CALM.to_be_bytes());
    }

    #[test]
    fn http1_passes_through_after_its_first_bytes() {
        let mut guard = H2Guard::new(tokio::io::empty(), || {});
        assert_eq!(guard.detect(b"PRI * HTTP/1.1\r\n"), 0);
        assert!(matches!(guard.mode, Mode::PassThrough));
        let mut guard = H2Guard::new(tokio::io::empty(), || {});
        guard.detect(b"GET / HTTP/1.1\r\n");
        assert!(matches!(guard.mode, Mode::PassThrough));
    }
}
