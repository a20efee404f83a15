//! The snapshot and journal file format, the snapshot key, and the parsers.
//!
//! This module is pure format: bytes in, records out, and the reverse. What
//! files exist, when they are written and how a restart reads them back is
//! [`crate::persist`]; the append-only writer is [`crate::persist::journal`].
//!
//! # Files
//!
//! Both kinds of file are a 48-byte header followed by frames:
//!
//! ```text
//! header (48 bytes, little-endian integers)
//!   0  magic       8   "TMPVSNAP" (snapshot) or "TMPVJRNL" (journal)
//!   8  version     2   1
//!  10  cipher      1   1 = AES-256-GCM (--snapshot encrypted), 0 = none (plain)
//!  11  reserved    1   0
//!  12  key id      8   identifies the key (below); zero when plain
//!  20  nonce      12   random per file (the file key's salt, below)
//!  32  generation  8   the journal generation this file starts or belongs to
//!  40  created     8   milliseconds since the Unix epoch (informational)
//!
//! frame
//!   0  length      4   n, the length of the sealed body
//!   4  check       4   !n (bitwise complement), so a damaged length is
//!                      an error rather than a torn end
//!   8  kind        1   1 = entries, 2 = end (snapshot); 4 = start, 3 = change (journal)
//!   9  body        n   ciphertext || 16-byte GCM tag   (encrypted)
//!                      plaintext  || 4-byte CRC-32     (plain)
//! ```
//!
//! A snapshot is any number of `entries` frames, then exactly one `end`
//! frame (the number of entries, so a truncated file is refused), then
//! nothing. A journal is one `start` frame, written with the header when the
//! file is created, then `change` frames, one change each, appended one
//! `write(2)` at a time. The start frame holds the number of frames the
//! previous journal ended with (or `u64::MAX` for none): journals are only
//! ever cut short at the end of the newest one, so that is checkable for
//! every journal but the newest.
//!
//! # Encryption
//!
//! The 32-byte key from `--snapshot-key-file` is never used as a GCM key
//! itself. Each file gets its own key, derived from the file's random 96-bit
//! nonce the way AES-GCM-SIV derives its per-nonce keys (RFC 8452, section
//! 4): the first 8 bytes of `AES-256(key, LE32(i) || nonce)` for i = 0..3,
//! concatenated. Frame `i` of a file is sealed with that file key, the GCM
//! nonce `0u32 || LE64(i)`, and as associated data the whole 48-byte header,
//! `LE64(i)` and the frame kind. So:
//!
//! - A nonce never repeats under one key: within a file the frame index is
//!   the nonce and only goes up (a journal whose append fails is never
//!   written again; the next snapshot starts a new one); across files the
//!   keys differ unless two files draw the same random 96-bit nonce. With F
//!   files under one snapshot key that chance is below F^2 / 2^97: a
//!   snapshot and a journal every 30 seconds for ten years is F < 2^24, a
//!   chance below 2^-49. (A random 96-bit nonce per *record* under one key
//!   would be bounded by the number of records instead: 2^32 records, the
//!   NIST SP 800-38D limit, is only 50 days at 1,000 writes a second.)
//! - The header is authenticated by every frame: changing the key id, the
//!   nonce, the generation or the version fails authentication.
//! - Frames cannot be reordered, dropped from the middle, or moved between
//!   files: the index and the header are in the associated data. A journal
//!   can lose complete frames only from its end, which is what a crash looks
//!   like too (see [`crate::persist`] on what that allows).
//! - The key id is the first 8 bytes of `AES-256(key, "tmpvault key id\0")`,
//!   a key check value: a wrong key is reported as such, before any
//!   decryption, and the id says nothing about the key.
//!
//! Plain files (`--snapshot plain`, allowed only on tmpfs) have the same
//! layout with cipher 0; the CRC-32 (over the same associated data and the
//! plaintext) catches accidents, not attackers.
//!
//! # Records
//!
//! Times are nanoseconds since the Unix epoch (u64); deadlines are absolute
//! wall-clock times, so a restore keeps each secret's original expiry.
//! Strings and values are length-prefixed.
//!
//! ```text
//! entry (in an entries frame; repeated until the frame ends)
//!   kind u8 (1 secret, 2 list) | key (u16 len, bytes) | seq u64 | revision u64
//!   | version u64 | created u64 | updated u64 | expires u64
//!   | flags u8 (1: reads_left present, 2: content type present)
//!   | [reads_left u32] | [content type (u16 len, bytes)]
//!   | secret: value (u32 len, bytes) | list: count u32, items (u32 len, bytes)...
//!
//! change (one per change frame)
//!   op u8 | key (u16 len, bytes) | seq u64 | then by op:
//!   1 put:    revision, version, created, updated, expires (u64 each) | flags u8
//!             | [reads_left u32] | content type (u16 len, bytes) | value (u32 len, bytes)
//!   2 push:   created-the-list u8 | revision, version, created, updated, expires
//!             | item (u32 len, bytes)
//!   3 pop:    end u8 (0 newest, 1 oldest) | revision, version, updated
//!   4 renew:  expires, updated
//!   5 read:   reads_left u32
//!   6 delete: nothing
//! ```
//!
//! # The key file
//!
//! `tmpvault keygen` writes the key as one line of standard base64 (44
//! characters and a newline), mode 0600: text survives being pasted into a
//! Kubernetes Secret, an environment variable or a terminal. Reading accepts
//! that, any base64 of 32 bytes (standard or URL-safe alphabet, padded or
//! not, one trailing newline), and a file of exactly 32 raw bytes: the same
//! rule as the `snapshot.key` self-check.
//!
//! # Memory
//!
//! Key bytes, derived keys and AES round keys are wiped on drop. Every buffer
//! that holds plaintext (frames being built or just opened) is a
//! [`Zeroizing`] vector that never reallocates without wiping the old block;
//! values go from there straight into [`SecretBytes`].

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes256;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::{Zeroize, Zeroizing};

use crate::store::key::Key;
use crate::store::secret::SecretBytes;
use crate::store::{Change, ChangeOp, End, Record, RecordValue};

mod decode;
mod encode;
mod error;
mod file;
mod frame;
mod header;
mod key;
mod read;

use self::decode::*;
pub use self::encode::*;
pub use self::error::*;
pub use self::file::*;
pub use self::frame::*;
pub use self::header::*;
pub use self::key::*;
use self::read::*;

/// Magic bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TMPVSNAP";
/// Magic bytes of a journal file.
pub const JOURNAL_MAGIC: [u8; 8] = *b"TMPVJRNL";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the file header.
pub const HEADER_LEN: usize = 48;
/// Length of a frame's length, its complement, and its kind.
pub const FRAME_PREFIX_LEN: usize = 9;
/// Length of the snapshot key.
pub const KEY_LEN: usize = 32;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const CHECKSUM_LEN: usize = 4;
/// Largest key file read; a real one is 32 to 46 bytes.
const KEY_FILE_READ_LIMIT: u64 = 1024;
/// Payload bytes gathered into one snapshot frame before it is sealed.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// The key check value's input block.
const KEY_ID_BLOCK: [u8; 16] = *b"tmpvault key id\0";

/// Which kind of file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A whole-store snapshot.
    Snapshot,
    /// An append-only journal of changes.
    Journal,
}

impl FileKind {
    fn magic(self) -> [u8; 8] {
        match self {
            FileKind::Snapshot => SNAPSHOT_MAGIC,
            FileKind::Journal => JOURNAL_MAGIC,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FileKind::Snapshot => "snapshot",
            FileKind::Journal => "journal",
        }
    }
}

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Snapshot entries.
    Entries = 1,
    /// The snapshot's last frame: the entry count.
    End = 2,
    /// One journaled change.
    Change = 3,
    /// A journal's first frame: how many frames the previous one holds.
    Start = 4,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Entries),
            2 => Some(FrameKind::End),
            3 => Some(FrameKind::Change),
            4 => Some(FrameKind::Start),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
