//! Encoding records and changes

use super::*;

pub(super) const SECRET: u8 = 1;
pub(super) const LIST: u8 = 2;
pub(super) const HAS_READS_LEFT: u8 = 1;
pub(super) const HAS_CONTENT_TYPE: u8 = 2;

pub(super) const PUT: u8 = 1;
pub(super) const PUSH: u8 = 2;
pub(super) const POP: u8 = 3;
pub(super) const RENEW: u8 = 4;
pub(super) const READ: u8 = 5;
pub(super) const DELETE: u8 = 6;

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
