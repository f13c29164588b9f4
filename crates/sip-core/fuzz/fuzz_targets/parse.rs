//! `msg::parse` on arbitrary bytes, both framings; then `validate`, the typed header views, and a
//! print-and-parse round trip of whatever parsed. Any panic is a bug; so is a printed message
//! that does not parse back to the same message.
//!
//! Run from `crates/sip-core`: `cargo +nightly fuzz run parse` (seed `fuzz/corpus/parse` with
//! the torture vectors first: `cp ../../../shared/test-vectors/sip-torture/rfc*/* fuzz/corpus/parse/`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_core::msg::{parse, validate, CSeq, Framing, Message, NameAddr, Uri, Via, MAX_MESSAGE_LEN};

fn without_content_length(mut m: Message) -> Message {
    match &mut m {
        Message::Request(r) => r.headers.remove("Content-Length"),
        Message::Response(r) => r.headers.remove("Content-Length"),
    }
    m
}

fuzz_target!(|data: &[u8]| {
    for framing in [Framing::Datagram, Framing::Stream] {
        let Ok((m, used)) = parse(data, framing) else {
            continue;
        };
        assert!(used <= data.len());
        if framing == Framing::Stream {
            // What a stream frames, the same bytes as a datagram must frame alike.
            let (alone, _) = parse(&data[..used], Framing::Datagram).expect("framed alike");
            assert_eq!(alone, m);
        }
        let _ = validate(&m);
        let h = m.headers();
        for v in h.get_all("Via") {
            let _ = Via::parse(v).map(|v| v.branch().map(str::len));
        }
        for name in ["From", "To", "Contact", "Route", "Record-Route"] {
            for v in h.get_all(name) {
                if let Some(a) = NameAddr::parse(v) {
                    let _ = a.tag();
                    let _ = Uri::parse(&a.uri).map(|u| u.to_string());
                }
            }
        }
        let _ = h.get("CSeq").and_then(CSeq::parse);
        if let Message::Request(r) = &m {
            let _ = Uri::parse(&r.uri).map(|u| u.to_string());
        }
        let printed = m.to_bytes();
        // Printing spells compact names out, which can take a message at the cap over it.
        if printed.len() > MAX_MESSAGE_LEN {
            continue;
        }
        let (again, _) = parse(&printed, Framing::Stream).expect("printed form parses");
        assert_eq!(without_content_length(again), without_content_length(m));
    }
});
