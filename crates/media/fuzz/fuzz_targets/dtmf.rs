//! RFC 4733 telephone events (`dtmf::Rfc4733Receiver`) from an arbitrary packet sequence, and
//! SIP INFO bodies (`dtmf::parse_dtmf_relay`): never a panic, only keys come out, and what the
//! receiver holds stays bounded however the packets come.
//!
//! Run from `crates/media`: `cargo fuzz run dtmf`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use media::dtmf::{parse_dtmf_relay, Rfc4733Receiver};

const KEYS: &str = "0123456789*#ABCD";

fuzz_target!(|data: &[u8]| {
    if let Some(d) = parse_dtmf_relay(data) {
        assert!(KEYS.contains(d), "{d:?}");
    }
    // Packets: a 4-byte timestamp, a length byte, then that much payload.
    let mut rx = Rfc4733Receiver::new();
    let mut rest = data;
    let mut keys = 0usize;
    let mut packets = 0usize;
    while rest.len() >= 5 {
        let ts = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let len = usize::from(rest[4] % 16).min(rest.len() - 5);
        let payload = &rest[5..5 + len];
        rest = &rest[5 + len..];
        packets += 1;
        // As the media leg does: one digit from the packet, then whatever else is queued.
        if let Some((d, _)) = rx.handle_packet(ts, payload) {
            assert!(KEYS.contains(d));
            keys += 1;
        }
        while let Some((d, _)) = rx.poll_digit() {
            assert!(KEYS.contains(d));
            keys += 1;
        }
    }
    while let Some((d, _)) = rx.flush() {
        assert!(KEYS.contains(d));
        keys += 1;
    }
    // A packet ends at most two presses.
    assert!(
        keys <= 2 * packets + 1,
        "{keys} keys from {packets} packets"
    );
});
