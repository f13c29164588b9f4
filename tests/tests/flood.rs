//! SIP floods while real calls run (operator.md `sip.rate_limit`, `sip.inbound_acl`): SIPp
//! scanners from other loopback addresses send OPTIONS, REGISTER and INVITE at ten times the real
//! call rate, idle, slow and never-handshaking TCP/TLS connections pile up, and meanwhile real
//! callers (inbound over UDP and TCP) and the app's outbound calls go through. Not one real call
//! fails, memory stays bounded, and `botstream_sip_dropped_total` counts the flood.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const T: Duration = Duration::from_secs(30);
/// Real calls per second, inbound; the scanners send each of their three requests ten times
/// as often, from each of two addresses.
const CALL_RATE: u32 = 5;
const INBOUND_CALLS: u32 = 100;

/// A SIPp UAC bound to `ip` (a loopback alias), running `scenario` at `rate` per second.
fn sipp_from(
    ip: &str,
    scenario: &str,
    target: &str,
    rate: u32,
    calls: u32,
    extra: &[&str],
) -> Sipp {
    let dir = std::env::temp_dir().join(format!(
        "botstream-flood-{}-{ip}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("sipp.log");
    let port = free_port();
    let child = Command::new("sipp")
        .current_dir(&dir)
        .arg("-sf")
        .arg(repo_root().join("sipp-scenarios").join(scenario))
        .args([
            "-i",
            ip,
            "-p",
            &port.to_string(),
            "-mp",
            &free_port().to_string(),
        ])
        .args(["-r", &rate.to_string(), "-m", &calls.to_string()])
        .args(["-nostdin", "-timeout", "90s", "-trace_err"])
        .args(extra)
        .arg(target)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp");
    Sipp {
        proc: Proc {
            child,
            name: "sipp",
            log,
        },
        port,
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

async fn connect_from(ip: &str, to: SocketAddr) -> Option<TcpStream> {
    let sock = TcpSocket::new_v4().ok()?;
    sock.bind(format!("{ip}:0").parse().ok()?).ok()?;
    tokio::time::timeout(Duration::from_secs(2), sock.connect(to))
        .await
        .ok()?
        .ok()
}

fn tls_files(dir: &Path) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_calls_go_through_a_flood_and_the_flood_is_counted() {
    let nats = Nats::start();
    let dir = std::env::temp_dir().join(format!("botstream-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = tls_files(&dir);
    let tls_port = free_port();
    // Only 127.0.0.1 may call in: the scanners' INVITEs get 403 at the door. The rate limit is
    // the default (50 requests a second from one address outside its dialogs).
    let sw = Switch::start(
        &nats,
        &[
            "--sip-inbound-acl",
            "127.0.0.1/32",
            "--sip-tls-listen",
            &format!("127.0.0.1:{tls_port}"),
            "--sip-tls-cert",
            &cert,
            "--sip-tls-key",
            &key,
        ],
    );
    let pid = sw.proc.child.id();
    let target = format!("127.0.0.1:{}", sw.sip_port);
    let sip_addr: SocketAddr = target.parse().unwrap();
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let mut inbound_app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let mut app = App::connect(&nats, &sw).await;
    let carrier = Sipp::uas("uas_answer_hangup.xml", 20, &["-key", "cause", "16"]);
    app.add_gateway("c", carrier.port, &[]).await;
    let rss_before = rss_kib(pid);
    let started = Instant::now();

    // The flood: two scanners, each 3 × 50 requests a second (ten times the call rate).
    let scanners: Vec<Sipp> = ["127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|ip| sipp_from(ip, "scanner_flood.xml", &target, 10 * CALL_RATE, 1200, &[]))
        .collect();
    // Connections that never say a word (more than one address may hold), TLS handshakes that
    // never start, and a slow drip of a header, a byte every half second.
    let mut idle = Vec::new();
    for _ in 0..100 {
        if let Some(c) = connect_from("127.0.0.5", sip_addr).await {
            idle.push(c);
        }
    }
    let mut half_open = Vec::new();
    for _ in 0..50 {
        if let Some(c) = connect_from("127.0.0.7", tls_addr).await {
            half_open.push(c);
        }
    }
    let drip = tokio::spawn(async move {
        let mut conns = Vec::new();
        for _ in 0..20 {
            if let Some(c) = connect_from("127.0.0.6", sip_addr).await {
                conns.push(c);
            }
        }
        let msg = b"OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.6:5060;branch=z9hG4bKdrip\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut closed = 0;
        for b in msg.iter() {
            let mut still = Vec::new();
            for mut c in conns {
                if c.write_all(std::slice::from_ref(b)).await.is_ok() {
                    still.push(c);
                } else {
                    closed += 1;
                }
            }
            conns = still;
            if conns.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        closed
    });

    // The real calls: inbound over UDP at the call rate, a few over TCP, outbound from the app.
    let callers = Sipp::uac(
        "uac_inbound.xml",
        &target,
        INBOUND_CALLS,
        &["-s", "100", "-r", &CALL_RATE.to_string()],
    );
    let tcp_callers = Sipp::uac(
        "uac_inbound.xml",
        &target,
        10,
        &["-s", "100", "-t", "t1", "-r", "1"],
    );
    let mut outbound = Vec::new();
    for _ in 0..20 {
        outbound.push(app.make_call("c", json!({})).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for u in &outbound {
        app.event(u, "answered", T).await;
        let h = app.event(u, "hangup", T).await;
        assert_eq!(h["hangup_cause"], "NORMAL_CLEARING", "{h}");
    }
    callers
        .finish(Duration::from_secs(60))
        .expect("every inbound call over UDP answered and ended cleanly");
    tcp_callers
        .finish(Duration::from_secs(30))
        .expect("every inbound call over TCP answered and ended cleanly");
    carrier.finish(T).expect("every outbound call answered");
    let mut answered = 0;
    while answered < INBOUND_CALLS + 10 {
        inbound_app.next_event("answered", T).await;
        answered += 1;
    }
    let (_, during) = sw.http_get("/metrics").unwrap();
    let rss_during = rss_kib(pid);

    for s in scanners {
        // Done or not, they have made their point.
        drop(s);
    }
    // Every connection of the attack is gone within its timeout (10 s without a first message,
    // 10 s for a message begun, 5 s for a TLS handshake), swept each second.
    let closed_drips = drip.await.unwrap();
    assert_eq!(closed_drips, 20, "slow drips closed by the message timeout");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, after) = sw.http_get("/metrics").unwrap();
    let elapsed = started.elapsed();

    // The stray requests of a call that is gone get 481, flood or no flood.
    Sipp::uac("uac_stray_bye.xml", &target, 1, &[])
        .finish(T)
        .expect("481 for a BYE and an INFO outside any dialog");

    let dropped = |m: &str, reason: &str| {
        metric(
            m,
            &format!("botstream_sip_dropped_total{{reason=\"{reason}\"}}"),
        )
    };
    let report = format!(
        "after {elapsed:?}: rss {rss_before} -> {rss_during} KiB; dropped rate {} banned {} acl {} connections {} timeout {} overload {}; transactions {} (peak seen {}), connections {}, sources {}, dialogs {}",
        dropped(&after, "rate"),
        dropped(&after, "banned"),
        dropped(&after, "acl"),
        dropped(&after, "connections"),
        dropped(&after, "timeout"),
        dropped(&after, "overload"),
        metric(&after, "botstream_sip_transactions"),
        metric(&during, "botstream_sip_transactions"),
        metric(&after, "botstream_sip_connections"),
        metric(&after, "botstream_sip_sources_tracked"),
        metric(&after, "botstream_sip_dialogs_tracked"),
    );
    println!("{report}");
    // The flood was counted: over the rate, then ignored for it, INVITEs refused by the ACL,
    // connections over the per-source cap (64) refused, idle/slow/half-open ones closed.
    assert!(dropped(&after, "rate") > 100, "{report}");
    assert!(dropped(&after, "banned") > 100, "{report}");
    assert!(dropped(&after, "acl") > 10, "{report}");
    assert!(dropped(&after, "connections") >= 30, "{report}");
    assert!(dropped(&after, "timeout") >= 64 + 50 + 20, "{report}");
    assert_eq!(dropped(&after, "overload"), 0, "{report}");
    // The scanners' log says who was ignored.
    let log = sw.proc.log_text();
    for ip in ["127.0.0.2", "127.0.0.3"] {
        assert!(
            log.lines()
                .any(|l| l.contains("ignored for 60 s") && l.ends_with(ip)),
            "{ip} not reported as ignored"
        );
    }
    // Bounded state: the attack's connections are all gone, no dialog outlived its call,
    // server transactions stay far below their cap (a banned source costs none).
    assert_eq!(metric(&after, "botstream_sip_connections"), 0, "{report}");
    assert!(
        metric(&during, "botstream_sip_transactions") < 10_000,
        "{report}"
    );
    // Memory: what a debug build grows by while serving 130 calls through the flood.
    assert!(
        rss_during < rss_before + 96 * 1024,
        "RSS grew from {rss_before} to {rss_during} KiB: {report}"
    );
    drop(idle);
    drop(half_open);
}
