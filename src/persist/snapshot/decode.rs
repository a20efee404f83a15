//! Decoding

use super::*;

/// Reads fields off an opened frame's payload.
pub(super) struct Decoder<'a> {
    pub(super) bytes: &'a [u8],
    /// The last content type read: most entries share one, so they share
    /// one allocation too.
    pub(super) last_text: Option<Arc<str>>,
}

impl<'a> Decoder<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder {
            bytes,
            last_text: None,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(super) fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], Malformed> {
        if self.bytes.len() < len {
            return Err(malformed(format!("it ends inside {what}")));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    pub(super) fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    pub(super) fn u16(&mut self, what: &str) -> Result<u16, Malformed> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        let mut out = [0; 4];
        out.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(out))
    }

    pub(super) fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        let mut out = [0; 8];
        out.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(out))
    }

    pub(super) fn time(&mut self, what: &str) -> Result<SystemTime, Malformed> {
        let nanos = self.u64(what)?;
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_nanos(nanos))
            .ok_or_else(|| malformed(format!("{what} is out of range")))
    }

    pub(super) fn key(&mut self) -> Result<Key, Malformed> {
        let len = self.u16("a key's length")?;
        let raw = self.take(usize::from(len), "a key")?;
        let text = std::str::from_utf8(raw).map_err(|_| malformed("a key is not UTF-8"))?;
        Key::parse(text).map_err(|error| malformed(format!("a stored key is invalid: {error}")))
    }

    pub(super) fn text(&mut self, what: &str) -> Result<Arc<str>, Malformed> {
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

    pub(super) fn secret(&mut self, what: &str) -> Result<SecretBytes, Malformed> {
        let len = self.u32(what)?;
        let len = usize::try_from(len).map_err(|_| malformed(format!("{what} is too long")))?;
        SecretBytes::copy_from(self.take(len, what)?).map_err(|full| Malformed::ArenaFull {
            what: what.to_owned(),
            reason: full.to_string(),
        })
    }
}

pub(super) fn decode_record(decoder: &mut Decoder<'_>) -> Result<Record, Malformed> {
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

pub(super) fn decode_change(payload: &[u8]) -> Result<Change<Key, SecretBytes>, Malformed> {
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
