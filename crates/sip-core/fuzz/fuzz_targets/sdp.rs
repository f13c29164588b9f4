//! `sdp::parse` on arbitrary bytes, then `sdp::answer` to whatever parsed: neither may panic, and
//! our answer must read back as what we chose (its codec on the offer's payload type, the
//! telephone-event that goes with it, as many streams as the offer with ours in the offer's
//! audio place).
//!
//! Run from `crates/sip-core`: `cargo fuzz run sdp` (`make fuzz` runs every target).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_core::sdp::{answer, parse, Codec};

const PREFER: [Codec; 4] = [Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma];

fuzz_target!(|data: &[u8]| {
    let Some(offer) = parse(data) else {
        return;
    };
    assert!(offer.audio_index < offer.streams.len().max(1));
    let addr = "192.0.2.1".parse().unwrap();
    let Some((sdp, codec)) = answer(&offer, 7, 1, addr, 4000, &PREFER, None) else {
        assert!(
            offer.codecs.is_empty(),
            "no answer although {:?} were offered",
            offer.codecs
        );
        return;
    };
    assert!(offer.codecs.contains(&codec));
    let back = parse(sdp.as_bytes()).expect("our answer parses");
    assert_eq!(back.codecs, [codec], "{sdp}");
    assert_eq!(back.payload_types, [offer.payload_type_of(codec).unwrap()], "{sdp}");
    assert_eq!(back.dtmf(), offer.clone().with_only(codec).dtmf(), "{sdp}");
    assert_eq!(back.addr.port(), 4000);
    if offer.streams.len() > 1 {
        assert_eq!(back.streams.len(), offer.streams.len(), "{sdp}");
        assert_eq!(back.audio_index, offer.audio_index, "{sdp}");
    }
});
