//! `make bench` (pacing part): one call whose far end is this program; it receives the switch's
//! RTP for a long window and reports how well the 20 ms clock holds: packets against elapsed
//! time, the RTP timestamp against the wall clock (drift in ppm), and inter-arrival spread.
//!
//! Usage: cargo run --release -p e2e --example pacing -- OUT.md [SECONDS]

use std::fmt::Write as _;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use e2e::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "bench/results/pacing.md".into());
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(300);
    let sock = loop {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        if a.local_addr().unwrap().port().is_multiple_of(2) {
            break a;
        }
    };
    let port = sock.local_addr().unwrap().port().to_string();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let nats = Nats::start();
    let sw = Switch::start(&nats, &["--media-timeout", "100000"]);
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let caller = Sipp::uac_with(
        "uac_inbound_media.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "5553", "-timeout", &format!("{}s", secs + 60)],
        &[("RTPPORT", &port)],
    );
    let uuid = app.next_event("answered", Duration::from_secs(20)).await["call_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!("pacing: measuring {secs} s");
    let measure = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut first: Option<(Instant, u32)> = None;
        let mut last: Option<(Instant, u32)> = None;
        let mut packets = 0u64;
        let mut gaps_us: Vec<u32> = Vec::new();
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                let now = Instant::now();
                if let Some((h, _)) = media::rtp::parse(&buf[..n]) {
                    packets += 1;
                    if let Some((t, _)) = last {
                        gaps_us.push((now - t).as_micros() as u32);
                    }
                    first.get_or_insert((now, h.timestamp));
                    last = Some((now, h.timestamp));
                }
            }
        }
        (first, last, packets, gaps_us)
    });
    let (first, last, packets, mut gaps) =
        tokio::task::spawn_blocking(move || measure.join().unwrap())
            .await
            .unwrap();
    app.request("request_drop_call", serde_json::json!({"call_uuid": uuid}))
        .await;
    let _ = caller.finish(Duration::from_secs(20));
    let (Some((t0, ts0)), Some((t1, ts1))) = (first, last) else {
        panic!("no RTP received from the switch");
    };
    let wall = (t1 - t0).as_secs_f64();
    let media_secs = ts1.wrapping_sub(ts0) as f64 / 8000.0;
    let drift_ppm = (media_secs - wall) / wall * 1e6;
    let expected = (wall / 0.020).round() as u64 + 1;
    gaps.sort_unstable();
    let q = |p: f64| {
        gaps.get(((gaps.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let mut md = String::new();
    let _ = writeln!(md, "# RTP pacing\n");
    let _ = writeln!(
        md,
        "One call, the far end's RTP socket in this program, {wall:.0} s on {} (release build).\n",
        machine()
    );
    let _ = writeln!(md, "| measure | value |\n|---|---|");
    let _ = writeln!(
        md,
        "| packets received / expected at 20 ms | {packets} / {expected} |"
    );
    let _ = writeln!(
        md,
        "| RTP clock against wall clock | {drift_ppm:+.1} ppm ({:+.1} ms per hour) |",
        drift_ppm * 3.6
    );
    let _ = writeln!(
        md,
        "| inter-arrival p50 / p99 / max | {} / {} / {} µs |",
        q(0.5),
        q(0.99),
        gaps.last().copied().unwrap_or(0)
    );
    write_report(&out, &md);
}
