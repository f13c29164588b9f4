//! `make bench`: N concurrent calls from a SIPp carrier (echoing RTP), each streamed to a local
//! WSS echo server, for increasing N. For each N it reports what the switch lost (frames shed
//! towards the app, datagrams the kernel dropped because the switch did not read in time), CPU
//! and resident memory per call, and the forwarding latency from an RTP packet's arrival to its
//! frame written on the WebSocket (p50/p99, from the switch's own histogram).
//!
//! Usage: cargo run --release -p e2e --example bench -- OUT.md [N,N,...] [HOLD_SECS]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::json;

fn proc_stat(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, rss_kib)
}

/// Datagrams the kernel dropped on the switch's own UDP sockets (the `drops` column of
/// /proc/net/udp for the socket inodes the process holds): what the switch failed to read in
/// time, apart from drops at SIPp's socket.
fn switch_udp_drops(pid: u32) -> u64 {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect();
    let mut drops = 0;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 12 && inodes.contains(f[9]) {
                drops += f[12].parse::<u64>().unwrap_or(0);
            }
        }
    }
    drops
}

fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return 0;
    };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (bucket upper bound µs or None for +Inf, cumulative count)
fn latency_buckets(text: &str) -> Vec<(Option<u64>, u64)> {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("botstream_ws_forward_latency_us_bucket{le=\"")?
                .split_once("\"} ")
        })
        .map(|(le, n)| (le.parse().ok(), n.trim().parse().unwrap_or(0)))
        .collect()
}

fn quantile(before: &[(Option<u64>, u64)], after: &[(Option<u64>, u64)], q: f64) -> String {
    let delta: Vec<(Option<u64>, u64)> = after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&(None, 0))))
        .map(|(a, b)| (a.0, a.1 - b.1.min(a.1)))
        .collect();
    let total = delta.last().map(|d| d.1).unwrap_or(0);
    if total == 0 {
        return "n/a".into();
    }
    let want = (total as f64 * q).ceil() as u64;
    for (le, n) in &delta {
        if *n >= want {
            return match le {
                Some(us) => format!("≤ {us} µs"),
                None => "> 50 ms".into(),
            };
        }
    }
    "n/a".into()
}

struct Row {
    n: usize,
    answered: usize,
    streams: usize,
    rtp_in_pps: f64,
    ws_dropped: u64,
    kernel_drops: u64,
    switch_drops: u64,
    cpu_pct: f64,
    rss_per_call_kib: f64,
    p50: String,
    p99: String,
}

async fn run(n: usize, hold: Duration) -> Row {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &["--rtp-ports", "20000-60000"]);
    let mut ws = WsServer::start_echo().await;
    let _ = &mut ws;
    let carrier = Sipp::uas_with(
        "uas_answer.xml",
        n as u32,
        &["-rtp_echo", "-l", &n.to_string(), "-timeout", "600s"],
        &[("REASON", "Q")],
    );
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("bench", carrier.port, &[]).await;
    let pid = sw.proc.child.id();
    let (_, rss_idle) = proc_stat(pid);
    // Paced at about 100 call attempts a second: a burst of hundreds of INVITEs at once makes
    // SIPp (not the switch) drop some.
    let mut uuids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let reqs = chunk.iter().map(|_| {
            app.request(
                "request_make_call",
                json!({"gateway": "bench", "tenant_id": "bench", "to_number": "1", "from_number": "2",
                       "event_subject": app.event_subject, "channel_vars": {"sip_h_X-Campaign": "spring"}}),
            )
        });
        for r in futures::future::join_all(reqs).await {
            if let Some(u) = r["call_uuid"].as_str() {
                uuids.push(u.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One deadline for all answers: events are buffered, so later calls return at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut answered_uuids = Vec::new();
    for u in &uuids {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if app.maybe_event(u, "answered", left).await.is_some() {
            answered_uuids.push(u.clone());
        }
    }
    let answered = answered_uuids.len();
    let mut streams = 0;
    for chunk in answered_uuids.chunks(50) {
        let reqs = chunk.iter().map(|u| {
            app.request(
                "request_start_stream",
                json!({"call_uuid": u, "websocket_host": "127.0.0.1", "websocket_port": ws.port}),
            )
        });
        streams += futures::future::join_all(reqs)
            .await
            .iter()
            .filter(|r| r["status_code"] == 0)
            .count();
    }
    // Let the echo loops settle, then measure over the hold window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, m0) = sw.http_get("/metrics").unwrap_or_default();
    let (cpu0, _) = proc_stat(pid);
    let k0 = udp_rcvbuf_errors();
    let t0 = Instant::now();
    tokio::time::sleep(hold).await;
    let secs = t0.elapsed().as_secs_f64();
    let (_, m1) = sw.http_get("/metrics").unwrap_or_default();
    let (cpu1, rss) = proc_stat(pid);
    let k1 = udp_rcvbuf_errors();
    let switch_drops = switch_udp_drops(pid);
    for chunk in uuids.chunks(100) {
        let reqs = chunk
            .iter()
            .map(|u| app.request("request_drop_call", json!({"call_uuid": u})));
        futures::future::join_all(reqs).await;
    }
    let _ = carrier.finish(Duration::from_secs(60));
    // A clean exit (SIGTERM), so a profiler wrapped around the switch can write its report.
    let mut sw = sw;
    sw.proc.terminate();
    let _ = sw.proc.wait_exit(Duration::from_secs(60));
    let rtp_in = metric(&m1, "botstream_rtp_packets_total{dir=\"in\"} ")
        - metric(&m0, "botstream_rtp_packets_total{dir=\"in\"} ");
    Row {
        n,
        answered,
        streams,
        rtp_in_pps: rtp_in as f64 / secs,
        ws_dropped: metric(&m1, "botstream_ws_frames_dropped_total ")
            - metric(&m0, "botstream_ws_frames_dropped_total "),
        kernel_drops: k1.saturating_sub(k0),
        switch_drops,
        cpu_pct: (cpu1 - cpu0) / secs * 100.0,
        rss_per_call_kib: rss.saturating_sub(rss_idle) as f64 / n.max(1) as f64,
        p50: quantile(&latency_buckets(&m0), &latency_buckets(&m1), 0.50),
        p99: quantile(&latency_buckets(&m0), &latency_buckets(&m1), 0.99),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "bench/results/media.md".into());
    let ns: Vec<usize> = args
        .get(2)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![50, 200, 500, 1000, 2000]);
    let hold = Duration::from_secs(args.get(3).and_then(|s| s.parse().ok()).unwrap_or(15));
    let mut rows = Vec::new();
    for n in ns {
        eprintln!("bench: {n} calls");
        let row = run(n, hold).await;
        let lossless =
            row.ws_dropped == 0 && row.switch_drops == 0 && row.answered == n && row.streams == n;
        eprintln!(
            "  answered {} streams {} rtp_in {:.0}/s ws_dropped {} switch_drops {} all_udp_drops {} cpu {:.0}% rss/call {:.1} KiB p50 {} p99 {}",
            row.answered, row.streams, row.rtp_in_pps, row.ws_dropped, row.switch_drops, row.kernel_drops, row.cpu_pct, row.rss_per_call_kib, row.p50, row.p99
        );
        rows.push(row);
        if !lossless {
            break;
        }
    }
    let mut md = String::new();
    let _ = writeln!(md, "# Media benchmark\n");
    let _ = writeln!(
        md,
        "Machine: {}. SIPp (carrier, -rtp_echo), nats-server, the WSS echo app and the switch (release build) all share it, so the switch gets well under the whole machine.\n",
        machine()
    );
    let _ = writeln!(md, "Hold window {} s per step. Latency: RTP arrival → PCM frame written to the WebSocket, from the switch's histogram (bucket upper bounds).\n", hold.as_secs());
    let _ = writeln!(md, "| calls | answered | streams | RTP in /s | frames shed to app | drops at the switch's sockets | UDP drops machine-wide (SIPp included) | switch CPU (% of one core) | RSS per call | latency p50 | latency p99 |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.0} | {:.1} KiB | {} | {} |",
            r.n,
            r.answered,
            r.streams,
            r.rtp_in_pps,
            r.ws_dropped,
            r.switch_drops,
            r.kernel_drops,
            r.cpu_pct,
            r.rss_per_call_kib,
            r.p50,
            r.p99
        );
    }
    write_report(&out, &md);
}
