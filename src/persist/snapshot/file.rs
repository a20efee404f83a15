//! Whole files

use super::*;

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
    pub(super) out: W,
    pub(super) sealer: FileSealer,
    pub(super) frame: FrameBuf,
    pub(super) entries: u64,
    pub(super) written: u64,
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

    pub(super) fn flush_frame(&mut self, kind: FrameKind) -> io::Result<()> {
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
