//! The small text formats written and read by hand: durations and byte
//! sizes ([`units`]), RFC 3339 timestamps without allocation
//! ([`timefmt`]) and the JSON of the audit line and the metadata object
//! ([`json`]).

pub mod json;
pub mod timefmt;
pub mod units;
