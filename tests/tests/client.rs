//! The binary's client commands (operator.md "Client commands") against the real switch: what a
//! newcomer types before writing any app. `request` prints the reply, `events` prints events,
//! `call` dials, streams and prints the call's events until hangup; exit 0 on status 0, 1 on any
//! other status, 2 on bad input.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

/// `botstream ARGS` aimed at `sw` by flags.
fn client(nats: &Nats, sw: &Switch, args: &[&str]) -> Command {
    let mut c = Command::new(botstream_bin());
    c.args(args)
        .args(["--nats-url", &nats.url, "--api-subject", &sw.subject])
        .env_remove("BOTSTREAM_NATS_URL")
        .env_remove("BOTSTREAM_API_SUBJECT")
        .env_remove("BOTSTREAM_INBOUND_SUBJECT");
    c
}

/// Runs `c` to its end (at most `within`), feeding `stdin`.
fn run(mut c: Command, stdin: &str, within: Duration) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start botstream");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let end = Instant::now() + within;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("botstream client still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn request_prints_the_reply_and_exits_by_its_status() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);

    let out = run(
        client(
            &nats,
            &sw,
            &[
                "request",
                "request_add_sip_gateway",
                r#"{"name":"carrier","params":{"proxy":"127.0.0.1:5080"}}"#,
            ],
        ),
        "",
        T,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let reply = &lines(&out)[0];
    assert_eq!(reply["request_name"], "request_add_sip_gateway");
    assert_eq!(reply["status_code"], 0);

    // The same options as the switch, from the environment; the prefix may be left out.
    let mut c = Command::new(botstream_bin());
    c.args(["request", "get_sip_gateway", r#"{"name":"*"}"#])
        .env("BOTSTREAM_NATS_URL", &nats.url)
        .env("BOTSTREAM_API_SUBJECT", &sw.subject);
    let out = run(c, "", T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["gateways"][0]["name"], "carrier");

    // ... and from the TOML file; event_data from standard input with `-`.
    let toml = config_file(&format!(
        "[nats]\nurl = \"{}\"\n[api]\nsubject = \"{}\"\n",
        nats.url, sw.subject
    ));
    let mut c = Command::new(botstream_bin());
    c.arg("--config")
        .arg(&toml)
        .args(["request", "get_sip_gateway", "-"])
        .env_remove("BOTSTREAM_NATS_URL")
        .env_remove("BOTSTREAM_API_SUBJECT");
    let out = run(c, r#"{"name":"nope"}"#, T);
    assert_eq!(out.status.code(), Some(1), "status 143 is a failure");
    assert_eq!(lines(&out)[0]["status_code"], 143);
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));

    // Bad input never reaches the switch: exit 2, a message, nothing on stdout.
    for (args, says) in [
        (vec!["request", "make_call", "{not json"], "not valid JSON"),
        (vec!["request", "make_call", "[1,2]"], "JSON object"),
        (vec!["request"], "NAME"),
        (vec!["call", "--gateway", "g", "--to", "1"], "--from"),
        (
            vec![
                "call",
                "--gateway",
                "g",
                "--to",
                "1",
                "--from",
                "2",
                "--stream",
                "ws://x:1",
            ],
            "wss://",
        ),
    ] {
        let out = run(client(&nats, &sw, &args), "", T);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }

    // No switch on that subject: a failure with a hint, not a hang.
    let mut c = Command::new(botstream_bin());
    c.args([
        "request",
        "list_calls",
        "--nats-url",
        &nats.url,
        "--api-subject",
        "nobody.here",
    ]);
    let out = run(c, "", T);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no switch"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_streams_the_call_and_prints_its_events_until_the_phone_hangs_up() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    // The phone answers and hangs up by itself after 3 s.
    let (phone, party) = media_party("uas_media_at.xml", false, &[("HOLD", "3000")]).await;
    let app = App::connect(&nats, &sw).await;
    app.add_gateway("phone", party.port, &[]).await;
    let mut ws = WsServer::start().await;

    let url = format!("wss://127.0.0.1:{}/bot", ws.port);
    let cmd = client(
        &nats,
        &sw,
        &[
            "call",
            "--gateway",
            "phone",
            "--to",
            "15550001111",
            "--from",
            "15559998888",
            "--stream",
            &url,
            "--extra",
            r#"{"call_params":{"lead":7}}"#,
        ],
    );
    let started = Instant::now();
    let call = tokio::task::spawn_blocking(move || run(cmd, "", Duration::from_secs(30)));

    // The switch connects to the app given by --stream; the app talks, the phone hears it.
    let conn = ws.accept(T).await;
    assert_eq!(conn.first["call_params"]["lead"], 7);
    conn.send_pcm(&tone(600.0, 16000, 8000.0));
    let _ = phone.listen(Duration::from_millis(400)).await;
    let heard = phone.listen(Duration::from_millis(600)).await;
    assert!(hears(&heard, 600.0) > 0.5, "rms {}", rms(&heard));

    let out = call.await.expect("join");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = lines(&out);
    let reply = &lines[0];
    assert_eq!(reply["request_name"], "request_make_call");
    let uuid = reply["call_uuid"].as_str().expect("call_uuid");
    assert_eq!(conn.first["call_uuid"], uuid);
    let stream_reply = lines
        .iter()
        .find(|l| l["request_name"] == "request_start_stream")
        .expect("the start_stream reply");
    assert_eq!(stream_reply["status_code"], 0);
    let events: Vec<Value> = lines
        .iter()
        .filter(|l| l["event_name"].is_string())
        .cloned()
        .collect();
    // Each one as docs/api.md describes it: its fields, no more, no fewer.
    let doc = e2e::docs::api_doc();
    for e in &events {
        doc.check_event(e).unwrap_or_else(|why| panic!("{why}"));
    }
    let names = names(&events);
    for want in [
        "started",
        "originate",
        "answered",
        "stream_started",
        "hangup",
    ] {
        assert!(names.contains(&want.to_string()), "{want} in {names:?}");
    }
    let hangup = &events[names.iter().position(|n| n == "hangup").unwrap()]["event_data"];
    assert_eq!(hangup["disposition"], "recv_bye", "{hangup}");
    assert!(
        took < Duration::from_secs(15),
        "exits soon after hangup: {took:?}"
    );
    party.finish(T).expect("the phone's call went through");

    // A gateway that does not exist: the reply's status, exit 1.
    let cmd = client(
        &nats,
        &sw,
        &["call", "--gateway", "nowhere", "--to", "1", "--from", "2"],
    );
    let out = tokio::task::spawn_blocking(move || run(cmd, "", T))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(self::lines(&out)[0]["status_code"], 114);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_prints_inbound_calls_by_default() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut child = client(&nats, &sw, &["events", "--count", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start botstream events");
    // It says when it listens: only then can nothing be missed.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.contains("botstream.inbound"), "{first}");

    let caller = Sipp::uac(
        "uac_inbound.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "5550"],
    );
    caller.finish(T).expect("the inbound call");
    let out = tokio::task::spawn_blocking(move || {
        let end = Instant::now() + T;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > end {
                let _ = child.kill();
                panic!("events did not stop after --count 2");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let events = lines(&out);
    assert_eq!(names(&events), ["answered", "hangup"]);
    assert_eq!(events[0]["event_data"]["call_type"], "inbound");
    assert_eq!(events[0]["event_data"]["to_number"], "5550");
}
