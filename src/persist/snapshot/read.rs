//! Reading frames

use super::*;

/// What [`FrameReader::next`] found.
pub(super) enum Next<'a> {
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
pub(super) struct FrameReader<R> {
    pub(super) source: R,
    pub(super) header: [u8; HEADER_LEN],
    pub(super) parsed: Header,
    pub(super) sealer: Sealer,
    /// Index and byte offset of the next frame.
    pub(super) index: u64,
    pub(super) offset: u64,
    /// Bytes of the file not read yet: no frame can claim more.
    pub(super) remaining: u64,
    /// The current frame, opened in place; wiped before reuse and on drop.
    pub(super) buffer: Zeroizing<Vec<u8>>,
}

impl<R: Read> FrameReader<R> {
    /// Reads the header of a `len`-byte file and checks it against `key`.
    pub(super) fn open(
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
    pub(super) fn next(&mut self) -> Result<Next<'_>, FormatError> {
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
pub(super) struct WipedReader<R> {
    pub(super) inner: R,
    pub(super) buffer: Zeroizing<Vec<u8>>,
    pub(super) position: usize,
}

impl<R: Read> WipedReader<R> {
    pub(super) fn new(inner: R, len: u64) -> WipedReader<R> {
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

pub(super) fn authentication_error(frame: u64, offset: u64) -> FormatError {
    FormatError::Authentication { frame, offset }
}

/// A frame of a kind that has no place in this kind of file.
pub(super) fn unexpected_frame(
    kind: FrameKind,
    index: u64,
    offset: u64,
    file: &str,
) -> FormatError {
    malformed_at(
        index,
        offset,
        malformed(format!("a {kind:?} frame in a {file}")),
    )
}

pub(super) fn malformed_at(index: u64, offset: u64, problem: Malformed) -> FormatError {
    match problem {
        Malformed::Content(reason) => FormatError::Malformed {
            frame: index,
            offset,
            reason,
        },
        Malformed::ArenaFull { what, reason } => FormatError::ArenaFull {
            frame: index,
            offset,
            what,
            reason,
        },
    }
}
