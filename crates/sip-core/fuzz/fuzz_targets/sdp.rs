//! `sdp::parse` on arbitrary bytes, then `sdp::answer` to whatever parsed: neither may panic, and
//! our answer must read back as what we chose (its codec, its telephone-event, as many streams
//! as the offer with ours in the offer's audio place).
//!
//! Run from `crates/sip-core`: `cargo fuzz run sdp` (`make fuzz` runs every target).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_core::sdp::{answer, parse};

fuzz_target!(|data: &[u8]| {
    let Some(offer) = parse(data) else {
        return;
    };
    assert!(offer.audio_index < offer.streams.len().max(1));
    let addr = "192.0.2.1".parse().unwrap();
    let Some((sdp, codec)) = answer(&offer, 7, 1, addr, 4000) else {
        assert!(
            offer.codecs.is_empty(),
            "no answer although {:?} were offered",
            offer.codecs
        );
        return;
    };
    assert_eq!(Some(&codec), offer.codecs.first());
    let back = parse(sdp.as_bytes()).expect("our answer parses");
    assert_eq!(back.codecs.first(), Some(&codec), "{sdp}");
    assert_eq!(
        back.telephone_event.is_some(),
        offer.telephone_event.is_some(),
        "{sdp}"
    );
    assert_eq!(back.addr.port(), 4000);
    if offer.streams.len() > 1 {
        assert_eq!(back.streams.len(), offer.streams.len(), "{sdp}");
        assert_eq!(back.audio_index, offer.audio_index, "{sdp}");
    }
});
