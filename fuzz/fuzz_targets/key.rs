//! Keys come straight from request paths: parsing must be total, and a key
//! that parses must satisfy every rule of the contract.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tmpvault::store::key::{validate_prefix, Key, MAX_KEY_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = Key::parse(text) {
        let key = key.as_str();
        assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN);
        assert!(!key.starts_with('/') && !key.ends_with('/'));
        for segment in key.split('/') {
            assert!(!segment.is_empty() && segment != "." && segment != "..");
            assert!(segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        }
        assert!(validate_prefix(key).is_ok(), "every key is a valid prefix");
    }
    let _ = validate_prefix(text);
});
