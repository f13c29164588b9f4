//! `make bench`: N concurrent calls from a SIPp carrier (echoing RTP), each streamed to a local
//! WSS echo server, for increasing N. For each N it reports what the switch lost (frames shed
//! towards the app, datagrams the kernel dropped because the switch did not read in time), CPU
//! and resident memory per call, and the forwarding latency from an RTP packet's arrival to its
//! frame written on the WebSocket (p50/p99, from the switch's own histogram).
//!
//! Usage: cargo run --release -p e2e --example bench -- OUT.md [N,N,...] [HOLD_SECS]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use e2e::measure::*;
use e2e::*;
use serde_json::json;

struct Row {
    n: usize,
    carriers: usize,
    answered: usize,
    streams: usize,
    rtp_in_pps: f64,
    rtp_out_pps: f64,
    ticks_skipped: u64,
    ws_dropped: u64,
    kernel_drops: u64,
    switch_drops: u64,
    /// % of one core over the hold window.
    switch_user: f64,
    switch_sys: f64,
    sipp_cpu: f64,
    app_cpu: f64,
    /// % of the whole machine busy (all processes).
    machine_busy: f64,
    rss_per_call_kib: f64,
    p50: String,
    p99: String,
    p99_within_1ms: bool,
}

/// SIPp's echo is one thread on one socket per instance; beyond a few hundred calls that
/// socket overflows while the thread waits for CPU, so each instance carries at most this many.
const CALLS_PER_CARRIER: usize = 500;

async fn run(n: usize, hold: Duration) -> Row {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &["--rtp-ports", "20000-60000"]);
    let mut ws = WsServer::start_echo().await;
    let _ = &mut ws;
    let k = n.div_ceil(CALLS_PER_CARRIER).max(1);
    let carriers: Vec<Sipp> = (0..k)
        .map(|i| {
            let share = n / k + usize::from(i < n % k);
            Sipp::uas_with(
                "uas_answer.xml",
                share as u32,
                &["-rtp_echo", "-l", &share.to_string(), "-timeout", "600s"],
                &[("REASON", "Q")],
            )
        })
        .collect();
    let mut app = App::connect(&nats, &sw).await;
    for (i, c) in carriers.iter().enumerate() {
        app.add_gateway(&format!("bench{i}"), c.port, &[]).await;
    }
    let pid = sw.proc.child.id();
    let rss_idle = rss_kib(pid);
    // Paced at about 100 call attempts a second: a burst of hundreds of INVITEs at once makes
    // SIPp (not the switch) drop some.
    let mut uuids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let reqs = chunk.iter().map(|i| {
            app.request(
                "request_make_call",
                json!({"gateway": format!("bench{}", i % k), "tenant_id": "bench", "to_number": "1", "from_number": "2",
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
    let sipp_pids: Vec<String> = carriers
        .iter()
        .map(|c| c.proc.child.id().to_string())
        .collect();
    let sipp_cpu = || -> f64 {
        sipp_pids
            .iter()
            .map(|p| proc_cpu(p))
            .map(|c| c.user + c.sys)
            .sum()
    };
    let (_, m0) = sw.http_get("/metrics").unwrap_or_default();
    let sw0 = proc_cpu(&pid.to_string());
    let app0 = proc_cpu("self");
    let sipp0 = sipp_cpu();
    let mach0 = machine_jiffies();
    let k0 = udp_rcvbuf_errors();
    let t0 = Instant::now();
    tokio::time::sleep(hold).await;
    let secs = t0.elapsed().as_secs_f64();
    let (_, m1) = sw.http_get("/metrics").unwrap_or_default();
    let sw1 = proc_cpu(&pid.to_string());
    let app1 = proc_cpu("self");
    let sipp1 = sipp_cpu();
    let mach1 = machine_jiffies();
    let rss = rss_kib(pid);
    let k1 = udp_rcvbuf_errors();
    let switch_drops = switch_udp_drops(pid);
    for chunk in uuids.chunks(100) {
        let reqs = chunk
            .iter()
            .map(|u| app.request("request_drop_call", json!({"call_uuid": u})));
        futures::future::join_all(reqs).await;
    }
    for c in carriers {
        let _ = c.finish(Duration::from_secs(60));
    }
    // A clean exit (SIGTERM), so a profiler wrapped around the switch can write its report.
    let mut sw = sw;
    sw.proc.terminate();
    let _ = sw.proc.wait_exit(Duration::from_secs(60));
    let delta = |name: &str| metric(&m1, name).saturating_sub(metric(&m0, name));
    let rtp_in = delta("botstream_rtp_packets_total{dir=\"in\"} ");
    let rtp_out = delta("botstream_rtp_packets_total{dir=\"out\"} ");
    let pct = |d: f64| d / secs * 100.0;
    let b0 = buckets(&m0, "botstream_ws_forward_latency_us");
    let b1 = buckets(&m1, "botstream_ws_forward_latency_us");
    let p99 = quantile(&b0, &b1, 0.99);
    Row {
        n,
        carriers: k,
        answered,
        streams,
        rtp_in_pps: rtp_in as f64 / secs,
        rtp_out_pps: rtp_out as f64 / secs,
        ticks_skipped: delta("botstream_rtp_ticks_skipped_total "),
        ws_dropped: delta("botstream_ws_frames_dropped_total "),
        kernel_drops: k1.saturating_sub(k0),
        switch_drops,
        switch_user: pct(sw1.user - sw0.user),
        switch_sys: pct(sw1.sys - sw0.sys),
        sipp_cpu: pct(sipp1 - sipp0),
        // The bench process is the WSS echo app (it also polls /metrics twice).
        app_cpu: pct(app1.user + app1.sys - app0.user - app0.sys),
        machine_busy: (mach1.0 - mach0.0) as f64 / (mach1.1 - mach0.1).max(1) as f64 * 100.0,
        rss_per_call_kib: rss.saturating_sub(rss_idle) as f64 / n.max(1) as f64,
        p50: quantile(&b0, &b1, 0.50).0,
        p99_within_1ms: p99.1.is_some_and(|us| us <= 1000),
        p99: p99.0,
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
        .unwrap_or_else(|| vec![250, 500, 750, 1000, 1500, 2000]);
    let hold = Duration::from_secs(args.get(3).and_then(|s| s.parse().ok()).unwrap_or(15));
    let mut rows = Vec::new();
    for n in ns {
        eprintln!("bench: {n} calls");
        let row = run(n, hold).await;
        eprintln!(
            "  answered {} streams {} rtp_in {:.0}/s rtp_out {:.0}/s ticks_skipped {} ws_dropped {} switch_drops {} all_udp_drops {} switch cpu {:.0}%+{:.0}% sipp {:.0}% app {:.0}% machine {:.0}% rss/call {:.1} KiB p50 {} p99 {}",
            row.answered, row.streams, row.rtp_in_pps, row.rtp_out_pps, row.ticks_skipped, row.ws_dropped, row.switch_drops, row.kernel_drops,
            row.switch_user, row.switch_sys, row.sipp_cpu, row.app_cpu, row.machine_busy,
            row.rss_per_call_kib, row.p50, row.p99
        );
        let set_up = row.answered == n && row.streams == n;
        rows.push(row);
        // Calls that can no longer be set up mean the machine is past saturation: larger
        // steps would only measure the load generators.
        if !set_up {
            break;
        }
    }
    // Lost inside the switch: caller frames shed towards the app, datagrams left unread at
    // its sockets, and 20 ms sends to the caller given up because the call's task was starved.
    let lossless = |r: &&Row| {
        r.answered == r.n
            && r.streams == r.n
            && r.ws_dropped == 0
            && r.switch_drops == 0
            && r.ticks_skipped == 0
    };
    let largest = |f: &dyn Fn(&&Row) -> bool| {
        rows.iter()
            .filter(f)
            .map(|r| r.n.to_string())
            .next_back()
            .unwrap_or_else(|| "none".into())
    };
    let mut md = String::new();
    let _ = writeln!(md, "# Media benchmark\n");
    let _ = writeln!(
        md,
        "Machine: {}. The switch (release build), its load generators (SIPp carriers with -rtp_echo, one per {CALLS_PER_CARRIER} calls; the WSS echo app, which is the bench process) and nats-server all share it.\n",
        machine()
    );
    let _ = writeln!(
        md,
        "- Largest N with nothing lost inside the switch (no frame shed, no datagram left unread, no 20 ms send skipped): **{}**",
        largest(&lossless)
    );
    let _ = writeln!(
        md,
        "- Largest N with nothing lost inside the switch and p99 ≤ 1 ms: **{}**\n",
        largest(&|r: &&Row| lossless(r) && r.p99_within_1ms)
    );
    let _ = writeln!(md, "Hold window {} s per step. Latency: RTP packet read by the switch → its PCM frame written to the WebSocket, from the switch's histogram (bucket upper bounds). CPU columns are % of one core over the hold window; machine busy is % of all cores.\n", hold.as_secs());
    let _ = writeln!(md, "| calls | SIPp carriers | answered | streams | RTP out /s (expected) | 20 ms sends skipped | RTP in /s | frames shed to app | drops at the switch's sockets | UDP drops machine-wide | switch CPU user + sys | SIPp CPU | app CPU | machine busy | switch RSS per call | latency p50 | latency p99 |");
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} ({}) | {} | {:.0} | {} | {} | {} | {:.0} + {:.0} | {:.0} | {:.0} | {:.0} % | {:.1} KiB | {} | {} |",
            r.n,
            r.carriers,
            r.answered,
            r.streams,
            r.rtp_out_pps,
            r.answered * 50,
            r.ticks_skipped,
            r.rtp_in_pps,
            r.ws_dropped,
            r.switch_drops,
            r.kernel_drops,
            r.switch_user,
            r.switch_sys,
            r.sipp_cpu,
            r.app_cpu,
            r.machine_busy,
            r.rss_per_call_kib,
            r.p50,
            r.p99
        );
    }
    write_report(&out, &md);
}
