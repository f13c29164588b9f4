//! A pod that is told to stop, stops (operator.md `shutdown.drain_secs`): with NATS up or away,
//! live calls get BYE with Reason SYSTEM_SHUTDOWN, a second signal cuts the drain short, and
//! `make run`'s script passes the signal on and leaves nothing behind.

use std::time::{Duration, Instant};

use e2e::*;

const T: Duration = Duration::from_secs(20);
const SHUTDOWN: &str = r"SIP;cause=501;text=.SYSTEM_SHUTDOWN.";

/// An inbound caller that waits for the switch's BYE with Reason SYSTEM_SHUTDOWN, answered.
async fn live_inbound_call(nats: &Nats, sw: &Switch) -> (Sipp, App) {
    let mut app = App::connect_to(nats, sw, "botstream.inbound").await;
    let caller = Sipp::uac_with(
        "uac_inbound_wait.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "5550"],
        &[("REASON", SHUTDOWN)],
    );
    app.next_event("answered", T).await;
    (caller, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nats_away_still_drains_hangs_up_and_exits() {
    let mut nats = Nats::start();
    let mut sw = Switch::start(&nats, &["--drain-secs", "2"]);
    let (caller, _app) = live_inbound_call(&nats, &sw).await;
    nats.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    sw.proc.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sw.http_get("/readyz").map(|r| r.0),
        Some(503),
        "not ready at once"
    );
    let status = sw
        .proc
        .wait_exit(Duration::from_secs(2 + 5))
        .unwrap_or_else(|| panic!("still running 7 s after SIGTERM:\n{}", sw.proc.log_text()));
    let took = asked.elapsed();
    assert!(status.success(), "{status}");
    println!("exit {took:?} after SIGTERM with NATS away (drain_secs 2)");
    caller
        .finish(T)
        .expect("the caller got BYE with Reason SIP;cause=501 SYSTEM_SHUTDOWN");
    assert!(sw.proc.log_text().contains("shutting down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_calls_at_once() {
    let nats = Nats::start();
    let mut sw = Switch::start(&nats, &["--drain-secs", "30"]);
    let (caller, _app) = live_inbound_call(&nats, &sw).await;
    let asked = Instant::now();
    sw.proc.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sw.proc.child.try_wait().unwrap().is_none(), "draining");
    sw.proc.terminate();
    let status = sw
        .proc
        .wait_exit(Duration::from_secs(6))
        .expect("the second SIGTERM cuts the 30 s drain short");
    println!("exit {:?} after the first of two SIGTERMs", asked.elapsed());
    assert!(status.success(), "{status}");
    caller.finish(T).expect("BYE with Reason SYSTEM_SHUTDOWN");
}

/// Pids of processes whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_runs_script_stopped_by_sigterm_leaves_nothing_behind() {
    let nats_port = free_port();
    let http = free_port();
    let sip = free_port();
    let data = std::env::temp_dir().join(format!("botstream-run-{}-{sip}", std::process::id()));
    let mut script = std::process::Command::new(repo_root().join("scripts/run.sh"))
        .env("RUN_NATS_PORT", nats_port.to_string())
        .env("BOTSTREAM_BIN", botstream_bin())
        .args(["--sip-listen", &format!("127.0.0.1:{sip}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args([
            "--rtp-ports",
            "31000-31098",
            "--drain-secs",
            "1",
            "--pod-id",
            "run-test",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("scripts/run.sh");
    let end = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let probe = std::net::TcpStream::connect(("127.0.0.1", http)).is_ok();
        if probe || Instant::now() > end {
            break probe;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let switch = pids_with(&format!("127.0.0.1:{sip}"));
    let nats = pids_with(&format!("-p {nats_port}"));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &script.id().to_string()])
        .status();
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = script.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = script.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ready, "the switch came up");
    assert!(
        !switch.is_empty() && !nats.is_empty(),
        "{switch:?} {nats:?}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the script exited: {status:?}"
    );
    let left: Vec<u32> = switch
        .iter()
        .chain(&nats)
        .copied()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&data);
}
