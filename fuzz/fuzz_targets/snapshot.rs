//! Snapshot and journal files are read at startup from a directory an
//! attacker with access to the pod could write: any bytes, with or without
//! a key, must give contents or an error, never a panic or a huge
//! allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tmpvault::persist::snapshot::{read_journal, read_snapshot, SnapshotKey};
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let key = SnapshotKey::from_bytes(Zeroizing::new([7u8; 32]));
    let len = data.len() as u64;
    for key in [None, Some(&key)] {
        let _ = read_snapshot(data, len, key);
        let _ = read_journal(data, len, key);
    }
});
