//! The key

use super::*;

/// The snapshot key: wiped on drop, never printed.
pub struct SnapshotKey {
    pub(super) bytes: Zeroizing<[u8; KEY_LEN]>,
    pub(super) id: [u8; KEY_ID_LEN],
}

impl fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotKey(id {})", hex(&self.id))
    }
}

pub(super) fn random_bytes(buffer: &mut [u8]) -> Result<(), KeyFileError> {
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
    pub(super) fn file_cipher(&self, nonce: &[u8; NONCE_LEN]) -> Aes256Gcm {
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

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub(super) const BASE64: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(super) fn base64_encode(bytes: &[u8]) -> Zeroizing<String> {
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
pub(super) fn base64_decode(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
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
