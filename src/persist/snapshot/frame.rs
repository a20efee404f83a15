//! Frames

use super::*;

/// How the frames of one file are sealed and opened.
pub(super) enum Sealer {
    Plain,
    Gcm(Box<Aes256Gcm>),
}

/// The sealing state of one file being written: its header and the index
/// of the next frame, which is also that frame's nonce.
pub struct FileSealer {
    pub(super) header: [u8; HEADER_LEN],
    pub(super) sealer: Sealer,
    pub(super) next_frame: u64,
}

impl fmt::Debug for FileSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSealer")
            .field("next_frame", &self.next_frame)
            .finish_non_exhaustive()
    }
}

pub(super) fn associated_data(
    header: &[u8; HEADER_LEN],
    index: u64,
    kind: u8,
) -> [u8; HEADER_LEN + 9] {
    let mut ad = [0; HEADER_LEN + 9];
    ad[..HEADER_LEN].copy_from_slice(header);
    ad[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&index.to_le_bytes());
    ad[HEADER_LEN + 8] = kind;
    ad
}

pub(super) fn frame_nonce(index: u64) -> Nonce<aes_gcm::aead::consts::U12> {
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
    pub(super) bytes: Zeroizing<Vec<u8>>,
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

    pub(super) fn reserve(&mut self, additional: usize) {
        if self.bytes.capacity() - self.bytes.len() >= additional {
            return;
        }
        let wanted = (self.bytes.len() + additional).max(self.bytes.capacity() * 2);
        let mut bigger = Zeroizing::new(Vec::with_capacity(wanted));
        bigger.extend_from_slice(&self.bytes);
        // The old buffer is wiped as it drops.
        self.bytes = bigger;
    }

    pub(super) fn put(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len() + TAG_LEN);
        self.bytes.extend_from_slice(bytes);
    }

    pub(super) fn u8(&mut self, value: u8) {
        self.put(&[value]);
    }

    pub(super) fn u16(&mut self, value: u16) {
        self.put(&value.to_le_bytes());
    }

    pub(super) fn u32(&mut self, value: u32) {
        self.put(&value.to_le_bytes());
    }

    pub(super) fn u64(&mut self, value: u64) {
        self.put(&value.to_le_bytes());
    }

    pub(super) fn time(&mut self, time: SystemTime) {
        self.u64(time_to_nanos(time));
    }

    pub(super) fn short_bytes(&mut self, bytes: &[u8]) {
        // Keys are at most 256 bytes and content types are bounded by the
        // header size limit, far below u16::MAX.
        self.u16(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
        self.put(&bytes[..bytes.len().min(usize::from(u16::MAX))]);
    }

    pub(super) fn long_bytes(&mut self, bytes: &[u8]) {
        // Values are at most --max-value-bytes (16 MiB at most).
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.put(&bytes[..bytes.len().min(u32::MAX as usize)]);
    }
}

pub(super) fn time_to_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// CRC-32 (IEEE 802.3, as zlib), continuing from `crc`.
pub(super) fn crc32(crc: u32, bytes: &[u8]) -> u32 {
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
