//! Policy files are operator input reloaded at run time: any bytes must give
//! a policy or an error, never a panic, and evaluation must be total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tmpvault::access::policy::{Operation, Policy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::parse(text, "fuzz") {
        for operation in [Operation::Read, Operation::Write, Operation::Delete, Operation::List] {
            let _ = policy.allows("spiffe://example.org/ns/a/sa/b", "a/b", operation);
            let _ = policy.allows("", "", operation);
        }
    }
});
