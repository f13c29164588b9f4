//! One call leg: what it is, the events it publishes, and how it ends.
//!
//! A leg ends in two steps. [`end`] stops its media and timers, lets go of its joins (hanging up
//! what depends on it) and waits for the media's last words; [`finalize`] then publishes
//! `hangup` and `call_quality` (api.md §4 order: … `stream_stopped`, `cpa_done` → `hangup` →
//! `call_quality`) and hands the leg back to the shell.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sip_core::auth::Authenticator;
use sip_core::dialog::Dialog;
use sip_core::sdp;
use sip_core::session_timer::Session;
use sip_core::{Peer, TxId};

use super::{dial, dialog, joins, CallTimer, EventTarget, LegId, MediaInput, Output, Switchboard};
use crate::cause::HangupCause;
use crate::error::{ApiError, StatusCode};
use crate::events::{fields, Hangup};

/// How long a hangup waits for the media's statistics and CPA's `cpa_done`.
const TEARDOWN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Outbound,
    Inbound,
    /// The agent leg of `request_bridge_call`.
    Bridge,
}

impl Direction {
    pub(super) fn name(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Bridge => "bridge",
        }
    }
}

pub(super) enum LegState {
    Dialing(Box<dial::Dialing>),
    Confirmed,
    Ending(Box<Ending>),
}

pub(super) struct Ending {
    pub hangup: Hangup,
    pub at: Instant,
    pub media_done: bool,
    pub report: Option<media::leg::Report>,
}

/// The leg's media as SDP settled it.
pub(super) struct MediaState {
    pub port: u16,
    pub session_id: u64,
    /// Our SDP's `o=` version: raised whenever our description changes (RFC 3264 §8).
    pub version: u64,
    pub remote: Option<sdp::MediaDescription>,
    pub codec: Option<sdp::Codec>,
    /// The far end holds the call (it sent `a=sendonly` or `inactive`).
    pub held: bool,
    /// Media flowed (the leg was connected), so `call_quality` follows its hangup.
    pub connected: bool,
    /// Our `a=crypto` lines: those offered, then the one in force. Empty: plain RTP.
    pub crypto: Vec<sip_core::sdp::Crypto>,
    /// What our offers list: `absolute_codec_string` (api.md §7), then the codec in force.
    pub offer: Vec<sdp::Codec>,
}

/// What an API request waiting on the media was, to word its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MediaReq {
    /// With the protocol asked for, for `stream_started`.
    StartStream(&'static str),
    StopStream,
    StopPlay,
    /// With the file's path, for the reply.
    StartRecord(String),
    StopRecord,
}

/// A leg's part in a bridge (api.md §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BridgeRole {
    None,
    /// The original call, with its agent leg.
    Call {
        agent: LegId,
    },
    /// The agent leg of `call`.
    Agent {
        call: LegId,
        stop_stream: bool,
    },
}

/// `request_transfer_call` in progress (api.md §3.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transfer {
    /// The REFER is out.
    Referring,
    /// 202: waiting for a NOTIFY with the final status.
    Accepted,
    /// The NOTIFY said 2xx: the call ends BLIND_TRANSFER.
    Done,
}

pub(super) struct Leg {
    pub id: LegId,
    pub uuid: String,
    pub direction: Direction,
    pub target: EventTarget,
    pub vars: BTreeMap<String, String>,
    pub from_number: String,
    pub to_number: String,
    pub started: Instant,
    pub answered: Option<Instant>,
    pub state: LegState,
    /// Once answered (or, outbound, from the 2xx).
    pub dialog: Option<Dialog>,
    pub call_id: String,
    pub local_tag: String,
    /// An inbound call's INVITE server transaction (CANCEL matches it).
    pub invite_tx: Option<TxId>,
    pub gateway: Option<Arc<gateway::GatewayConfig>>,
    /// Where the INVITE went: a challenge is trusted from there (or for the gateway's realm).
    pub next_hop: Option<Peer>,
    pub auth: Authenticator,
    pub media: MediaState,
    pub timers: HashMap<CallTimer, Instant>,
    pub session: Option<Session>,
    /// The far end listed UPDATE in Allow: session refreshes use it instead of re-INVITE.
    pub peer_allows_update: bool,
    /// Our re-INVITE or UPDATE in flight (its CSeq, for the ACK).
    pub refreshing: Option<(u64, u32)>,
    pub transfer: Option<Transfer>,
    pub streaming: bool,
    /// The protocol of the stream being opened or up, for `stream_*` events.
    pub stream_protocol: &'static str,
    pub pending: HashMap<u64, MediaReq>,
    /// CPA tapping this leg: its events go to `Some(subject)`; `cpa_running` until its task ends.
    pub cpa_subject: Option<String>,
    pub cpa_running: bool,
    pub max_call: Option<Duration>,
    pub record: bool,
    pub cpa: Option<crate::request::SetCpaParams>,
    pub bridge: BridgeRole,
    /// An agent leg's events name the call it was dialled for (api.md §3.8).
    pub bridged_call_uuid: Option<String>,
    /// The transfer target while a REFER is out (sent again after a challenge).
    pub refer_to: Option<String>,
    /// The ACK of an answered outbound leg, sent again for a retransmitted 2xx.
    pub ack: Option<sip_core::msg::Request>,
}

impl Leg {
    /// The far end's tag matches the dialog's (both absent for an RFC 2543 peer).
    pub(super) fn remote_tag_matches(&self, from_tag: Option<&str>) -> bool {
        match (&self.state, &self.dialog) {
            (LegState::Dialing(_), _) | (_, None) => false,
            (_, Some(d)) => d.remote_tag().as_deref() == from_tag,
        }
    }

    pub(super) fn is_confirmed(&self) -> bool {
        matches!(self.state, LegState::Confirmed)
    }

    pub(super) fn is_ending(&self) -> bool {
        matches!(self.state, LegState::Ending(_))
    }

    /// The fields every event of this leg carries (api.md §4), `timestamp` aside.
    fn envelope(&self, mut data: Map<String, Value>) -> Map<String, Value> {
        data.insert("call_uuid".into(), Value::from(self.uuid.clone()));
        data.insert(
            "tenant_id".into(),
            Value::from(self.target.tenant_id.clone()),
        );
        if let Some(p) = &self.target.call_params {
            data.insert("call_params".into(), Value::Object(p.clone()));
        }
        if let Some(call) = &self.bridged_call_uuid {
            data.insert("bridged_call_uuid".into(), Value::from(call.clone()));
        }
        data
    }

    /// `request_get_call`'s `call`.
    pub(super) fn info(&self, now: Instant, pod: &str, sb: &Switchboard) -> Value {
        let state = match &self.state {
            LegState::Dialing(d) if d.ringing => "ringing",
            LegState::Dialing(_) => "dialing",
            LegState::Confirmed if self.media.held => "held",
            LegState::Confirmed => "answered",
            LegState::Ending(_) => "ending",
        };
        let mut v = serde_json::json!({
            "call_uuid": self.uuid,
            "state": state,
            "direction": self.direction.name(),
            "tenant_id": self.target.tenant_id,
            "dialer_pod_id": pod,
            "duration_ms": now.duration_since(self.started).as_millis() as u64,
            "answered": self.answered.is_some(),
            "billsec": self.answered.map(|a| now.duration_since(a).as_secs()).unwrap_or(0),
            "from_number": self.from_number,
            "to_number": self.to_number,
            "stream": self.streaming,
            "codec": self.media.codec.map(|c| c.name()),
        });
        let uuid_of = |id: &LegId| sb.legs.get(id).map(|l| l.uuid.clone());
        match self.bridge {
            BridgeRole::Call { agent } => v["bridge_call_uuid"] = uuid_of(&agent).into(),
            BridgeRole::Agent { call, .. } => v["bridged_call_uuid"] = uuid_of(&call).into(),
            BridgeRole::None => {}
        }
        if let Some(s) = &self.session {
            v["session_expires"] = s.interval.into();
        }
        v
    }
}

/// Publishes an event of `leg` to its subject.
pub(super) fn publish(
    sb: &mut Switchboard,
    leg: LegId,
    name: &'static str,
    data: Map<String, Value>,
) {
    let Some(l) = sb.legs.get(&leg) else {
        return;
    };
    let subject = l.target.subject.clone();
    publish_to(sb, leg, subject, name, data);
}

fn publish_to(
    sb: &mut Switchboard,
    leg: LegId,
    subject: String,
    name: &'static str,
    data: Map<String, Value>,
) {
    let Some(l) = sb.legs.get(&leg) else {
        return;
    };
    tracing::info!(call_uuid = %l.uuid, event = name, "event");
    let data = l.envelope(data);
    sb.out.push_back(Output::Publish {
        subject,
        name,
        data,
    });
}

/// The leg is over for SIP: stop its timers and media, let its joins go, and wait (bounded) for
/// the media's statistics before [`finalize`].
pub(super) fn end(sb: &mut Switchboard, now: Instant, leg: LegId, hangup: Hangup) {
    let Some(l) = sb.legs.get_mut(&leg) else {
        return;
    };
    if l.is_ending() {
        return;
    }
    tracing::info!(call_uuid = %l.uuid, cause = hangup.cause.name(), disposition = hangup.disposition, "hangup");
    l.state = LegState::Ending(Box::new(Ending {
        hangup,
        at: now,
        media_done: false,
        report: None,
    }));
    let timers: Vec<CallTimer> = l.timers.keys().copied().collect();
    for t in timers {
        sb.clear_timer(leg, t);
    }
    sb.media(leg, media::leg::Command::Stop);
    sb.set_timer(leg, CallTimer::Teardown, now + TEARDOWN);
    joins::leg_ended(sb, now, leg);
}

/// Publishes `hangup` (and `call_quality`) once the media said its last, and hands the leg back.
pub(super) fn finalize(sb: &mut Switchboard, leg: LegId) {
    let Some(l) = sb.legs.get(&leg) else {
        return;
    };
    let LegState::Ending(e) = &l.state else {
        return;
    };
    let duration_ms = e.at.duration_since(l.started).as_millis() as u64;
    let billsec = l
        .answered
        .map(|a| e.at.duration_since(a).as_secs())
        .unwrap_or(0);
    let mut hangup = e.hangup.fields(duration_ms, billsec);
    if l.direction == Direction::Bridge {
        hangup.insert("outcome".into(), Value::from(outcome(l, &e.hangup)));
    }
    let quality = match (&e.report, l.media.connected) {
        (Some(r), true) => Some(quality_fields(r)),
        _ => None,
    };
    let (cause, uuid, direction, call_id) = (
        e.hangup.cause,
        l.uuid.clone(),
        l.direction.name(),
        l.call_id.clone(),
    );
    let local_tag = l.local_tag.clone();
    let pending: Vec<u64> = l.pending.keys().copied().collect();
    publish(sb, leg, "hangup", hangup);
    if let Some(q) = quality {
        publish(sb, leg, "call_quality", q);
    }
    for req in pending {
        sb.reply(
            Some(super::ReqId(req)),
            Err(ApiError::new(
                StatusCode::CallEnded,
                format!("call {uuid} has ended"),
            )),
        );
    }
    let timers: Vec<CallTimer> = sb.legs[&leg].timers.keys().copied().collect();
    for t in timers {
        sb.clear_timer(leg, t);
    }
    sb.legs.remove(&leg);
    sb.by_uuid.remove(&uuid);
    sb.dialogs.remove(&(call_id.clone(), local_tag));
    if sb.call_ids.get(&call_id) == Some(&leg) {
        sb.call_ids.remove(&call_id);
    }
    sb.clients.retain(|_, (l, _)| *l != leg);
    sb.out.push_back(Output::LegEnded {
        leg,
        uuid,
        direction,
        cause,
        started: true,
    });
}

/// The seed's termination-attempt outcome of an agent leg (`../seeds/004`): how the attempt ended.
fn outcome(l: &Leg, h: &Hangup) -> &'static str {
    if l.answered.is_some() {
        return "Answered";
    }
    if h.cause == HangupCause::ORIGINATOR_CANCEL {
        return "Abandoned";
    }
    match h.cause.class() {
        "NOANSWER" | "TIMEOUT" if h.cause != HangupCause::RECOVERY_ON_TIMER_EXPIRE => "No Answer",
        "UNOBTAINABLE" | "OUTOFORDER" | "CHANGED" => "No Route",
        _ if h.cause == HangupCause::RECOVERY_ON_TIMER_EXPIRE => "No Route",
        _ => "Declined",
    }
}

fn quality_fields(r: &media::leg::Report) -> Map<String, Value> {
    let q = media::quality::estimate(r.packets_expected, r.packets_lost, r.jitter_ms, r.rtt_ms);
    let mut f = fields([
        ("mos", Value::from(media::quality::format2(q.mos))),
        ("quality", Value::from(media::quality::format2(q.quality))),
        ("packets_received", Value::from(r.packets_received)),
        ("packets_lost", Value::from(r.packets_lost)),
        (
            "jitter_ms",
            Value::from((r.jitter_ms * 100.0).round() / 100.0),
        ),
    ]);
    f.insert(
        "rtt_ms".into(),
        r.rtt_ms
            .map(|v| Value::from((v * 100.0).round() / 100.0))
            .unwrap_or(Value::Null),
    );
    f
}

/// Finalizes once the media stopped and CPA (if any) said `cpa_done`.
fn maybe_finalize(sb: &mut Switchboard, leg: LegId) {
    let ready = sb.legs.get(&leg).is_some_and(|l| match &l.state {
        LegState::Ending(e) => e.media_done && !l.cpa_running,
        _ => false,
    });
    if ready {
        finalize(sb, leg);
    }
}

pub(super) fn media_input(sb: &mut Switchboard, now: Instant, leg: LegId, input: MediaInput) {
    use media::leg::Event as E;
    match input {
        MediaInput::Leg(E::Dtmf { digit, source }) => dtmf(sb, leg, digit, source),
        MediaInput::InbandDtmf(digit) => dtmf(sb, leg, digit, "inband"),
        MediaInput::Leg(E::StreamStarted) => {
            let Some(l) = sb.legs.get_mut(&leg) else {
                return;
            };
            l.streaming = true;
            let protocol = l.stream_protocol;
            let f = fields([("protocol", Value::from(protocol))]);
            publish(sb, leg, "stream_started", f);
        }
        MediaInput::Leg(E::StreamStopped { reason, code }) => {
            let Some(l) = sb.legs.get_mut(&leg) else {
                return;
            };
            l.streaming = false;
            let protocol = l.stream_protocol;
            let f = fields([
                ("reason", Value::from(reason)),
                ("reason_code", Value::from(code)),
                ("protocol", Value::from(protocol)),
            ]);
            publish(sb, leg, "stream_stopped", f);
        }
        MediaInput::Leg(E::StreamResumed { gap_ms }) => {
            let f = fields([("gap_ms", Value::from(gap_ms))]);
            publish(sb, leg, "stream_resumed", f);
        }
        MediaInput::Leg(E::PlayMark { name }) => {
            publish(sb, leg, "play_mark", fields([("name", Value::from(name))]))
        }
        MediaInput::Leg(E::Error { status }) => error_event(sb, leg, status, 0),
        MediaInput::Leg(E::RecordStopped { path, duration_ms }) => publish(
            sb,
            leg,
            "record_stopped",
            fields([
                ("path", Value::from(path.display().to_string())),
                ("duration_ms", Value::from(duration_ms)),
            ]),
        ),
        MediaInput::Leg(E::MediaTimeout) => {
            dialog::hang_up(sb, now, leg, HangupCause::MEDIA_TIMEOUT, Some("no RTP"))
        }
        MediaInput::Leg(E::Done { req, result }) => media_done(sb, leg, req, result),
        MediaInput::Leg(E::Stopped(report)) => {
            let failed = report.is_none();
            if let Some(l) = sb.legs.get_mut(&leg) {
                if let LegState::Ending(e) = &mut l.state {
                    e.media_done = true;
                    e.report = report;
                }
            }
            if failed {
                // The media task died under a live call: the call cannot go on without it.
                dialog::hang_up(
                    sb,
                    now,
                    leg,
                    HangupCause::NORMAL_TEMPORARY_FAILURE,
                    Some("media failed"),
                );
                if let Some(LegState::Ending(e)) = sb.legs.get_mut(&leg).map(|l| &mut l.state) {
                    e.media_done = true;
                }
            }
            maybe_finalize(sb, leg);
        }
        MediaInput::Cpa(o) => {
            let (name, data) = crate::cpa_run::output_fields(o);
            let Some(l) = sb.legs.get(&leg) else { return };
            let subject = l
                .cpa_subject
                .clone()
                .unwrap_or_else(|| l.target.subject.clone());
            publish_to(sb, leg, subject, name, data);
        }
        MediaInput::CpaEnded => {
            if let Some(l) = sb.legs.get_mut(&leg) {
                l.cpa_running = false;
            }
            maybe_finalize(sb, leg);
        }
    }
}

/// A key press: reported to the app (on its stream too, for protocols that carry them), and
/// played to the other side of a bridge (RFC 4733).
pub(super) fn dtmf(sb: &mut Switchboard, leg: LegId, digit: char, source: &'static str) {
    if sb.legs.get(&leg).is_some_and(|l| l.streaming) {
        sb.media(leg, media::leg::Command::StreamDtmf { digit });
    }
    publish(
        sb,
        leg,
        "dtmf",
        fields([
            ("digit", Value::from(digit.to_string())),
            ("source", Value::from(source)),
        ]),
    );
    if let Some(other) = joins::bridged_to(sb, leg) {
        let te = sb
            .legs
            .get(&other)
            .and_then(|o| o.media.remote.as_ref())
            .and_then(|r| r.dtmf());
        if te.is_some() {
            sb.media(
                other,
                media::leg::Command::SendDtmf {
                    digits: digit.to_string(),
                    duration_ms: 100,
                },
            );
        }
    }
}

/// api.md §4 `error`.
pub(super) fn error_event(sb: &mut Switchboard, leg: LegId, status: String, code: u16) {
    publish(
        sb,
        leg,
        "error",
        fields([
            ("status", Value::from(status)),
            ("status_code", Value::from(code)),
        ]),
    );
}

/// The media's answer to an API request.
fn media_done(
    sb: &mut Switchboard,
    leg: LegId,
    req: u64,
    result: Result<Option<media::stream::Cleared>, String>,
) {
    let Some(kind) = sb.legs.get_mut(&leg).and_then(|l| l.pending.remove(&req)) else {
        return;
    };
    let reply = match (kind, result) {
        (MediaReq::StartRecord(path), Ok(_)) => Ok(fields([("path", Value::from(path))])),
        // api.md §3.7: what the caller heard of the interrupted audio, and what was dropped.
        (MediaReq::StopPlay, Ok(Some(c))) => Ok(fields([
            ("played_ms", Value::from(c.played_ms)),
            ("dropped_ms", Value::from(c.dropped_ms)),
        ])),
        (_, Ok(_)) => Ok(Map::new()),
        (MediaReq::StartStream(_), Err(e)) if e == media::leg::ALREADY_STREAMING => {
            Err(ApiError::new(StatusCode::AlreadyStreaming, e))
        }
        (MediaReq::StartStream(_), Err(e)) => Err(ApiError::new(StatusCode::StreamInitFailed, e)),
        (MediaReq::StopPlay, Err(e)) => Err(ApiError::new(StatusCode::StopPlayFailed, e)),
        (MediaReq::StopStream | MediaReq::StartRecord(_) | MediaReq::StopRecord, Err(e)) => {
            Err(ApiError::new(StatusCode::InvalidRequest, e))
        }
    };
    sb.reply(Some(super::ReqId(req)), reply);
}
