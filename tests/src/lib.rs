//! The test bench: a real nats-server with JetStream, the real switch binary, real SIPp peers,
//! and an app-like NATS client. Every process is killed when its handle drops, so a failing test
//! leaks nothing.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

pub mod docs;
pub mod measure;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// A UDP+TCP port free right now (the switch binds both for SIP).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// RTP ranges handed out so parallel switches never share one.
fn rtp_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) + (std::process::id() % 40) as u16 * 7;
    let lo = 20000 + (n % 200) * 100;
    (lo, lo + 98)
}

pub struct Proc {
    pub child: Child,
    pub name: &'static str,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// SIGTERM, as an orchestrator would.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn scratch(name: &str) -> PathBuf {
    static N: AtomicU16 = AtomicU16::new(0);
    let d = std::env::temp_dir().join(format!(
        "botstream-e2e-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    ));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

pub struct Nats {
    pub url: String,
    port: u16,
    dir: PathBuf,
    proc: Proc,
}

impl Nats {
    pub fn start() -> Nats {
        let port = free_port();
        let dir = scratch("nats");
        let proc = Self::spawn(port, &dir);
        Nats {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            dir,
            proc,
        }
    }

    fn spawn(port: u16, dir: &Path) -> Proc {
        let log = dir.join("nats.log");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("js"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("log"),
            )
            .spawn()
            .expect("nats-server must be installed (make test installs it)");
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Proc {
            child,
            name: "nats-server",
            log,
        }
    }

    /// Stops the server (for good, or until [`Nats::restart`]).
    pub fn stop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }

    /// Stops the server, waits `down`, and starts it again on the same port and store.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        std::thread::sleep(down);
        self.proc = Self::spawn(self.port, &self.dir);
    }
}

/// "N cores, CPU model": the machine a benchmark figure belongs to.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

/// Writes a benchmark report (creating its folder) and prints it.
pub fn write_report(out: &str, md: &str) {
    if let Some(dir) = Path::new(out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(out, md).expect("write report");
    println!("{md}");
}

/// Writes a TOML configuration for `--config` and returns its path.
pub fn config_file(toml: &str) -> PathBuf {
    let path = scratch("config").join("botstream.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

pub fn botstream_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BOTSTREAM_BIN") {
        return PathBuf::from(p);
    }
    // The newest build wins: a release binary left by `make bench` must not shadow the debug
    // build `make test` just made.
    let root = repo_root();
    let newest = ["release", "debug"]
        .iter()
        .map(|profile| root.join("target").join(profile).join("botstream"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max();
    if let Some((_, p)) = newest {
        return p;
    }
    panic!("botstream binary not built: run `cargo build -p botstream` (make test does)");
}

pub struct Switch {
    pub proc: Proc,
    pub sip_port: u16,
    pub http_port: u16,
    pub subject: String,
    pub dir: PathBuf,
}

impl Switch {
    /// Starts the switch against `nats`, with `extra` flags, and waits for /readyz.
    pub fn start(nats: &Nats, extra: &[&str]) -> Switch {
        Self::start_with(nats, extra, "botstream")
    }

    pub fn start_with(nats: &Nats, extra: &[&str], store_prefix: &str) -> Switch {
        Self::start_full(nats, extra, store_prefix, None)
    }

    /// Several pods on one request subject: the queue group spreads requests among them.
    pub fn start_pod(nats: &Nats, subject: &str) -> Switch {
        Self::start_full(nats, &[], "botstream", Some(subject))
    }

    fn start_full(
        nats: &Nats,
        extra: &[&str],
        store_prefix: &str,
        subject: Option<&str>,
    ) -> Switch {
        let sip_port = free_port();
        let http_port = free_port();
        let (lo, hi) = rtp_range();
        let dir = scratch("switch");
        let subject = subject
            .map(str::to_string)
            .unwrap_or_else(|| format!("botstream.api.{sip_port}"));
        let log = dir.join("botstream.log");
        let mut cmd = Command::new(botstream_bin());
        if !extra.contains(&"--rtp-ports") {
            cmd.args(["--rtp-ports", &format!("{lo}-{hi}")]);
        }
        if !extra.contains(&"--drain-secs") {
            cmd.args(["--drain-secs", "2"]);
        }
        let child = cmd
            .args(["--nats-url", &nats.url, "--api-subject", &subject])
            .args(["--sip-listen", &format!("127.0.0.1:{sip_port}")])
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
            .args(["--pod-id", &format!("pod-{sip_port}")])
            .args(["--store-prefix", store_prefix])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra)
            .env("RUST_LOG", "info,sip_core=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start botstream");
        let mut sw = Switch {
            proc: Proc {
                child,
                name: "botstream",
                log,
            },
            sip_port,
            http_port,
            subject,
            dir,
        };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if sw.http_get("/readyz").is_some_and(|(code, _)| code == 200) {
                return sw;
            }
            if let Ok(Some(status)) = sw.proc.child.try_wait() {
                panic!(
                    "botstream exited ({status}) at start:\n{}",
                    sw.proc.log_text()
                );
            }
            assert!(
                Instant::now() < end,
                "botstream not ready:\n{}",
                sw.proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let code = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }
}

/// A SIPp process running one scenario file from sipp-scenarios/.
pub struct Sipp {
    pub proc: Proc,
    pub port: u16,
}

impl Sipp {
    /// A SIPp UAS (carrier) on a free port, for `calls` calls.
    pub fn uas(scenario: &str, calls: u32, extra: &[&str]) -> Sipp {
        Self::uas_with(scenario, calls, extra, &[])
    }

    /// Like [`Sipp::uas`], with `@KEY@` placeholders of the scenario replaced first (for what
    /// SIPp checks at load time, such as status codes, where its own -key values come too late).
    pub fn uas_with(scenario: &str, calls: u32, extra: &[&str], subst: &[(&str, &str)]) -> Sipp {
        let port = free_port();
        let mut s = Self::spawn_with(scenario, port, calls, extra, None, subst);
        // SIPp binds at once; give it a moment so the first INVITE is not lost to a closed port.
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(Some(status)) = s.proc.child.try_wait() {
            panic!(
                "sipp {scenario} exited at start ({status}):\n{}\n{}",
                s.proc.log_text(),
                s.traces()
            );
        }
        s
    }

    /// A SIPp UAC calling `target`.
    pub fn uac(scenario: &str, target: &str, calls: u32, extra: &[&str]) -> Sipp {
        Self::spawn(scenario, free_port(), calls, extra, Some(target))
    }

    /// Like [`Sipp::uac`], with `@KEY@` placeholders of the scenario replaced first.
    pub fn uac_with(
        scenario: &str,
        target: &str,
        calls: u32,
        extra: &[&str],
        subst: &[(&str, &str)],
    ) -> Sipp {
        Self::spawn_with(scenario, free_port(), calls, extra, Some(target), subst)
    }

    fn spawn(scenario: &str, port: u16, calls: u32, extra: &[&str], target: Option<&str>) -> Sipp {
        Self::spawn_with(scenario, port, calls, extra, target, &[])
    }

    fn spawn_with(
        scenario: &str,
        port: u16,
        calls: u32,
        extra: &[&str],
        target: Option<&str>,
        subst: &[(&str, &str)],
    ) -> Sipp {
        let dir = scratch("sipp");
        let log = dir.join("sipp.log");
        let source = repo_root().join("sipp-scenarios").join(scenario);
        let mut text = std::fs::read_to_string(&source).expect("scenario file");
        for (k, v) in subst {
            text = text.replace(&format!("@{k}@"), v);
        }
        let path = dir.join(scenario);
        std::fs::write(&path, text).expect("write scenario");
        let mut cmd = Command::new("sipp");
        cmd.current_dir(&dir)
            .arg("-sf")
            .arg(&path)
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-m",
                &calls.to_string(),
            ])
            .args([
                "-nostdin",
                "-timeout",
                "60s",
                "-timeout_error",
                "-trace_err",
                "-trace_msg",
            ])
            .args(["-mp", &free_port().to_string()])
            .args(extra);
        if let Some(t) = target {
            cmd.arg(t);
        }
        let child = cmd
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp must be installed (make test installs sip-tester)");
        Sipp {
            proc: Proc {
                child,
                name: "sipp",
                log,
            },
            port,
        }
    }

    /// Waits for SIPp to finish; true when every call passed its scenario.
    pub fn finish(mut self, within: Duration) -> Result<(), String> {
        match self.proc.wait_exit(within) {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(format!("sipp failed ({s}):\n{}", self.traces())),
            None => Err(format!(
                "sipp still running after {within:?}:\n{}",
                self.traces()
            )),
        }
    }

    /// SIPp's message and error traces, for failure messages.
    pub fn traces(&self) -> String {
        let dir = self.proc.log.parent().expect("dir").to_path_buf();
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with("_errors.log") || name.ends_with("_messages.log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: String = text
                        .chars()
                        .rev()
                        .take(6000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    out.push_str(&format!("--- {name}\n{tail}\n"));
                }
            }
        }
        out
    }

    /// The raw SIP messages SIPp saw and sent.
    pub fn messages(&self) -> String {
        let dir = self.proc.log.parent().expect("dir").to_path_buf();
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    }

    /// [`Sipp::messages`] one by one, in order, each marked sent or received.
    pub fn traced(&self) -> Vec<Traced> {
        let log = self.messages();
        let mut out = Vec::new();
        // Each message: a line of dashes and a timestamp, "UDP message sent (N bytes):" or
        // "UDP message received [N] bytes :", a blank line, the message.
        let mut blocks: Vec<Vec<&str>> = Vec::new();
        for line in log.lines() {
            if line.starts_with("----------") {
                blocks.push(Vec::new());
            } else if let Some(b) = blocks.last_mut() {
                b.push(line);
            }
        }
        for b in blocks {
            let Some(head) = b.first() else { continue };
            let sent = head.contains("message sent");
            if !sent && !head.contains("message received") {
                continue;
            }
            let text = b[1..].join("\r\n");
            out.push(Traced {
                sent,
                text: text.trim_start().to_string(),
            });
        }
        out
    }

    /// Waits until a message of the trace satisfies `pred`, and returns it.
    pub fn wait_traced(&self, within: Duration, pred: impl Fn(&Traced) -> bool) -> Traced {
        let end = Instant::now() + within;
        loop {
            if let Some(m) = self.traced().into_iter().find(|m| pred(m)) {
                return m;
            }
            assert!(
                Instant::now() < end,
                "no such message within {within:?}:\n{}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One SIP message of a SIPp `-trace_msg` log.
#[derive(Debug, Clone)]
pub struct Traced {
    /// Sent by SIPp (else received by it).
    pub sent: bool,
    pub text: String,
}

impl Traced {
    pub fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// A request of this method.
    pub fn is_request(&self, method: &str) -> bool {
        self.first_line().starts_with(&format!("{method} "))
    }

    /// A response with this code to a request of this method.
    pub fn is_response(&self, code: u16, method: &str) -> bool {
        self.first_line().starts_with(&format!("SIP/2.0 {code} "))
            && self
                .header("CSeq")
                .is_some_and(|c| c.split_whitespace().nth(1) == Some(method))
    }

    /// Every value of a header (by its full name, case-insensitively), in order.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.text
            .lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).into_iter().next()
    }

    /// The `tag` parameter of a From or To header.
    pub fn tag(&self, name: &str) -> Option<String> {
        let v = self.header(name)?;
        let after = v.rsplit_once('>').map(|(_, p)| p).unwrap_or(v);
        after
            .split(';')
            .find_map(|p| p.trim().strip_prefix("tag="))
            .map(str::to_string)
    }

    /// The `branch` parameter of the top Via.
    pub fn branch(&self) -> Option<String> {
        self.header("Via")?
            .split(';')
            .find_map(|p| p.trim().strip_prefix("branch="))
            .map(|b| b.split(',').next().unwrap_or(b).to_string())
    }
}

/// An app: sends requests and collects the events of its subject.
pub struct App {
    pub nats: async_nats::Client,
    pub subject: String,
    pub events: async_nats::Subscriber,
    pub event_subject: String,
    /// Events received but not yet taken, in arrival order (several calls interleave).
    seen: Vec<Value>,
}

impl App {
    pub async fn connect(nats: &Nats, sw: &Switch) -> App {
        let event_subject = format!("app.events.{}", free_port());
        Self::connect_to(nats, sw, &event_subject).await
    }

    /// An app listening on a given subject (an inbound route's, or the default inbound one).
    pub async fn connect_to(nats: &Nats, sw: &Switch, event_subject: &str) -> App {
        let client = async_nats::connect(&nats.url)
            .await
            .expect("connect to nats");
        let events = client
            .subscribe(event_subject.to_string())
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        App {
            nats: client,
            subject: sw.subject.clone(),
            events,
            event_subject: event_subject.to_string(),
            seen: Vec::new(),
        }
    }

    /// Talks to another switch (same NATS) from now on.
    pub fn use_switch(&mut self, sw: &Switch) {
        self.subject = sw.subject.clone();
    }

    /// One request; panics unless exactly one reply arrives within 5 s.
    pub async fn request(&self, name: &str, data: Value) -> Value {
        let body = json!({"event_name": name, "event_data": data});
        self.raw(serde_json::to_vec(&body).expect("json")).await
    }

    pub async fn raw(&self, bytes: Vec<u8>) -> Value {
        let msg = tokio::time::timeout(
            Duration::from_secs(5),
            self.nats.request(self.subject.clone(), bytes.into()),
        )
        .await
        .expect("a reply within 5 s")
        .expect("request");
        serde_json::from_slice(&msg.payload).expect("reply is JSON")
    }

    async fn pull(&mut self, end: tokio::time::Instant) -> bool {
        match tokio::time::timeout_at(end, self.events.next()).await {
            Ok(Some(msg)) => {
                let v: Value = serde_json::from_slice(&msg.payload).expect("event is JSON");
                self.seen.push(v);
                true
            }
            _ => false,
        }
    }

    fn take(&mut self, uuid: &str, want: Option<&str>) -> Option<Value> {
        let i = self.seen.iter().position(|v| {
            v["event_data"]["call_uuid"] == uuid && want.is_none_or(|w| v["event_name"] == w)
        })?;
        Some(self.seen.remove(i))
    }

    /// The next event named `botstream::<name>` for `uuid` (earlier events of that call are
    /// dropped); panics after `within`.
    pub async fn event(&mut self, uuid: &str, name: &str, within: Duration) -> Value {
        let want = format!("botstream::{name}");
        let end = tokio::time::Instant::now() + within;
        loop {
            if let Some(v) = self.take(uuid, Some(&want)) {
                return v["event_data"].clone();
            }
            assert!(
                self.pull(end).await,
                "no {want} for {uuid} within {within:?}; unclaimed: {:?}",
                self.seen
            );
        }
    }

    /// Every event of `uuid` until (and including) its hangup, in order.
    pub async fn events_until_hangup(&mut self, uuid: &str, within: Duration) -> Vec<Value> {
        let end = tokio::time::Instant::now() + within;
        let mut out: Vec<Value> = Vec::new();
        loop {
            while let Some(v) = self.take(uuid, None) {
                let done = v["event_name"] == "botstream::hangup";
                out.push(v);
                if done {
                    return out;
                }
            }
            assert!(
                self.pull(end).await,
                "no hangup for {uuid} within {within:?}; saw {out:?}"
            );
        }
    }

    /// Every event of `uuid` until (and including) its `answered`, in order.
    pub async fn events_until_answered(&mut self, uuid: &str, within: Duration) -> Vec<Value> {
        let end = tokio::time::Instant::now() + within;
        let mut out: Vec<Value> = Vec::new();
        loop {
            while let Some(v) = self.take(uuid, None) {
                let done = v["event_name"] == "botstream::answered";
                out.push(v);
                if done {
                    return out;
                }
            }
            assert!(
                self.pull(end).await,
                "no answered for {uuid} within {within:?}; saw {out:?}"
            );
        }
    }

    /// The next event named `botstream::<name>` of any call (for inbound calls, whose uuid the
    /// app learns from their first event).
    pub async fn next_event(&mut self, name: &str, within: Duration) -> Value {
        let want = format!("botstream::{name}");
        let end = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.seen.iter().position(|v| v["event_name"] == want) {
                return self.seen.remove(i)["event_data"].clone();
            }
            assert!(
                self.pull(end).await,
                "no {want} within {within:?}; unclaimed: {:?}",
                self.seen
            );
        }
    }

    /// True if an event named `name` for `uuid` arrives within `within`.
    pub async fn maybe_event(&mut self, uuid: &str, name: &str, within: Duration) -> Option<Value> {
        let want = format!("botstream::{name}");
        let end = tokio::time::Instant::now() + within;
        loop {
            if let Some(v) = self.take(uuid, Some(&want)) {
                return Some(v["event_data"].clone());
            }
            if !self.pull(end).await {
                return None;
            }
        }
    }

    /// A call through `gateway` to a `uas_answer.xml` carrier (which checks the X-Campaign
    /// header), once answered; returns its call_uuid.
    pub async fn answered_call(&mut self, gateway: &str) -> String {
        let uuid = self
            .make_call(
                gateway,
                json!({"channel_vars": {"sip_h_X-Campaign": "spring"}}),
            )
            .await;
        self.event(&uuid, "answered", Duration::from_secs(20)).await;
        uuid
    }

    /// Starts the call's stream to the test's WebSocket server and returns the app's end of it.
    pub async fn stream_to(&self, uuid: &str, ws: &mut WsServer) -> WsConn {
        let r = self
            .request(
                "request_start_stream",
                json!({"call_uuid": uuid, "websocket_host": "127.0.0.1", "websocket_port": ws.port}),
            )
            .await;
        assert_eq!(r["status_code"], 0, "{r}");
        ws.accept(Duration::from_secs(20)).await
    }

    /// drop_call, then the call's hangup event.
    pub async fn hang_up(&mut self, uuid: &str) -> Value {
        let r = self
            .request("request_drop_call", json!({"call_uuid": uuid}))
            .await;
        assert_eq!(r["status_code"], 0, "{r}");
        self.event(uuid, "hangup", Duration::from_secs(20)).await
    }

    /// Adds a SIP gateway pointing at a local SIPp.
    pub async fn add_gateway(&self, name: &str, port: u16, extra: &[(&str, &str)]) {
        let mut params = serde_json::Map::new();
        params.insert("proxy".into(), json!(format!("127.0.0.1:{port}")));
        for (k, v) in extra {
            params.insert(k.to_string(), json!(v));
        }
        let r = self
            .request(
                "request_add_sip_gateway",
                json!({"name": name, "params": params}),
            )
            .await;
        assert_eq!(r["status_code"], 0, "{r}");
    }

    /// make_call through `gateway`; returns the call_uuid.
    pub async fn make_call(&self, gateway: &str, extra: Value) -> String {
        let mut data = json!({
            "gateway": gateway, "tenant_id": "t1", "to_number": "15550001111",
            "from_number": "15559998888", "event_subject": self.event_subject,
        });
        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                d.insert(k.clone(), v.clone());
            }
        }
        let r = self.request("request_make_call", data).await;
        assert_eq!(r["status_code"], 0, "{r}");
        r["call_uuid"].as_str().expect("call_uuid").to_string()
    }
}

pub fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["event_name"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches("botstream::")
                .to_string()
        })
        .collect()
}

/// A voice-AI app's WebSocket server: TLS with a self-signed certificate (as apps deploy it),
/// accepting the switch's streams.
pub struct WsServer {
    pub port: u16,
    conns: tokio::sync::mpsc::UnboundedReceiver<WsConn>,
}

/// One stream from the switch, as the app sees it.
pub struct WsConn {
    /// The first text frame.
    pub first: Value,
    pub incoming: tokio::sync::mpsc::UnboundedReceiver<WsIn>,
    pub out: tokio::sync::mpsc::UnboundedSender<tokio_tungstenite::tungstenite::Message>,
    /// The connection's reader and writer tasks: aborting both drops the TCP connection with no
    /// close frame, as a crashed app would.
    tasks: Vec<tokio::task::AbortHandle>,
}

#[derive(Debug)]
pub enum WsIn {
    Audio(Vec<u8>),
    Text(String),
    Closed,
}

impl WsServer {
    pub async fn start() -> WsServer {
        Self::start_mode(false).await
    }

    /// An app that sends every audio frame straight back (the benchmark's WSS echo server).
    pub async fn start_echo() -> WsServer {
        Self::start_mode(true).await
    }

    async fn start_mode(echo: bool) -> WsServer {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("server cert");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(ws) = tokio_tungstenite::accept_async(tls).await else {
                        return;
                    };
                    let (mut sink, mut source) = ws.split();
                    let first = match source.next().await {
                        Some(Ok(Message::Text(t))) => {
                            serde_json::from_str(&t).unwrap_or(Value::Null)
                        }
                        _ => return,
                    };
                    if echo {
                        while let Some(Ok(m)) = source.next().await {
                            if let Message::Binary(b) = m {
                                if sink.send(Message::Binary(b)).await.is_err() {
                                    break;
                                }
                            }
                        }
                        return;
                    }
                    let (in_tx, in_rx) = tokio::sync::mpsc::unbounded_channel();
                    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
                    let writer = tokio::spawn(async move {
                        while let Some(m) = out_rx.recv().await {
                            let close = matches!(m, Message::Close(_));
                            if sink.send(m).await.is_err() || close {
                                break;
                            }
                        }
                    });
                    let reader = tokio::spawn(async move {
                        while let Some(m) = source.next().await {
                            let ev = match m {
                                Ok(Message::Binary(b)) => WsIn::Audio(b.to_vec()),
                                Ok(Message::Text(t)) => WsIn::Text(t.to_string()),
                                Ok(Message::Close(_)) | Err(_) => break,
                                Ok(_) => continue,
                            };
                            if in_tx.send(ev).is_err() {
                                break;
                            }
                        }
                        let _ = in_tx.send(WsIn::Closed);
                    });
                    let _ = tx.send(WsConn {
                        first,
                        incoming: in_rx,
                        out: out_tx,
                        tasks: vec![writer.abort_handle(), reader.abort_handle()],
                    });
                });
            }
        });
        WsServer { port, conns: rx }
    }

    pub async fn accept(&mut self, within: Duration) -> WsConn {
        tokio::time::timeout(within, self.conns.recv())
            .await
            .expect("a stream from the switch")
            .expect("server up")
    }
}

impl WsConn {
    /// Drops the connection without a close frame (the app crashed or its network failed).
    pub fn kill(self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Caller audio received over `dur` (samples), skipping text frames.
    pub async fn collect(&mut self, dur: Duration) -> Vec<i16> {
        let end = tokio::time::Instant::now() + dur;
        let mut out = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout_at(end, self.incoming.recv()).await {
            if let WsIn::Audio(b) = m {
                out.extend(b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
            }
        }
        out
    }

    pub fn send_pcm(&self, pcm: &[i16]) {
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        let _ = self
            .out
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                bytes.into(),
            ));
    }

    pub fn send_text(&self, text: &str) {
        let _ = self.out.send(tokio_tungstenite::tungstenite::Message::Text(
            text.to_string().into(),
        ));
    }
}

/// `n` samples of a sine at `freq` Hz, 8 kHz.
pub fn tone(freq: f64, n: usize, amplitude: f64) -> Vec<i16> {
    (0..n)
        .map(|i| (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin()) as i16)
        .collect()
}

/// How much of the signal's power sits at `freq` (Goertzel), 0..1; 0 for silence.
pub fn tone_ratio(samples: &[i16], freq: f64, rate: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let n = samples.len() as f64;
    let k = (2.0 * std::f64::consts::PI * freq / rate).cos() * 2.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x as f64 + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - k * s1 * s2;
    let mean_square = samples.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / n;
    if mean_square < 1.0 {
        return 0.0;
    }
    (power * 2.0 / (n * n)) / mean_square
}

pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// A far end's media as a test plays it: a real UDP socket that sends a tone (or silence) every
/// 20 ms to wherever the switch's RTP comes from, sends RFC 4733 key presses on demand, and
/// keeps what it receives. SIPp does the far end's signalling with this socket's port in its SDP
/// (`@RTP_PORT@` in the `*_media_at.xml` scenarios), so the test hears exactly what the switch
/// sent that party.
pub struct RtpPeer {
    pub port: u16,
    shared: std::sync::Arc<std::sync::Mutex<RtpShared>>,
}

#[derive(Default)]
struct RtpShared {
    /// Tone frequency to send (0: silence).
    freq: f64,
    law_a: bool,
    /// Key presses waiting to be sent.
    digits: std::collections::VecDeque<char>,
    /// Send nothing (a phone that stopped sending, on hold).
    mute: bool,
    /// Number every packet in its payload instead of sending a tone ([`RtpPeer::count`]).
    count: bool,
    /// Audio received, decoded, with its arrival time.
    audio: Vec<(Instant, Vec<i16>)>,
    /// RFC 4733 events received (event code of each packet).
    events: Vec<u8>,
    remote: Option<std::net::SocketAddr>,
}

impl RtpPeer {
    /// Binds on 127.0.0.1 and starts sending once the switch's first packet says where to.
    /// `law_a`: PCMA (payload type 8), else PCMU (0).
    pub async fn start(law_a: bool) -> RtpPeer {
        let sock = std::sync::Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind rtp"),
        );
        let port = sock.local_addr().expect("addr").port();
        let shared = std::sync::Arc::new(std::sync::Mutex::new(RtpShared {
            law_a,
            ..Default::default()
        }));
        let (rx_sock, rx_shared) = (sock.clone(), shared.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = rx_sock.recv_from(&mut buf).await {
                let Some((h, payload)) = media::rtp::parse(&buf[..n]) else {
                    continue;
                };
                let mut s = rx_shared.lock().expect("lock");
                s.remote.get_or_insert(from);
                match h.payload_type {
                    0 | 8 => {
                        let law = if h.payload_type == 8 {
                            media::g711::Law::A
                        } else {
                            media::g711::Law::Mu
                        };
                        let mut pcm = Vec::new();
                        media::g711::decode(law, payload, &mut pcm);
                        s.audio.push((Instant::now(), pcm));
                    }
                    101 if !payload.is_empty() => s.events.push(payload[0]),
                    _ => {}
                }
            }
        });
        let tx_shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let (mut seq, mut ts, mut phase) = (0u16, 0u32, 0f64);
            let ssrc: u32 = 0x5eed_0000 | port as u32;
            let mut dtmf: Option<(u8, u32, u16)> = None; // event, start ts, packets sent
            loop {
                tick.tick().await;
                let (remote, freq, law_a, next_digit, count) = {
                    let mut s = tx_shared.lock().expect("lock");
                    let d = if dtmf.is_none() {
                        s.digits.pop_front()
                    } else {
                        None
                    };
                    (s.remote.filter(|_| !s.mute), s.freq, s.law_a, d, s.count)
                };
                let Some(remote) = remote else { continue };
                if let Some(d) = next_digit {
                    let code = match d {
                        '0'..='9' => d as u8 - b'0',
                        '*' => 10,
                        '#' => 11,
                        _ => 0,
                    };
                    dtmf = Some((code, ts, 0));
                }
                let mut packet = Vec::with_capacity(172);
                if let Some((code, start, n)) = dtmf {
                    // 100 ms of event, then three end packets (RFC 4733 §2.5.1.4).
                    let end = n >= 5;
                    let duration = (n.min(5) + 1) * 160;
                    let payload = [
                        code,
                        if end { 0x8a } else { 0x0a },
                        (duration >> 8) as u8,
                        duration as u8,
                    ];
                    let h = media::rtp::RtpHeader {
                        payload_type: 101,
                        marker: n == 0,
                        seq,
                        timestamp: start,
                        ssrc,
                    };
                    media::rtp::write(&h, &payload, &mut packet);
                    dtmf = if n >= 7 {
                        None
                    } else {
                        Some((code, start, n + 1))
                    };
                } else if count {
                    let h = media::rtp::RtpHeader {
                        payload_type: if law_a { 8 } else { 0 },
                        marker: false,
                        seq,
                        timestamp: ts,
                        ssrc,
                    };
                    media::rtp::write(&h, &numbered(ts / 160), &mut packet);
                } else {
                    let pcm: Vec<i16> = (0..160)
                        .map(|_| {
                            phase += 2.0 * std::f64::consts::PI * freq / 8000.0;
                            (8000.0 * phase.sin()) as i16
                        })
                        .collect();
                    let law = if law_a {
                        media::g711::Law::A
                    } else {
                        media::g711::Law::Mu
                    };
                    let mut payload = Vec::new();
                    media::g711::encode(law, &pcm, &mut payload);
                    let h = media::rtp::RtpHeader {
                        payload_type: if law_a { 8 } else { 0 },
                        marker: false,
                        seq,
                        timestamp: ts,
                        ssrc,
                    };
                    media::rtp::write(&h, &payload, &mut packet);
                }
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
                let _ = sock.send_to(&packet, remote).await;
            }
        });
        RtpPeer { port, shared }
    }

    /// Sends a tone of `freq` Hz from now on (0: silence).
    pub fn tone(&self, freq: f64) {
        self.shared.lock().expect("lock").freq = freq;
    }

    /// From now on every packet carries its number ([`frame_number`] reads it back from the
    /// decoded audio), so a test can check that each 20 ms arrived exactly once and in order.
    pub fn count(&self) {
        self.shared.lock().expect("lock").count = true;
    }

    /// Stops (or resumes) sending anything.
    pub fn mute(&self, on: bool) {
        self.shared.lock().expect("lock").mute = on;
    }

    /// Sends a key press as RFC 4733 events (payload type 101).
    pub fn press(&self, digit: char) {
        self.shared.lock().expect("lock").digits.push_back(digit);
    }

    /// The audio received over the last `window`, after waiting `window` from now.
    pub async fn listen(&self, window: Duration) -> Vec<i16> {
        let from = Instant::now();
        tokio::time::sleep(window).await;
        let s = self.shared.lock().expect("lock");
        s.audio
            .iter()
            .filter(|(at, _)| *at >= from)
            .flat_map(|(_, pcm)| pcm.iter().copied())
            .collect()
    }

    /// The audio received since `from`.
    pub fn heard_since(&self, from: Instant) -> Vec<i16> {
        let s = self.shared.lock().expect("lock");
        s.audio
            .iter()
            .filter(|(at, _)| *at >= from)
            .flat_map(|(_, pcm)| pcm.iter().copied())
            .collect()
    }

    /// RFC 4733 event codes received so far.
    pub fn events(&self) -> Vec<u8> {
        self.shared.lock().expect("lock").events.clone()
    }

    /// Where the switch's RTP comes from (its RTP port), once it has sent something.
    pub fn switch_addr(&self) -> Option<std::net::SocketAddr> {
        self.shared.lock().expect("lock").remote
    }

    /// Whether the switch has sent us anything yet.
    pub fn connected(&self) -> bool {
        self.shared.lock().expect("lock").remote.is_some()
    }
}

/// How much of `freq` is in `samples`, as the fraction of their power (see [`tone_ratio`]).
pub fn hears(samples: &[i16], freq: f64) -> f64 {
    tone_ratio(samples, freq, 8000.0)
}

/// A SIPp party (`uas_media_at.xml`-style scenario) answering with its media at a new
/// [`RtpPeer`] — PCMA when `law_a`, else PCMU — with `subst` for the scenario's other
/// placeholders (`HOLD`: ms before it hangs up itself unless the switch does first).
pub async fn media_party(scenario: &str, law_a: bool, subst: &[(&str, &str)]) -> (RtpPeer, Sipp) {
    let rtp = RtpPeer::start(law_a).await;
    let port = rtp.port.to_string();
    let (pt, codec) = if law_a { ("8", "PCMA") } else { ("0", "PCMU") };
    let mut all = vec![("RTP_PORT", port.as_str()), ("PT", pt), ("CODEC", codec)];
    all.extend_from_slice(subst);
    let sipp = Sipp::uas_with(scenario, 1, &[], &all);
    (rtp, sipp)
}

/// A G.711 payload whose first three bytes spell `n` in base 64 (μ-law codes 0x80–0xBF, each of
/// which survives decoding and re-encoding unchanged), the rest silence.
fn numbered(n: u32) -> Vec<u8> {
    let mut p = vec![0xffu8; 160];
    p[0] = 0x80 | ((n >> 12) & 63) as u8;
    p[1] = 0x80 | ((n >> 6) & 63) as u8;
    p[2] = 0x80 | (n & 63) as u8;
    p
}

/// The number [`RtpPeer::count`] put in a 20 ms frame of decoded μ-law audio, if it has one.
pub fn frame_number(pcm: &[i16]) -> Option<u32> {
    let mut b = Vec::new();
    media::g711::encode(media::g711::Law::Mu, pcm.get(..3)?, &mut b);
    if b.iter().any(|x| x & 0xc0 != 0x80) {
        return None;
    }
    Some(((b[0] as u32 & 63) << 12) | ((b[1] as u32 & 63) << 6) | (b[2] as u32 & 63))
}

/// A real softphone: baresip (Debian's baresip-core), configured per test, driven through its
/// ctrl_tcp module. It sends a sine of `sine_hz` (its ausine source) and its sndfile filter
/// keeps what it hears, so a test can check both directions of its audio.
pub struct Baresip {
    pub proc: Proc,
    pub sip_port: u16,
    ctrl_port: u16,
    pub dir: PathBuf,
}

impl Baresip {
    /// `account`: the account line's parameters after the address, e.g.
    /// `answermode=auto;mediaenc=srtp-mand;audio_codecs=PCMU`.
    pub fn start(account: &str, sine_hz: u32) -> Baresip {
        let dir = scratch("baresip");
        let sip_port = free_port();
        let ctrl_port = free_port();
        let (lo, _) = rtp_range();
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\n\
             audio_player aubridge,sink\naudio_alert aubridge,sink\naudio_source ausine,{sine_hz}\n\
             ausrc_srate 48000\nausrc_channels 2\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\nmodule g722.so\nmodule opus.so\nmodule ausine.so\nmodule aubridge.so\n\
             module sndfile.so\nmodule srtp.so\nmodule_tmp account.so\n\
             module_app menu.so\nmodule_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\nsnd_path {}\nrtp_ports {}-{}\n",
            dir.display(),
            lo + 60,
            lo + 98
        );
        std::fs::write(dir.join("config"), config).expect("baresip config");
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:phone@127.0.0.1:{sip_port}>;regint=0;{account}\n"),
        )
        .expect("baresip accounts");
        let log = dir.join("baresip.log");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("baresip must be installed (make test installs baresip-core)");
        let b = Baresip {
            proc: Proc {
                child,
                name: "baresip",
                log,
            },
            sip_port,
            ctrl_port,
            dir,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", ctrl_port)).is_err() {
            assert!(
                Instant::now() < end,
                "baresip did not start:\n{}",
                b.proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        b
    }

    /// One ctrl_tcp command (a netstring of JSON).
    pub fn command(&self, command: &str, params: &str) {
        use std::io::Write;
        let json = json!({"command": command, "params": params, "token": "t"}).to_string();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.ctrl_port)).expect("ctrl_tcp");
        s.write_all(format!("{}:{},", json.len(), json).as_bytes())
            .expect("ctrl_tcp write");
        std::thread::sleep(Duration::from_millis(100));
    }

    pub fn dial(&self, uri: &str) {
        self.command("dial", uri);
    }

    /// What it heard so far (sndfile's dump of decoded audio), mono, at the file's rate.
    pub fn heard(&self) -> (u32, Vec<i16>) {
        let Some(path) = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("-dec"))
        else {
            return (0, Vec::new());
        };
        let bytes = std::fs::read(path).unwrap_or_default();
        wav_mono(&bytes)
    }
}

/// A 16-bit PCM WAV (any channel count, as written so far) as mono samples and its rate.
fn wav_mono(bytes: &[u8]) -> (u32, Vec<i16>) {
    if bytes.len() < 44 {
        return (0, Vec::new());
    }
    let channels = u16::from_le_bytes([bytes[22], bytes[23]]).max(1) as usize;
    let rate = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    // The data chunk's size is written only when the file is closed: read to the end.
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .map(|i| &bytes[i + 8..])
        .unwrap_or(&[]);
    let samples: Vec<i16> = data
        .chunks_exact(2 * channels)
        .map(|f| i16::from_le_bytes([f[0], f[1]]))
        .collect();
    (rate, samples)
}
