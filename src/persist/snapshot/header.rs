//! Header

use super::*;

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
