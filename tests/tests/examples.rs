//! The example bots of examples/ (Python and TypeScript) driven as a user would: the bot runs as
//! its own process against the real switch, a SIPp "phone" calls it or is called by it, and the
//! test hears what the phone heard, plays what the phone says, presses its keys, and reads the
//! bot's log and the call's events.
//!
//! They need what `make examples` installs: the Python venv (target/examples/venv) and the
//! TypeScript build (examples/typescript/dist with its node_modules). `make test` does it first.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::*;

const T: Duration = Duration::from_secs(15);
/// A party that waits for the switch's BYE.
const WAIT: &str = "60000";

/// A running example bot: its output lines, kept as they come.
struct Bot {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn examples_env() -> PathBuf {
    std::env::var("BOTSTREAM_EXAMPLES_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target").join("examples"))
}

impl Bot {
    fn python(nats: &Nats, sw: &Switch, args: &[&str]) -> Bot {
        let py = examples_env().join("venv").join("bin").join("python");
        assert!(
            py.exists(),
            "{} missing: run `make examples` (make test does) to install the Python example's venv",
            py.display()
        );
        let mut c = Command::new(py);
        c.arg(repo_root().join("examples/python/bot.py"));
        Self::start(c, nats, sw, args)
    }

    fn typescript(nats: &Nats, sw: &Switch, args: &[&str]) -> Bot {
        let js = repo_root().join("examples/typescript/dist/bot.js");
        assert!(
            js.exists(),
            "{} missing: run `make examples` (make test does) to build the TypeScript example",
            js.display()
        );
        let mut c = Command::new("node");
        c.arg(js);
        Self::start(c, nats, sw, args)
    }

    fn start(mut c: Command, nats: &Nats, sw: &Switch, args: &[&str]) -> Bot {
        let mut child = c
            .args(["--nats-url", &nats.url, "--api-subject", &sw.subject])
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the example bot");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    eprintln!("bot| {l}");
                    lines.lock().unwrap().push(l);
                }
            });
        }
        let bot = Bot { child, lines };
        bot.wait_for("ready", T);
        bot
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until the bot printed a line containing `what`, counting from the start.
    fn wait_for(&self, what: &str, within: Duration) {
        let end = Instant::now() + within;
        while !self.lines.lock().unwrap().iter().any(|l| l.contains(what)) {
            assert!(
                Instant::now() < end,
                "the bot never said '{what}' within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn count(&self, what: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    }

    /// Waits until the `n`th line containing `what`.
    async fn wait_nth(&self, what: &str, n: usize, within: Duration) {
        let end = Instant::now() + within;
        while self.count(what) < n {
            assert!(
                Instant::now() < end,
                "the bot did not say '{what}' {n} times within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// A prompt the test can recognise on the phone: `secs` of a pure `freq` tone, 8 kHz WAV.
fn tone_wav(freq: f64, secs: f64) -> PathBuf {
    let samples = tone(freq, (secs * 8000.0) as usize, 8000.0);
    let mut bytes = cpa::wav::pcm16_header(1, (samples.len() * 2) as u32).to_vec();
    for s in &samples {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "botstream-prompt-{}-{}-{freq}.wav",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).expect("write prompt");
    path
}

/// Inbound: the phone calls, the bot answers and talks, the phone talks over it (barge-in),
/// stops (the bot answers), presses 1 (the bot bridges it to an agent), and the call ends.
async fn inbound_call_barge_in_and_bridge(lang: &str) {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    // The test sees what the bot sees: the events of inbound calls.
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let (agent, agents) = media_party("uas_media_at.xml", true, &[("HOLD", WAIT)]).await;
    app.add_gateway("agents", agents.port, &[]).await;
    let prompt = tone_wav(600.0, 8.0);
    let args = [
        "--wav",
        prompt.to_str().unwrap(),
        "--agent-gateway",
        "agents",
        "--agent-number",
        "2001",
        "--calls",
        "1",
    ];
    let mut bot = match lang {
        "python" => Bot::python(&nats, &sw, &args),
        _ => Bot::typescript(&nats, &sw, &args),
    };

    let phone = RtpPeer::start(false).await;
    let port = phone.port.to_string();
    let caller = Sipp::uac_with(
        "uac_media_at.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "100"],
        &[("RTP_PORT", &port), ("HOLD", WAIT)],
    );
    let answered = app.next_event("answered", T).await;
    let uuid = answered["call_uuid"].as_str().unwrap().to_string();
    app.event(&uuid, "stream_started", T).await;
    bot.wait_for("playing", T);
    // The prompt reaches the phone.
    let _ = phone.listen(Duration::from_millis(300)).await;
    let heard = phone.listen(Duration::from_millis(700)).await;
    assert!(
        hears(&heard, 600.0) > 0.5,
        "the phone hears the bot: rms {}",
        rms(&heard)
    );

    // The caller talks over the bot: it stops at once.
    phone.tone(300.0);
    bot.wait_nth("barge-in", 1, T).await;
    let _ = phone.listen(Duration::from_millis(200)).await;
    let heard = phone.listen(Duration::from_millis(500)).await;
    assert!(
        rms(&heard) < 300.0,
        "silent after barge-in: rms {}",
        rms(&heard)
    );

    // The caller stops: after a second of quiet the bot answers.
    phone.tone(0.0);
    bot.wait_nth("playing", 2, T).await;
    let _ = phone.listen(Duration::from_millis(300)).await;
    let heard = phone.listen(Duration::from_millis(500)).await;
    assert!(
        hears(&heard, 600.0) > 0.5,
        "the bot answers: rms {}",
        rms(&heard)
    );

    // 1: a person. The bot bridges; the phone and the agent hear each other.
    phone.press('1');
    let d = app.event(&uuid, "dtmf", T).await;
    assert_eq!(d["digit"], "1");
    bot.wait_for("bridging", T);
    let leg = app.next_event("answered", T).await;
    assert_eq!(leg["call_type"], "bridge");
    assert_eq!(leg["bridged_call_uuid"], uuid.as_str());
    let s = app.event(&uuid, "stream_stopped", T).await;
    assert!(s["reason"].is_string(), "{s}");
    phone.tone(700.0);
    agent.tone(1300.0);
    let _ = phone.listen(Duration::from_millis(300)).await;
    let (to_phone, to_agent) = tokio::join!(
        phone.listen(Duration::from_millis(600)),
        agent.listen(Duration::from_millis(600))
    );
    assert!(hears(&to_phone, 1300.0) > 0.5, "the caller hears the agent");
    assert!(hears(&to_agent, 700.0) > 0.5, "the agent hears the caller");

    // The call ends; the bot, told to take one call, exits cleanly.
    app.hang_up(&uuid).await;
    assert_eq!(bot.exit_code(T), Some(0), "{}", bot.log());
    caller.finish(T).expect("the phone's call");
    agents.finish(T).expect("the agent's call");
    let _ = std::fs::remove_file(prompt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_bot_answers_plays_stops_when_the_caller_talks_and_bridges_on_1() {
    inbound_call_barge_in_and_bridge("python").await;
}

/// Outbound with answering-machine detection, three phones: a fax (the bot hangs up at once), a
/// voicemail that beeps (the bot leaves its message after the beep, then hangs up), and a person
/// (the bot talks, stops when the person talks, answers, and hangs up when they press 2).
async fn outbound_calls_with_cpa(lang: &str) {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let bot_subjects = match lang {
        "python" => "bot.py.>",
        _ => "bot.ts.>",
    };
    let mut app = App::connect_to(&nats, &sw, bot_subjects).await;
    let prompt = tone_wav(600.0, 2.0);
    let call = |gateway: &str| {
        let args = [
            "--call",
            "15550001111",
            "--gateway",
            gateway,
            "--cpa",
            "--wav",
            prompt.to_str().unwrap(),
        ];
        match lang {
            "python" => Bot::python(&nats, &sw, &args),
            _ => Bot::typescript(&nats, &sw, &args),
        }
    };

    // A fax answers: FX, the bot hangs up.
    let (fax, fax_party) = media_party("uas_media_at.xml", false, &[("HOLD", WAIT)]).await;
    app.add_gateway("fax", fax_party.port, &[]).await;
    fax.tone(2100.0);
    let mut bot = call("fax");
    let uuid = app.next_event("answered", T).await["call_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let d = app.event(&uuid, "cpa_detection", T).await;
    assert_eq!(d["result"], "FX", "{d}");
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["disposition"], "send_bye", "the bot hung up: {h}");
    assert_eq!(bot.exit_code(T), Some(0), "{}", bot.log());
    assert!(bot.log().contains("fax"), "{}", bot.log());
    fax_party.finish(T).expect("the fax's call");

    // A voicemail: its beep, then the bot's message, then the bot hangs up.
    let (vm, vm_party) = media_party("uas_media_at.xml", false, &[("HOLD", WAIT)]).await;
    app.add_gateway("voicemail", vm_party.port, &[]).await;
    let mut bot = call("voicemail");
    let uuid = app.next_event("answered", T).await["call_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(800)).await;
    vm.tone(1000.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    vm.tone(0.0);
    let d = app.event(&uuid, "cpa_detection", T).await;
    assert_eq!(d["result"], "BEEP", "{d}");
    bot.wait_for("leaving a message", T);
    let _ = vm.listen(Duration::from_millis(300)).await;
    let heard = vm.listen(Duration::from_millis(800)).await;
    assert!(
        hears(&heard, 600.0) > 0.5,
        "the message is recorded: rms {}",
        rms(&heard)
    );
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["disposition"], "send_bye", "{h}");
    assert!(bot.log().contains("finished speaking"), "{}", bot.log());
    assert_eq!(bot.exit_code(T), Some(0), "{}", bot.log());
    vm_party.finish(T).expect("the voicemail's call");

    // A person (silent at first): the bot talks; barge-in; the bot answers; 2 hangs up.
    let (person, party) = media_party("uas_media_at.xml", false, &[("HOLD", WAIT)]).await;
    app.add_gateway("person", party.port, &[]).await;
    let mut bot = call("person");
    let uuid = app.next_event("answered", T).await["call_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let d = app.event(&uuid, "cpa_detection", T).await;
    assert!(
        ["LV", "NS", "SIL"].contains(&d["result"].as_str().unwrap()),
        "{d}"
    );
    bot.wait_for("playing", T);
    let _ = person.listen(Duration::from_millis(300)).await;
    let heard = person.listen(Duration::from_millis(600)).await;
    assert!(
        hears(&heard, 600.0) > 0.5,
        "the person hears the bot: rms {}",
        rms(&heard)
    );
    person.tone(300.0);
    bot.wait_nth("barge-in", 1, T).await;
    let _ = person.listen(Duration::from_millis(200)).await;
    let heard = person.listen(Duration::from_millis(400)).await;
    assert!(
        rms(&heard) < 300.0,
        "silent after barge-in: rms {}",
        rms(&heard)
    );
    person.tone(0.0);
    bot.wait_nth("playing", 2, T).await;
    person.press('2');
    assert_eq!(app.event(&uuid, "dtmf", T).await["digit"], "2");
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["disposition"], "send_bye", "{h}");
    assert_eq!(bot.exit_code(T), Some(0), "{}", bot.log());
    party.finish(T).expect("the person's call");
    let _ = std::fs::remove_file(prompt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_bot_calls_out_and_reacts_to_fax_voicemail_and_a_person() {
    outbound_calls_with_cpa("typescript").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_bot_calls_out_and_reacts_to_fax_voicemail_and_a_person() {
    outbound_calls_with_cpa("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_bot_answers_plays_stops_when_the_caller_talks_and_bridges_on_1() {
    inbound_call_barge_in_and_bridge("typescript").await;
}

/// docs/quickstart.md's steps 2 to 4, as written there: the Python bot with --record, SIPp
/// running sipp-scenarios/phone.xml from the repository root, and the recording that proves the
/// bot talked, stopped when the caller talked, and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_phone_calls_the_python_bot_and_the_recording_has_the_conversation() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut bot = Bot::python(&nats, &sw, &["--record", "--calls", "1"]);
    let phone = Command::new("sipp")
        .current_dir(repo_root())
        .args(["-sf", "sipp-scenarios/phone.xml", "-s", "100", "-m", "1"])
        .args(["-i", "127.0.0.1", &format!("127.0.0.1:{}", sw.sip_port)])
        .args([
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
        ])
        .args(["-nostdin", "-timeout", "40s", "-timeout_error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sipp");
    assert!(phone.success(), "the phone's call failed:\n{}", bot.log());
    assert_eq!(bot.exit_code(T), Some(0), "{}", bot.log());
    for said in [
        "playing hello.wav",
        "recording",
        "barge-in",
        "the caller stopped talking: answering",
        "dtmf 2",
        "hangup: NORMAL_CLEARING (send_bye)",
    ] {
        assert!(
            bot.log().contains(said),
            "the bot never said '{said}':\n{}",
            bot.log()
        );
    }

    // The recording: left the phone, right the bot, 8 kHz.
    let dir = sw.dir.join("data").join("recordings");
    let file = std::fs::read_dir(&dir)
        .expect("recordings")
        .flatten()
        .next()
        .expect("a recording")
        .path();
    let bytes = std::fs::read(&file).expect("read recording");
    let pcm: Vec<i16> = bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let second = |from: f64, to: f64, channel: usize| {
        let s: Vec<i16> = pcm
            .chunks_exact(2)
            .skip((from * 8000.0) as usize)
            .take(((to - from) * 8000.0) as usize)
            .map(|f| f[channel])
            .collect();
        rms(&s)
    };
    assert!(second(0.5, 3.5, 1) > 1000.0, "the bot greets");
    assert!(second(0.5, 3.5, 0) < 100.0, "the phone listens");
    assert!(second(4.5, 7.5, 0) > 1000.0, "the phone talks");
    assert!(second(4.8, 7.5, 1) < 100.0, "the bot stops for it");
    assert!(second(9.0, 11.0, 1) > 1000.0, "and answers after");
}
