//! Errors

use super::*;

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
    /// A sound frame holding a value that does not fit in the secret
    /// arena this server has: the file is intact, the limits are too small
    /// for it.
    #[error(
        "frame {frame} at byte {offset} holds {what} that the secret arena cannot take \
         ({reason}); the file is intact: start with the --max-memory and memlock limits it was \
         written under"
    )]
    ArenaFull {
        /// Frame index.
        frame: u64,
        /// Byte offset of the frame.
        offset: u64,
        /// The value: `a value` or `a list item`, as the decoder names it.
        what: String,
        /// The arena's own words.
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
pub(super) enum Malformed {
    /// The content makes no sense.
    Content(String),
    /// `what` (a value) does not fit in the secret arena, for `reason`.
    ArenaFull { what: String, reason: String },
}

pub(super) fn malformed(reason: impl Into<String>) -> Malformed {
    Malformed::Content(reason.into())
}
