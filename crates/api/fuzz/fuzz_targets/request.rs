//! API requests (`request::parse_request`) from arbitrary bytes, and the reply built from the
//! outcome: never a panic; a refusal carries one of the validation codes of api.md §2 and a
//! status naming what is wrong; the reply is JSON with the three fields every reply has.
//!
//! Run from `crates/api`: `cargo fuzz run request` (seed with `fuzz/request.dict`).

#![no_main]

use api::error::reply_json;
use api::request::parse_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reply = match parse_request(data) {
        Ok(r) => reply_json(r.name(), Ok(Default::default())),
        Err((name, e)) => {
            assert!(
                matches!(e.code.code(), 128 | 130 | 134 | 135 | 139),
                "{} {}",
                e.code.code(),
                e.status
            );
            assert!(!e.status.is_empty());
            reply_json(&name, Err(e))
        }
    };
    let text = serde_json::to_string(&reply).expect("a reply serialises");
    let back: serde_json::Value = serde_json::from_str(&text).expect("and reads back");
    for field in ["request_name", "status", "status_code"] {
        assert!(back.get(field).is_some(), "{text}");
    }
});
