//! HTTP/2 by hand, for the abuse tests: frames written byte by byte (so a
//! test can send what no well-behaved client would), frames read back with
//! a deadline on every read, and a minimal HPACK encoder (literals without
//! indexing, no Huffman; plus the two representations a header bomb needs).
//! Responses are not HPACK-decoded (only how their fields are represented,
//! [`hpack::representations`]): tests look at frame types, RST_STREAM
//! and GOAWAY codes, and DATA payloads. For a well-behaved HTTP/2 client,
//! [`H2Client`] uses the h2 crate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tmpvault::tls::ClientTlsFiles;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A client TLS stream.
pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// What every HTTP/2 client sends first.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
}

/// Error codes (RFC 9113 §7).
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// SETTINGS identifiers.
pub mod setting {
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
}

/// One frame, as bytes on the wire.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("payload fits a frame");
    assert!(length < 1 << 24, "payload fits a frame");
    let mut bytes = Vec::with_capacity(9 + payload.len());
    bytes.extend_from_slice(&length.to_be_bytes()[1..]);
    bytes.push(kind);
    bytes.push(flags);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = values
        .iter()
        .flat_map(|(id, value)| {
            let mut entry = id.to_be_bytes().to_vec();
            entry.extend_from_slice(&value.to_be_bytes());
            entry
        })
        .collect();
    frame(kind::SETTINGS, 0, 0, &payload)
}

pub fn settings_ack() -> Vec<u8> {
    frame(kind::SETTINGS, flag::ACK, 0, &[])
}

pub fn ping(ack: bool, data: [u8; 8]) -> Vec<u8> {
    frame(kind::PING, if ack { flag::ACK } else { 0 }, 0, &data)
}

pub fn rst_stream(stream: u32, error: u32) -> Vec<u8> {
    frame(kind::RST_STREAM, 0, stream, &error.to_be_bytes())
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

pub fn priority(stream: u32, depends_on: u32, weight: u8) -> Vec<u8> {
    let mut payload = depends_on.to_be_bytes().to_vec();
    payload.push(weight);
    frame(kind::PRIORITY, 0, stream, &payload)
}

pub fn data(stream: u32, end_stream: bool, payload: &[u8]) -> Vec<u8> {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    frame(kind::DATA, flags, stream, payload)
}

pub fn headers(stream: u32, block: &[u8], end_stream: bool, end_headers: bool) -> Vec<u8> {
    let mut flags = 0;
    if end_stream {
        flags |= flag::END_STREAM;
    }
    if end_headers {
        flags |= flag::END_HEADERS;
    }
    frame(kind::HEADERS, flags, stream, block)
}

pub fn continuation(stream: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
    let flags = if end_headers { flag::END_HEADERS } else { 0 };
    frame(kind::CONTINUATION, flags, stream, block)
}

/// The smallest HPACK encoder the tests need, and a reader of how an
/// answer's fields are represented (not their names or values).
pub mod hpack {
    /// An integer with an `prefix_bits`-bit prefix; `first` holds the
    /// representation's pattern bits (RFC 7541 §5.1).
    pub fn integer(prefix_bits: u32, first: u8, value: usize) -> Vec<u8> {
        let max = (1usize << prefix_bits) - 1;
        if value < max {
            return vec![first | value as u8];
        }
        let mut bytes = vec![first | max as u8];
        let mut rest = value - max;
        while rest >= 128 {
            bytes.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        bytes.push(rest as u8);
        bytes
    }

    fn string(bytes: &[u8]) -> Vec<u8> {
        let mut out = integer(7, 0x00, bytes.len()); // no Huffman
        out.extend_from_slice(bytes);
        out
    }

    /// A literal field without indexing, with a literal name.
    pub fn literal(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x00];
        out.extend(string(name.as_bytes()));
        out.extend(string(value));
        out
    }

    /// A literal field that the decoder adds to its dynamic table (the
    /// newest entry is index 62).
    pub fn literal_indexed(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x40];
        out.extend(string(name.as_bytes()));
        out.extend(string(value));
        out
    }

    /// A reference to table entry `index`.
    pub fn indexed(index: usize) -> Vec<u8> {
        integer(7, 0x80, index)
    }

    /// How a response header block represents its fields (RFC 7541 §6):
    /// (indexed, with incremental indexing, without indexing, never indexed).
    pub fn representations(block: &[u8]) -> [usize; 4] {
        fn read_integer(block: &[u8], at: &mut usize, prefix_bits: u32) -> usize {
            let max = (1usize << prefix_bits) - 1;
            let mut value = usize::from(block[*at]) & max;
            *at += 1;
            if value == max {
                let mut shift = 0;
                loop {
                    let byte = block[*at];
                    *at += 1;
                    value += usize::from(byte & 0x7f) << shift;
                    shift += 7;
                    if byte & 0x80 == 0 {
                        break;
                    }
                }
            }
            value
        }
        fn skip_string(block: &[u8], at: &mut usize) {
            let len = read_integer(block, at, 7);
            *at += len;
        }
        let mut counts = [0; 4];
        let mut at = 0;
        while at < block.len() {
            let first = block[at];
            let (kind, prefix_bits) = match first {
                _ if first & 0x80 != 0 => (0, 7),
                _ if first & 0xc0 == 0x40 => (1, 6),
                _ if first & 0xe0 == 0x20 => {
                    read_integer(block, &mut at, 5); // a table size update
                    continue;
                }
                _ if first & 0xf0 == 0x10 => (3, 4),
                _ => (2, 4),
            };
            counts[kind] += 1;
            let name = read_integer(block, &mut at, prefix_bits);
            if kind != 0 {
                if name == 0 {
                    skip_string(block, &mut at);
                }
                skip_string(block, &mut at);
            }
        }
        counts
    }

    /// The pseudo-headers of a request.
    pub fn request(method: &str, path: &str) -> Vec<u8> {
        let mut out = literal(":method", method.as_bytes());
        out.extend(literal(":scheme", b"https"));
        out.extend(literal(":authority", b"localhost"));
        out.extend(literal(":path", path.as_bytes()));
        out
    }
}

/// A TLS connection to the test server offering only ALPN `h2`.
pub async fn connect_tls(addr: SocketAddr, files: &ClientTlsFiles) -> Tls {
    let mut config = tmpvault::tls::client_config(files).expect("client TLS config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// A frame read back.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// How reading ended when no frame came.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Nothing within the deadline.
    Timeout,
    /// EOF, a reset, or a TLS error.
    Closed,
}

/// A GOAWAY frame's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream: u32,
    pub code: u32,
    pub debug: String,
}

/// What a connection's reader saw before it stopped.
#[derive(Debug, Default)]
pub struct Seen {
    pub goaway: Option<GoAway>,
    /// (stream, error code) of each RST_STREAM.
    pub resets: Vec<(u32, u32)>,
    /// Streams that got a response HEADERS frame.
    pub responses: Vec<u32>,
    /// Streams the server ended (END_STREAM on HEADERS or DATA).
    pub ended: Vec<u32>,
    /// DATA payloads, concatenated (the first MiB).
    pub data: Vec<u8>,
    pub frames: u64,
    /// How reading ended if not with a GOAWAY.
    pub end: Option<End>,
}

impl Seen {
    pub fn goaway_code(&self) -> Option<u32> {
        self.goaway.as_ref().map(|goaway| goaway.code)
    }
}

/// Reads frames from the server side of a connection.
pub struct FrameReader<R> {
    inner: R,
    buffer: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buffer: Vec::with_capacity(32 * 1024),
        }
    }

    /// The next frame, waiting until `deadline` at most.
    pub async fn next(&mut self, deadline: Instant) -> Result<Frame, End> {
        loop {
            if self.buffer.len() >= 9 {
                let length = usize::from(self.buffer[0]) << 16
                    | usize::from(self.buffer[1]) << 8
                    | usize::from(self.buffer[2]);
                if self.buffer.len() >= 9 + length {
                    let frame = Frame {
                        kind: self.buffer[3],
                        flags: self.buffer[4],
                        stream: u32::from_be_bytes([
                            self.buffer[5],
                            self.buffer[6],
                            self.buffer[7],
                            self.buffer[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buffer[9..9 + length].to_vec(),
                    };
                    self.buffer.drain(..9 + length);
                    return Ok(frame);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.inner.read(&mut chunk)).await {
                Err(_) => return Err(End::Timeout),
                Ok(Ok(0) | Err(_)) => return Err(End::Closed),
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until a GOAWAY, the end of the connection or `within`,
    /// noting what came before.
    pub async fn until_goaway(&mut self, within: Duration) -> Seen {
        self.until(within, |_| false).await
    }

    /// Reads until a GOAWAY, the end, `within`, or `enough` says so.
    pub async fn until(&mut self, within: Duration, mut enough: impl FnMut(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + within;
        let mut seen = Seen::default();
        loop {
            let frame = match self.next(deadline).await {
                Ok(frame) => frame,
                Err(end) => {
                    seen.end = Some(end);
                    return seen;
                }
            };
            seen.frames += 1;
            if matches!(frame.kind, kind::HEADERS | kind::DATA)
                && frame.flags & flag::END_STREAM != 0
            {
                seen.ended.push(frame.stream);
            }
            match frame.kind {
                kind::GOAWAY if frame.payload.len() >= 8 => {
                    let word = |at: usize| {
                        u32::from_be_bytes([
                            frame.payload[at],
                            frame.payload[at + 1],
                            frame.payload[at + 2],
                            frame.payload[at + 3],
                        ])
                    };
                    seen.goaway = Some(GoAway {
                        last_stream: word(0) & 0x7fff_ffff,
                        code: word(4),
                        debug: String::from_utf8_lossy(&frame.payload[8..]).into_owned(),
                    });
                    return seen;
                }
                kind::RST_STREAM if frame.payload.len() == 4 => {
                    let error = u32::from_be_bytes([
                        frame.payload[0],
                        frame.payload[1],
                        frame.payload[2],
                        frame.payload[3],
                    ]);
                    seen.resets.push((frame.stream, error));
                }
                kind::HEADERS => seen.responses.push(frame.stream),
                kind::DATA if seen.data.len() < 1 << 20 => {
                    seen.data.extend_from_slice(&frame.payload);
                }
                _ => {}
            }
            if enough(&seen) {
                return seen;
            }
        }
    }
}

/// A raw HTTP/2 connection, split so that one task can flood while
/// another reads.
pub struct H2Raw {
    pub reader: FrameReader<ReadHalf<Tls>>,
    pub writer: WriteHalf<Tls>,
}

impl H2Raw {
    /// Connects, sends the preface and `our_settings`, waits for the
    /// server's SETTINGS and acknowledges them: after this, the server's
    /// limits (its SETTINGS) are in force on both sides.
    pub async fn connect(
        addr: SocketAddr,
        files: &ClientTlsFiles,
        our_settings: &[(u16, u32)],
    ) -> H2Raw {
        let tls = connect_tls(addr, files).await;
        let (reader, writer) = tokio::io::split(tls);
        let mut raw = H2Raw {
            reader: FrameReader::new(reader),
            writer,
        };
        let mut start = PREFACE.to_vec();
        start.extend(settings(our_settings));
        raw.send(&start).await.expect("preface");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let frame = raw.reader.next(deadline).await.expect("server SETTINGS");
            if frame.kind == kind::SETTINGS && frame.flags & flag::ACK == 0 {
                break;
            }
        }
        raw.send(&settings_ack()).await.expect("SETTINGS ACK");
        raw
    }

    /// Writes bytes, with a deadline.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        write_within(&mut self.writer, bytes, Duration::from_secs(5)).await
    }
}

/// Writes all of `bytes` within `within`; a timeout is an error.
pub async fn write_within<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    within: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(within, async {
        writer.write_all(bytes).await?;
        writer.flush().await
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Writes the batches `next_batch` makes (it is given the batch's number)
/// until a write fails or `until`; returns how many were written. For
/// floods, in a task of its own.
pub async fn flood<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut next_batch: impl FnMut(u64) -> Vec<u8>,
    until: Instant,
) -> u64 {
    let mut batches = 0;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        if write_within(writer, &next_batch(batches), left)
            .await
            .is_err()
        {
            break;
        }
        batches += 1;
    }
    batches
}

/// A well-behaved HTTP/2 client (the h2 crate) for the canary.
#[derive(Clone)]
pub struct H2Client {
    send: h2::client::SendRequest<Bytes>,
}

impl H2Client {
    pub async fn connect(addr: SocketAddr, files: &ClientTlsFiles) -> H2Client {
        let tls = connect_tls(addr, files).await;
        let (send, connection) = tokio::time::timeout(
            Duration::from_secs(5),
            h2::client::Builder::new().handshake::<_, Bytes>(tls),
        )
        .await
        .expect("HTTP/2 handshake in time")
        .expect("HTTP/2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        H2Client { send }
    }

    /// A client on a connection the caller has set up.
    pub fn from_send_request(send: h2::client::SendRequest<Bytes>) -> H2Client {
        H2Client { send }
    }

    /// Any request, with `body` sent as one DATA frame; status and body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Vec<u8>), h2::Error> {
        let mut send = self.send.clone().ready().await?;
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .body(())
            .expect("request");
        let (response, mut stream) = send.send_request(request, body.is_none())?;
        if let Some(body) = body {
            stream.reserve_capacity(body.len());
            stream.send_data(body, true)?;
        }
        let response = response.await?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        Ok((status, bytes))
    }

    /// GET `path`; status and body.
    pub async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), h2::Error> {
        self.request("GET", path, None).await
    }
}
