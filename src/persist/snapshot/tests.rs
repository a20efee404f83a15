use super::*;

fn key(raw: &str) -> Key {
    Key::parse(raw).unwrap()
}

fn secret(bytes: &[u8]) -> SecretBytes {
    SecretBytes::copy_from(bytes).unwrap()
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
