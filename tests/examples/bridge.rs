//! `make bench` (bridge step): N calls from SIPp customers, each bridged to an agent leg through
//! a second set of SIPp instances (SIPp → switch → SIPp), both echoing RTP, for increasing N.
//! For each N it reports the delay the bridge adds (from an RTP packet's arrival on one leg to
//! its audio leaving the other, p50/p99 from the switch's own histogram), the switch's CPU per
//! bridged call, and anything lost inside the switch.
//!
//! Usage: cargo run --release -p e2e --example bridge -- OUT.md [N,N,...] [HOLD_SECS]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use e2e::measure::*;
use e2e::*;
use serde_json::json;

/// One SIPp (one echo thread, one socket) per this many legs.
const LEGS_PER_SIPP: usize = 250;

struct Row {
    n: usize,
    answered: usize,
    bridged: usize,
    rtp_in_pps: f64,
    rtp_out_pps: f64,
    ticks_skipped: u64,
    switch_drops: u64,
    switch_cpu: f64,
    sipp_cpu: f64,
    machine_busy: f64,
    p50: String,
    p99: String,
}

fn carriers(n: usize) -> Vec<Sipp> {
    let k = n.div_ceil(LEGS_PER_SIPP).max(1);
    (0..k)
        .map(|i| {
            let share = n / k + usize::from(i < n % k);
            Sipp::uas_with(
                "uas_answer.xml",
                share as u32,
                &["-rtp_echo", "-l", &share.to_string(), "-timeout", "600s"],
                &[("REASON", "Q")],
            )
        })
        .collect()
}

/// Requests in chunks of 20, five chunks a second (SIPp drops INVITEs in larger bursts).
async fn paced(app: &App, items: &[serde_json::Value], name: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for chunk in items.chunks(20) {
        let reqs = chunk.iter().map(|d| app.request(name, d.clone()));
        out.extend(futures::future::join_all(reqs).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    out
}

async fn answered(app: &mut App, uuids: &[String]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    for u in uuids {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if app.maybe_event(u, "answered", left).await.is_some() {
            out.push(u.clone());
        }
    }
    out
}

async fn run(n: usize, hold: Duration) -> Row {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &["--rtp-ports", "20000-60000"]);
    let customers = carriers(n);
    let agents = carriers(n);
    let mut app = App::connect(&nats, &sw).await;
    for (i, c) in customers.iter().enumerate() {
        app.add_gateway(&format!("customer{i}"), c.port, &[]).await;
    }
    for (i, c) in agents.iter().enumerate() {
        app.add_gateway(&format!("agent{i}"), c.port, &[]).await;
    }
    let calls: Vec<_> = (0..n)
        .map(|i| {
            json!({"gateway": format!("customer{}", i % customers.len()), "tenant_id": "bench",
                   "to_number": "1", "from_number": "2", "event_subject": app.event_subject,
                   "channel_vars": {"sip_h_X-Campaign": "spring"}})
        })
        .collect();
    let uuids: Vec<String> = paced(&app, &calls, "request_make_call")
        .await
        .iter()
        .filter_map(|r| r["call_uuid"].as_str().map(str::to_string))
        .collect();
    let up = answered(&mut app, &uuids).await;
    let bridges: Vec<_> = up
        .iter()
        .enumerate()
        .map(|(i, u)| {
            json!({"call_uuid": u, "gateway": format!("agent{}", i % agents.len()),
                   "to_number": "2001", "from_number": "2", "stop_stream": false,
                   "channel_vars": {"sip_h_X-Campaign": "spring"}})
        })
        .collect();
    let agent_legs: Vec<String> = paced(&app, &bridges, "request_bridge_call")
        .await
        .iter()
        .filter_map(|r| r["bridge_call_uuid"].as_str().map(str::to_string))
        .collect();
    let bridged = answered(&mut app, &agent_legs).await.len();
    // The echo loops settle, then the hold window is measured.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = sw.proc.child.id();
    let sipp_pids: Vec<String> = customers
        .iter()
        .chain(&agents)
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
    let sipp0 = sipp_cpu();
    let mach0 = machine_jiffies();
    let t0 = Instant::now();
    tokio::time::sleep(hold).await;
    let secs = t0.elapsed().as_secs_f64();
    let (_, m1) = sw.http_get("/metrics").unwrap_or_default();
    let sw1 = proc_cpu(&pid.to_string());
    let sipp1 = sipp_cpu();
    let mach1 = machine_jiffies();
    let switch_drops = switch_udp_drops(pid);
    let drops: Vec<_> = uuids.iter().map(|u| json!({"call_uuid": u})).collect();
    paced(&app, &drops, "request_drop_call").await;
    for c in customers.into_iter().chain(agents) {
        let _ = c.finish(Duration::from_secs(60));
    }
    let delta = |name: &str| metric(&m1, name).saturating_sub(metric(&m0, name));
    let b0 = buckets(&m0, "botstream_bridge_latency_us");
    let b1 = buckets(&m1, "botstream_bridge_latency_us");
    let pct = |d: f64| d / secs * 100.0;
    Row {
        n,
        answered: up.len(),
        bridged,
        rtp_in_pps: delta("botstream_rtp_packets_total{dir=\"in\"} ") as f64 / secs,
        rtp_out_pps: delta("botstream_rtp_packets_total{dir=\"out\"} ") as f64 / secs,
        ticks_skipped: delta("botstream_rtp_ticks_skipped_total "),
        switch_drops,
        switch_cpu: pct(sw1.user + sw1.sys - sw0.user - sw0.sys),
        sipp_cpu: pct(sipp1 - sipp0),
        machine_busy: (mach1.0 - mach0.0) as f64 / (mach1.1 - mach0.1).max(1) as f64 * 100.0,
        p50: quantile(&b0, &b1, 0.50).0,
        p99: quantile(&b0, &b1, 0.99).0,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "bench/results/bridge.md".into());
    let ns: Vec<usize> = args
        .get(2)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![50, 100, 250, 500]);
    let hold = Duration::from_secs(args.get(3).and_then(|s| s.parse().ok()).unwrap_or(15));
    let mut rows = Vec::new();
    for n in ns {
        eprintln!("bridge bench: {n} bridged calls");
        let r = run(n, hold).await;
        eprintln!(
            "  answered {} bridged {} rtp_in {:.0}/s rtp_out {:.0}/s skipped {} drops {} switch cpu {:.1}% sipp {:.0}% machine {:.0}% p50 {} p99 {}",
            r.answered, r.bridged, r.rtp_in_pps, r.rtp_out_pps, r.ticks_skipped, r.switch_drops,
            r.switch_cpu, r.sipp_cpu, r.machine_busy, r.p50, r.p99
        );
        let all = r.bridged == n;
        rows.push(r);
        if !all {
            break;
        }
    }
    let mut md = String::new();
    let _ = writeln!(md, "# Bridge benchmark\n");
    let _ = writeln!(
        md,
        "Machine: {}. The switch (release build), its SIPp peers (customers and agents, `-rtp_echo`, one instance per {LEGS_PER_SIPP} legs) and nats-server share it. Each bridged call is two legs: SIPp customer → switch → SIPp agent, PCMU both sides, audio crossing both ways.\n",
        machine()
    );
    let _ = writeln!(md, "Hold window {} s per step. Added delay: an RTP packet read on one leg → its audio sent on the other leg, from the switch's `botstream_bridge_latency_us` histogram (bucket upper bounds; a frame waits for the other leg's next 20 ms tick). Switch CPU is % of one core; per bridged call it is that divided by N.\n", hold.as_secs());
    let _ = writeln!(md, "| bridged calls | answered | bridged | RTP in /s | RTP out /s (expected) | 20 ms sends skipped | drops at the switch's sockets | switch CPU | CPU per bridged call | SIPp CPU | machine busy | added delay p50 | added delay p99 |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.0} ({}) | {} | {} | {:.1} % | {:.3} % | {:.0} % | {:.0} % | {} | {} |",
            r.n,
            r.answered,
            r.bridged,
            r.rtp_in_pps,
            r.rtp_out_pps,
            r.bridged * 2 * 50,
            r.ticks_skipped,
            r.switch_drops,
            r.switch_cpu,
            r.switch_cpu / r.n.max(1) as f64,
            r.sipp_cpu,
            r.machine_busy,
            r.p50,
            r.p99
        );
    }
    write_report(&out, &md);
}
