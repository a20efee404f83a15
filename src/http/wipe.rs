//! No copy left on an open connection: a request body's bytes are wiped
//! where the connection keeps them, not only when a buffer is freed.
//!
//! The global allocator ([`crate::posture::alloc`]) wipes every block it
//! frees, but a keep-alive connection frees nothing between requests. Four
//! of its buffers are reused from one request to the next, and each kept
//! the plaintext of the values it carried until later traffic overwrote
//! it:
//!
//! - rustls decrypts each record in place in its receive buffer (the
//!   deframer) and, once the record is handled, only moves the unread tail
//!   to the front: the plaintext stays past the end of what is in use.
//!   [`ZeroedReads`], under rustls, zeroes the whole of the space rustls
//!   reads into before each read, which is exactly that tail.
//! - hyper's HTTP/1 read buffer and h2's frame buffer handed a body out as
//!   slices of themselves, and took the space back unwiped once the slices
//!   were dropped; h2's write buffer copies a DATA frame under 256 bytes (a
//!   small GET answer) and was reused with `clear()`. hyper and h2 are
//!   vendored with those three places changed (`vendor/*/TMPVAULT.md`): a
//!   received chunk gets an allocation of its own, freed (so wiped)
//!   wherever it is dropped, and is zeroed in the read buffer; the write
//!   buffer is zeroed before reuse.
//!
//! tests/residue.rs scans the server's memory with the connections still
//! open, over HTTP/1.1 and HTTP/2, and finds values without each of these.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A transport that zeroes every buffer it is asked to read into before
/// reading: what the read does not fill stays zero.
///
/// Under rustls, that buffer is the deframer's free space, where the
/// records it has already decrypted in place and handled lie. It is at most
/// a few KiB (rustls reads 4 KiB at a time), so the zeroing costs little
/// beside the decryption of the same bytes.
#[derive(Debug)]
pub struct ZeroedReads<T> {
    inner: T,
}

impl<T> ZeroedReads<T> {
    /// Wraps a transport.
    pub fn new(inner: T) -> ZeroedReads<T> {
        ZeroedReads { inner }
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ZeroedReads<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        // The initialised part past what is filled holds earlier bytes;
        // the rest is set to zero by `initialize_unfilled`.
        buf.initialized_mut()[filled..].fill(0);
        buf.initialize_unfilled();
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ZeroedReads<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn zeroed_reads_zeroes_the_space_past_what_it_reads() {
        let mut reader = ZeroedReads::new(&b"new"[..]);
        let mut space = *b"old plaintext!";
        let read = reader.read(&mut space).await.unwrap();
        assert_eq!(read, 3);
        assert_eq!(&space, b"new\0\0\0\0\0\0\0\0\0\0\0");
    }
}
