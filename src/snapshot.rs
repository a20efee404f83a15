//! The snapshot and journal file format, the snapshot key, and the parsers.
//!
//! This module is pure format: bytes in, records out, and the reverse. What
//! files exist, when they are written and how a restart reads them back is
//! [`crate::persistence`]; the append-only writer is [`crate::journal`].
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
//!   like too (see [`crate::persistence`] on what that allows).
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

use crate::key::Key;
use crate::secret::SecretBytes;
use crate::store::{Change, ChangeOp, End, Record, RecordValue};

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

// ---------------------------------------------------------------------------
// Errors

/// Why a snapshot or journal could not be read. The caller names the file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Reading failed.
    #[error("reading: {0}")]
    Io(#[from] io::Error),
    /// Shorter than a header.
    #[error(
        "{len} bytes is shorter than the {HEADER_LEN}-byte header: not a tmpvault {kind} file"
    )]
    TooShort {
        /// The file's length.
        len: u64,
        /// What it should have been.
        kind: &'static str,
    },
    /// The magic bytes are not this kind's.
    #[error("not a tmpvault {kind} file (it starts with {found:02x?})")]
    BadMagic {
        /// What it should have been.
        kind: &'static str,
        /// The first eight bytes.
        found: [u8; 8],
    },
    /// A version this build does not read.
    #[error("format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    /// An unknown cipher byte or a non-zero reserved byte.
    #[error("unknown cipher {cipher} or reserved byte {reserved} in the header")]
    BadHeader {
        /// The cipher byte.
        cipher: u8,
        /// The reserved byte.
        reserved: u8,
    },
    /// Encrypted, and this server has no key.
    #[error("the file is encrypted, but this server runs --snapshot plain and has no key")]
    NeedsKey,
    /// Not encrypted, and this server runs encrypted.
    #[error(
        "the file is not encrypted (written with --snapshot plain); a server with --snapshot \
         encrypted refuses data it cannot authenticate"
    )]
    NotEncrypted,
    /// Written with another key.
    #[error(
        "written with a different key (key id {file}; the configured key's id is {ours}): wrong \
         --snapshot-key-file?"
    )]
    WrongKey {
        /// The file's key id, hex.
        file: String,
        /// The configured key's id, hex.
        ours: String,
    },
    /// A frame failed authentication (or its checksum, when plain).
    #[error(
        "frame {frame} at byte {offset} failed authentication: the file was modified or is corrupt"
    )]
    Authentication {
        /// Frame index.
        frame: u64,
        /// Byte offset of the frame.
        offset: u64,
    },
    /// A frame's length and its complement disagree.
    #[error(
        "frame {frame} at byte {offset} has a damaged length: the file was modified or is corrupt"
    )]
    DamagedLength {
        /// Frame index.
        frame: u64,
        /// Byte offset of the frame.
        offset: u64,
    },
    /// The file ends inside a frame.
    #[error("the file ends inside frame {frame} at byte {offset} (truncated)")]
    Truncated {
        /// Frame index.
        frame: u64,
        /// Byte offset of the frame.
        offset: u64,
    },
    /// A snapshot with no end frame.
    #[error("the snapshot has no end frame after {frames} frames (truncated)")]
    MissingEnd {
        /// Frames read.
        frames: u64,
    },
    /// An authenticated frame whose content makes no sense.
    #[error("frame {frame} at byte {offset} is malformed: {reason}")]
    Malformed {
        /// Frame index.
        frame: u64,
        /// Byte offset of the frame.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("snapshot key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The content is not a key.
    #[error(
        "snapshot key file {path} holds {size}, neither 32 raw bytes nor base64 of 32 bytes (make \
         one with tmpvault keygen --out FILE)"
    )]
    NotAKey {
        /// The file.
        path: String,
        /// How much it holds.
        size: String,
    },
    /// `keygen --out` would overwrite a file.
    #[error(
        "{path} already exists; refusing to overwrite a key (snapshots written with it could no \
         longer be read). Remove it first if that is what you want"
    )]
    Exists {
        /// The file.
        path: String,
    },
    /// No randomness.
    #[error("the operating system gave no random bytes: {0}")]
    Random(String),
}

/// A content problem inside an authenticated frame.
struct Malformed(String);

fn malformed(reason: impl Into<String>) -> Malformed {
    Malformed(reason.into())
}

// ---------------------------------------------------------------------------
// The key

/// The snapshot key: wiped on drop, never printed.
pub struct SnapshotKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: [u8; KEY_ID_LEN],
}

impl fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotKey(id {})", hex(&self.id))
    }
}

fn random_bytes(buffer: &mut [u8]) -> Result<(), KeyFileError> {
    getrandom::fill(buffer).map_err(|error| KeyFileError::Random(error.to_string()))
}

impl SnapshotKey {
    /// The key made of `bytes`.
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> SnapshotKey {
        // Borrowed, not copied into a temporary: no unwiped copy of the key.
        let aes = Aes256::new(GenericArray::from_slice(&bytes[..]));
        let mut block = KEY_ID_BLOCK.into();
        aes.encrypt_block(&mut block);
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&block[..KEY_ID_LEN]);
        SnapshotKey { bytes, id }
    }

    /// A new random key.
    pub fn generate() -> Result<SnapshotKey, KeyFileError> {
        let mut bytes = Zeroizing::new([0; KEY_LEN]);
        random_bytes(&mut *bytes)?;
        Ok(SnapshotKey::from_bytes(bytes))
    }

    /// Reads a key file: 32 raw bytes, or base64 of 32 bytes.
    pub fn load(path: &Path) -> Result<SnapshotKey, KeyFileError> {
        let shown = path.display().to_string();
        let mut content = Zeroizing::new(Vec::with_capacity(KEY_FILE_READ_LIMIT as usize + 1));
        File::open(path)
            .and_then(|file| file.take(KEY_FILE_READ_LIMIT + 1).read_to_end(&mut content))
            .map_err(|source| KeyFileError::Io {
                path: shown.clone(),
                source,
            })?;
        SnapshotKey::parse(&content).ok_or_else(|| KeyFileError::NotAKey {
            path: shown,
            size: if content.len() as u64 > KEY_FILE_READ_LIMIT {
                format!("more than {KEY_FILE_READ_LIMIT} bytes")
            } else {
                format!("{} bytes", content.len())
            },
        })
    }

    /// The key in a key file's content, if there is one.
    pub fn parse(content: &[u8]) -> Option<SnapshotKey> {
        let mut bytes = Zeroizing::new([0; KEY_LEN]);
        if content.len() == KEY_LEN {
            bytes.copy_from_slice(content);
            return Some(SnapshotKey::from_bytes(bytes));
        }
        let text = content.strip_suffix(b"\n").unwrap_or(content);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let decoded = base64_decode(text)?;
        if decoded.len() != KEY_LEN {
            return None;
        }
        bytes.copy_from_slice(&decoded);
        Some(SnapshotKey::from_bytes(bytes))
    }

    /// The key as a key file holds it: standard base64 and a newline.
    pub fn to_base64_line(&self) -> Zeroizing<String> {
        let mut line = base64_encode(&*self.bytes);
        line.push('\n');
        line
    }

    /// The key id, as the header holds it.
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    /// The key id in hex, for messages and logs.
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }

    /// The AES-256-GCM key of the file whose header nonce is `nonce`.
    fn file_cipher(&self, nonce: &[u8; NONCE_LEN]) -> Aes256Gcm {
        let aes = Aes256::new(GenericArray::from_slice(&self.bytes[..]));
        let mut derived = Zeroizing::new([0u8; KEY_LEN]);
        for (counter, part) in (0u32..).zip(derived.chunks_exact_mut(KEY_LEN / 4)) {
            let mut block = aes::Block::default();
            block[..4].copy_from_slice(&counter.to_le_bytes());
            block[4..].copy_from_slice(nonce);
            aes.encrypt_block(&mut block);
            part.copy_from_slice(&block[..KEY_LEN / 4]);
            block.as_mut_slice().zeroize();
        }
        Aes256Gcm::new(GenericArray::from_slice(&derived[..]))
    }
}

/// `tmpvault keygen`: a new key, written to `out` (mode 0600, never
/// overwriting) or returned as a base64 line for stdout.
pub fn keygen(out: Option<&Path>) -> Result<Option<Zeroizing<String>>, KeyFileError> {
    let key = SnapshotKey::generate()?;
    let line = key.to_base64_line();
    let Some(path) = out else {
        return Ok(Some(line));
    };
    let shown = path.display().to_string();
    let io_error = |source: io::Error| KeyFileError::Io {
        path: shown.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeyFileError::Exists {
                    path: shown.clone(),
                }
            } else {
                io_error(source)
            }
        })?;
    file.write_all(line.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    Ok(None)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len().div_ceil(3) * 4 + 1));
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (position, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if position <= chunk.len() {
                out.push(char::from(BASE64[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes canonical base64, standard or URL-safe, padded or not (the
/// self-check recognises a key file through [`SnapshotKey::parse`], so
/// what it accepts loads).
fn base64_decode(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    fn value(symbol: u8) -> Option<u32> {
        match symbol {
            b'A'..=b'Z' => Some(u32::from(symbol - b'A')),
            b'a'..=b'z' => Some(u32::from(symbol - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(symbol - b'0') + 52),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        }
    }
    let data = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    let padded = data.len() != text.len();
    if data.is_empty() || (padded && text.len() % 4 != 0) || data.len() % 4 == 1 {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(data.len() * 3 / 4));
    for chunk in data.chunks(4) {
        let mut n = 0u32;
        for symbol in chunk {
            n = (n << 6) | value(*symbol)?;
        }
        let bits = chunk.len() * 6;
        let bytes = bits / 8;
        // Bits of the last symbol that carry no data must be zero.
        let unused = bits - bytes * 8;
        if n & ((1 << unused) - 1) != 0 {
            return None;
        }
        n >>= unused;
        for index in (0..bytes).rev() {
            out.push((n >> (index * 8)) as u8);
        }
        n.zeroize();
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Header

/// A file's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Snapshot or journal.
    pub kind: FileKind,
    /// AES-256-GCM (true) or plain.
    pub encrypted: bool,
    /// The key id (zero when plain).
    pub key_id: [u8; KEY_ID_LEN],
    /// The random per-file nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The journal generation.
    pub generation: u64,
    /// When the file was started, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl Header {
    /// A header for a new file, with a fresh random nonce.
    pub fn new(
        kind: FileKind,
        key: Option<&SnapshotKey>,
        generation: u64,
    ) -> Result<Header, KeyFileError> {
        let mut nonce = [0; NONCE_LEN];
        random_bytes(&mut nonce)?;
        Ok(Header {
            kind,
            encrypted: key.is_some(),
            key_id: key.map_or([0; KEY_ID_LEN], SnapshotKey::id),
            nonce,
            generation,
            created_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(0)),
        })
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[0..8].copy_from_slice(&self.kind.magic());
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[10] = u8::from(self.encrypted);
        out[12..20].copy_from_slice(&self.key_id);
        out[20..32].copy_from_slice(&self.nonce);
        out[32..40].copy_from_slice(&self.generation.to_le_bytes());
        out[40..48].copy_from_slice(&self.created_ms.to_le_bytes());
        out
    }

    /// Parses a header of the `expected` kind.
    pub fn decode(bytes: &[u8; HEADER_LEN], expected: FileKind) -> Result<Header, FormatError> {
        let mut magic = [0; 8];
        magic.copy_from_slice(&bytes[0..8]);
        if magic != expected.magic() {
            return Err(FormatError::BadMagic {
                kind: expected.name(),
                found: magic,
            });
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let (cipher, reserved) = (bytes[10], bytes[11]);
        if cipher > 1 || reserved != 0 {
            return Err(FormatError::BadHeader { cipher, reserved });
        }
        let mut key_id = [0; KEY_ID_LEN];
        key_id.copy_from_slice(&bytes[12..20]);
        let mut nonce = [0; NONCE_LEN];
        nonce.copy_from_slice(&bytes[20..32]);
        let mut generation = [0; 8];
        generation.copy_from_slice(&bytes[32..40]);
        let mut created = [0; 8];
        created.copy_from_slice(&bytes[40..48]);
        Ok(Header {
            kind: expected,
            encrypted: cipher == 1,
            key_id,
            nonce,
            generation: u64::from_le_bytes(generation),
            created_ms: u64::from_le_bytes(created),
        })
    }
}

// ---------------------------------------------------------------------------
// Frames

/// How the frames of one file are sealed and opened.
enum Sealer {
    Plain,
    Gcm(Box<Aes256Gcm>),
}

/// The sealing state of one file being written: its header and the index
/// of the next frame, which is also that frame's nonce.
pub struct FileSealer {
    header: [u8; HEADER_LEN],
    sealer: Sealer,
    next_frame: u64,
}

impl fmt::Debug for FileSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSealer")
            .field("next_frame", &self.next_frame)
            .finish_non_exhaustive()
    }
}

fn associated_data(header: &[u8; HEADER_LEN], index: u64, kind: u8) -> [u8; HEADER_LEN + 9] {
    let mut ad = [0; HEADER_LEN + 9];
    ad[..HEADER_LEN].copy_from_slice(header);
    ad[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&index.to_le_bytes());
    ad[HEADER_LEN + 8] = kind;
    ad
}

fn frame_nonce(index: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut nonce = [0; NONCE_LEN];
    nonce[4..].copy_from_slice(&index.to_le_bytes());
    nonce.into()
}

impl FileSealer {
    /// The sealer of a new file with `header` (encrypted if `key` is given;
    /// the header must have been made with the same key).
    pub fn new(header: &Header, key: Option<&SnapshotKey>) -> FileSealer {
        FileSealer {
            header: header.encode(),
            sealer: match key {
                Some(key) => Sealer::Gcm(Box::new(key.file_cipher(&header.nonce))),
                None => Sealer::Plain,
            },
            next_frame: 0,
        }
    }

    /// The header's bytes, to write first.
    pub fn header(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// Seals `frame` in place as the next frame of the file. The frame's
    /// index is used up whether or not this succeeds or the caller manages
    /// to write it, so a failure retires the file. It fails for a body whose
    /// length does not fit the frame's 32-bit length field, rather than
    /// writing a frame that cannot be read back.
    pub fn seal(&mut self, kind: FrameKind, frame: &mut FrameBuf) -> io::Result<()> {
        let index = self.next_frame;
        self.next_frame += 1;
        let ad = associated_data(&self.header, index, kind as u8);
        let trailer_len = match self.sealer {
            Sealer::Plain => CHECKSUM_LEN,
            Sealer::Gcm(_) => TAG_LEN,
        };
        let body_len = u32::try_from(frame.payload_len() + trailer_len).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a frame of {} bytes is over the 4 GiB frame limit",
                    frame.payload_len()
                ),
            )
        })?;
        frame.reserve(trailer_len);
        let bytes = &mut frame.bytes;
        match &self.sealer {
            Sealer::Plain => {
                let checksum = crc32(crc32(0, &ad), &bytes[FRAME_PREFIX_LEN..]);
                bytes.extend_from_slice(&checksum.to_le_bytes());
            }
            Sealer::Gcm(cipher) => {
                // AES-GCM refuses only messages over 64 GiB, far above the
                // 4 GiB checked above; still, never write a frame it refused.
                let tag = cipher
                    .encrypt_in_place_detached(
                        &frame_nonce(index),
                        &ad,
                        &mut bytes[FRAME_PREFIX_LEN..],
                    )
                    .map_err(|_| io::Error::other("AES-GCM refused to seal a frame"))?;
                bytes.extend_from_slice(&tag);
            }
        }
        bytes[..4].copy_from_slice(&body_len.to_le_bytes());
        bytes[4..8].copy_from_slice(&(!body_len).to_le_bytes());
        bytes[8] = kind as u8;
        Ok(())
    }
}

/// A frame being built: the 9-byte prefix, then the payload; sealed in
/// place. Growing never leaves an unwiped copy behind.
pub struct FrameBuf {
    bytes: Zeroizing<Vec<u8>>,
}

impl FrameBuf {
    /// An empty frame with room for `payload` bytes and the seal.
    pub fn with_capacity(payload: usize) -> FrameBuf {
        let mut bytes = Zeroizing::new(Vec::with_capacity(
            FRAME_PREFIX_LEN + payload + TAG_LEN.max(CHECKSUM_LEN),
        ));
        bytes.extend_from_slice(&[0; FRAME_PREFIX_LEN]);
        FrameBuf { bytes }
    }

    /// Payload bytes so far.
    pub fn payload_len(&self) -> usize {
        self.bytes.len() - FRAME_PREFIX_LEN
    }

    /// The frame's bytes (sealed once [`FileSealer::seal`] has run).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Starts a new frame in the same buffer. Nothing is freed: the next
    /// frame overwrites the last, and the whole buffer is wiped on drop.
    pub fn clear(&mut self) {
        self.bytes.truncate(FRAME_PREFIX_LEN);
    }

    fn reserve(&mut self, additional: usize) {
        if self.bytes.capacity() - self.bytes.len() >= additional {
            return;
        }
        let wanted = (self.bytes.len() + additional).max(self.bytes.capacity() * 2);
        let mut bigger = Zeroizing::new(Vec::with_capacity(wanted));
        bigger.extend_from_slice(&self.bytes);
        // The old buffer is wiped as it drops.
        self.bytes = bigger;
    }

    fn put(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len() + TAG_LEN);
        self.bytes.extend_from_slice(bytes);
    }

    fn u8(&mut self, value: u8) {
        self.put(&[value]);
    }

    fn u16(&mut self, value: u16) {
        self.put(&value.to_le_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.put(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.put(&value.to_le_bytes());
    }

    fn time(&mut self, time: SystemTime) {
        self.u64(time_to_nanos(time));
    }

    fn short_bytes(&mut self, bytes: &[u8]) {
        // Keys are at most 256 bytes and content types are bounded by the
        // header size limit, far below u16::MAX.
        self.u16(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
        self.put(&bytes[..bytes.len().min(usize::from(u16::MAX))]);
    }

    fn long_bytes(&mut self, bytes: &[u8]) {
        // Values are at most --max-value-bytes (16 MiB at most).
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.put(&bytes[..bytes.len().min(u32::MAX as usize)]);
    }
}

fn time_to_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// CRC-32 (IEEE 802.3, as zlib), continuing from `crc`.
fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut index = 0;
        while index < 256 {
            let mut value = index as u32;
            let mut bit = 0;
            while bit < 8 {
                value = if value & 1 == 1 {
                    0xEDB8_8320 ^ (value >> 1)
                } else {
                    value >> 1
                };
                bit += 1;
            }
            table[index] = value;
            index += 1;
        }
        table
    };
    let mut crc = !crc;
    for byte in bytes {
        crc = TABLE[((crc ^ u32::from(*byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

// ---------------------------------------------------------------------------
// Encoding records and changes

const SECRET: u8 = 1;
const LIST: u8 = 2;
const HAS_READS_LEFT: u8 = 1;
const HAS_CONTENT_TYPE: u8 = 2;

const PUT: u8 = 1;
const PUSH: u8 = 2;
const POP: u8 = 3;
const RENEW: u8 = 4;
const READ: u8 = 5;
const DELETE: u8 = 6;

/// Bytes [`encode_record`] writes for `record`.
pub fn encoded_record_len(record: &Record) -> usize {
    let fixed = 1 + 2 + record.key.as_str().len() + 6 * 8 + 1;
    let reads = if record.reads_left.is_some() { 4 } else { 0 };
    let content_type = record.content_type.as_ref().map_or(0, |ct| 2 + ct.len());
    let value = match &record.value {
        RecordValue::Secret(bytes) => 4 + bytes.len(),
        RecordValue::List(items) => 4 + items.iter().map(|item| 4 + item.len()).sum::<usize>(),
    };
    fixed + reads + content_type + value
}

/// Appends `record` to an entries frame.
pub fn encode_record(frame: &mut FrameBuf, record: &Record) {
    frame.reserve(encoded_record_len(record) + TAG_LEN);
    frame.u8(match record.value {
        RecordValue::Secret(_) => SECRET,
        RecordValue::List(_) => LIST,
    });
    frame.short_bytes(record.key.as_str().as_bytes());
    frame.u64(record.seq);
    frame.u64(record.revision);
    frame.u64(record.version);
    frame.time(record.created_at);
    frame.time(record.updated_at);
    frame.time(record.expires_at);
    let mut flags = 0;
    if record.reads_left.is_some() {
        flags |= HAS_READS_LEFT;
    }
    if record.content_type.is_some() {
        flags |= HAS_CONTENT_TYPE;
    }
    frame.u8(flags);
    if let Some(left) = record.reads_left {
        frame.u32(left);
    }
    if let Some(content_type) = &record.content_type {
        frame.short_bytes(content_type.as_bytes());
    }
    match &record.value {
        RecordValue::Secret(bytes) => frame.long_bytes(bytes.expose()),
        RecordValue::List(items) => {
            frame.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
            for item in items {
                frame.long_bytes(item.expose());
            }
        }
    }
}

/// A journal's start frame, not yet sealed: the number of frames the
/// previous journal holds, if there is one.
pub fn start_frame(previous_frames: Option<u64>) -> FrameBuf {
    let mut frame = FrameBuf::with_capacity(8);
    frame.u64(previous_frames.unwrap_or(u64::MAX));
    frame
}

/// A journal frame holding `change`, not yet sealed.
pub fn change_frame(change: &Change<&Key, &SecretBytes>) -> FrameBuf {
    let value_len = match &change.op {
        ChangeOp::Put {
            value,
            content_type,
            ..
        } => 4 + value.len() + 2 + content_type.len() + 4,
        ChangeOp::Push { item, .. } => 4 + item.len(),
        _ => 0,
    };
    let mut frame = FrameBuf::with_capacity(1 + 2 + change.key.as_str().len() + 8 + 48 + value_len);
    frame.u8(match change.op {
        ChangeOp::Put { .. } => PUT,
        ChangeOp::Push { .. } => PUSH,
        ChangeOp::Pop { .. } => POP,
        ChangeOp::Renew { .. } => RENEW,
        ChangeOp::Read { .. } => READ,
        ChangeOp::Delete => DELETE,
    });
    frame.short_bytes(change.key.as_str().as_bytes());
    frame.u64(change.seq);
    match &change.op {
        ChangeOp::Put {
            value,
            revision,
            version,
            created_at,
            updated_at,
            expires_at,
            reads_left,
            content_type,
        } => {
            frame.u64(*revision);
            frame.u64(*version);
            frame.time(*created_at);
            frame.time(*updated_at);
            frame.time(*expires_at);
            frame.u8(if reads_left.is_some() {
                HAS_READS_LEFT
            } else {
                0
            });
            if let Some(left) = reads_left {
                frame.u32(*left);
            }
            frame.short_bytes(content_type.as_bytes());
            frame.long_bytes(value.expose());
        }
        ChangeOp::Push {
            item,
            created,
            revision,
            version,
            created_at,
            updated_at,
            expires_at,
        } => {
            frame.u8(u8::from(*created));
            frame.u64(*revision);
            frame.u64(*version);
            frame.time(*created_at);
            frame.time(*updated_at);
            frame.time(*expires_at);
            frame.long_bytes(item.expose());
        }
        ChangeOp::Pop {
            end,
            revision,
            version,
            updated_at,
        } => {
            frame.u8(match end {
                End::Newest => 0,
                End::Oldest => 1,
            });
            frame.u64(*revision);
            frame.u64(*version);
            frame.time(*updated_at);
        }
        ChangeOp::Renew {
            expires_at,
            updated_at,
        } => {
            frame.time(*expires_at);
            frame.time(*updated_at);
        }
        ChangeOp::Read { reads_left } => frame.u32(*reads_left),
        ChangeOp::Delete => {}
    }
    frame
}

// ---------------------------------------------------------------------------
// Decoding

/// Reads fields off an opened frame's payload.
struct Decoder<'a> {
    bytes: &'a [u8],
    /// The last content type read: most entries share one, so they share
    /// one allocation too.
    last_text: Option<Arc<str>>,
}

impl<'a> Decoder<'a> {
    fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder {
            bytes,
            last_text: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], Malformed> {
        if self.bytes.len() < len {
            return Err(malformed(format!("it ends inside {what}")));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, Malformed> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        let mut out = [0; 4];
        out.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(out))
    }

    fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        let mut out = [0; 8];
        out.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(out))
    }

    fn time(&mut self, what: &str) -> Result<SystemTime, Malformed> {
        let nanos = self.u64(what)?;
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_nanos(nanos))
            .ok_or_else(|| malformed(format!("{what} is out of range")))
    }

    fn key(&mut self) -> Result<Key, Malformed> {
        let len = self.u16("a key's length")?;
        let raw = self.take(usize::from(len), "a key")?;
        let text = std::str::from_utf8(raw).map_err(|_| malformed("a key is not UTF-8"))?;
        Key::parse(text).map_err(|error| malformed(format!("a stored key is invalid: {error}")))
    }

    fn text(&mut self, what: &str) -> Result<Arc<str>, Malformed> {
        let len = self.u16(what)?;
        let raw = self.take(usize::from(len), what)?;
        if let Some(last) = self
            .last_text
            .as_ref()
            .filter(|last| last.as_bytes() == raw)
        {
            return Ok(Arc::clone(last));
        }
        let text: Arc<str> = std::str::from_utf8(raw)
            .map(Arc::from)
            .map_err(|_| malformed(format!("{what} is not UTF-8")))?;
        self.last_text = Some(Arc::clone(&text));
        Ok(text)
    }

    fn secret(&mut self, what: &str) -> Result<SecretBytes, Malformed> {
        let len = self.u32(what)?;
        let len = usize::try_from(len).map_err(|_| malformed(format!("{what} is too long")))?;
        Ok(SecretBytes::copy_from(self.take(len, what)?))
    }
}

fn decode_record(decoder: &mut Decoder<'_>) -> Result<Record, Malformed> {
    let kind = decoder.u8("an entry's kind")?;
    if kind != SECRET && kind != LIST {
        return Err(malformed(format!("unknown entry kind {kind}")));
    }
    let key = decoder.key()?;
    let seq = decoder.u64("seq")?;
    let revision = decoder.u64("revision")?;
    let version = decoder.u64("version")?;
    let created_at = decoder.time("created_at")?;
    let updated_at = decoder.time("updated_at")?;
    let expires_at = decoder.time("expires_at")?;
    let flags = decoder.u8("flags")?;
    if flags & !(HAS_READS_LEFT | HAS_CONTENT_TYPE) != 0 {
        return Err(malformed(format!("unknown flags {flags:#04x}")));
    }
    let reads_left = if flags & HAS_READS_LEFT == 0 {
        None
    } else {
        Some(decoder.u32("reads_left")?)
    };
    let content_type = if flags & HAS_CONTENT_TYPE == 0 {
        None
    } else {
        Some(decoder.text("a content type")?.into())
    };
    let value = if kind == SECRET {
        RecordValue::Secret(Arc::new(decoder.secret("a value")?))
    } else {
        let count = decoder.u32("a list's length")?;
        // Not preallocated from the count: each item needs 4 bytes at least,
        // so a bogus count fails on the bytes instead of on an allocation.
        let mut items = VecDeque::new();
        for _ in 0..count {
            items.push_back(decoder.secret("a list item")?);
        }
        RecordValue::List(items)
    };
    Ok(Record {
        key,
        value,
        seq,
        revision,
        version,
        created_at,
        updated_at,
        expires_at,
        reads_left,
        content_type,
    })
}

fn decode_change(payload: &[u8]) -> Result<Change<Key, SecretBytes>, Malformed> {
    let mut decoder = Decoder::new(payload);
    let op = decoder.u8("the change's kind")?;
    let key = decoder.key()?;
    let seq = decoder.u64("seq")?;
    let op = match op {
        PUT => {
            let revision = decoder.u64("revision")?;
            let version = decoder.u64("version")?;
            let created_at = decoder.time("created_at")?;
            let updated_at = decoder.time("updated_at")?;
            let expires_at = decoder.time("expires_at")?;
            let flags = decoder.u8("flags")?;
            if flags & !HAS_READS_LEFT != 0 {
                return Err(malformed(format!("unknown flags {flags:#04x}")));
            }
            let reads_left = if flags & HAS_READS_LEFT == 0 {
                None
            } else {
                Some(decoder.u32("reads_left")?)
            };
            let content_type = decoder.text("a content type")?.into();
            let value = decoder.secret("a value")?;
            ChangeOp::Put {
                value,
                revision,
                version,
                created_at,
                updated_at,
                expires_at,
                reads_left,
                content_type,
            }
        }
        PUSH => {
            let created = match decoder.u8("created")? {
                0 => false,
                1 => true,
                other => return Err(malformed(format!("created is {other}"))),
            };
            ChangeOp::Push {
                created,
                revision: decoder.u64("revision")?,
                version: decoder.u64("version")?,
                created_at: decoder.time("created_at")?,
                updated_at: decoder.time("updated_at")?,
                expires_at: decoder.time("expires_at")?,
                item: decoder.secret("an item")?,
            }
        }
        POP => ChangeOp::Pop {
            end: match decoder.u8("end")? {
                0 => End::Newest,
                1 => End::Oldest,
                other => return Err(malformed(format!("unknown end {other}"))),
            },
            revision: decoder.u64("revision")?,
            version: decoder.u64("version")?,
            updated_at: decoder.time("updated_at")?,
        },
        RENEW => ChangeOp::Renew {
            expires_at: decoder.time("expires_at")?,
            updated_at: decoder.time("updated_at")?,
        },
        READ => ChangeOp::Read {
            reads_left: decoder.u32("reads_left")?,
        },
        DELETE => ChangeOp::Delete,
        other => return Err(malformed(format!("unknown change kind {other}"))),
    };
    if !decoder.is_empty() {
        return Err(malformed("bytes left over after the change"));
    }
    Ok(Change { key, seq, op })
}

// ---------------------------------------------------------------------------
// Reading frames

/// What [`FrameReader::next`] found.
enum Next<'a> {
    /// An opened frame.
    Frame {
        kind: FrameKind,
        /// Its index and byte offset, for messages.
        index: u64,
        offset: u64,
        payload: &'a [u8],
    },
    /// The end of the file, on a frame boundary.
    Eof,
    /// The file ends inside the frame at `offset`.
    Torn,
}

/// Reads and opens the frames of one file in order.
struct FrameReader<R> {
    source: R,
    header: [u8; HEADER_LEN],
    parsed: Header,
    sealer: Sealer,
    /// Index and byte offset of the next frame.
    index: u64,
    offset: u64,
    /// Bytes of the file not read yet: no frame can claim more.
    remaining: u64,
    /// The current frame, opened in place; wiped before reuse and on drop.
    buffer: Zeroizing<Vec<u8>>,
}

impl<R: Read> FrameReader<R> {
    /// Reads the header of a `len`-byte file and checks it against `key`.
    fn open(
        mut source: R,
        len: u64,
        expected: FileKind,
        key: Option<&SnapshotKey>,
    ) -> Result<FrameReader<R>, FormatError> {
        if len < HEADER_LEN as u64 {
            return Err(FormatError::TooShort {
                len,
                kind: expected.name(),
            });
        }
        let mut header = [0; HEADER_LEN];
        source.read_exact(&mut header)?;
        let parsed = Header::decode(&header, expected)?;
        let sealer = match (parsed.encrypted, key) {
            (false, None) => Sealer::Plain,
            (true, None) => return Err(FormatError::NeedsKey),
            (false, Some(_)) => return Err(FormatError::NotEncrypted),
            (true, Some(key)) => {
                if parsed.key_id != key.id() {
                    return Err(FormatError::WrongKey {
                        file: hex(&parsed.key_id),
                        ours: key.id_hex(),
                    });
                }
                Sealer::Gcm(Box::new(key.file_cipher(&parsed.nonce)))
            }
        };
        Ok(FrameReader {
            source,
            header,
            parsed,
            sealer,
            index: 0,
            offset: HEADER_LEN as u64,
            remaining: len - HEADER_LEN as u64,
            buffer: Zeroizing::new(Vec::new()),
        })
    }

    /// The next frame, opened.
    fn next(&mut self) -> Result<Next<'_>, FormatError> {
        if self.remaining == 0 {
            return Ok(Next::Eof);
        }
        if self.remaining < FRAME_PREFIX_LEN as u64 {
            return Ok(Next::Torn);
        }
        let mut prefix = [0; FRAME_PREFIX_LEN];
        self.source.read_exact(&mut prefix)?;
        let body_len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let check = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        let index = self.index;
        let offset = self.offset;
        if check != !body_len {
            // A crash cannot write a wrong prefix, only a short one.
            return Err(FormatError::DamagedLength {
                frame: index,
                offset,
            });
        }
        let body_len = u64::from(body_len);
        if body_len > self.remaining - FRAME_PREFIX_LEN as u64 {
            return Ok(Next::Torn);
        }
        let authentication = authentication_error(index, offset);
        let trailer_len = match self.sealer {
            Sealer::Plain => CHECKSUM_LEN,
            Sealer::Gcm(_) => TAG_LEN,
        };
        // The length is bounded by the file, so this allocation is too.
        let Ok(body_len) = usize::try_from(body_len) else {
            return Err(authentication);
        };
        if body_len < trailer_len {
            return Err(authentication);
        }
        if body_len > self.buffer.capacity() {
            // Growing reallocates: wipe the old block first.
            self.buffer.zeroize();
            self.buffer.reserve_exact(body_len);
        }
        // Within the capacity nothing is freed; whatever the last frame left
        // beyond this one is wiped when the reader drops.
        self.buffer.clear();
        self.buffer.resize(body_len, 0);
        self.source.read_exact(&mut self.buffer)?;
        self.index += 1;
        self.offset += (FRAME_PREFIX_LEN + body_len) as u64;
        self.remaining -= (FRAME_PREFIX_LEN + body_len) as u64;
        let kind_byte = prefix[8];
        let ad = associated_data(&self.header, index, kind_byte);
        let payload_len = body_len - trailer_len;
        let (payload, trailer) = self.buffer.split_at_mut(payload_len);
        match &self.sealer {
            Sealer::Plain => {
                let expected = crc32(crc32(0, &ad), payload);
                if trailer != expected.to_le_bytes() {
                    return Err(authentication);
                }
            }
            Sealer::Gcm(cipher) => {
                let tag = Tag::clone_from_slice(trailer);
                cipher
                    .decrypt_in_place_detached(&frame_nonce(index), &ad, payload, &tag)
                    .map_err(|_| authentication)?;
            }
        }
        // Authenticated, so an unknown kind is a bug or a future version.
        let kind = FrameKind::from_byte(kind_byte).ok_or_else(|| FormatError::Malformed {
            frame: index,
            offset,
            reason: format!("unknown frame kind {kind_byte}"),
        })?;
        Ok(Next::Frame {
            kind,
            index,
            offset,
            payload: &self.buffer[..payload_len],
        })
    }
}

/// A buffered reader whose buffer is wiped on drop: a plain file's bytes
/// are values in clear.
struct WipedReader<R> {
    inner: R,
    buffer: Zeroizing<Vec<u8>>,
    position: usize,
}

impl<R: Read> WipedReader<R> {
    fn new(inner: R, len: u64) -> WipedReader<R> {
        let capacity = usize::try_from(len.min(64 * 1024)).unwrap_or(64 * 1024);
        WipedReader {
            inner,
            buffer: Zeroizing::new(Vec::with_capacity(capacity)),
            position: 0,
        }
    }
}

impl<R: Read> Read for WipedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.position == self.buffer.len() {
            if out.len() >= self.buffer.capacity() {
                return self.inner.read(out);
            }
            // Refill within the existing capacity: never reallocates.
            let capacity = self.buffer.capacity();
            self.buffer.clear();
            self.buffer.resize(capacity, 0);
            let read = self.inner.read(&mut self.buffer)?;
            self.buffer.truncate(read);
            self.position = 0;
        }
        let available = &self.buffer[self.position..];
        let count = available.len().min(out.len());
        out[..count].copy_from_slice(&available[..count]);
        self.position += count;
        Ok(count)
    }
}

fn authentication_error(frame: u64, offset: u64) -> FormatError {
    FormatError::Authentication { frame, offset }
}

/// A frame of a kind that has no place in this kind of file.
fn unexpected_frame(kind: FrameKind, index: u64, offset: u64, file: &str) -> FormatError {
    malformed_at(
        index,
        offset,
        malformed(format!("a {kind:?} frame in a {file}")),
    )
}

fn malformed_at(index: u64, offset: u64, problem: Malformed) -> FormatError {
    FormatError::Malformed {
        frame: index,
        offset,
        reason: problem.0,
    }
}

// ---------------------------------------------------------------------------
// Whole files

/// A snapshot, read and authenticated.
#[derive(Debug)]
pub struct SnapshotContents {
    /// Its header.
    pub header: Header,
    /// Every entry it holds (expired ones included: the store drops them).
    pub records: Vec<Record>,
}

/// Reads a whole snapshot of `len` bytes. Any damage is an error: a
/// snapshot is renamed into place only once complete, so unlike a journal
/// it has no torn end to forgive.
pub fn read_snapshot(
    source: impl Read,
    len: u64,
    key: Option<&SnapshotKey>,
) -> Result<SnapshotContents, FormatError> {
    let mut reader =
        FrameReader::open(WipedReader::new(source, len), len, FileKind::Snapshot, key)?;
    let mut records = Vec::new();
    loop {
        match reader.next()? {
            Next::Frame {
                kind: FrameKind::Entries,
                index,
                offset,
                payload,
            } => {
                let mut decoder = Decoder::new(payload);
                while !decoder.is_empty() {
                    let record = decode_record(&mut decoder)
                        .map_err(|problem| malformed_at(index, offset, problem))?;
                    records.push(record);
                }
            }
            Next::Frame {
                kind: FrameKind::End,
                index,
                offset,
                payload,
            } => {
                let mut decoder = Decoder::new(payload);
                let count = decoder
                    .u64("the entry count")
                    .map_err(|problem| malformed_at(index, offset, problem))?;
                if count != records.len() as u64 || !decoder.is_empty() {
                    return Err(malformed_at(
                        index,
                        offset,
                        malformed(format!(
                            "the end frame counts {count} entries, the file holds {}",
                            records.len()
                        )),
                    ));
                }
                return match reader.next()? {
                    Next::Eof => Ok(SnapshotContents {
                        header: reader.parsed,
                        records,
                    }),
                    _ => Err(malformed_at(
                        reader.index,
                        reader.offset,
                        malformed("bytes follow the end frame"),
                    )),
                };
            }
            Next::Frame {
                kind,
                index,
                offset,
                ..
            } => return Err(unexpected_frame(kind, index, offset, "snapshot")),
            Next::Eof => {
                return Err(FormatError::MissingEnd {
                    frames: reader.index,
                })
            }
            Next::Torn => {
                return Err(FormatError::Truncated {
                    frame: reader.index,
                    offset: reader.offset,
                })
            }
        }
    }
}

/// A journal, read and authenticated.
#[derive(Debug)]
pub struct JournalContents {
    /// Its header.
    pub header: Header,
    /// What its start frame says the previous journal holds.
    pub previous_frames: Option<u64>,
    /// The complete frames it holds, its start frame included.
    pub frames: u64,
    /// Its changes, in the order they were appended.
    pub changes: Vec<Change<Key, SecretBytes>>,
    /// Where a torn last frame starts, if the file ends inside one (a crash
    /// in the middle of an append): the length to truncate the file to.
    pub torn_at: Option<u64>,
}

/// Reads a whole journal of `len` bytes. A last frame cut short is reported
/// in [`JournalContents::torn_at`]; a complete frame that fails
/// authentication, anywhere, is an error.
pub fn read_journal(
    source: impl Read,
    len: u64,
    key: Option<&SnapshotKey>,
) -> Result<JournalContents, FormatError> {
    let mut reader = FrameReader::open(WipedReader::new(source, len), len, FileKind::Journal, key)?;
    // The start frame is written with the header, atomically: never torn.
    let previous_frames = match reader.next()? {
        Next::Frame {
            kind: FrameKind::Start,
            index,
            offset,
            payload,
        } => {
            let mut decoder = Decoder::new(payload);
            let previous = decoder
                .u64("the previous journal's length")
                .map_err(|problem| malformed_at(index, offset, problem))?;
            if !decoder.is_empty() {
                return Err(malformed_at(
                    index,
                    offset,
                    malformed("bytes left over after the start record"),
                ));
            }
            (previous != u64::MAX).then_some(previous)
        }
        _ => {
            return Err(malformed_at(
                0,
                HEADER_LEN as u64,
                malformed("the journal does not begin with its start record"),
            ))
        }
    };
    let mut changes = Vec::new();
    loop {
        match reader.next()? {
            Next::Frame {
                kind: FrameKind::Change,
                index,
                offset,
                payload,
            } => changes.push(
                decode_change(payload).map_err(|problem| malformed_at(index, offset, problem))?,
            ),
            Next::Frame {
                kind,
                index,
                offset,
                ..
            } => return Err(unexpected_frame(kind, index, offset, "journal")),
            Next::Eof => {
                return Ok(JournalContents {
                    header: reader.parsed,
                    previous_frames,
                    frames: reader.index,
                    changes,
                    torn_at: None,
                })
            }
            Next::Torn => {
                return Ok(JournalContents {
                    header: reader.parsed,
                    previous_frames,
                    frames: reader.index,
                    changes,
                    torn_at: Some(reader.offset),
                })
            }
        }
    }
}

/// Writes a snapshot as a stream: the header, entries frames of about 1 MiB
/// each, and the end frame. Only sealed bytes reach `out`.
pub struct SnapshotWriter<W: Write> {
    out: W,
    sealer: FileSealer,
    frame: FrameBuf,
    entries: u64,
    written: u64,
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a snapshot with `header` on `out`.
    pub fn new(
        mut out: W,
        header: &Header,
        key: Option<&SnapshotKey>,
    ) -> io::Result<SnapshotWriter<W>> {
        let sealer = FileSealer::new(header, key);
        out.write_all(sealer.header())?;
        Ok(SnapshotWriter {
            out,
            sealer,
            frame: FrameBuf::with_capacity(SNAPSHOT_CHUNK),
            entries: 0,
            written: HEADER_LEN as u64,
        })
    }

    fn flush_frame(&mut self, kind: FrameKind) -> io::Result<()> {
        self.sealer.seal(kind, &mut self.frame)?;
        self.out.write_all(self.frame.as_bytes())?;
        self.written += self.frame.as_bytes().len() as u64;
        self.frame.clear();
        Ok(())
    }

    /// Adds one entry.
    /// A record too large for one frame (a list of over 4 GiB) is refused
    /// before it is encoded: the snapshot fails and the journals it would
    /// have replaced are kept.
    pub fn add(&mut self, record: &Record) -> io::Result<()> {
        let len = encoded_record_len(record);
        if u32::try_from(len + TAG_LEN.max(CHECKSUM_LEN)).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("an entry of {len} bytes does not fit one snapshot frame (4 GiB)"),
            ));
        }
        if self.frame.payload_len() > 0 && self.frame.payload_len() + len > SNAPSHOT_CHUNK {
            self.flush_frame(FrameKind::Entries)?;
        }
        encode_record(&mut self.frame, record);
        self.entries += 1;
        Ok(())
    }

    /// Writes the last frames and returns the output, the bytes written and
    /// the number of entries.
    pub fn finish(mut self) -> io::Result<(W, u64, u64)> {
        if self.frame.payload_len() > 0 {
            self.flush_frame(FrameKind::Entries)?;
        }
        self.frame.u64(self.entries);
        self.flush_frame(FrameKind::End)?;
        Ok((self.out, self.written, self.entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> Key {
        Key::parse(raw).unwrap()
    }

    fn secret(bytes: &[u8]) -> SecretBytes {
        SecretBytes::copy_from(bytes)
    }

    fn test_key(byte: u8) -> SnapshotKey {
        SnapshotKey::from_bytes(Zeroizing::new([byte; KEY_LEN]))
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn records() -> Vec<Record> {
        vec![
            Record {
                key: key("db/password"),
                value: RecordValue::Secret(Arc::new(secret(b"hunter2-SECRET"))),
                seq: 10,
                revision: 10,
                version: 3,
                created_at: at(1_000),
                updated_at: at(2_000),
                expires_at: at(4_000_000_000),
                reads_left: Some(2),
                content_type: Some(crate::store::MediaType::from("text/plain")),
            },
            Record {
                key: key("pool"),
                value: RecordValue::List(
                    [secret(b"one-SECRET"), secret(b""), secret(b"three-SECRET")].into(),
                ),
                seq: 12,
                revision: 11,
                version: 5,
                created_at: at(1_500),
                updated_at: at(2_500),
                expires_at: at(4_000_000_001),
                reads_left: None,
                content_type: None,
            },
        ]
    }

    fn snapshot_bytes(records: &[Record], key: Option<&SnapshotKey>) -> Vec<u8> {
        let header = Header::new(FileKind::Snapshot, key, 7).unwrap();
        let mut writer = SnapshotWriter::new(Vec::new(), &header, key).unwrap();
        for record in records {
            writer.add(record).unwrap();
        }
        let (bytes, written, entries) = writer.finish().unwrap();
        assert_eq!(
            (written, entries),
            (bytes.len() as u64, records.len() as u64)
        );
        bytes
    }

    fn changes() -> Vec<(Key, u64, ChangeOp<SecretBytes>)> {
        vec![
            (
                key("a"),
                1,
                ChangeOp::Put {
                    value: secret(b"alpha-SECRET"),
                    revision: 1,
                    version: 1,
                    created_at: at(10),
                    updated_at: at(10),
                    expires_at: at(4_000_000_000),
                    reads_left: Some(1),
                    content_type: crate::store::MediaType::from("application/octet-stream"),
                },
            ),
            (
                key("l"),
                2,
                ChangeOp::Push {
                    item: secret(b"item-SECRET"),
                    created: true,
                    revision: 2,
                    version: 1,
                    created_at: at(11),
                    updated_at: at(11),
                    expires_at: at(4_000_000_000),
                },
            ),
            (
                key("l"),
                3,
                ChangeOp::Pop {
                    end: End::Oldest,
                    revision: 3,
                    version: 2,
                    updated_at: at(12),
                },
            ),
            (
                key("a"),
                4,
                ChangeOp::Renew {
                    expires_at: at(4_000_000_100),
                    updated_at: at(13),
                },
            ),
            (key("a"), 5, ChangeOp::Read { reads_left: 0 }),
            (key("a"), 6, ChangeOp::Delete),
        ]
    }

    fn journal_bytes(key: Option<&SnapshotKey>) -> Vec<u8> {
        let header = Header::new(FileKind::Journal, key, 3).unwrap();
        let mut sealer = FileSealer::new(&header, key);
        let mut out = sealer.header().to_vec();
        let mut start = start_frame(Some(17));
        sealer.seal(FrameKind::Start, &mut start).unwrap();
        out.extend_from_slice(start.as_bytes());
        for (k, seq, op) in changes() {
            let op = match &op {
                ChangeOp::Put {
                    value,
                    revision,
                    version,
                    created_at,
                    updated_at,
                    expires_at,
                    reads_left,
                    content_type,
                } => ChangeOp::Put {
                    value,
                    revision: *revision,
                    version: *version,
                    created_at: *created_at,
                    updated_at: *updated_at,
                    expires_at: *expires_at,
                    reads_left: *reads_left,
                    content_type: content_type.clone(),
                },
                ChangeOp::Push {
                    item,
                    created,
                    revision,
                    version,
                    created_at,
                    updated_at,
                    expires_at,
                } => ChangeOp::Push {
                    item,
                    created: *created,
                    revision: *revision,
                    version: *version,
                    created_at: *created_at,
                    updated_at: *updated_at,
                    expires_at: *expires_at,
                },
                ChangeOp::Pop {
                    end,
                    revision,
                    version,
                    updated_at,
                } => ChangeOp::Pop {
                    end: *end,
                    revision: *revision,
                    version: *version,
                    updated_at: *updated_at,
                },
                ChangeOp::Renew {
                    expires_at,
                    updated_at,
                } => ChangeOp::Renew {
                    expires_at: *expires_at,
                    updated_at: *updated_at,
                },
                ChangeOp::Read { reads_left } => ChangeOp::Read {
                    reads_left: *reads_left,
                },
                ChangeOp::Delete => ChangeOp::Delete,
            };
            let mut frame = change_frame(&Change { key: &k, seq, op });
            sealer.seal(FrameKind::Change, &mut frame).unwrap();
            out.extend_from_slice(frame.as_bytes());
        }
        out
    }

    fn read_snapshot_bytes(
        bytes: &[u8],
        key: Option<&SnapshotKey>,
    ) -> Result<SnapshotContents, FormatError> {
        read_snapshot(bytes, bytes.len() as u64, key)
    }

    fn read_journal_bytes(
        bytes: &[u8],
        key: Option<&SnapshotKey>,
    ) -> Result<JournalContents, FormatError> {
        read_journal(bytes, bytes.len() as u64, key)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle)
    }

    fn same_record(a: &Record, b: &Record) {
        assert_eq!(a.key, b.key);
        assert_eq!(
            (a.seq, a.revision, a.version, a.reads_left),
            (b.seq, b.revision, b.version, b.reads_left)
        );
        assert_eq!(
            (a.created_at, a.updated_at, a.expires_at),
            (b.created_at, b.updated_at, b.expires_at)
        );
        assert_eq!(a.content_type, b.content_type);
        match (&a.value, &b.value) {
            (RecordValue::Secret(x), RecordValue::Secret(y)) => assert_eq!(x.expose(), y.expose()),
            (RecordValue::List(x), RecordValue::List(y)) => {
                let x: Vec<_> = x.iter().map(SecretBytes::expose).collect();
                let y: Vec<_> = y.iter().map(SecretBytes::expose).collect();
                assert_eq!(x, y);
            }
            _ => panic!("kinds differ"),
        }
    }

    #[test]
    fn snapshots_round_trip_encrypted_and_plain() {
        let key = test_key(1);
        for key in [Some(&key), None] {
            let bytes = snapshot_bytes(&records(), key);
            let contents = read_snapshot_bytes(&bytes, key).unwrap();
            assert_eq!(contents.header.generation, 7);
            assert_eq!(contents.header.encrypted, key.is_some());
            assert_eq!(contents.records.len(), 2);
            for (read, written) in contents.records.iter().zip(records().iter()) {
                same_record(read, written);
            }
            assert_eq!(
                contains(&bytes, b"SECRET"),
                key.is_none(),
                "values are in clear only when plain"
            );
        }
        let empty = snapshot_bytes(&[], Some(&key));
        assert!(read_snapshot_bytes(&empty, Some(&key))
            .unwrap()
            .records
            .is_empty());
    }

    #[test]
    fn big_snapshots_span_many_frames() {
        let many: Vec<Record> = (0..3000)
            .map(|i| Record {
                key: key(&format!("k{i:05}")),
                value: RecordValue::Secret(Arc::new(secret(&[b'v'; 1024]))),
                seq: i,
                revision: i,
                version: 1,
                created_at: at(1),
                updated_at: at(1),
                expires_at: at(4_000_000_000),
                reads_left: None,
                content_type: Some(crate::store::MediaType::from("application/octet-stream")),
            })
            .collect();
        let key = test_key(2);
        let bytes = snapshot_bytes(&many, Some(&key));
        assert!(bytes.len() > 3 * SNAPSHOT_CHUNK, "{}", bytes.len());
        let contents = read_snapshot_bytes(&bytes, Some(&key)).unwrap();
        assert_eq!(contents.records.len(), 3000);
        assert_eq!(contents.records[2999].key.as_str(), "k02999");
    }

    #[test]
    fn journals_round_trip() {
        let key = test_key(3);
        for key in [Some(&key), None] {
            let bytes = journal_bytes(key);
            let contents = read_journal_bytes(&bytes, key).unwrap();
            assert_eq!(contents.torn_at, None);
            assert_eq!(contents.header.generation, 3);
            assert_eq!(contents.previous_frames, Some(17));
            assert_eq!(contents.frames, 1 + changes().len() as u64);
            let read: Vec<String> = contents
                .changes
                .iter()
                .map(|change| format!("{} {} {:?}", change.key, change.seq, change.op))
                .collect();
            let written: Vec<String> = changes()
                .iter()
                .map(|(k, seq, op)| format!("{k} {seq} {op:?}"))
                .collect();
            assert_eq!(read, written);
            assert_eq!(contains(&bytes, b"SECRET"), key.is_none());
        }
    }

    #[test]
    fn a_wrong_key_is_named_as_such() {
        let bytes = snapshot_bytes(&records(), Some(&test_key(1)));
        let error = read_snapshot_bytes(&bytes, Some(&test_key(9))).unwrap_err();
        assert!(matches!(error, FormatError::WrongKey { .. }), "{error}");
        assert!(error.to_string().contains("different key"), "{error}");
        let journal = journal_bytes(Some(&test_key(1)));
        let error = read_journal_bytes(&journal, Some(&test_key(9))).unwrap_err();
        assert!(matches!(error, FormatError::WrongKey { .. }), "{error}");
    }

    #[test]
    fn plain_and_encrypted_files_are_not_mixed_up() {
        let plain = snapshot_bytes(&records(), None);
        assert!(matches!(
            read_snapshot_bytes(&plain, Some(&test_key(1))),
            Err(FormatError::NotEncrypted)
        ));
        let encrypted = snapshot_bytes(&records(), Some(&test_key(1)));
        assert!(matches!(
            read_snapshot_bytes(&encrypted, None),
            Err(FormatError::NeedsKey)
        ));
        let journal = journal_bytes(None);
        assert!(matches!(
            read_snapshot_bytes(&journal, None),
            Err(FormatError::BadMagic { .. })
        ));
    }

    #[test]
    fn one_flipped_byte_anywhere_in_a_snapshot_is_refused() {
        for key in [Some(test_key(4)), None] {
            let bytes = snapshot_bytes(&records(), key.as_ref());
            for position in 0..bytes.len() {
                for flip in [0x01, 0x80] {
                    let mut damaged = bytes.clone();
                    damaged[position] ^= flip;
                    assert!(
                        read_snapshot_bytes(&damaged, key.as_ref()).is_err(),
                        "byte {position} ^ {flip:#x} went unnoticed (encrypted: {})",
                        key.is_some()
                    );
                }
            }
            for len in 0..bytes.len() {
                assert!(
                    read_snapshot_bytes(&bytes[..len], key.as_ref()).is_err(),
                    "a snapshot cut to {len} bytes was accepted"
                );
            }
        }
    }

    #[test]
    fn one_flipped_byte_anywhere_in_a_journal_is_refused() {
        for key in [Some(test_key(5)), None] {
            let bytes = journal_bytes(key.as_ref());
            for position in 0..bytes.len() {
                for flip in [0x01, 0x80] {
                    let mut damaged = bytes.clone();
                    damaged[position] ^= flip;
                    assert!(
                        read_journal_bytes(&damaged, key.as_ref()).is_err(),
                        "byte {position} ^ {flip:#x} went unnoticed (encrypted: {})",
                        key.is_some()
                    );
                }
            }
        }
    }

    #[test]
    fn a_journal_cut_anywhere_keeps_every_whole_frame() {
        let key = test_key(6);
        let bytes = journal_bytes(Some(&key));
        let mut boundaries = vec![HEADER_LEN];
        let mut offset = HEADER_LEN;
        while offset < bytes.len() {
            let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            offset += FRAME_PREFIX_LEN + len;
            boundaries.push(offset);
        }
        // The header and the start frame are written as one file, renamed
        // into place: a journal without them is damaged, not torn.
        for cut in 0..boundaries[1] {
            assert!(
                read_journal_bytes(&bytes[..cut], Some(&key)).is_err(),
                "cut at {cut}"
            );
        }
        for cut in boundaries[1]..=bytes.len() {
            let contents = read_journal_bytes(&bytes[..cut], Some(&key)).unwrap();
            let whole = boundaries.iter().filter(|b| **b <= cut).count();
            assert_eq!(contents.changes.len(), whole - 2, "cut at {cut}");
            assert_eq!(contents.frames, whole as u64 - 1, "cut at {cut}");
            let torn = !boundaries.contains(&cut);
            assert_eq!(
                contents.torn_at,
                torn.then(|| boundaries[whole - 1] as u64),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn frames_cannot_be_swapped() {
        let key = test_key(7);
        let bytes = journal_bytes(Some(&key));
        let first = HEADER_LEN;
        let len = |at: usize| {
            FRAME_PREFIX_LEN + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize
        };
        let second = first + len(first);
        let third = second + len(second);
        let mut swapped = bytes[..first].to_vec();
        swapped.extend_from_slice(&bytes[second..third]);
        swapped.extend_from_slice(&bytes[first..second]);
        swapped.extend_from_slice(&bytes[third..]);
        assert!(matches!(
            read_journal_bytes(&swapped, Some(&key)),
            Err(FormatError::Authentication { frame: 0, .. })
        ));
        let mut dropped = bytes[..first].to_vec();
        dropped.extend_from_slice(&bytes[second..]);
        assert!(read_journal_bytes(&dropped, Some(&key)).is_err());
    }

    /// xorshift64*: deterministic, good enough to make garbage.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn the_parsers_never_panic_on_random_bytes() {
        let key = test_key(8);
        let seeds = [
            snapshot_bytes(&records(), Some(&key)),
            snapshot_bytes(&records(), None),
            journal_bytes(Some(&key)),
            journal_bytes(None),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..4_000 {
            let mut bytes = if round % 4 == 0 {
                // Pure noise, sometimes behind a valid header.
                let len = rng.below(300);
                let mut noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if round % 8 == 0 && noise.len() >= HEADER_LEN {
                    noise[..HEADER_LEN].copy_from_slice(&seeds[rng.below(4)][..HEADER_LEN]);
                }
                noise
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            // A few random edits: flips, overwrites, cuts, insertions.
            for _ in 0..rng.below(6) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len());
                match rng.below(4) {
                    0 => bytes[at] ^= 1 << rng.below(8),
                    1 => bytes[at] = rng.next() as u8,
                    2 => bytes.truncate(at),
                    _ => bytes.insert(at, rng.next() as u8),
                }
            }
            for key in [Some(&key), None] {
                let _ = read_snapshot_bytes(&bytes, key);
                let _ = read_journal_bytes(&bytes, key);
            }
        }
    }

    #[test]
    fn the_decoders_never_panic_on_random_payloads() {
        // Below the seal: what a plain file's checksum or a bug could let
        // through must still be a clean error.
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let len = rng.below(120);
            let mut payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if !payload.is_empty() {
                payload[0] = (rng.below(8)) as u8;
            }
            let _ = decode_change(&payload);
            let mut decoder = Decoder::new(&payload);
            while !decoder.is_empty() {
                if decode_record(&mut decoder).is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn key_files_raw_or_base64() {
        let raw = [7u8; KEY_LEN];
        let from_raw = SnapshotKey::parse(&raw).unwrap();
        let line = from_raw.to_base64_line();
        assert_eq!(line.len(), 45);
        assert!(line.ends_with("=\n"));
        let from_text = SnapshotKey::parse(line.as_bytes()).unwrap();
        assert_eq!(from_raw.id(), from_text.id());
        let url_safe_unpadded = line.trim_end().trim_end_matches('=').replace('+', "-");
        assert_eq!(
            SnapshotKey::parse(url_safe_unpadded.as_bytes())
                .unwrap()
                .id(),
            from_raw.id()
        );
        assert_eq!(
            SnapshotKey::parse(format!("{}\r\n", line.trim_end()).as_bytes())
                .unwrap()
                .id(),
            from_raw.id()
        );
        for bad in [&b""[..], b"short", &[0u8; 31], &[0u8; 33], b"!!!!"] {
            assert!(SnapshotKey::parse(bad).is_none(), "{bad:?}");
        }
        // Non-canonical: the unused bits of the last symbol must be zero.
        let mut sloppy = line.trim_end().as_bytes().to_vec();
        sloppy[42] = b'B';
        assert!(SnapshotKey::parse(&sloppy).is_none());
        assert_ne!(test_key(1).id(), test_key(2).id());
        assert_eq!(
            format!("{:?}", test_key(1)).len(),
            "SnapshotKey(id )".len() + 16
        );
    }

    #[test]
    fn base64_matches_known_vectors() {
        for (plain, encoded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(&*base64_encode(plain), encoded);
            if !plain.is_empty() {
                assert_eq!(&**base64_decode(encoded.as_bytes()).unwrap(), plain);
            }
        }
        // Refused: no data, a lone symbol, padding that does not complete
        // a quantum.
        let decoded_len = |text: &[u8]| base64_decode(text).map(|bytes| bytes.len());
        assert_eq!(decoded_len(b"===="), None);
        assert_eq!(decoded_len(b"A"), None);
        assert_eq!(decoded_len(b"AA=="), Some(1));
        assert_eq!(decoded_len(b"AA="), None);
    }

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(crc32(0, b"12345"), b"6789"), 0xCBF4_3926);
    }
}
