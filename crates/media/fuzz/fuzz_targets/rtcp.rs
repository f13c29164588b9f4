//! `rtcp::parse` on arbitrary datagrams: never a panic, and every sender or receiver report it
//! reads writes back (`write_sr`/`write_rr`) and parses again to the same report.
//!
//! Run from `crates/media`: `cargo fuzz run rtcp`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use media::rtcp::{parse, write_rr, write_sr, RtcpPacket};

fuzz_target!(|data: &[u8]| {
    for p in parse(data) {
        let mut out = Vec::new();
        match &p {
            RtcpPacket::SenderReport {
                ssrc,
                ntp,
                rtp_ts,
                packets,
                octets,
                reports,
            } => write_sr(
                *ssrc, *ntp, *rtp_ts, *packets, *octets, reports, "fuzz", &mut out,
            ),
            RtcpPacket::ReceiverReport { ssrc, reports } => {
                write_rr(*ssrc, reports, "fuzz", &mut out)
            }
            _ => continue,
        }
        let back = parse(&out);
        assert_eq!(back.first(), Some(&p), "{out:?}");
    }
});
