//! Durations and sizes come from query strings (`ttl`) and flags: parsing
//! must be total (no panic, no overflow) and round-trip what it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tmpvault::text::units::{format_duration, parse_bytes, parse_duration};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(duration) = parse_duration(text) {
        assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
    }
    let _ = parse_bytes(text);
});
