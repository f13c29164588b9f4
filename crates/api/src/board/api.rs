//! The API's call requests as the board carries them out: each gets exactly one
//! [`Output::Reply`], at once or when the media answers.

use std::time::Instant;

use serde_json::{Map, Value};
use sip_core::msg::Uri;

use super::leg::{BridgeRole, MediaReq};
use super::{
    dial, dialog, joins, Bridge, Command, Destination, Dial, Join, LegId, MediaRequest, Output,
    ReqId, Switchboard,
};
use crate::cause::HangupCause;
use crate::error::{ApiError, StatusCode};
use crate::events::fields;
use crate::request::SnoopMode;

type Reply = Result<Map<String, Value>, ApiError>;

fn ended(uuid: &str) -> ApiError {
    ApiError::new(StatusCode::CallEnded, format!("call {uuid} has ended"))
}

fn not_answered(uuid: &str) -> ApiError {
    ApiError::invalid(format!("call {uuid} is not answered"))
}

pub(super) fn command(sb: &mut Switchboard, now: Instant, req: Option<ReqId>, cmd: Command) {
    match cmd {
        Command::Dial { dial, bridge: None } => {
            let uuid = dial.uuid.clone();
            dial::start(sb, now, *dial, None);
            let reply = fields([
                ("call_uuid", Value::from(uuid)),
                ("dialer_pod_id", Value::from(sb.cfg.pod_id.clone())),
            ]);
            sb.reply(req, Ok(reply));
        }
        Command::Dial {
            dial,
            bridge: Some(b),
        } => {
            let r = bridge(sb, now, *dial, b);
            sb.reply(req, r);
        }
        Command::Inbound(inb) => dialog::accept_inbound(sb, now, req, *inb),
        Command::Drop { uuid, cause } => {
            let r = live(sb, &uuid).map(|leg| {
                dialog::hang_up(sb, now, leg, cause, None);
                Map::new()
            });
            sb.reply(req, r);
        }
        Command::SetVars { uuid, vars } => {
            let r = live(sb, &uuid).map(|leg| {
                if let Some(l) = sb.legs.get_mut(&leg) {
                    l.vars.extend(vars);
                }
                Map::new()
            });
            sb.reply(req, r);
        }
        Command::GetCall { uuid } => {
            let r = match sb.leg_of(&uuid) {
                Some(leg) => {
                    let info = sb.legs[&leg].info(now, &sb.cfg.pod_id, sb);
                    Ok(fields([("call", info)]))
                }
                None => Err(ended(&uuid)),
            };
            sb.reply(req, r);
        }
        Command::Media { uuid, request } => media_request(sb, req, &uuid, request),
        Command::Transfer { uuid, destination } => {
            let r = transfer(sb, now, &uuid, destination);
            sb.reply(req, r);
        }
        Command::Snoop {
            target,
            listener,
            mode,
        } => {
            let r = snoop(sb, &target, &listener, mode);
            sb.reply(req, r);
        }
        Command::Shutdown => {
            sb.shutting_down = true;
            let legs: Vec<LegId> = sb.legs.keys().copied().collect();
            for leg in legs {
                dialog::hang_up(sb, now, leg, HangupCause::SYSTEM_SHUTDOWN, None);
            }
            sb.reply(req, Ok(Map::new()));
        }
    }
}

/// A leg that is not ending.
fn live(sb: &Switchboard, uuid: &str) -> Result<LegId, ApiError> {
    sb.leg_of(uuid)
        .filter(|id| !sb.legs[id].is_ending())
        .ok_or_else(|| ended(uuid))
}

/// An answered leg.
fn answered(sb: &Switchboard, uuid: &str) -> Result<LegId, ApiError> {
    let leg = live(sb, uuid)?;
    if sb.legs[&leg].is_confirmed() {
        Ok(leg)
    } else {
        Err(not_answered(uuid))
    }
}

/// `request_bridge_call` (api.md §3.8): the agent leg is dialled now; it joins the call when it
/// answers.
fn bridge(sb: &mut Switchboard, now: Instant, d: Dial, b: Bridge) -> Reply {
    let call = match answered(sb, &b.call_uuid) {
        Ok(c) if sb.legs[&c].bridge != BridgeRole::None => Err(ApiError::invalid(format!(
            "call {} is already bridged",
            b.call_uuid
        ))),
        other => other,
    };
    let call = match call {
        Ok(c) => c,
        Err(e) => {
            sb.out.push_back(Output::LegEnded {
                leg: d.leg,
                uuid: d.uuid.clone(),
                direction: "bridge",
                cause: HangupCause::NORMAL_CLEARING,
                started: false,
            });
            return Err(e);
        }
    };
    let mut d = d;
    d.target = sb.legs[&call].target.clone();
    let (leg, uuid) = (d.leg, d.uuid.clone());
    dial::start(sb, now, d, Some((call, b.call_uuid.clone(), b.stop_stream)));
    if let Some(c) = sb.legs.get_mut(&call) {
        c.bridge = BridgeRole::Call { agent: leg };
    }
    // The agent leg may have failed at once (gateway down): the call is then let go of it.
    if sb.legs.get(&leg).is_none_or(|l| l.is_ending()) {
        if let Some(c) = sb.legs.get_mut(&call) {
            if c.bridge == (BridgeRole::Call { agent: leg }) {
                c.bridge = BridgeRole::None;
            }
        }
    }
    Ok(fields([("bridge_call_uuid", Value::from(uuid))]))
}

fn media_request(sb: &mut Switchboard, req: Option<ReqId>, uuid: &str, request: MediaRequest) {
    use media::leg::Command as C;
    let leg = match live(sb, uuid) {
        Ok(l) => l,
        Err(e) => return sb.reply(req, Err(e)),
    };
    let l = &sb.legs[&leg];
    if !l.is_confirmed() {
        let e = ApiError::new(StatusCode::StreamInitFailed, "the call is not answered yet");
        return sb.reply(req, Err(e));
    }
    let Some(ReqId(id)) = req else { return };
    let (kind, command) = match request {
        MediaRequest::StartStream(s) => {
            let config = stream_config(l, &s);
            let command = C::StartStream {
                req: id,
                config: Box::new(config),
            };
            (MediaReq::StartStream(s.protocol.name()), command)
        }
        MediaRequest::StopStream => (
            MediaReq::StopStream,
            C::StopStream {
                req: Some(id),
                reason: "stop_stream".into(),
            },
        ),
        MediaRequest::StopPlay => (MediaReq::StopPlay, C::StopPlay { req: id }),
        MediaRequest::StartRecord { path } => (
            MediaReq::StartRecord(path.display().to_string()),
            C::StartRecord {
                req: Some(id),
                path,
            },
        ),
        MediaRequest::StopRecord => (MediaReq::StopRecord, C::StopRecord { req: id }),
        MediaRequest::SendDtmf {
            digits,
            duration_ms,
        } => {
            let r = if l.media.remote.as_ref().and_then(|r| r.dtmf()).is_none() {
                Err(ApiError::invalid(
                    "the far end did not offer telephone-event",
                ))
            } else {
                sb.media(
                    leg,
                    C::SendDtmf {
                        digits,
                        duration_ms,
                    },
                );
                Ok(Map::new())
            };
            return sb.reply(req, r);
        }
    };
    let l = sb.legs.get_mut(&leg).expect("leg");
    if let MediaReq::StartStream(protocol) = kind {
        if !l.streaming {
            l.stream_protocol = protocol;
        }
    }
    l.pending.insert(id, kind);
    sb.media(leg, command);
}

/// `request_transfer_call` (api.md §3.9): the REFER goes now; its outcome comes as events.
fn transfer(sb: &mut Switchboard, now: Instant, uuid: &str, dest: Destination) -> Reply {
    let leg = answered(sb, uuid)?;
    let l = &sb.legs[&leg];
    if l.transfer.is_some() {
        return Err(ApiError::invalid(format!(
            "call {uuid} is already being transferred"
        )));
    }
    let uri = match dest {
        Destination::Uri(u) => u,
        Destination::Number(n) => {
            // The call's gateway domain; an inbound call from no trunk uses its caller's host.
            let domain = match &l.gateway {
                Some(g) => g.domain(),
                None => l
                    .dialog
                    .as_ref()
                    .and_then(|d| Uri::parse(&d.remote_target))
                    .map(|u| match u.port {
                        Some(p) => format!("{}:{p}", u.host),
                        None => u.host,
                    })
                    .unwrap_or_default(),
            };
            format!("sip:{n}@{domain}")
        }
    };
    dialog::send_refer(sb, now, leg, &uri);
    Ok(Map::new())
}

/// `request_snoop_on_call` (api.md §3.10).
fn snoop(sb: &mut Switchboard, target: &str, listener: &str, mode: SnoopMode) -> Reply {
    if target == listener {
        return Err(ApiError::invalid("a call cannot listen to itself"));
    }
    let t = answered(sb, target)?;
    let l = answered(sb, listener)?;
    if mode == SnoopMode::Whisper && joins::agent_of(sb, t).is_none() {
        return Err(ApiError::invalid(format!(
            "whisper needs an agent: call {target} is not bridged"
        )));
    }
    // One target per listener: a new snoop replaces the listener's previous one.
    sb.joins
        .retain(|j| !matches!(j, Join::Snoop { listener: x, .. } if *x == l));
    sb.joins.push(Join::Snoop {
        target: t,
        listener: l,
        mode,
    });
    joins::sync_links(sb);
    Ok(Map::new())
}

/// What the stream's opening message says (api.md §3.5): ours, the first frame with the call's
/// particulars; Twilio's, the `start` object a Twilio bot expects.
fn stream_config(
    l: &super::leg::Leg,
    s: &crate::request::StartStream,
) -> media::stream::StreamConfig {
    use media::stream::Protocol;
    let mut first = Map::new();
    match s.protocol {
        Protocol::Botstream => {
            first.insert("call_uuid".into(), Value::from(l.uuid.clone()));
            first.insert("tenant_id".into(), Value::from(l.target.tenant_id.clone()));
            if let Some(p) = &l.target.call_params {
                first.insert("call_params".into(), Value::Object(p.clone()));
            }
            first.insert("from_number".into(), Value::from(l.from_number.clone()));
            first.insert("to_number".into(), Value::from(l.to_number.clone()));
            first.insert("sample_rate".into(), Value::from(s.sample_rate));
            first.insert("encoding".into(), Value::from("pcm_s16le"));
            first.insert("channels".into(), Value::from(1));
            if let Some(m) = &s.metadata {
                first.insert("metadata".into(), Value::Object(m.clone()));
            }
        }
        Protocol::Twilio => {
            // customParameters: call_params merged with metadata, every value a string.
            let mut custom = Map::new();
            for (k, v) in l
                .target
                .call_params
                .iter()
                .flatten()
                .chain(s.metadata.iter().flatten())
            {
                let text = match v {
                    Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                custom.insert(k.clone(), Value::from(text));
            }
            first.insert(
                "streamSid".into(),
                Value::from(format!("MZ{}", l.uuid.replace('-', ""))),
            );
            first.insert("accountSid".into(), Value::from(l.target.tenant_id.clone()));
            first.insert("callSid".into(), Value::from(l.uuid.clone()));
            first.insert("tracks".into(), serde_json::json!(["inbound"]));
            first.insert("customParameters".into(), Value::Object(custom));
            first.insert(
                "mediaFormat".into(),
                serde_json::json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}),
            );
        }
    }
    media::stream::StreamConfig {
        url: s.url.clone(),
        protocol: s.protocol,
        sample_rate: s.sample_rate,
        resume_secs: s.resume_secs,
        first,
    }
}
