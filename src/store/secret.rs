//! [`SecretBytes`]: the one type that holds a secret value.
//!
//! The bytes are wiped when the value is dropped (deleted, replaced, expired,
//! popped, or at shutdown), and `Debug` prints only the length, so a value can
//! never leak through a log line, an error message or a panic.

use std::fmt;
use zeroize::Zeroizing;

use super::arena::{ArenaFull, Buffer};

/// Secret bytes: zeroized on drop, redacted in `Debug`, never `Display`.
///
/// The bytes live in the process's secret arena ([`super::arena`]) when
/// one is installed, else in an exact-size boxed slice (no spare capacity
/// that could hold an unwiped copy after a reallocation). Either way they
/// are wiped when the value is dropped.
pub struct SecretBytes(Buffer);

impl SecretBytes {
    /// Takes the bytes of a request body: copied into the arena (and the
    /// body's buffer wiped with [`wipe`]), or, on the heap, kept in place
    /// when the buffer has no spare capacity.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Result<SecretBytes, ArenaFull> {
        let mut bytes = bytes;
        if !Buffer::in_arena() && bytes.len() == bytes.capacity() {
            return Buffer::boxed(std::mem::take(&mut *bytes).into_boxed_slice()).map(SecretBytes);
        }
        // Taken out of the `Zeroizing` (which is left an empty vector), so
        // the copy is wiped by `memset` instead of `zeroize`'s volatile
        // loop. The spare capacity is wiped too, as `Zeroizing` would: it is
        // filled in place (no reallocation); a body sent with a
        // Content-Length has none.
        let mut body = std::mem::take(&mut *bytes);
        let stored = SecretBytes::copy_from(&body);
        body.resize(body.capacity(), 0);
        wipe(&mut body);
        stored
    }

    /// Copies `bytes` into a new secret, in the arena if there is one.
    pub fn copy_from(bytes: &[u8]) -> Result<SecretBytes, ArenaFull> {
        Buffer::copy(bytes).map(SecretBytes)
    }

    /// A short-lived copy on the (wiped) heap, never stored: what a snapshot
    /// holds of a list while it writes one shard, so that writing it needs
    /// no room in a full arena.
    pub fn transient_copy(&self) -> SecretBytes {
        SecretBytes(self.0.heap_copy())
    }

    /// This value where the store keeps values: as it is, unless it is a
    /// transient heap copy (an exported record given back to
    /// [`super::Store::import`]) while an arena is installed; then a copy in
    /// the arena, and this one wiped as it drops.
    pub fn into_stored(self) -> Result<SecretBytes, ArenaFull> {
        if self.0.off_arena() {
            SecretBytes::copy_from(self.expose())
        } else {
            Ok(self)
        }
    }

    /// The secret bytes. Callers must not keep a copy beyond one request.
    pub fn expose(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    /// True for a zero-length secret.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted {} bytes]", self.len())
    }
}

/// Zeroes `bytes` with one `memset` that the optimiser has to keep: the
/// fence is a point where memory may be read and the pointer escapes
/// through `black_box` (the allocator's wipe in `posture::alloc` does the
/// same). For buffers that held a secret or a key name and are reused or
/// freed right after. `zeroize` on a slice writes one volatile byte at a
/// time, about three instructions per byte: 3,000 for a 1 KiB body.
pub fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    std::hint::black_box(bytes.as_ptr());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_zeroes_every_byte() {
        let mut bytes = *b"hunter2 and more";
        wipe(&mut bytes[..7]);
        assert_eq!(&bytes, b"\0\0\0\0\0\0\0 and more");
        wipe(&mut bytes);
        assert_eq!(bytes, [0; 16]);
    }

    #[test]
    fn debug_is_redacted() {
        let secret = SecretBytes::copy_from(b"hunter2").unwrap();
        assert_eq!(format!("{secret:?}"), "[redacted 7 bytes]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted 7 bytes])");
    }

    #[test]
    fn new_keeps_the_bytes_whatever_the_capacity() {
        let mut spare = Vec::with_capacity(64);
        spare.extend_from_slice(b"abc");
        assert_eq!(
            SecretBytes::new(Zeroizing::new(spare)).unwrap().expose(),
            b"abc"
        );
        assert_eq!(
            SecretBytes::new(Zeroizing::new(b"xyz".to_vec()))
                .unwrap()
                .expose(),
            b"xyz"
        );
    }
}
