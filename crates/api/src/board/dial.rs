//! Dialing out (api.md §3.2, §3.8): the INVITE, digest challenges (chained, per realm), RFC 4028
//! negotiation, ringing, the dial timeout and CANCEL, and the answer — or the failure with its
//! cause (§5).

use std::time::Instant;

use serde_json::{Map, Value};
use sip_core::auth::Credentials;
use sip_core::dialog::{new_branch, new_call_id, new_tag, Dialog};
use sip_core::io::ClientEvent;
use sip_core::msg::{Request, Response, Uri};
use sip_core::session_timer;
use sip_core::{sdp, Peer};

use super::leg::{self, BridgeRole, Direction, Leg, LegState, MediaState};
use super::{dialog, joins, CallTimer, Dial, LegId, Output, Purpose, Switchboard, ALLOW};
use crate::cause::{self, HangupCause};
use crate::error::StatusCode;
use crate::events::{fields, Hangup};

/// Answers to challenges and 422s on one call before it is given up as refused.
const MAX_RETRIES: u32 = 4;

pub(super) struct Dialing {
    pub invite: Request,
    pub peer: Peer,
    pub tag: u64,
    pub provisional: bool,
    pub ringing: bool,
    /// Set once we gave up: the cause, and whether the CANCEL went out (it waits for a
    /// provisional response, RFC 3261 §9.1).
    pub cancel: Option<(HangupCause, bool)>,
    pub retries: u32,
    /// The Session-Expires our INVITE asks for (0: none).
    pub session_expires: u32,
}

/// `sip_h_X-Foo` channel variables become `X-Foo` headers (§3.2, §3.4).
pub(super) fn custom_headers(
    vars: &std::collections::BTreeMap<String, String>,
) -> impl Iterator<Item = (&str, &str)> {
    vars.iter()
        .filter_map(|(k, v)| k.strip_prefix("sip_h_").map(|h| (h, v.as_str())))
}

/// Creates the leg and sends its INVITE (or fails it at once: gateway down, no route).
pub(super) fn start(
    sb: &mut Switchboard,
    now: Instant,
    d: Dial,
    bridged: Option<(LegId, String, bool)>,
) {
    let call_id = new_call_id(&sb.cfg.local.host);
    let local_tag = new_tag();
    let direction = if bridged.is_some() {
        Direction::Bridge
    } else {
        Direction::Outbound
    };
    let leg = Leg {
        id: d.leg,
        uuid: d.uuid.clone(),
        direction,
        target: d.target.clone(),
        vars: d.vars.clone(),
        from_number: d.from_number.clone(),
        to_number: d.to_number.clone(),
        started: now,
        answered: None,
        state: LegState::Confirmed, // replaced below
        dialog: None,
        call_id: call_id.clone(),
        local_tag: local_tag.clone(),
        invite_tx: None,
        gateway: Some(d.gateway.clone()),
        next_hop: d.peer,
        auth: Default::default(),
        media: MediaState {
            port: d.media.port,
            session_id: d.media.session_id,
            version: 1,
            remote: None,
            codec: None,
            held: false,
            connected: false,
            crypto: Vec::new(),
            offer: Vec::new(),
        },
        timers: Default::default(),
        session: None,
        peer_allows_update: false,
        refreshing: None,
        transfer: None,
        streaming: false,
        stream_protocol: "botstream",
        pending: Default::default(),
        cpa_subject: None,
        cpa_running: false,
        max_call: d.max_call,
        record: d.record,
        cpa: d.cpa.clone(),
        bridge: match &bridged {
            Some((call, _, stop_stream)) => BridgeRole::Agent {
                call: *call,
                stop_stream: *stop_stream,
            },
            None => BridgeRole::None,
        },
        bridged_call_uuid: bridged.as_ref().map(|(_, uuid, _)| uuid.clone()),
        refer_to: None,
        ack: None,
    };
    let id = d.leg;
    let mut leg = leg;
    if super::srtp::wanted(&d.vars, Some(&d.gateway)) {
        leg.media.crypto = super::srtp::offer();
    }
    // api.md §7: the call's or the gateway's absolute_codec_string orders the offer.
    if let Some(codecs) = d
        .vars
        .get("absolute_codec_string")
        .or(d.gateway.variables.get("absolute_codec_string"))
    {
        leg.media.offer = sdp::Codec::list(codecs);
    }
    sb.legs.insert(id, leg);
    sb.by_uuid.insert(d.uuid.clone(), id);
    sb.call_ids.insert(call_id.clone(), id);
    sb.dialogs.insert((call_id.clone(), local_tag.clone()), id);
    sb.out.push_back(Output::LegStarted {
        leg: id,
        uuid: d.uuid.clone(),
        tenant_id: d.target.tenant_id.clone(),
    });
    leg::publish(sb, id, "started", Map::new());
    let peer = match (d.gateway_up, d.peer) {
        (false, _) => {
            let why = format!("gateway '{}' is DOWN", d.gateway.name);
            return fail(sb, now, id, refuse(HangupCause::GATEWAY_DOWN, why));
        }
        (true, None) => {
            let why = format!("cannot resolve {}", d.gateway.next_hop().host);
            let cause = HangupCause::from_name("DESTINATION_OUT_OF_ORDER")
                .unwrap_or(HangupCause::NORMAL_TEMPORARY_FAILURE);
            return fail(sb, now, id, refuse(cause, why));
        }
        (true, Some(p)) => p,
    };
    let session_expires = sb.cfg.session_expires;
    let invite = build_invite(sb, id, peer, 1, session_expires);
    let tag = sb.send(id, Purpose::Invite, invite.clone(), peer);
    if let Some(l) = sb.legs.get_mut(&id) {
        l.state = LegState::Dialing(Box::new(Dialing {
            invite,
            peer,
            tag,
            provisional: false,
            ringing: false,
            cancel: None,
            retries: 0,
            session_expires,
        }));
    }
    sb.set_timer(id, CallTimer::Dial, now + d.dial_timeout);
}

fn refuse(cause: HangupCause, why: String) -> Hangup {
    Hangup {
        cause,
        sip_code: None,
        sip_reason: Some(why),
        disposition: "send_refuse",
    }
}

/// Our INVITE (§3.2): the gateway's domain, caller id, custom headers, timers and SDP offer.
fn build_invite(
    sb: &mut Switchboard,
    leg: LegId,
    peer: Peer,
    cseq: u32,
    session_expires: u32,
) -> Request {
    let cfg = &sb.cfg;
    let l = &sb.legs[&leg];
    let gw = l.gateway.as_ref().expect("an outbound leg has its gateway");
    let (to, from) = (&l.to_number, &l.from_number);
    let domain = gw.domain();
    let tp = match peer.transport {
        sip_core::Transport::Udp => String::new(),
        t => format!(";transport={}", t.via_name().to_ascii_lowercase()),
    };
    let uri = format!("sip:{to}@{domain}{tp}");
    // With caller-id-in-from=false the trunk account goes in From and the caller id in
    // P-Asserted-Identity, as FreeSWITCH does.
    let from_user = if gw.caller_id_in_from {
        gw.from_user.clone().unwrap_or_else(|| from.to_string())
    } else {
        gw.from_user
            .clone()
            .or_else(|| gw.username.clone())
            .unwrap_or_else(|| from.to_string())
    };
    let from_domain = gw
        .from_domain
        .clone()
        .unwrap_or_else(|| gw.proxy.host.clone());
    let mut r = Request::new("INVITE", &uri);
    r.headers
        .push("Via", cfg.local.via(peer.transport, &new_branch()));
    r.headers.push("Max-Forwards", "70");
    r.headers.push(
        "From",
        format!(
            "\"{from}\" <sip:{from_user}@{from_domain}>;tag={}",
            l.local_tag
        ),
    );
    r.headers.push("To", format!("<sip:{to}@{domain}>"));
    r.headers.push("Call-ID", l.call_id.clone());
    r.headers.push("CSeq", format!("{cseq} INVITE"));
    r.headers
        .push("Contact", cfg.local.contact(&from_user, peer.transport));
    if !gw.caller_id_in_from {
        r.headers
            .push("P-Asserted-Identity", format!("<sip:{from}@{from_domain}>"));
    }
    r.headers.push("Allow", ALLOW);
    r.headers.push("Supported", "timer");
    if session_expires > 0 {
        r.headers
            .push("Session-Expires", session_expires.to_string());
        r.headers
            .push("Min-SE", cfg.min_se.min(session_expires).to_string());
    }
    r.headers.push("User-Agent", cfg.local.user_agent.clone());
    for (name, value) in custom_headers(&gw.variables).chain(custom_headers(&l.vars)) {
        r.headers.set(name, value);
    }
    r.headers.push("Content-Type", "application/sdp");
    r.body = sdp::offer(
        l.media.session_id,
        l.media.version,
        cfg.public_ip,
        l.media.port,
        &l.media.offer,
        &l.media.crypto,
    )
    .into_bytes();
    if !l.auth.is_empty() {
        if let (Some(u), Some(p)) = (gw.username.clone(), gw.password.clone()) {
            let cred = Credentials {
                username: &u,
                password: &p,
            };
            let l = sb.legs.get_mut(&leg).expect("leg");
            l.auth.authorize(&mut r, &cred, &new_tag());
        }
    }
    r
}

/// CANCEL for our INVITE (§9.1): same branch, Call-ID, From, To, Request-URI and CSeq number.
fn build_cancel(invite: &Request, cause: HangupCause) -> Request {
    let mut c = Request::new("CANCEL", &invite.uri);
    for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
        if let Some(v) = invite.headers.get(name) {
            c.headers.push(name, v);
        }
    }
    for r in invite.headers.get_all("Route") {
        c.headers.push("Route", r);
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    c.headers.push("CSeq", format!("{seq} CANCEL"));
    c.headers.push("Reason", cause::reason_header_value(cause));
    c
}

fn dialing(sb: &mut Switchboard, leg: LegId) -> Option<&mut Dialing> {
    match &mut sb.legs.get_mut(&leg)?.state {
        LegState::Dialing(d) => Some(d),
        _ => None,
    }
}

fn send_cancel(sb: &mut Switchboard, now: Instant, leg: LegId) {
    let Some(d) = dialing(sb, leg) else { return };
    let Some((cause, false)) = d.cancel else {
        return;
    };
    d.cancel = Some((cause, true));
    let (cancel, peer) = (build_cancel(&d.invite, cause), d.peer);
    sb.send(leg, Purpose::Fire, cancel, peer);
    // §9.1: the INVITE should end with 487; if nothing comes, 64·T1 is the limit.
    sb.set_timer(leg, CallTimer::CancelGuard, now + 64 * sb.cfg.t1);
}

/// Stops dialing with `cause` (the first reason wins): CANCEL now if a provisional response came,
/// else at the first one (or Timer B ends the INVITE).
pub(super) fn give_up(sb: &mut Switchboard, now: Instant, leg: LegId, cause: HangupCause) {
    let Some(d) = dialing(sb, leg) else { return };
    if d.cancel.is_some() {
        return;
    }
    d.cancel = Some((cause, false));
    let provisional = d.provisional;
    sb.clear_timer(leg, CallTimer::Dial);
    if provisional {
        send_cancel(sb, now, leg);
    } else {
        sb.set_timer(leg, CallTimer::CancelGuard, now + 64 * sb.cfg.t1);
    }
}

pub(super) fn timer(sb: &mut Switchboard, now: Instant, leg: LegId, timer: CallTimer) {
    match timer {
        CallTimer::Dial => {
            tracing::info!(call_uuid = %sb.legs[&leg].uuid, "dial timeout: cancelling");
            give_up(sb, now, leg, HangupCause::NO_ANSWER);
        }
        CallTimer::CancelGuard => {
            let Some(d) = dialing(sb, leg) else { return };
            let cause = d.cancel.map(|(c, _)| c).unwrap_or(HangupCause::NO_ANSWER);
            let h = Hangup {
                cause,
                sip_code: None,
                sip_reason: Some("no final response after CANCEL".into()),
                disposition: "send_cancel",
            };
            fail(sb, now, leg, h);
        }
        _ => {}
    }
}

/// Dialing ended without an answer: `originate` with the failure, then the hangup.
fn fail(sb: &mut Switchboard, now: Instant, leg: LegId, h: Hangup) {
    let status = format!(
        "{} ({})",
        h.cause.name(),
        h.sip_code.map(|c| c.to_string()).unwrap_or_default()
    );
    originate(sb, leg, &status, StatusCode::DialFailed.code());
    leg::end(sb, now, leg, h);
}

fn originate(sb: &mut Switchboard, leg: LegId, status: &str, code: u16) {
    let Some(l) = sb.legs.get(&leg) else { return };
    let gw = l
        .gateway
        .as_ref()
        .map(|g| g.name.clone())
        .unwrap_or_default();
    let f = fields([
        ("gateway", Value::from(gw)),
        ("to_number", Value::from(l.to_number.clone())),
        ("from_number", Value::from(l.from_number.clone())),
        ("event_subject", Value::from(l.target.subject.clone())),
        ("status", Value::from(status)),
        ("status_code", Value::from(code)),
    ]);
    leg::publish(sb, leg, "originate", f);
}

/// A final failure response from the carrier → cause by Reason header or status (§5).
fn refused(resp: &Response) -> Hangup {
    let reason_header = resp.headers.get_all("Reason").join(", ");
    let reason_header = (!reason_header.is_empty()).then_some(reason_header);
    Hangup {
        cause: cause::cause_for_failure(resp.code, reason_header.as_deref()),
        sip_code: Some(resp.code),
        sip_reason: Some(resp.reason.clone()),
        disposition: "recv_refuse",
    }
}

/// A response (or Timer B) for our INVITE.
pub(super) fn invite_event(
    sb: &mut Switchboard,
    now: Instant,
    leg: LegId,
    tag: u64,
    ev: ClientEvent,
) {
    let (resp, source) = match ev {
        ClientEvent::Response { response, source } => (*response, source),
        ClientEvent::Timeout => {
            let Some(d) = dialing(sb, leg).filter(|d| d.tag == tag) else {
                return;
            };
            // Timer B: nobody answered the INVITE at all (§5).
            let (cause, disposition) = match d.cancel {
                Some((c, _)) => (c, "send_cancel"),
                None => (HangupCause::RECOVERY_ON_TIMER_EXPIRE, "send_refuse"),
            };
            let h = Hangup {
                cause,
                sip_code: None,
                sip_reason: Some("no response to INVITE".into()),
                disposition,
            };
            return fail(sb, now, leg, h);
        }
    };
    let current = dialing(sb, leg).is_some_and(|d| d.tag == tag);
    if !current {
        // A 2xx retransmission for an answered call (our ACK was lost), or the answer of a
        // second fork.
        if (200..300).contains(&resp.code) {
            retransmitted_2xx(sb, leg, &resp);
        }
        return;
    }
    match resp.code {
        100..=199 => provisional(sb, now, leg, &resp),
        200..=299 => answered(sb, now, leg, resp),
        401 | 407 => challenged(sb, now, leg, resp, source),
        422 => too_small(sb, now, leg, resp),
        _ => {
            let Some(d) = dialing(sb, leg) else { return };
            let h = match d.cancel {
                Some((c, _)) => Hangup {
                    cause: c,
                    sip_code: Some(resp.code),
                    sip_reason: Some(resp.reason.clone()),
                    disposition: "send_cancel",
                },
                None => refused(&resp),
            };
            fail(sb, now, leg, h);
        }
    }
}

fn provisional(sb: &mut Switchboard, now: Instant, leg: LegId, resp: &Response) {
    let Some(d) = dialing(sb, leg) else { return };
    d.provisional = true;
    let first_ring = resp.code > 100 && !d.ringing;
    if first_ring {
        d.ringing = true;
        let early = resp.code == 183 || !resp.body.is_empty();
        leg::publish(
            sb,
            leg,
            "ringing",
            fields([("early_media", Value::from(early))]),
        );
    }
    send_cancel(sb, now, leg);
}

/// Sends the INVITE again with the next CSeq (after a challenge or a 422).
fn reinvite(sb: &mut Switchboard, leg: LegId, session_expires: u32) {
    let Some(d) = dialing(sb, leg) else { return };
    let (peer, old_tag) = (d.peer, d.tag);
    let cseq = d.invite.cseq().map(|c| c.seq).unwrap_or(1) + 1;
    let invite = build_invite(sb, leg, peer, cseq, session_expires);
    sb.clients.remove(&old_tag);
    let tag = sb.send(leg, Purpose::Invite, invite.clone(), peer);
    if let Some(d) = dialing(sb, leg) {
        d.invite = invite;
        d.tag = tag;
        d.provisional = false;
        d.retries += 1;
        d.session_expires = session_expires;
    }
}

/// 401/407 (RFC 3261 §22.2, §22.3): answered with every credential so far, for the gateway's
/// realm only — or, when it names none, only when the challenge comes from where the INVITE went.
fn challenged(sb: &mut Switchboard, now: Instant, leg: LegId, resp: Response, source: Peer) {
    let Some(d) = dialing(sb, leg) else { return };
    let (cancelled, retries, peer, se) = (d.cancel.is_some(), d.retries, d.peer, d.session_expires);
    let l = sb.legs.get_mut(&leg).expect("leg");
    let gw = l.gateway.clone().expect("gateway");
    let mut h = refused(&resp);
    let no_answer = cancelled || retries >= MAX_RETRIES;
    let answer = if no_answer || gw.username.is_none() || gw.password.is_none() {
        Err(None)
    } else if gw.realm.is_none() && source.addr.ip() != peer.addr.ip() {
        Err(Some(format!(
            "challenge from {} (the gateway is {}) not answered",
            source.addr, peer.addr
        )))
    } else {
        l.auth
            .challenged(&resp, gw.realm.as_deref())
            .map_err(|e| Some(e.to_string()))
    };
    match answer {
        Ok(()) => reinvite(sb, leg, se),
        Err(why) => {
            if let Some(why) = why {
                tracing::warn!(call_uuid = %l.uuid, why, "digest challenge refused");
                h.sip_reason = Some(format!("{} ({why})", resp.reason));
            }
            fail(sb, now, leg, h)
        }
    }
}

/// 422 Session Interval Too Small (RFC 4028 §7.4): ask again with the Min-SE it names.
fn too_small(sb: &mut Switchboard, now: Instant, leg: LegId, resp: Response) {
    let Some(d) = dialing(sb, leg) else { return };
    let min_se = resp
        .headers
        .get("Min-SE")
        .and_then(session_timer::parse_min_se)
        .unwrap_or(0);
    if d.cancel.is_none() && d.retries < MAX_RETRIES && min_se > d.session_expires {
        return reinvite(sb, leg, min_se);
    }
    fail(sb, now, leg, refused(&resp));
}

/// Where in-dialog requests go without a route set: the Contact's address when it is an IP
/// literal (§12.2.1.1), else the next hop the INVITE took.
pub(super) fn contact_peer(uri: &str, default: Peer) -> Peer {
    let Some(u) = Uri::parse(uri) else {
        return default;
    };
    let host = u.host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return default;
    };
    let transport = u
        .params
        .get("transport")
        .and_then(sip_core::Transport::from_name)
        .unwrap_or(default.transport);
    Peer {
        transport,
        addr: std::net::SocketAddr::new(ip, u.port.unwrap_or(5060)),
    }
}

fn answered(sb: &mut Switchboard, now: Instant, leg: LegId, resp: Response) {
    let Some(d) = dialing(sb, leg) else { return };
    let (invite, peer, cancel, session_expires) =
        (d.invite.clone(), d.peer, d.cancel, d.session_expires);
    let mut dlg = Dialog::from_uac(&invite, &resp, peer);
    let l = sb.legs.get_mut(&leg).expect("leg");
    let gw = l.gateway.clone().expect("gateway");
    if gw.outbound_proxy.is_none() && dlg.route_set.is_empty() {
        dlg.peer = contact_peer(&dlg.remote_target, peer);
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    let ack = dlg.ack(seq, &sb.cfg.local);
    l.ack = Some(ack.clone());
    sb.out.push_back(Output::Ack {
        request: ack,
        peer: dlg.peer,
    });
    sb.clear_timer(leg, CallTimer::Dial);
    sb.clear_timer(leg, CallTimer::CancelGuard);
    let l = sb.legs.get_mut(&leg).expect("leg");
    l.dialog = Some(dlg);
    l.state = LegState::Confirmed;
    if let Some((cause, _)) = cancel {
        // The answer crossed our CANCEL: complete the dialog and end it (§9.1).
        dialog::send_bye(sb, leg, cause);
        let h = Hangup {
            cause,
            sip_code: Some(resp.code),
            sip_reason: Some(resp.reason.clone()),
            disposition: "send_cancel",
        };
        return fail(sb, now, leg, h);
    }
    let offered = &dialog::offered_codecs(sb, leg);
    let remote = sdp::parse(&resp.body)
        .map(|r| r.within(offered))
        .filter(|r| !r.codecs.is_empty());
    let Some(remote) = remote else {
        // Answered with nothing we can speak (RFC 3264 §6): a silent call helps nobody.
        let cause = HangupCause::from_name("INCOMPATIBLE_DESTINATION")
            .unwrap_or(HangupCause::NORMAL_TEMPORARY_FAILURE);
        dialog::send_bye(sb, leg, cause);
        let h = Hangup {
            cause,
            sip_code: Some(resp.code),
            sip_reason: Some("no codec in common in the answer".into()),
            disposition: "send_bye",
        };
        return fail(sb, now, leg, h);
    };
    let l = sb.legs.get_mut(&leg).expect("leg");
    let srtp = match super::srtp::from_answer(&l.media.crypto, &remote) {
        Ok(k) => k,
        Err(why) => {
            let cause = HangupCause::from_name("INCOMPATIBLE_DESTINATION")
                .unwrap_or(HangupCause::NORMAL_TEMPORARY_FAILURE);
            dialog::send_bye(sb, leg, cause);
            let h = Hangup {
                cause,
                sip_code: Some(resp.code),
                sip_reason: Some(why.into()),
                disposition: "send_bye",
            };
            return fail(sb, now, leg, h);
        }
    };
    let keys = srtp.map(|(mine, keys)| {
        l.media.crypto = vec![mine];
        keys
    });
    let l = sb.legs.get_mut(&leg).expect("leg");
    l.peer_allows_update = allows(&resp, "UPDATE");
    l.answered = Some(now);
    if session_expires > 0 {
        l.session = session_timer::from_2xx(&resp);
    }
    dialog::connect_media(sb, leg, remote, keys);
    let l = sb.legs.get_mut(&leg).expect("leg");
    let (record, cpa, max_call, uuid) = (l.record, l.cpa.take(), l.max_call, l.uuid.clone());
    if record {
        let path = sb.cfg.data_dir.join(format!("recordings/{uuid}.wav"));
        sb.media(leg, media::leg::Command::StartRecord { req: None, path });
    }
    if let Some(config) = cpa {
        start_cpa(sb, leg, config);
    }
    originate(sb, leg, "OK", 0);
    let l = &sb.legs[&leg];
    let answered = fields([
        ("call_type", Value::from(l.direction.name())),
        ("from_number", Value::from(l.from_number.clone())),
        ("to_number", Value::from(l.to_number.clone())),
    ]);
    leg::publish(sb, leg, "answered", answered);
    if let Some(m) = max_call {
        sb.set_timer(leg, CallTimer::MaxCall, now + m);
    }
    dialog::arm_session_timers(sb, now, leg);
    joins::answered(sb, now, leg);
}

/// Whether a message's Allow lists `method`.
pub(super) fn allows(resp: &Response, method: &str) -> bool {
    resp.headers
        .get_all("Allow")
        .iter()
        .any(|m| m.trim().eq_ignore_ascii_case(method))
}

/// Call progress analysis from answer (api.md §3.1): its events go to the configuration's
/// subject if it names one; with `log_voice` the analysed audio is kept under the data dir.
fn start_cpa(sb: &mut Switchboard, leg: LegId, config: crate::request::SetCpaParams) {
    let Some(l) = sb.legs.get_mut(&leg) else {
        return;
    };
    l.cpa_subject = config.event_subject.clone();
    l.cpa_running = true;
    let log = config
        .log_voice
        .then(|| sb.cfg.data_dir.join(format!("cpa/{}.wav", l.uuid)));
    sb.out.push_back(Output::StartCpa {
        leg,
        config: Box::new(config),
        log,
    });
}

/// A 2xx after the call was answered: our ACK was lost (send it again), or another fork of a
/// forking proxy answered too (RFC 3261 §13.2.2.4: ACK it, then BYE it).
fn retransmitted_2xx(sb: &mut Switchboard, leg: LegId, resp: &Response) {
    let Some(l) = sb.legs.get(&leg) else { return };
    let Some(dlg) = &l.dialog else { return };
    let to_tag = |v: Option<&str>| {
        v.and_then(sip_core::msg::NameAddr::parse)
            .and_then(|n| n.tag().map(str::to_string))
    };
    let same = to_tag(resp.headers.get("To")) == dlg.remote_tag();
    if same {
        if let Some(ack) = l.ack.clone() {
            let peer = dlg.peer;
            sb.out.push_back(Output::Ack { request: ack, peer });
        }
        return;
    }
    let Some(invite) = (match &l.state {
        LegState::Dialing(d) => Some(d.invite.clone()),
        _ => None,
    })
    .or_else(|| l.ack.as_ref().map(|_| invite_of(l))) else {
        return;
    };
    let mut other = Dialog::from_uac(&invite, resp, dlg.peer);
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    let ack = other.ack(seq, &sb.cfg.local);
    let peer = other.peer;
    sb.out.push_back(Output::Ack { request: ack, peer });
    let mut bye = other.request("BYE", &sb.cfg.local);
    bye.headers.push(
        "Reason",
        cause::reason_header_value(HangupCause::NORMAL_CLEARING),
    );
    sb.send(leg, Purpose::Fire, bye, peer);
}

/// The INVITE an answered leg sent, rebuilt from its dialog for a late fork's ACK and BYE: only
/// its Call-ID, From, To, CSeq and Request-URI matter there.
fn invite_of(l: &Leg) -> Request {
    let dlg = l.dialog.as_ref().expect("dialog");
    let mut r = Request::new("INVITE", &dlg.remote_target);
    r.headers.push("From", dlg.local.clone());
    let to = dlg
        .remote
        .split(";tag=")
        .next()
        .unwrap_or(&dlg.remote)
        .to_string();
    r.headers.push("To", to);
    r.headers.push("Call-ID", dlg.call_id.clone());
    let seq = l
        .ack
        .as_ref()
        .and_then(|a| a.cseq())
        .map(|c| c.seq)
        .unwrap_or(1);
    r.headers.push("CSeq", format!("{seq} INVITE"));
    r
}
