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

/// A transport that zeroes the space it is asked to read into before
/// reading, wherever that space may still hold bytes of an earlier read:
/// what the read does not fill is zero.
///
/// Under rustls, that space is the deframer's free space, where the records
/// it has already decrypted in place and handled lie. Zeroing all of it
/// before every read (4 KiB or more, several reads per request, most of
/// which find nothing) cost a quarter of the server's instructions per GET;
/// so the reader remembers how far its last read filled, and zeroes only up
/// to there while the buffer stays the same one (see `Filled`).
#[derive(Debug)]
pub struct ZeroedReads<T> {
    inner: T,
    last: Option<Filled>,
}

/// Where the last read left the buffer it read into, as addresses (never
/// dereferenced: they only compare one read's space with the next's).
///
/// Every byte of that buffer that may hold earlier data lies below `below`,
/// the end of what the last read filled: the space past it was zeroed
/// before that read and the reader's owner (rustls) writes only into what
/// reads have filled (decrypting records in place, moving an unread tail
/// to the front). A buffer that is reallocated moves (the wiping allocator
/// always moves a block it reallocates, and a new block never overlaps the
/// live one it is copied from) or changes length; either moves its end, so
/// a space with a different `end` is zeroed whole.
#[derive(Clone, Copy, Debug)]
struct Filled {
    /// One past the last byte of the space the last read was given.
    end: usize,
    /// One past the last byte that read filled.
    below: usize,
}

impl<T> ZeroedReads<T> {
    /// Wraps a transport.
    pub fn new(inner: T) -> ZeroedReads<T> {
        ZeroedReads { inner, last: None }
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
        let this = self.get_mut();
        let filled = buf.filled().len();
        let start = buf.filled().as_ptr_range().end as usize;
        let end = start + buf.remaining();
        // The initialised part past what is filled may hold earlier bytes
        // up to `below` (all of it if the buffer is not the last one); the
        // uninitialised rest is set to zero by `initialize_unfilled`.
        let dirty = match this.last {
            Some(last) if last.end == end => last.below.saturating_sub(start),
            _ => usize::MAX,
        };
        let initialised = buf.initialized_mut();
        let dirty_end = filled + dirty.min(initialised.len() - filled);
        initialised[filled..dirty_end].fill(0);
        buf.initialize_unfilled();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.last = Some(Filled {
            end,
            below: start + (buf.filled().len() - filled),
        });
        poll
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

    /// A reader whose reads hand out chunks of its data, one per call.
    struct Chunks(Vec<&'static [u8]>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if !self.0.is_empty() {
                let chunk = self.0.remove(0);
                buf.put_slice(chunk);
            }
            Poll::Ready(Ok(()))
        }
    }

    /// As rustls uses its deframer: reads into the free space of one
    /// buffer, decrypts in place, moves the unread tail to the front.
    #[tokio::test]
    async fn what_earlier_reads_filled_is_zeroed_wherever_the_space_starts() {
        let mut reader = ZeroedReads::new(Chunks(vec![b"secret-one|sec", b"ret-two|", b"x"]));
        let mut deframer = [0u8; 32];
        // Two records arrive, the second cut short.
        let read = reader.read(&mut deframer[..]).await.unwrap();
        assert_eq!(read, 14);
        // The owner handles the first record in place ("decrypts" it) and
        // moves the rest to the front, as rustls does.
        deframer[..11].copy_from_slice(b"plaintext-1");
        deframer.copy_within(11..14, 0);
        // The next read goes after the 3 bytes kept: everything the first
        // read filled past them is zeroed, wherever the read starts.
        let read = reader.read(&mut deframer[3..]).await.unwrap();
        assert_eq!(read, 8);
        assert_eq!(&deframer[..11], b"secret-two|");
        assert!(deframer[11..].iter().all(|&byte| byte == 0), "{deframer:?}");
        // All handled: the whole buffer is free again.
        deframer[..11].copy_from_slice(b"plaintext-2");
        let read = reader.read(&mut deframer[..]).await.unwrap();
        assert_eq!(read, 1);
        assert_eq!(&deframer[..1], b"x");
        assert!(deframer[1..].iter().all(|&byte| byte == 0), "{deframer:?}");
    }

    #[tokio::test]
    async fn a_different_buffer_is_zeroed_whole() {
        let mut reader = ZeroedReads::new(Chunks(vec![b"ab", b"cd"]));
        let mut first = [0u8; 8];
        assert_eq!(reader.read(&mut first).await.unwrap(), 2);
        // A buffer that ends elsewhere may hold anything: all of it is
        // zeroed, not only up to where the last read filled.
        let mut second = *b"stale bytes!";
        assert_eq!(reader.read(&mut second).await.unwrap(), 2);
        assert_eq!(&second, b"cd\0\0\0\0\0\0\0\0\0\0");
    }
}
