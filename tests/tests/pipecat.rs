//! A Pipecat bot written for Twilio (examples/pipecat/bot.py: Pipecat's own TwilioFrameSerializer
//! and FastAPI WebSocket transport, no code of theirs changed) on a real call: a SIPp carrier
//! whose media is the test's RTP socket, the switch streaming with "protocol": "twilio".

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// The Python that has Pipecat (`make test` installs it into target/pipecat-venv).
fn pipecat_python() -> PathBuf {
    let p = std::env::var("PIPECAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/pipecat-venv/bin/python"));
    assert!(
        p.exists(),
        "{} not found: `make test` installs Pipecat (examples/pipecat/requirements.txt) there",
        p.display()
    );
    p
}

/// The bot's process and the JSON lines it prints.
struct Bot {
    proc: Proc,
    lines: std::sync::mpsc::Receiver<Value>,
    port: u16,
}

impl Bot {
    fn start() -> Bot {
        let dir = std::env::temp_dir().join(format!("botstream-pipecat-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let port = free_port();
        let log = dir.join("bot.log");
        let mut child = Command::new(pipecat_python())
            .arg(repo_root().join("examples/pipecat/bot.py"))
            .args(["--port", &port.to_string()])
            .arg("--cert")
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the Pipecat bot");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let bot = Bot {
            proc: Proc {
                child,
                name: "pipecat bot",
                log,
            },
            lines,
            port,
        };
        // Pipecat takes a few seconds to import.
        let end = Instant::now() + T;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < end,
                "the bot never listened:\n{}",
                bot.proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        bot
    }

    /// The next line the bot printed with this `event`.
    fn said(&self, event: &str) -> Value {
        let end = Instant::now() + T;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if v["event"] == event => return v,
                Ok(_) => continue,
                Err(_) => panic!("the bot never said {event}:\n{}", self.proc.log_text()),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipecat_twilio_bot_runs_unchanged() {
    let bot = Bot::start();
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let (caller, carrier) = media_party("uas_media_at.xml", false, &[("HOLD", "60000")]).await;
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("carrier", carrier.port, &[]).await;
    let uuid = app
        .make_call("carrier", json!({"call_params": {"campaign": "spring"}}))
        .await;
    app.event(&uuid, "answered", T).await;
    let r = app
        .request(
            "request_start_stream",
            json!({"call_uuid": uuid, "websocket_host": "wss://127.0.0.1/ws",
                   "websocket_port": bot.port, "protocol": "twilio"}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");

    // Pipecat recognises a Twilio stream from our start message.
    let start = tokio::task::block_in_place(|| bot.said("start"));
    assert_eq!(start["call_id"], uuid.as_str());
    assert_eq!(
        start["stream_id"],
        format!("MZ{}", uuid.replace('-', "")).as_str()
    );
    assert_eq!(start["body"]["campaign"], "spring");

    // The bot's greeting reaches the caller; its mark comes back once the greeting has played.
    let heard = caller.listen(Duration::from_millis(900)).await;
    assert!(hears(&heard, 1000.0) > 0.5, "the caller hears the bot");
    let m = app.event(&uuid, "play_mark", T).await;
    assert_eq!(m["name"], "greeting");

    // The caller speaks, then presses keys: Pipecat hears the audio and gets DTMF frames.
    caller.tone(700.0);
    tokio::task::block_in_place(|| bot.said("caller_audio"));
    caller.tone(0.0);
    caller.press('5');
    let d = tokio::task::block_in_place(|| bot.said("dtmf"));
    assert_eq!(d["digit"], "5");

    // Key 9 interrupts the bot mid-sentence: Pipecat's clear flushes the switch's playout.
    assert!(hears(&caller.listen(Duration::from_millis(400)).await, 1000.0) > 0.5);
    caller.press('9');
    tokio::task::block_in_place(|| bot.said("interrupted"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = caller.listen(Duration::from_millis(600)).await;
    assert!(
        rms(&after) < 300.0,
        "the bot went quiet: rms {}",
        rms(&after)
    );

    app.hang_up(&uuid).await;
    let s = app.event(&uuid, "stream_stopped", T).await;
    assert_eq!(s["protocol"], "twilio");
    tokio::task::block_in_place(|| bot.said("disconnected"));
    carrier.finish(T).unwrap();
}
