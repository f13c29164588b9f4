//! The stream to the app as the call's media task sees it (api.md §3.5): which protocol its
//! messages speak (ours: binary PCM and a few text frames; Twilio's Media Streams: JSON text
//! frames with base64 μ-law), where the caller's audio stands in stream time, and — with
//! `resume_secs` — what to do when the socket fails: keep the caller's audio, reconnect with
//! backoff, replay from no later than the first frame the app may have missed.
//!
//! No I/O here: the media task owns the socket ([`crate::ws::Session`]) and the clock, and asks
//! this what to send, when to try again, and what to tell the call core.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::g711::{self, Law};
use crate::resample::{Downsampler, Upsampler};
use crate::ws::FromApp;

/// Caller audio kept behind the live edge for a replay (api.md §3.5: frames written to a failed
/// socket can be lost in flight).
const KEEP_BEHIND: Duration = Duration::from_secs(2);
const FRAME_MS: u64 = 20;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// api.md §3.5: a JSON first frame, binary PCM both ways, `mark`/`clear`/`cleared` text.
    Botstream,
    /// Twilio's bidirectional Media Streams (api.md §3.5 "Twilio Media Streams protocol").
    Twilio,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Botstream => "botstream",
            Protocol::Twilio => "twilio",
        }
    }
}

/// What a stream is, as the call core asked for it.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub url: String,
    pub protocol: Protocol,
    pub sample_rate: u32,
    pub resume_secs: u32,
    /// Ours: the first text frame. Twilio's: the `start` object (`streamSid`, `accountSid`,
    /// `callSid`, `tracks`, `customParameters`, `mediaFormat`).
    pub first: Map<String, Value>,
}

/// How much of the app's interrupted audio the caller heard (api.md §3.5 `cleared`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleared {
    pub played_ms: u64,
    pub dropped_ms: u64,
    /// Marks dropped unplayed, in order.
    pub marks: Vec<String>,
}

enum Link {
    /// The first handshake is under way.
    Opening,
    Up,
    /// The socket failed; reconnecting until `deadline`.
    Down {
        failed_at: Instant,
        /// Stream time of the first frame the app may not have received.
        unsure_from: u64,
        deadline: Instant,
        next_try: Option<Instant>,
        backoff: Duration,
        last: (String, u16),
    },
}

/// What a failed or closed socket means for the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterClose {
    /// Over: `stream_stopped` with this reason and code.
    Stopped { reason: String, code: u16 },
    /// Reconnecting (api.md §3.5 resume); the caller's audio is being kept.
    Reconnecting,
}

pub struct AppStream {
    pub cfg: StreamConfig,
    link: Link,
    /// From the call's rate to the stream's, when they differ.
    up: Option<Upsampler>,
    down: Option<Downsampler>,
    /// Caller frames produced since the stream started: stream time is this × 20 ms.
    frames: u64,
    /// (frame index, frame at the stream's rate), kept only with `resume_secs`.
    kept: VecDeque<(u64, Vec<i16>)>,
    /// Twilio `sequenceNumber`: every message of a connection after `connected`, from 1.
    seq: u64,
    /// The replay point announced to a reconnecting socket (its `replay_from_ms`).
    replay_from_ms: Option<u64>,
}

impl AppStream {
    pub fn new(cfg: StreamConfig) -> AppStream {
        AppStream {
            cfg,
            link: Link::Opening,
            up: None,
            down: None,
            frames: 0,
            kept: VecDeque::new(),
            seq: 0,
            replay_from_ms: None,
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.link, Link::Up)
    }

    /// The messages that open a connection (the first one, or a resumed one with
    /// `resumed`/`gap_ms`/`replay_from_ms`).
    pub fn opening_frames(&mut self, now: Instant) -> Vec<String> {
        self.seq = 0;
        let mut first = self.cfg.first.clone();
        if let Link::Down { failed_at, .. } = &self.link {
            let from = self.replay_point();
            first.insert("resumed".into(), Value::from(true));
            first.insert(
                "gap_ms".into(),
                Value::from(now.duration_since(*failed_at).as_millis() as u64),
            );
            first.insert("replay_from_ms".into(), Value::from(from));
            self.replay_from_ms = Some(from);
        }
        match self.cfg.protocol {
            Protocol::Botstream => vec![Value::Object(first).to_string()],
            Protocol::Twilio => {
                let sid = first.get("streamSid").cloned().unwrap_or(Value::from(""));
                let connected =
                    json!({"event": "connected", "protocol": "Call", "version": "1.0.0"});
                let mut start = Map::new();
                start.insert("event".into(), Value::from("start"));
                start.insert("sequenceNumber".into(), self.next_seq());
                start.insert("streamSid".into(), sid);
                for k in ["resumed", "gap_ms", "replay_from_ms"] {
                    if let Some(v) = first.remove(k) {
                        start.insert(k.into(), v);
                    }
                }
                start.insert("start".into(), Value::Object(first));
                vec![connected.to_string(), Value::Object(start).to_string()]
            }
        }
    }

    fn next_seq(&mut self) -> Value {
        self.seq += 1;
        Value::from(self.seq.to_string())
    }

    fn stream_sid(&self) -> Value {
        self.cfg
            .first
            .get("streamSid")
            .cloned()
            .unwrap_or(Value::from(""))
    }

    /// The first handshake or a reconnect succeeded. For a reconnect: the gap, and what the new
    /// socket must get before live audio — the kept frames from the announced replay point on.
    pub fn connected(&mut self, now: Instant) -> Option<(u64, Vec<Outgoing>)> {
        let gap = match &self.link {
            Link::Down { failed_at, .. } => now.duration_since(*failed_at).as_millis() as u64,
            _ => {
                self.link = Link::Up;
                return None;
            }
        };
        let from = self
            .replay_from_ms
            .take()
            .unwrap_or_else(|| self.replay_point())
            / FRAME_MS;
        self.link = Link::Up;
        let frames: Vec<(u64, Vec<i16>)> = self
            .kept
            .iter()
            .filter(|(i, _)| *i >= from)
            .cloned()
            .collect();
        let replay = frames
            .into_iter()
            .map(|(i, pcm)| self.media(i, &pcm))
            .collect();
        Some((gap, replay))
    }

    /// Stream time (ms) of the first frame a resumed connection replays: no later than the
    /// first the app may have missed, no earlier than the oldest kept.
    fn replay_point(&self) -> u64 {
        let from = match &self.link {
            Link::Down { unsure_from, .. } => *unsure_from,
            _ => self.frames,
        };
        let oldest = self.kept.front().map(|(i, _)| *i).unwrap_or(self.frames);
        from.max(oldest) * FRAME_MS
    }

    /// The stream's audio rate (Twilio's is always 8 kHz).
    fn rate(&self) -> u32 {
        match self.cfg.protocol {
            Protocol::Twilio => 8000,
            Protocol::Botstream if self.cfg.sample_rate == 16000 => 16000,
            Protocol::Botstream => 8000,
        }
    }

    /// A caller frame (20 ms at the call's `rate`: 8000, or 16000 on a wideband call): its
    /// message for the app, or `None` while the socket is down (it is kept for the replay). A
    /// 16 kHz stream of a wideband call gets the caller's full band.
    pub fn caller_frame(&mut self, pcm: &[i16], rate: u32) -> Option<Outgoing> {
        // Stream time starts with the first socket: the app counts from its first frame.
        if matches!(self.link, Link::Opening) {
            return None;
        }
        let i = self.frames;
        self.frames += 1;
        let pcm = match (rate, self.rate()) {
            (8000, 16000) => {
                let mut wide = Vec::with_capacity(pcm.len() * 2);
                self.up
                    .get_or_insert_with(Upsampler::new)
                    .process(pcm, &mut wide);
                wide
            }
            (16000, 8000) => {
                let mut narrow = Vec::with_capacity(pcm.len() / 2);
                self.down
                    .get_or_insert_with(Downsampler::new)
                    .process(pcm, &mut narrow);
                narrow
            }
            _ => pcm.to_vec(),
        };
        if self.cfg.resume_secs > 0 {
            self.kept.push_back((i, pcm.clone()));
            let keep = match &self.link {
                Link::Down {
                    deadline,
                    failed_at,
                    ..
                } => deadline.duration_since(*failed_at) + KEEP_BEHIND * 2,
                _ => KEEP_BEHIND,
            };
            let max = (keep.as_millis() as u64 / FRAME_MS) as usize;
            while self.kept.len() > max {
                self.kept.pop_front();
            }
        }
        match self.link {
            Link::Up => Some(self.media(i, &pcm)),
            _ => None,
        }
    }

    fn media(&mut self, index: u64, pcm: &[i16]) -> Outgoing {
        match self.cfg.protocol {
            Protocol::Botstream => {
                let mut b = Vec::with_capacity(pcm.len() * 2);
                for s in pcm {
                    b.extend_from_slice(&s.to_le_bytes());
                }
                Outgoing::Binary(b)
            }
            Protocol::Twilio => {
                let mut ulaw = Vec::with_capacity(pcm.len());
                g711::encode(Law::Mu, pcm, &mut ulaw);
                let payload = base64::engine::general_purpose::STANDARD.encode(ulaw);
                let m = json!({
                    "event": "media",
                    "sequenceNumber": self.next_seq(),
                    "streamSid": self.stream_sid(),
                    "media": {
                        "track": "inbound",
                        "chunk": (index + 1).to_string(),
                        "timestamp": (index * FRAME_MS).to_string(),
                        "payload": payload,
                    }
                });
                Outgoing::Text(m.to_string())
            }
        }
    }

    /// Playback reached the app's mark (or, Twilio, a clear dropped it).
    pub fn mark(&mut self, name: &str) -> Outgoing {
        let m = match self.cfg.protocol {
            Protocol::Botstream => json!({"event": "mark", "name": name}),
            Protocol::Twilio => json!({
                "event": "mark",
                "sequenceNumber": self.next_seq(),
                "streamSid": self.stream_sid(),
                "mark": {"name": name},
            }),
        };
        Outgoing::Text(m.to_string())
    }

    /// What the app is told of a clear: ours, the `cleared` frame; Twilio's, a `mark` for each
    /// mark the clear dropped (as Twilio does).
    pub fn cleared(&mut self, c: &Cleared) -> Vec<Outgoing> {
        match self.cfg.protocol {
            Protocol::Botstream => vec![Outgoing::Text(
                json!({"event": "cleared", "played_ms": c.played_ms, "dropped_ms": c.dropped_ms,
                       "marks": c.marks})
                .to_string(),
            )],
            Protocol::Twilio => c.marks.iter().map(|m| self.mark(m)).collect(),
        }
    }

    /// A key press, for protocols that carry them (Twilio: one `dtmf` per press).
    pub fn dtmf(&mut self, digit: char) -> Option<Outgoing> {
        match self.cfg.protocol {
            Protocol::Botstream => None,
            Protocol::Twilio => Some(Outgoing::Text(
                json!({
                    "event": "dtmf",
                    "sequenceNumber": self.next_seq(),
                    "streamSid": self.stream_sid(),
                    "dtmf": {"track": "inbound_track", "digit": digit.to_string()},
                })
                .to_string(),
            )),
        }
    }

    /// The last message before the switch closes the socket (Twilio's `stop`).
    pub fn stop(&mut self) -> Option<Outgoing> {
        match self.cfg.protocol {
            Protocol::Botstream => None,
            Protocol::Twilio => {
                let seq = self.next_seq();
                let start = &self.cfg.first;
                let stop = json!({
                    "event": "stop",
                    "sequenceNumber": seq,
                    "streamSid": self.stream_sid(),
                    "stop": {"accountSid": start.get("accountSid"), "callSid": start.get("callSid")},
                });
                Some(Outgoing::Text(stop.to_string()))
            }
        }
    }

    /// A text frame from the app in Twilio's protocol (its binary frames are ignored).
    pub fn from_app_text(&self, text: &str) -> Option<FromApp> {
        match self.cfg.protocol {
            Protocol::Botstream => crate::ws::parse_control(text),
            Protocol::Twilio => parse_twilio(text),
        }
    }

    /// Binary frames are audio in our protocol and nothing in Twilio's.
    pub fn takes_binary(&self) -> bool {
        self.cfg.protocol == Protocol::Botstream
    }

    /// The socket closed or failed: over, or (with `resume_secs`, after a failure) reconnecting.
    /// `code` 0 is a normal close by the app, which is never resumed.
    pub fn closed(&mut self, now: Instant, reason: String, code: u16) -> AfterClose {
        let resumable = code != 0 && self.cfg.resume_secs > 0;
        match &mut self.link {
            Link::Up if resumable => {
                // What was written in the last 2 s may not have reached the app.
                let behind = KEEP_BEHIND.as_millis() as u64 / FRAME_MS;
                self.link = Link::Down {
                    failed_at: now,
                    unsure_from: self.frames.saturating_sub(behind),
                    deadline: now + Duration::from_secs(self.cfg.resume_secs as u64),
                    next_try: Some(now),
                    backoff: BACKOFF_FIRST,
                    last: (reason, code),
                };
                AfterClose::Reconnecting
            }
            Link::Down {
                deadline,
                next_try,
                backoff,
                last,
                ..
            } if resumable => {
                *last = (reason, code);
                if now >= *deadline {
                    let (reason, code) = last.clone();
                    return AfterClose::Stopped {
                        reason: format!("gave up reconnecting: {reason}"),
                        code,
                    };
                }
                *next_try = Some((now + *backoff).min(*deadline));
                *backoff = (*backoff * 2).min(BACKOFF_MAX);
                AfterClose::Reconnecting
            }
            _ => AfterClose::Stopped { reason, code },
        }
    }

    /// When to try reconnecting next, while down.
    pub fn next_try(&self) -> Option<Instant> {
        match &self.link {
            Link::Down { next_try, .. } => *next_try,
            _ => None,
        }
    }

    /// A reconnect attempt starts (its result comes back through [`Self::connected`] or
    /// [`Self::closed`]).
    pub fn trying(&mut self) {
        if let Link::Down { next_try, .. } = &mut self.link {
            *next_try = None;
        }
    }
}

/// A message for the app's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Binary(Vec<u8>),
    Text(String),
}

/// Twilio's messages from the app: `media` (base64 μ-law, any length), `mark`, `clear`.
fn parse_twilio(text: &str) -> Option<FromApp> {
    let v: Value = serde_json::from_str(text).ok()?;
    match v.get("event")?.as_str()? {
        "media" => {
            let payload = v.get("media")?.get("payload")?.as_str()?;
            let ulaw = base64::engine::general_purpose::STANDARD
                .decode(payload)
                .ok()?;
            let mut pcm = Vec::with_capacity(ulaw.len());
            g711::decode(Law::Mu, &ulaw, &mut pcm);
            let mut b = Vec::with_capacity(pcm.len() * 2);
            for s in pcm {
                b.extend_from_slice(&s.to_le_bytes());
            }
            Some(FromApp::Audio(b))
        }
        "mark" => {
            let name = v.get("mark")?.get("name")?.as_str()?;
            Some(FromApp::Mark(crate::ws::bounded(name)))
        }
        "clear" => Some(FromApp::Clear),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(protocol: Protocol, resume_secs: u32) -> StreamConfig {
        let first = match protocol {
            Protocol::Botstream => json!({"call_uuid": "u"}),
            Protocol::Twilio => json!({"streamSid": "MZ1", "accountSid": "t1", "callSid": "c1"}),
        };
        StreamConfig {
            url: "wss://x".into(),
            protocol,
            sample_rate: 8000,
            resume_secs,
            first: first.as_object().unwrap().clone(),
        }
    }

    fn text(o: Outgoing) -> Value {
        match o {
            Outgoing::Text(t) => serde_json::from_str(&t).unwrap(),
            Outgoing::Binary(_) => panic!("binary"),
        }
    }

    #[test]
    fn twilio_messages_in_order_with_sequence_numbers() {
        let mut s = AppStream::new(cfg(Protocol::Twilio, 0));
        let t0 = Instant::now();
        assert!(
            s.caller_frame(&[0i16; 160], 8000).is_none(),
            "nothing before the socket is up"
        );
        let open = s.opening_frames(t0);
        let connected: Value = serde_json::from_str(&open[0]).unwrap();
        assert_eq!(
            connected,
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        );
        let start: Value = serde_json::from_str(&open[1]).unwrap();
        assert_eq!(start["sequenceNumber"], "1");
        assert_eq!(start["streamSid"], "MZ1");
        assert_eq!(start["start"]["callSid"], "c1");
        s.connected(t0);
        let m = text(s.caller_frame(&[0i16; 160], 8000).unwrap());
        assert_eq!(m["sequenceNumber"], "2");
        assert_eq!(m["media"]["chunk"], "1");
        assert_eq!(m["media"]["timestamp"], "0");
        assert_eq!(m["media"]["track"], "inbound");
        let ulaw = base64::engine::general_purpose::STANDARD
            .decode(m["media"]["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(ulaw.len(), 160);
        let m = text(s.caller_frame(&[0i16; 160], 8000).unwrap());
        assert_eq!(m["media"]["chunk"], "2");
        assert_eq!(m["media"]["timestamp"], "20");
        let d = text(s.dtmf('5').unwrap());
        assert_eq!(d["dtmf"], json!({"track": "inbound_track", "digit": "5"}));
        assert_eq!(d["sequenceNumber"], "4");
        let c = s.cleared(&Cleared {
            played_ms: 100,
            dropped_ms: 20,
            marks: vec!["a".into()],
        });
        assert_eq!(text(c[0].clone())["mark"]["name"], "a");
        let stop = text(s.stop().unwrap());
        assert_eq!(stop["event"], "stop");
        assert_eq!(stop["stop"]["callSid"], "c1");
    }

    #[test]
    fn twilio_messages_from_the_app() {
        let s = AppStream::new(cfg(Protocol::Twilio, 0));
        let payload = base64::engine::general_purpose::STANDARD.encode([0xffu8; 80]);
        let m =
            format!(r#"{{"event":"media","streamSid":"MZ1","media":{{"payload":"{payload}"}}}}"#);
        assert!(matches!(s.from_app_text(&m), Some(FromApp::Audio(b)) if b.len() == 160));
        assert!(matches!(
            s.from_app_text(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m1"}}"#),
            Some(FromApp::Mark(n)) if n == "m1"
        ));
        assert!(matches!(
            s.from_app_text(r#"{"event":"clear","streamSid":"MZ1"}"#),
            Some(FromApp::Clear)
        ));
        assert!(s.from_app_text(r#"{"event":"media"}"#).is_none());
        assert!(!s.takes_binary());
    }

    #[test]
    fn a_failed_socket_is_resumed_with_a_replay_of_the_last_two_seconds() {
        let mut s = AppStream::new(cfg(Protocol::Botstream, 5));
        let t0 = Instant::now();
        s.opening_frames(t0);
        s.connected(t0);
        for _ in 0..250 {
            assert!(s.caller_frame(&[1i16; 160], 8000).is_some());
        }
        // 5 s of audio went out; the socket fails.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            s.closed(t1, "socket error".into(), 1006),
            AfterClose::Reconnecting
        );
        assert_eq!(s.next_try(), Some(t1));
        s.trying();
        for _ in 0..25 {
            assert!(
                s.caller_frame(&[2i16; 160], 8000).is_none(),
                "kept while down"
            );
        }
        // The first try fails; the next waits 100 ms, then 200 ms.
        let t2 = t1 + Duration::from_millis(300);
        assert_eq!(
            s.closed(t2, "refused".into(), 1006),
            AfterClose::Reconnecting
        );
        assert_eq!(s.next_try(), Some(t2 + Duration::from_millis(100)));
        let t3 = t2 + Duration::from_millis(200);
        let first: Value = serde_json::from_str(&s.opening_frames(t3)[0]).unwrap();
        assert_eq!(first["resumed"], true);
        assert_eq!(first["gap_ms"], 500);
        // Frames from 3 s on (5 s - 2 s) may have been lost in flight: replayed.
        assert_eq!(first["replay_from_ms"], 3000);
        let (gap, replay) = s.connected(t3).unwrap();
        assert_eq!(gap, 500);
        assert_eq!(
            replay.len(),
            100 + 25,
            "2 s before the failure, then the gap"
        );
        assert!(s.caller_frame(&[3i16; 160], 8000).is_some(), "then live");
    }

    #[test]
    fn a_normal_close_or_a_stream_without_resume_stops() {
        let mut s = AppStream::new(cfg(Protocol::Botstream, 5));
        let t0 = Instant::now();
        s.connected(t0);
        assert_eq!(
            s.closed(t0, "closed by the app".into(), 0),
            AfterClose::Stopped {
                reason: "closed by the app".into(),
                code: 0
            }
        );
        let mut s = AppStream::new(cfg(Protocol::Botstream, 0));
        s.connected(t0);
        assert!(matches!(
            s.closed(t0, "x".into(), 1006),
            AfterClose::Stopped { code: 1006, .. }
        ));
    }

    #[test]
    fn reconnecting_gives_up_at_resume_secs() {
        let mut s = AppStream::new(cfg(Protocol::Botstream, 1));
        let t0 = Instant::now();
        s.connected(t0);
        s.closed(t0, "a".into(), 1006);
        let after = t0 + Duration::from_millis(1100);
        assert_eq!(
            s.closed(after, "refused".into(), 1011),
            AfterClose::Stopped {
                reason: "gave up reconnecting: refused".into(),
                code: 1011
            }
        );
    }
}
