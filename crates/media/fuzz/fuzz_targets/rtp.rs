//! `rtp::parse` on arbitrary datagrams: never a panic, the payload lies inside the datagram,
//! and what parsed writes back (`rtp::write`) and parses again to the same header and payload.
//!
//! Run from `crates/media`: `cargo fuzz run rtp`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use media::rtp::{is_rtcp, parse, write};

fuzz_target!(|data: &[u8]| {
    let _ = is_rtcp(data);
    let Some((h, payload)) = parse(data) else {
        return;
    };
    let (start, end) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
    let p = payload.as_ptr() as usize;
    assert!(
        p >= start && p + payload.len() <= end,
        "payload outside the datagram"
    );
    let mut out = Vec::new();
    write(&h, payload, &mut out);
    let (h2, payload2) = parse(&out).expect("what we write parses");
    assert_eq!(h2, h);
    assert_eq!(payload2, payload);
});
