//! Early answers over HTTP/2: a request body the handler stopped reading is
//! read on, and thrown away, in the background, so the answer reaches every
//! client.
//!
//! A handler may answer before the body is in: a bad key, a refused TTL, a
//! 405 or a 413 are known from the headers. HTTP/2 then sends the complete
//! response and, once the body is dropped, RST_STREAM(NO_ERROR), which
//! RFC 9113 §8.1 says clients must not take as an error. curl up to 8.x
//! (nghttp2) still does when the reset arrives while it is uploading: about
//! half the early 400s and every 413 came back as `curl: (92) Stream error
//! in the HTTP/2 framing layer` with no status. Read on, the stream ends
//! the ordinary way (the client's END_STREAM, then ours) and no reset is
//! sent at all.
//!
//! Bounded both ways: at most [`DRAIN_BYTES`] and [`DRAIN_TIME`] per
//! stream, after which the body is dropped and the reset goes out as
//! before; an oversize body is never read to its end. Each chunk is
//! dropped as it arrives (and the flow-control window it used released),
//! so draining holds no memory beyond h2's own stream window.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// How much of an abandoned body is read on, at most. Enough for a client
/// that stops sending on an error status, as curl does, to see it first.
pub const DRAIN_BYTES: u64 = 1024 * 1024;

/// How long an abandoned body is read on, at most.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// A request body that, dropped before its end, is drained in the
/// background within the bounds above (HTTP/2 only: hyper's HTTP/1.1 side
/// reads on or closes the connection itself, and curl takes either).
pub struct Drained {
    inner: Option<Incoming>,
    drain: bool,
}

impl Drained {
    /// Wraps a request body; `drain` says whether to read on when dropped.
    pub fn new(body: Incoming, drain: bool) -> Drained {
        Drained {
            inner: Some(body),
            drain,
        }
    }
}

impl Body for Drained {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if !self.drain || body.is_end_stream() {
            return;
        }
        // Outside a runtime (never in the server) the body is dropped and
        // the stream reset, as without this type.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body));
        }
    }
}

async fn drain(mut body: Incoming) {
    let read_on = async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(chunk) = frame.data_ref() {
                read += chunk.len() as u64;
                if read > DRAIN_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read_on).await;
}
