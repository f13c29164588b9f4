//! The client commands of operator.md ("Client commands"): the binary as a small client of a
//! running switch, so that a first call needs nothing but this binary.
//!
//! * `botstream request NAME [JSON]` — one API request, its reply printed.
//! * `botstream events [SUBJECT]` — events as they arrive.
//! * `botstream call --gateway G --to N --from N [--stream wss://…]` — a call, streamed if asked,
//!   its events printed until hangup.
//!
//! Everything printed on standard output is one JSON object per line (replies and events as the
//! switch sent them), so the output can be piped to `jq`; notes for people go to standard error.
//! Exit status: 0 when every reply had status 0, 1 on any other status (or no switch), 2 on bad
//! input. The pure parts (envelopes, URLs, what a call's events mean) are tested below; the NATS
//! parts end to end in tests/tests/client.rs.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Map, Value};

use crate::config::ClientSettings;

/// api.md §1: a client waits 5 s for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How a client command ended, as its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every reply had status 0 (exit 0).
    Ok,
    /// A reply with another status, no switch, NATS away (exit 1).
    Failed(String),
    /// The command line was wrong (exit 2).
    BadInput(String),
}

impl Outcome {
    pub fn exit(self, command: &str) -> ExitCode {
        match self {
            Outcome::Ok => ExitCode::SUCCESS,
            Outcome::Failed(why) => {
                if !why.is_empty() {
                    eprintln!("botstream {command}: {why}");
                }
                ExitCode::from(1)
            }
            Outcome::BadInput(why) => {
                eprintln!("botstream {command}: {why}");
                ExitCode::from(2)
            }
        }
    }
}

/// The request envelope for `botstream request NAME [JSON]`: `NAME` with its `request_` prefix
/// (added when left out) and `JSON` (default `{}`) as `event_data`. `Err` is bad input.
pub fn envelope(name: &str, data: Option<&str>) -> Result<Value, String> {
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "'{name}' is not a request name (e.g. request_make_call, or make_call)"
        ));
    }
    let name = if name.starts_with("request_") {
        name.to_string()
    } else {
        format!("request_{name}")
    };
    let data = match data {
        None => Value::Object(Map::new()),
        Some(text) => json_object(text, "the JSON argument")?,
    };
    Ok(json!({"event_name": name, "event_data": data}))
}

/// Parses `text` as a JSON object; `what` names it in the message.
fn json_object(text: &str, what: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(format!(
            "{what} must be a JSON object, like {{\"name\":\"*\"}}"
        )),
        Err(e) => Err(format!("{what} is not valid JSON: {e}")),
    }
}

/// The outcome a reply stands for: its `status_code` 0 or not.
pub fn reply_outcome(reply: &Value) -> Outcome {
    match reply["status_code"].as_i64() {
        Some(0) => Outcome::Ok,
        Some(code) => Outcome::Failed(format!(
            "status {code}: {}",
            reply["status"].as_str().unwrap_or("")
        )),
        None => Outcome::Failed(format!("not a reply of the switch: {reply}")),
    }
}

/// `--stream wss://host[:port][/path]` as request_start_stream's `websocket_host` (the URL
/// without its port) and `websocket_port` (443 when the URL has none).
pub fn stream_target(url: &str) -> Result<(String, u16), String> {
    let bad = || format!("--stream '{url}' must be wss://host[:port][/path]");
    let rest = url.strip_prefix("wss://").ok_or_else(bad)?;
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inner, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (format!("[{inner}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(bad());
    }
    let port = match port {
        None => 443,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
    };
    Ok((format!("wss://{host}{path}"), port))
}

/// The request_make_call of `botstream call`: the flags, then `--extra` fields over them.
pub fn make_call_data(
    gateway: &str,
    to: &str,
    from: &str,
    tenant: &str,
    subject: &str,
    extra: Option<&str>,
) -> Result<Value, String> {
    let mut data = json!({
        "gateway": gateway, "to_number": to, "from_number": from,
        "tenant_id": tenant, "event_subject": subject,
    });
    if let Some(text) = extra {
        if let (Value::Object(d), Value::Object(e)) = (&mut data, json_object(text, "--extra")?) {
            d.extend(e);
        }
    }
    Ok(json!({"event_name": "request_make_call", "event_data": data}))
}

/// A fresh event subject for one `botstream call`.
pub fn fresh_subject() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("botstream.cli.{:016x}", h.finish())
}

/// What `botstream call` does next, given one event of its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Print it and go on.
    Go,
    /// The call answered and a stream was asked for: start it.
    StartStream,
    /// The call hung up: print what else comes for a moment (call_quality), then stop.
    HungUp(Outcome),
}

/// The state of the call `botstream call` placed, fed with the events of its subject (which
/// also carry the events of its bridged legs, told apart by their `call_uuid`).
#[derive(Debug)]
pub struct CallWatch {
    uuid: String,
    stream: bool,
    answered: bool,
    failure: Option<String>,
}

impl CallWatch {
    pub fn new(uuid: &str, stream: bool) -> CallWatch {
        CallWatch {
            uuid: uuid.to_string(),
            stream,
            answered: false,
            failure: None,
        }
    }

    pub fn on_event(&mut self, ev: &Value) -> Step {
        let data = &ev["event_data"];
        if data["call_uuid"].as_str() != Some(self.uuid.as_str()) {
            return Step::Go;
        }
        match ev["event_name"].as_str().unwrap_or("") {
            "botstream::originate" => {
                if data["status_code"].as_i64().is_some_and(|c| c != 0) {
                    self.failure = Some(format!(
                        "the call failed: {}",
                        data["status"].as_str().unwrap_or("")
                    ));
                }
                Step::Go
            }
            "botstream::answered" if !self.answered => {
                self.answered = true;
                if self.stream {
                    Step::StartStream
                } else {
                    Step::Go
                }
            }
            "botstream::hangup" => Step::HungUp(match (&self.failure, self.answered) {
                (Some(f), _) => Outcome::Failed(f.clone()),
                (None, true) => Outcome::Ok,
                (None, false) => Outcome::Failed(format!(
                    "not answered: {}",
                    data["hangup_cause"].as_str().unwrap_or("")
                )),
            }),
            _ => Step::Go,
        }
    }

    /// Whether `ev` is the last event of the call (call_quality follows hangup when the call
    /// had media).
    pub fn is_last(&self, ev: &Value) -> bool {
        ev["event_data"]["call_uuid"].as_str() == Some(self.uuid.as_str())
            && ev["event_name"] == "botstream::call_quality"
    }
}

fn print_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn runtime() -> Result<tokio::runtime::Runtime, Outcome> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Outcome::Failed(format!("cannot start the runtime: {e}")))
}

async fn connect(s: &ClientSettings) -> Result<async_nats::Client, Outcome> {
    let servers: Vec<async_nats::ServerAddr> = s
        .nats_url
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| Outcome::BadInput(format!("nats.url '{}': {e}", s.nats_url)))?;
    tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::ConnectOptions::new()
            .name("botstream client")
            .connect(servers),
    )
    .await
    .map_err(|_| Outcome::Failed(format!("NATS at {} did not answer within 5 s", s.nats_url)))?
    .map_err(|e| Outcome::Failed(format!("cannot connect to NATS at {}: {e}", s.nats_url)))
}

/// One request/reply; the reply as JSON.
async fn request(
    client: &async_nats::Client,
    subject: &str,
    body: &Value,
) -> Result<Value, Outcome> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let msg = tokio::time::timeout(
        REPLY_TIMEOUT,
        client.request(subject.to_string(), bytes.into()),
    )
    .await
    .map_err(|_| Outcome::Failed(format!("no reply on {subject} within 5 s")))?
    .map_err(|e| match e.kind() {
        async_nats::RequestErrorKind::NoResponders => Outcome::Failed(format!(
            "no switch listens on {subject} (is it running, with the same --api-subject?)"
        )),
        _ => Outcome::Failed(format!("request on {subject}: {e}")),
    })?;
    serde_json::from_slice(&msg.payload)
        .map_err(|e| Outcome::Failed(format!("the reply is not JSON ({e}): {:?}", msg.payload)))
}

/// `botstream request NAME [JSON]`.
pub fn run_request(s: &ClientSettings, name: &str, data: Option<&str>) -> Outcome {
    let stdin;
    let data = match data {
        Some("-") => {
            stdin = match std::io::read_to_string(std::io::stdin()) {
                Ok(t) => t,
                Err(e) => return Outcome::BadInput(format!("reading standard input: {e}")),
            };
            Some(stdin.as_str())
        }
        d => d,
    };
    let body = match envelope(name, data) {
        Ok(b) => b,
        Err(e) => return Outcome::BadInput(e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(o) => return o,
    };
    rt.block_on(async {
        let client = match connect(s).await {
            Ok(c) => c,
            Err(o) => return o,
        };
        match request(&client, &s.api_subject, &body).await {
            Ok(reply) => {
                print_line(&reply);
                reply_outcome(&reply)
            }
            Err(o) => o,
        }
    })
}

/// `botstream events [SUBJECT]`.
pub fn run_events(
    s: &ClientSettings,
    subject: Option<&str>,
    count: Option<u64>,
    show_subject: bool,
) -> Outcome {
    let subject = subject.unwrap_or(&s.inbound_subject).to_string();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(o) => return o,
    };
    rt.block_on(async {
        let client = match connect(s).await {
            Ok(c) => c,
            Err(o) => return o,
        };
        let mut sub = match client.subscribe(subject.clone()).await {
            Ok(sub) => sub,
            Err(e) => return Outcome::BadInput(format!("subject '{subject}': {e}")),
        };
        if client.flush().await.is_err() {
            return Outcome::Failed("NATS went away".into());
        }
        eprintln!("botstream events: listening on {subject} (Ctrl-C stops)");
        let mut seen = 0u64;
        loop {
            if count.is_some_and(|c| seen >= c) {
                return Outcome::Ok;
            }
            let msg = tokio::select! {
                m = sub.next() => m,
                _ = tokio::signal::ctrl_c() => return Outcome::Ok,
            };
            let Some(msg) = msg else {
                return Outcome::Failed("the subscription ended (NATS went away)".into());
            };
            seen += 1;
            let text = match serde_json::from_slice::<Value>(&msg.payload) {
                Ok(v) => v.to_string(),
                Err(_) => String::from_utf8_lossy(&msg.payload).into_owned(),
            };
            let mut out = std::io::stdout().lock();
            let line = if show_subject {
                writeln!(out, "{} {text}", msg.subject)
            } else {
                writeln!(out, "{text}")
            };
            if line.and_then(|_| out.flush()).is_err() {
                // A reader that went away (`| head`) ends us quietly.
                return Outcome::Ok;
            }
        }
    })
}

/// The flags of `botstream call`.
pub struct CallArgs<'a> {
    pub gateway: &'a str,
    pub to: &'a str,
    pub from: &'a str,
    pub stream: Option<&'a str>,
    pub tenant: &'a str,
    pub subject: Option<&'a str>,
    pub extra: Option<&'a str>,
}

/// `botstream call …`.
pub fn run_call(s: &ClientSettings, a: &CallArgs) -> Outcome {
    let stream = match a.stream.map(stream_target).transpose() {
        Ok(t) => t,
        Err(e) => return Outcome::BadInput(e),
    };
    let subject = a.subject.map(str::to_string).unwrap_or_else(fresh_subject);
    let body = match make_call_data(a.gateway, a.to, a.from, a.tenant, &subject, a.extra) {
        Ok(b) => b,
        Err(e) => return Outcome::BadInput(e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(o) => return o,
    };
    rt.block_on(call(s, body, subject, stream))
}

async fn call(
    s: &ClientSettings,
    body: Value,
    subject: String,
    stream: Option<(String, u16)>,
) -> Outcome {
    let client = match connect(s).await {
        Ok(c) => c,
        Err(o) => return o,
    };
    // Subscribed before dialing: the first events may come before the reply.
    let mut events = match client.subscribe(subject.clone()).await {
        Ok(sub) => sub,
        Err(e) => return Outcome::BadInput(format!("subject '{subject}': {e}")),
    };
    let _ = client.flush().await;
    let reply = match request(&client, &s.api_subject, &body).await {
        Ok(r) => r,
        Err(o) => return o,
    };
    print_line(&reply);
    if reply_outcome(&reply) != Outcome::Ok {
        return reply_outcome(&reply);
    }
    let uuid = reply["call_uuid"].as_str().unwrap_or_default().to_string();
    eprintln!("botstream call: {uuid} dialing, events on {subject} (Ctrl-C hangs up)");
    let mut watch = CallWatch::new(&uuid, stream.is_some());
    let mut outcome = Outcome::Ok;
    let mut interrupted = false;
    // After hangup: a moment for call_quality and the bridged legs' last events.
    let mut until: Option<tokio::time::Instant> = None;
    loop {
        let msg = tokio::select! {
            m = events.next() => m,
            _ = tokio::time::sleep_until(until.unwrap_or_else(far_future)) => break,
            _ = tokio::signal::ctrl_c() => {
                if interrupted {
                    return Outcome::Failed("interrupted".into());
                }
                interrupted = true;
                eprintln!("botstream call: hanging up (Ctrl-C again to leave at once)");
                let drop = json!({"event_name": "request_drop_call", "event_data": {"call_uuid": uuid}});
                match request(&client, &s.api_subject, &drop).await {
                    Ok(r) => print_line(&r),
                    Err(o) => return o,
                }
                continue;
            }
        };
        let Some(msg) = msg else {
            return Outcome::Failed("the subscription ended (NATS went away)".into());
        };
        let Ok(ev) = serde_json::from_slice::<Value>(&msg.payload) else {
            continue;
        };
        print_line(&ev);
        if watch.is_last(&ev) {
            break;
        }
        match watch.on_event(&ev) {
            Step::Go => {}
            Step::StartStream => {
                let (host, port) = stream.clone().expect("asked for");
                let start = json!({"event_name": "request_start_stream", "event_data": {
                    "call_uuid": uuid, "websocket_host": host, "websocket_port": port}});
                match request(&client, &s.api_subject, &start).await {
                    Ok(r) => {
                        print_line(&r);
                        if reply_outcome(&r) != Outcome::Ok {
                            // A call nobody talks to is of no use: end it.
                            outcome = reply_outcome(&r);
                            let drop = json!({"event_name": "request_drop_call",
                                "event_data": {"call_uuid": uuid}});
                            let _ = request(&client, &s.api_subject, &drop).await;
                        }
                    }
                    Err(o) => return o,
                }
            }
            Step::HungUp(o) => {
                if outcome == Outcome::Ok {
                    outcome = o;
                }
                until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
    }
    outcome
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_adds_the_prefix_and_defaults_to_an_empty_object() {
        let e = envelope("get_sip_gateway", Some(r#"{"name":"*"}"#)).unwrap();
        assert_eq!(e["event_name"], "request_get_sip_gateway");
        assert_eq!(e["event_data"]["name"], "*");
        let e = envelope("request_list_calls", None).unwrap();
        assert_eq!(e["event_name"], "request_list_calls");
        assert_eq!(e["event_data"], json!({}));
    }

    #[test]
    fn bad_json_and_bad_names_are_bad_input() {
        assert!(envelope("make_call", Some("{"))
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(envelope("make_call", Some("[1]"))
            .unwrap_err()
            .contains("JSON object"));
        assert!(envelope("make call", None)
            .unwrap_err()
            .contains("request name"));
        assert!(envelope("", None).is_err());
    }

    #[test]
    fn status_zero_is_ok_anything_else_fails() {
        assert_eq!(
            reply_outcome(&json!({"status": "OK", "status_code": 0})),
            Outcome::Ok
        );
        let o = reply_outcome(&json!({"status": "gateway 'x' does not exist", "status_code": 114}));
        assert_eq!(
            o,
            Outcome::Failed("status 114: gateway 'x' does not exist".into())
        );
        assert!(matches!(reply_outcome(&json!("hi")), Outcome::Failed(_)));
    }

    #[test]
    fn stream_urls_split_into_host_and_port() {
        assert_eq!(
            stream_target("wss://127.0.0.1:8765").unwrap(),
            ("wss://127.0.0.1".into(), 8765)
        );
        assert_eq!(
            stream_target("wss://bot.example.com/media?x=1").unwrap(),
            ("wss://bot.example.com/media?x=1".into(), 443)
        );
        assert_eq!(
            stream_target("wss://[::1]:9000/a").unwrap(),
            ("wss://[::1]/a".into(), 9000)
        );
        for bad in [
            "ws://h:1",
            "h:1",
            "wss://:1",
            "wss://h:0",
            "wss://h:x",
            "wss://[::1",
        ] {
            assert!(stream_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn make_call_takes_the_flags_and_the_extra_fields() {
        let b = make_call_data(
            "gw",
            "100",
            "200",
            "t1",
            "s.1",
            Some(r#"{"cpa_config":"amd"}"#),
        )
        .unwrap();
        assert_eq!(b["event_name"], "request_make_call");
        let d = &b["event_data"];
        assert_eq!(
            (
                d["gateway"].as_str(),
                d["to_number"].as_str(),
                d["from_number"].as_str()
            ),
            (Some("gw"), Some("100"), Some("200"))
        );
        assert_eq!(d["tenant_id"], "t1");
        assert_eq!(d["event_subject"], "s.1");
        assert_eq!(d["cpa_config"], "amd");
        assert!(make_call_data("gw", "1", "2", "t", "s", Some("nope")).is_err());
    }

    #[test]
    fn fresh_subjects_differ() {
        let (a, b) = (fresh_subject(), fresh_subject());
        assert!(a.starts_with("botstream.cli."), "{a}");
        assert_ne!(a, b);
    }

    fn ev(name: &str, uuid: &str, extra: Value) -> Value {
        let mut d = json!({"call_uuid": uuid});
        if let (Value::Object(d), Value::Object(e)) = (&mut d, extra) {
            d.extend(e);
        }
        json!({"event_name": format!("botstream::{name}"), "event_data": d})
    }

    #[test]
    fn an_answered_call_streams_once_and_ends_ok() {
        let mut w = CallWatch::new("u1", true);
        assert_eq!(w.on_event(&ev("started", "u1", json!({}))), Step::Go);
        assert_eq!(
            w.on_event(&ev(
                "originate",
                "u1",
                json!({"status": "OK", "status_code": 0})
            )),
            Step::Go
        );
        assert_eq!(
            w.on_event(&ev("answered", "u1", json!({}))),
            Step::StartStream
        );
        // A bridged leg's answer on the same subject is not ours.
        assert_eq!(w.on_event(&ev("answered", "u2", json!({}))), Step::Go);
        assert_eq!(w.on_event(&ev("answered", "u1", json!({}))), Step::Go);
        assert_eq!(w.on_event(&ev("hangup", "u2", json!({}))), Step::Go);
        assert_eq!(
            w.on_event(&ev(
                "hangup",
                "u1",
                json!({"hangup_cause": "NORMAL_CLEARING"})
            )),
            Step::HungUp(Outcome::Ok)
        );
        assert!(w.is_last(&ev("call_quality", "u1", json!({}))));
        assert!(!w.is_last(&ev("call_quality", "u2", json!({}))));
    }

    #[test]
    fn a_call_that_fails_or_is_never_answered_ends_failed() {
        let mut w = CallWatch::new("u1", false);
        w.on_event(&ev(
            "originate",
            "u1",
            json!({"status": "USER_BUSY", "status_code": 114}),
        ));
        assert_eq!(
            w.on_event(&ev("hangup", "u1", json!({"hangup_cause": "USER_BUSY"}))),
            Step::HungUp(Outcome::Failed("the call failed: USER_BUSY".into()))
        );
        let mut w = CallWatch::new("u1", false);
        assert_eq!(w.on_event(&ev("answered", "u1", json!({}))), Step::Go);
        let mut w = CallWatch::new("u1", false);
        assert!(matches!(
            w.on_event(&ev("hangup", "u1", json!({"hangup_cause": "NO_ANSWER"}))),
            Step::HungUp(Outcome::Failed(_))
        ));
    }
}
