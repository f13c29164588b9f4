//! RTCP both ways (RFC 3550): the test is the far end's media — it sends RTP and a sender
//! report, reads the switch's reports about its stream, answers the switch's sender report, and
//! expects the round-trip time in call_quality.

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::*;
use media::rtcp::{self, ReportBlock, RtcpPacket};
use media::rtp::{self, RtpHeader};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn ntp_now() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    rtcp::ntp_from_unix(d.as_secs(), d.subsec_nanos())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_and_receiver_reports_both_ways() {
    // Our media ports: RTP on an even port, RTCP above it.
    let (rtp_sock, rtcp_sock) = loop {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p.is_multiple_of(2) {
            if let Ok(b) = UdpSocket::bind(("127.0.0.1", p + 1)) {
                break (a, b);
            }
        }
    };
    let port = rtp_sock.local_addr().unwrap().port();
    rtp_sock
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    rtcp_sock
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();

    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let port_s = port.to_string();
    let caller = Sipp::uac_with(
        "uac_inbound_media.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "5552"],
        &[("RTPPORT", &port_s)],
    );
    let uuid = app.next_event("answered", T).await["call_uuid"]
        .as_str()
        .unwrap()
        .to_string();

    // Play the far end for ~12 s on a blocking thread: RTP every 20 ms, one SR, and an RR about
    // the switch's stream once its SR arrives.
    let media = std::thread::spawn(move || {
        let our_ssrc = 0x5eed_0001u32;
        let mut buf = [0u8; 1500];
        let mut switch_rtp = None;
        let mut switch_ssrc = None;
        let mut about_us: Option<ReportBlock> = None;
        let mut sr_answered = false;
        let mut out = Vec::new();
        let start = Instant::now();
        let mut seq = 0u16;
        while start.elapsed() < Duration::from_secs(12) {
            if let Ok((n, from)) = rtp_sock.recv_from(&mut buf) {
                if let Some((h, _)) = rtp::parse(&buf[..n]) {
                    switch_rtp = Some(from);
                    switch_ssrc = Some(h.ssrc);
                }
            }
            if let Some(to) = switch_rtp {
                let h = RtpHeader {
                    payload_type: 0,
                    marker: false,
                    seq,
                    timestamp: seq as u32 * 160,
                    ssrc: our_ssrc,
                };
                rtp::write(&h, &[0xff; 160], &mut out);
                let _ = rtp_sock.send_to(&out, to);
                seq = seq.wrapping_add(1);
                let rtcp_to = std::net::SocketAddr::new(to.ip(), to.port() + 1);
                if seq == 50 {
                    out.clear();
                    rtcp::write_sr(
                        our_ssrc,
                        ntp_now(),
                        seq as u32 * 160,
                        50,
                        8000,
                        &[],
                        "far-end",
                        &mut out,
                    );
                    let _ = rtcp_sock.send_to(&out, rtcp_to);
                }
                if let Ok((n, _)) = rtcp_sock.recv_from(&mut buf) {
                    for p in rtcp::parse(&buf[..n]) {
                        if let RtcpPacket::SenderReport {
                            ssrc, ntp, reports, ..
                        } = p
                        {
                            if let Some(b) = reports.into_iter().find(|b| b.ssrc == our_ssrc) {
                                about_us = Some(b);
                            }
                            if !sr_answered && Some(ssrc) == switch_ssrc {
                                // Answer at once (DLSR 0), so the switch can measure the RTT.
                                let rb = ReportBlock {
                                    ssrc,
                                    fraction_lost: 0,
                                    cumulative_lost: 0,
                                    ext_max_seq: 0,
                                    jitter: 0,
                                    lsr: rtcp::ntp_middle32(ntp),
                                    dlsr: 0,
                                };
                                out.clear();
                                rtcp::write_rr(our_ssrc, &[rb], "far-end", &mut out);
                                let _ = rtcp_sock.send_to(&out, rtcp_to);
                                sr_answered = true;
                            }
                        }
                    }
                }
            }
            if about_us.as_ref().is_some_and(|b| b.lsr != 0) && sr_answered {
                break;
            }
        }
        (about_us, sr_answered)
    });
    let (about_us, sr_answered) = tokio::task::spawn_blocking(move || media.join().unwrap())
        .await
        .unwrap();
    let b = about_us.expect("a sender report from the switch with a block about our stream");
    assert!(b.ext_max_seq >= 49, "the switch counted our packets: {b:?}");
    assert_ne!(b.lsr, 0, "the switch echoed our SR's time (LSR): {b:?}");
    assert_eq!(b.cumulative_lost, 0, "{b:?}");
    assert!(sr_answered);

    let r = app
        .request("request_drop_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    app.event(&uuid, "hangup", T).await;
    let q = app.event(&uuid, "call_quality", T).await;
    assert!(
        q["rtt_ms"].as_f64().is_some_and(|rtt| rtt < 100.0),
        "RTT from our receiver report: {q}"
    );
    assert_eq!(q["packets_lost"], 0, "{q}");
    caller.finish(T).unwrap();
}
