//! Inside a dialog (RFC 3261 §12–§15): the far end's requests (BYE, re-INVITE and UPDATE with
//! hold and RFC 4028 refreshes, INFO DTMF, NOTIFY of a transfer), ours (BYE, session refresh,
//! REFER), and the inbound call's answer.

use std::time::{Duration, Instant};

use serde_json::Value;
use sip_core::auth::Credentials;
use sip_core::dialog::{new_tag, Dialog};
use sip_core::io::ClientEvent;
use sip_core::msg::{NameAddr, Request, Response};
use sip_core::sdp::{self, Direction as SdpDirection};
use sip_core::session_timer::{self, SessionExpires, UasDecision};
use sip_core::transaction::response_to;
use sip_core::{Peer, TxId};

use super::dial::{self, custom_headers};
use super::leg::{self, BridgeRole, Direction, Leg, LegState, MediaState, Transfer};
use super::{CallTimer, Inbound, LegId, Output, Purpose, ReqId, Switchboard, ALLOW};
use crate::cause::{self, HangupCause};
use crate::events::{fields, Hangup};

/// After a 491 (RFC 3261 §14.1) our refresh waits this long before trying again.
const GLARE_RETRY: Duration = Duration::from_millis(2500);

/// Our side ends the leg: CANCEL while dialing, BYE once answered.
pub(super) fn hang_up(
    sb: &mut Switchboard,
    now: Instant,
    leg: LegId,
    cause: HangupCause,
    why: Option<&str>,
) {
    let Some(l) = sb.legs.get(&leg) else { return };
    match l.state {
        LegState::Dialing(_) => dial::give_up(sb, now, leg, cause),
        LegState::Confirmed => {
            send_bye(sb, leg, cause);
            let h = Hangup {
                cause,
                sip_code: None,
                sip_reason: why.map(str::to_string),
                disposition: "send_bye",
            };
            leg::end(sb, now, leg, h);
        }
        LegState::Ending(_) => {}
    }
}

/// Puts every credential the leg has learned on an in-dialog request (a nonce is reused until the
/// server calls it stale).
fn authorize(l: &mut Leg, req: &mut Request) {
    if l.auth.is_empty() {
        return;
    }
    let Some(gw) = l.gateway.clone() else { return };
    if let (Some(u), Some(p)) = (gw.username.as_deref(), gw.password.as_deref()) {
        let cred = Credentials {
            username: u,
            password: p,
        };
        l.auth.authorize(req, &cred, &new_tag());
    }
}

/// A new request in the leg's dialog, with the call's `sip_h_X-*` headers and credentials.
fn in_dialog(sb: &mut Switchboard, leg: LegId, method: &str) -> Option<(Request, Peer)> {
    let local = sb.cfg.local.clone();
    let l = sb.legs.get_mut(&leg)?;
    let dlg = l.dialog.as_mut()?;
    let mut r = dlg.request(method, &local);
    let peer = dlg.peer;
    for (name, value) in custom_headers(&l.vars) {
        r.headers.set(name, value);
    }
    authorize(l, &mut r);
    Some((r, peer))
}

pub(super) fn send_bye(sb: &mut Switchboard, leg: LegId, cause: HangupCause) {
    let Some((mut bye, peer)) = in_dialog(sb, leg, "BYE") else {
        return;
    };
    bye.headers
        .push("Reason", cause::reason_header_value(cause));
    sb.send(leg, Purpose::Fire, bye, peer);
}

/// Media starts flowing to what the far end's SDP says (RTP is symmetric from then on). Without
/// telephone-event, key presses arrive as tones and an in-band detector listens instead.
pub(super) fn connect_media(
    sb: &mut Switchboard,
    leg: LegId,
    remote: sdp::MediaDescription,
    srtp: Option<media::session::SrtpKeys>,
) {
    let Some(l) = sb.legs.get_mut(&leg) else {
        return;
    };
    let Some(codec) = remote.codecs.first().copied() else {
        return;
    };
    let first = !l.media.connected;
    l.media.connected = true;
    l.media.codec = Some(codec);
    // From now on our offers (refreshes, offerless re-INVITEs) keep to the codec in force.
    l.media.offer = vec![codec];
    let te = remote.dtmf();
    let held = matches!(
        remote.direction,
        SdpDirection::SendOnly | SdpDirection::Inactive
    );
    let was_held = std::mem::replace(&mut l.media.held, held);
    let command = media::leg::Command::Remote {
        addr: remote.addr,
        codec: match codec {
            sdp::Codec::Pcmu => media::session::AudioCodec::Pcmu,
            sdp::Codec::Pcma => media::session::AudioCodec::Pcma,
            sdp::Codec::G722 => media::session::AudioCodec::G722,
            sdp::Codec::Opus => media::session::AudioCodec::Opus,
        },
        payload_type: remote
            .payload_type_of(codec)
            .unwrap_or(codec.payload_type()),
        telephone_event: te,
        srtp,
    };
    l.media.remote = Some(remote);
    sb.media(leg, command);
    if held != was_held {
        sb.media(leg, media::leg::Command::Hold(held));
    }
    if first && te.is_none() {
        sb.out.push_back(Output::InbandDtmf { leg });
    }
}

/// RFC 4028: the refresher refreshes at half the interval; either side ends an unrefreshed
/// session before it expires.
pub(super) fn arm_session_timers(sb: &mut Switchboard, now: Instant, leg: LegId) {
    sb.clear_timer(leg, CallTimer::SessionRefresh);
    sb.clear_timer(leg, CallTimer::SessionExpiry);
    let Some(s) = sb.legs.get(&leg).and_then(|l| l.session) else {
        return;
    };
    if s.we_refresh {
        sb.set_timer(leg, CallTimer::SessionRefresh, now + s.refresh_after());
    }
    sb.set_timer(leg, CallTimer::SessionExpiry, now + s.expire_after());
}

pub(super) fn timer(sb: &mut Switchboard, now: Instant, leg: LegId, timer: CallTimer) {
    match timer {
        CallTimer::MaxCall => hang_up(sb, now, leg, HangupCause::ALLOTTED_TIMEOUT, None),
        CallTimer::SessionRefresh => send_refresh(sb, leg),
        CallTimer::SessionExpiry => hang_up(
            sb,
            now,
            leg,
            HangupCause::RECOVERY_ON_TIMER_EXPIRE,
            Some("session expired (RFC 4028)"),
        ),
        CallTimer::ReferGuard => {
            if let Some(l) = sb.legs.get_mut(&leg) {
                l.transfer = None;
            }
            leg::error_event(sb, leg, "transfer: no final NOTIFY".into(), 408);
        }
        _ => {}
    }
}

/// A response of ours inside the leg's dialog.
fn respond(sb: &mut Switchboard, leg: LegId, tx: TxId, req: &Request, code: u16) -> Response {
    let tag = sb.legs.get(&leg).map(|l| l.local_tag.clone());
    let mut r = response_to(req, code, tag.as_deref());
    r.headers.push("Server", sb.cfg.local.user_agent.clone());
    if code == 405 {
        r.headers.push("Allow", ALLOW);
    }
    let _ = tx;
    r
}

fn reply(sb: &mut Switchboard, leg: LegId, tx: TxId, req: &Request, code: u16) {
    let r = respond(sb, leg, tx, req, code);
    sb.respond(tx, r);
}

/// A request the far end sent inside the leg's dialog (tags already matched).
pub(super) fn request(
    sb: &mut Switchboard,
    now: Instant,
    leg: LegId,
    tx: Option<TxId>,
    req: Request,
) {
    let Some(l) = sb.legs.get_mut(&leg) else {
        return;
    };
    let Some(tx) = tx else {
        return ack(sb, leg, &req);
    };
    // §12.2.2: a CSeq below the last one is out of order.
    if let (Some(dlg), Some(cseq)) = (l.dialog.as_mut(), req.cseq()) {
        if dlg.remote_seq.is_some_and(|last| cseq.seq < last) {
            return reply(sb, leg, tx, &req, 500);
        }
        dlg.remote_seq = Some(cseq.seq);
    }
    if l.is_ending() {
        // A BYE that crossed ours still deserves its 200.
        let code = if req.method == "BYE" { 200 } else { 481 };
        return reply(sb, leg, tx, &req, code);
    }
    match req.method.as_str() {
        "BYE" => {
            reply(sb, leg, tx, &req, 200);
            let transferred = sb.legs[&leg].transfer == Some(Transfer::Done);
            let reason = req.headers.get_all("Reason").join(", ");
            let cause = if transferred {
                HangupCause::BLIND_TRANSFER
            } else {
                cause::parse_reason_header(&reason).unwrap_or(HangupCause::NORMAL_CLEARING)
            };
            let h = Hangup {
                cause,
                sip_code: None,
                sip_reason: None,
                disposition: if transferred {
                    "send_refer"
                } else {
                    "recv_bye"
                },
            };
            leg::end(sb, now, leg, h);
        }
        "INVITE" | "UPDATE" => offer(sb, now, leg, tx, &req),
        "INFO" => {
            // SIP INFO application/dtmf-relay: a key press signalled in SIP (§3.16, `dtmf`).
            let ct = req
                .headers
                .get("Content-Type")
                .unwrap_or("")
                .to_ascii_lowercase();
            reply(sb, leg, tx, &req, 200);
            if ct.starts_with("application/dtmf") {
                if let Some(digit) = media::dtmf::parse_dtmf_relay(&req.body) {
                    leg::dtmf(sb, leg, digit, "info");
                }
            }
        }
        "NOTIFY" => {
            reply(sb, leg, tx, &req, 200);
            notify(sb, now, leg, &req);
        }
        "OPTIONS" => {
            let mut r = respond(sb, leg, tx, &req, 200);
            r.headers.push("Allow", ALLOW);
            sb.respond(tx, r);
        }
        _ => reply(sb, leg, tx, &req, 405),
    }
}

/// The ACK for our 2xx. When our 2xx carried the offer, the ACK carries the answer.
fn ack(sb: &mut Switchboard, leg: LegId, req: &Request) {
    if req.body.is_empty() {
        return;
    }
    let offered = &offered_codecs(sb, leg);
    if let Some(remote) = sdp::parse(&req.body)
        .map(|r| r.within(offered))
        .filter(|r| !r.codecs.is_empty())
    {
        answered_with(sb, leg, remote);
    }
}

/// The far end's answer to an offer of ours in an answered call (in an ACK or a refresh's 2xx):
/// followed, keys included. One that does not fit a secure offer leaves the media as it was.
fn answered_with(sb: &mut Switchboard, leg: LegId, remote: sdp::MediaDescription) {
    let Some(l) = sb.legs.get_mut(&leg) else {
        return;
    };
    match super::srtp::from_answer(&l.media.crypto, &remote) {
        Ok(Some((mine, keys))) => {
            l.media.crypto = vec![mine];
            connect_media(sb, leg, remote, Some(keys));
        }
        Ok(None) => connect_media(sb, leg, remote, None),
        Err(why) => tracing::warn!(call_uuid = %l.uuid, why, "answer not applied"),
    }
}

/// A re-INVITE or UPDATE: a new offer (hold, resume, a new address or codec) and/or a session
/// refresh. A refused offer leaves the call as it was.
fn offer(sb: &mut Switchboard, now: Instant, leg: LegId, tx: TxId, req: &Request) {
    let l = &sb.legs[&leg];
    if l.refreshing.is_some() && req.method == "INVITE" {
        // Our own re-INVITE is in flight: glare (§14.2).
        return reply(sb, leg, tx, req, 491);
    }
    let decision = session_timer::uas_decide(req, sb.cfg.min_se);
    if let UasDecision::TooSmall { min_se } = decision {
        let mut r = respond(sb, leg, tx, req, 422);
        r.headers.push("Min-SE", min_se.to_string());
        return sb.respond(tx, r);
    }
    let (public_ip, port, session_id) = (sb.cfg.public_ip, l.media.port, l.media.session_id);
    let mut body = None;
    let mut applied = None;
    if !req.body.is_empty() {
        let Some(remote) = sdp::parse(&req.body).filter(|r| !r.codecs.is_empty()) else {
            let mut r = respond(sb, leg, tx, req, 488);
            r.headers.push(
                "Reason",
                cause::reason_header_value(
                    HangupCause::from_name("INCOMPATIBLE_DESTINATION")
                        .unwrap_or(HangupCause::NORMAL_TEMPORARY_FAILURE),
                ),
            );
            return sb.respond(tx, r);
        };
        let version = l.media.version + 1;
        // A secure call stays secure: a plain re-offer is refused, a secure one re-keys.
        let srtp = match super::srtp::answer(&remote) {
            Ok(None) if !l.media.crypto.is_empty() => Err("a plain offer on an SRTP call"),
            other => other,
        };
        let Ok(srtp) = srtp else {
            return reply(sb, leg, tx, req, 488);
        };
        let ours = srtp.as_ref().map(|(c, _)| c);
        let prefer = answer_preference(&sb.cfg.codecs, l.media.codec);
        let Some((answer, codec)) =
            sdp::answer(&remote, session_id, version, public_ip, port, &prefer, ours)
        else {
            return reply(sb, leg, tx, req, 488);
        };
        let remote = remote.with_only(codec);
        body = Some((answer, version));
        applied = Some((remote, srtp));
    } else if req.method == "INVITE" {
        // An offerless re-INVITE: our 2xx offers, the ACK answers (RFC 3264 §5).
        let l = &sb.legs[&leg];
        body = Some((
            sdp::offer(
                session_id,
                l.media.version + 1,
                public_ip,
                port,
                &l.media.offer,
                &l.media.crypto,
            ),
            l.media.version + 1,
        ));
    }
    let l = sb.legs.get_mut(&leg).expect("leg");
    if let Some(target) = req.headers.get("Contact").and_then(NameAddr::parse) {
        if let Some(d) = l.dialog.as_mut() {
            d.remote_target = target.uri;
        }
    }
    let contact = l
        .dialog
        .as_ref()
        .map(|d| d.contact.clone())
        .unwrap_or_default();
    let mut r = respond(sb, leg, tx, req, 200);
    r.headers.push("Contact", contact);
    r.headers.push("Allow", ALLOW);
    r.headers.push("Supported", "timer");
    let l = sb.legs.get_mut(&leg).expect("leg");
    match decision {
        UasDecision::Use {
            session,
            header,
            require,
        } => {
            l.session = Some(session);
            r.headers.push("Session-Expires", header.header());
            if require {
                r.headers.push("Require", "timer");
            }
        }
        // §9: a re-INVITE without Session-Expires turns the timer off.
        _ if req.method == "INVITE" => l.session = None,
        _ => {}
    }
    if let Some((b, version)) = body {
        l.media.version = version;
        r.headers.push("Content-Type", "application/sdp");
        r.body = b.into_bytes();
    }
    sb.respond(tx, r);
    if let Some((remote, srtp)) = applied {
        let keys = srtp.map(|(mine, keys)| {
            if let Some(l) = sb.legs.get_mut(&leg) {
                l.media.crypto = vec![mine];
            }
            keys
        });
        connect_media(sb, leg, remote, keys);
    }
    arm_session_timers(sb, now, leg);
}

/// The far end CANCELled an inbound call before our answer.
pub(super) fn cancelled(sb: &mut Switchboard, now: Instant, leg: LegId) {
    let Some(l) = sb.legs.get(&leg) else { return };
    if l.answered.is_some() {
        return;
    }
    let h = Hangup {
        cause: HangupCause::ORIGINATOR_CANCEL,
        sip_code: None,
        sip_reason: None,
        disposition: "recv_cancel",
    };
    leg::end(sb, now, leg, h);
}

/// Our 2xx was never acknowledged (§13.3.1.4): the caller is gone.
pub(super) fn ack_timeout(sb: &mut Switchboard, now: Instant, leg: LegId) {
    hang_up(
        sb,
        now,
        leg,
        HangupCause::RECOVERY_ON_TIMER_EXPIRE,
        Some("no ACK for 200"),
    );
}

/// Our session refresh (RFC 4028 §7.4): UPDATE where the far end allows it, else re-INVITE with
/// our unchanged SDP.
fn send_refresh(sb: &mut Switchboard, leg: LegId) {
    let Some(l) = sb.legs.get(&leg) else { return };
    let (Some(session), None, true) = (l.session, l.refreshing, l.is_confirmed()) else {
        return;
    };
    let method = if l.peer_allows_update {
        "UPDATE"
    } else {
        "INVITE"
    };
    let (sid, version, port) = (l.media.session_id, l.media.version, l.media.port);
    let crypto = l.media.crypto.clone();
    let codecs = l.media.offer.clone();
    let min_se = sb.cfg.min_se.min(session.interval);
    let public_ip = sb.cfg.public_ip;
    let Some((mut r, peer)) = in_dialog(sb, leg, method) else {
        return;
    };
    r.headers.push("Supported", "timer");
    let se = SessionExpires {
        interval: session.interval,
        refresher: Some(session_timer::Refresher::Uac),
    };
    r.headers.push("Session-Expires", se.header());
    r.headers.push("Min-SE", min_se.to_string());
    if method == "INVITE" {
        r.headers.push("Allow", ALLOW);
        r.headers.push("Content-Type", "application/sdp");
        r.body = sdp::offer(sid, version, public_ip, port, &codecs, &crypto).into_bytes();
    }
    let cseq = r.cseq().map(|c| c.seq).unwrap_or(0);
    let tag = sb.send(leg, Purpose::Refresh, r, peer);
    if let Some(l) = sb.legs.get_mut(&leg) {
        l.refreshing = Some((tag, cseq));
    }
}

/// Whether a 401/407 to one of our in-dialog requests may be answered, learning it if so.
fn learn_challenge(sb: &mut Switchboard, leg: LegId, resp: &Response, source: Peer) -> bool {
    let Some(l) = sb.legs.get_mut(&leg) else {
        return false;
    };
    let Some(gw) = l.gateway.clone() else {
        return false;
    };
    let hop = l.next_hop.map(|p| p.addr.ip());
    let trusted = gw.realm.is_some() || hop == Some(source.addr.ip());
    gw.username.is_some()
        && gw.password.is_some()
        && trusted
        && l.auth.challenged(resp, gw.realm.as_deref()).is_ok()
}

pub(super) fn refresh_event(sb: &mut Switchboard, now: Instant, leg: LegId, ev: ClientEvent) {
    let Some(l) = sb.legs.get_mut(&leg) else {
        return;
    };
    let Some((_, cseq)) = l.refreshing else {
        return;
    };
    let (resp, source) = match ev {
        ClientEvent::Response { response, source } => (*response, source),
        ClientEvent::Timeout => {
            l.refreshing = None;
            return hang_up(
                sb,
                now,
                leg,
                HangupCause::RECOVERY_ON_TIMER_EXPIRE,
                Some("no answer to the session refresh"),
            );
        }
    };
    if resp.code < 200 {
        return;
    }
    l.refreshing = None;
    let invite = resp.cseq().is_some_and(|c| c.method == "INVITE");
    match resp.code {
        200..=299 => {
            if invite {
                if let Some(dlg) = &l.dialog {
                    let ack = dlg.ack(cseq, &sb.cfg.local);
                    let peer = dlg.peer;
                    sb.out.push_back(Output::Ack { request: ack, peer });
                }
            }
            let l = sb.legs.get_mut(&leg).expect("leg");
            // §7.2: a 2xx without Session-Expires means no more timer.
            l.session = session_timer::from_2xx(&resp);
            let offered = &offered_codecs(sb, leg);
            if let Some(remote) = sdp::parse(&resp.body)
                .map(|r| r.within(offered))
                .filter(|r| !r.codecs.is_empty())
            {
                answered_with(sb, leg, remote);
            }
            arm_session_timers(sb, now, leg);
        }
        401 | 407 if learn_challenge(sb, leg, &resp, source) => send_refresh(sb, leg),
        422 => {
            let min_se = resp
                .headers
                .get("Min-SE")
                .and_then(session_timer::parse_min_se);
            let session = sb.legs.get_mut(&leg).and_then(|l| l.session.as_mut());
            if let (Some(min_se), Some(s)) = (min_se, session) {
                if min_se > s.interval {
                    s.interval = min_se;
                    send_refresh(sb, leg);
                }
            }
        }
        491 => sb.set_timer(leg, CallTimer::SessionRefresh, now + GLARE_RETRY),
        // RFC 4028 §10 / RFC 5057: the dialog is gone at the far end.
        408 | 481 => hang_up(
            sb,
            now,
            leg,
            HangupCause::RECOVERY_ON_TIMER_EXPIRE,
            Some("session refresh refused: dialog gone"),
        ),
        // Anything else leaves the session to its expiry timer.
        _ => {}
    }
}

/// `request_transfer_call` (api.md §3.9): REFER with `Refer-To`, the far end's NOTIFYs follow.
pub(super) fn send_refer(sb: &mut Switchboard, now: Instant, leg: LegId, uri: &str) {
    let contact = sb
        .legs
        .get(&leg)
        .and_then(|l| l.dialog.as_ref())
        .map(|d| d.contact.clone())
        .unwrap_or_default();
    let Some((mut r, peer)) = in_dialog(sb, leg, "REFER") else {
        return;
    };
    r.headers.push("Refer-To", format!("<{uri}>"));
    r.headers.push("Referred-By", contact.clone());
    // The dialog's request has its Contact already: one only (RFC 3261 §8.1.1.8).
    r.headers.set("Contact", contact);
    sb.send(leg, Purpose::Refer, r, peer);
    if let Some(l) = sb.legs.get_mut(&leg) {
        l.transfer = Some(Transfer::Referring);
        l.refer_to = Some(uri.to_string());
    }
    sb.set_timer(leg, CallTimer::ReferGuard, now + sb.cfg.refer_timeout);
}

pub(super) fn refer_event(sb: &mut Switchboard, now: Instant, leg: LegId, ev: ClientEvent) {
    let Some(l) = sb.legs.get_mut(&leg) else {
        return;
    };
    if l.transfer != Some(Transfer::Referring) {
        return;
    }
    let (resp, source) = match ev {
        ClientEvent::Response { response, source } => (*response, source),
        ClientEvent::Timeout => {
            l.transfer = None;
            sb.clear_timer(leg, CallTimer::ReferGuard);
            return leg::error_event(sb, leg, "transfer: no answer to REFER".into(), 408);
        }
    };
    match resp.code {
        100..=199 => {}
        200..=299 => l.transfer = Some(Transfer::Accepted),
        401 | 407 if learn_challenge(sb, leg, &resp, source) => {
            let uri = sb.legs[&leg].refer_to.clone().unwrap_or_default();
            send_refer(sb, now, leg, &uri);
        }
        code => {
            let Some(l) = sb.legs.get_mut(&leg) else {
                return;
            };
            l.transfer = None;
            sb.clear_timer(leg, CallTimer::ReferGuard);
            let status = format!("transfer refused: {code} {}", resp.reason);
            leg::error_event(sb, leg, status, code);
        }
    }
}

/// A NOTIFY of our REFER's subscription (RFC 3515 §2.4.5): its `message/sipfrag` body is the
/// transfer target's status line.
fn notify(sb: &mut Switchboard, now: Instant, leg: LegId, req: &Request) {
    let Some(l) = sb.legs.get_mut(&leg) else {
        return;
    };
    let is_refer = req
        .headers
        .get("Event")
        .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("refer"));
    if !is_refer || !matches!(l.transfer, Some(Transfer::Referring | Transfer::Accepted)) {
        return;
    }
    let frag = String::from_utf8_lossy(&req.body);
    let line = frag.lines().next().unwrap_or("").trim().to_string();
    let Some(code) = line
        .strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
    else {
        return;
    };
    match code {
        100..=199 => {}
        200..=299 => {
            l.transfer = Some(Transfer::Done);
            sb.clear_timer(leg, CallTimer::ReferGuard);
            send_bye(sb, leg, HangupCause::BLIND_TRANSFER);
            let h = Hangup {
                cause: HangupCause::BLIND_TRANSFER,
                sip_code: Some(code),
                sip_reason: Some(line),
                disposition: "send_refer",
            };
            leg::end(sb, now, leg, h);
        }
        _ => {
            l.transfer = None;
            sb.clear_timer(leg, CallTimer::ReferGuard);
            leg::error_event(sb, leg, format!("transfer failed: {line}"), code);
        }
    }
}

/// An admitted inbound INVITE: 180, then 200 with our answer (and the session timer the caller
/// asked for), and the call is up.
pub(super) fn accept_inbound(sb: &mut Switchboard, now: Instant, req: Option<ReqId>, inb: Inbound) {
    let refuse = |sb: &mut Switchboard, code: u16, extra: Option<(&str, String)>| {
        let mut r = sb.response(&inb.invite, code);
        if let Some((k, v)) = extra {
            r.headers.push(k, v);
        }
        sb.respond(inb.tx, r);
        sb.out.push_back(Output::LegEnded {
            leg: inb.leg,
            uuid: inb.uuid.clone(),
            direction: "inbound",
            cause: crate::cause::from_sip_status(code),
            started: false,
        });
        sb.reply(req, Ok(Default::default()));
    };
    let decision = session_timer::uas_decide(&inb.invite, sb.cfg.min_se);
    if let UasDecision::TooSmall { min_se } = decision {
        return refuse(sb, 422, Some(("Min-SE", min_se.to_string())));
    }
    let (public_ip, port, sid) = (sb.cfg.public_ip, inb.media.port, inb.media.session_id);
    // A secure offer is answered with SRTP or refused, never with plain RTP (api.md §7).
    let Ok(srtp) = super::srtp::answer(&inb.remote) else {
        let reason = cause::reason_header_value(
            HangupCause::from_name("INCOMPATIBLE_DESTINATION")
                .unwrap_or(HangupCause::NORMAL_TEMPORARY_FAILURE),
        );
        return refuse(sb, 488, Some(("Reason", reason)));
    };
    let ours = srtp.as_ref().map(|(c, _)| c);
    let prefer = &sb.cfg.codecs;
    let Some((answer, codec)) = sdp::answer(&inb.remote, sid, 1, public_ip, port, prefer, ours)
    else {
        let reason = cause::reason_header_value(
            HangupCause::from_name("INCOMPATIBLE_DESTINATION")
                .unwrap_or(HangupCause::NORMAL_TEMPORARY_FAILURE),
        );
        return refuse(sb, 488, Some(("Reason", reason)));
    };
    let call_id = inb.invite.call_id().unwrap_or_default().to_string();
    let tag = new_tag();
    let contact = sb.cfg.local.contact("botstream", inb.source.transport);
    let dlg = Dialog::from_uas(&inb.invite, &tag, contact.clone(), inb.source);
    let allows_update = inb
        .invite
        .headers
        .get_all("Allow")
        .iter()
        .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"));
    let l = Leg {
        id: inb.leg,
        uuid: inb.uuid.clone(),
        direction: Direction::Inbound,
        target: inb.target.clone(),
        vars: Default::default(),
        from_number: inb.from_number.clone(),
        to_number: inb.to_number.clone(),
        started: now,
        answered: Some(now),
        state: LegState::Confirmed,
        dialog: Some(dlg),
        call_id: call_id.clone(),
        local_tag: tag.clone(),
        invite_tx: Some(inb.tx),
        gateway: inb.gateway.clone(),
        next_hop: Some(inb.source),
        auth: Default::default(),
        media: MediaState {
            port,
            session_id: sid,
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
        peer_allows_update: allows_update,
        refreshing: None,
        transfer: None,
        refer_to: None,
        streaming: false,
        stream_protocol: "botstream",
        pending: Default::default(),
        cpa_subject: None,
        cpa_running: false,
        max_call: None,
        record: false,
        cpa: None,
        bridge: BridgeRole::None,
        bridged_call_uuid: None,
        ack: None,
    };
    let id = inb.leg;
    sb.legs.insert(id, l);
    sb.by_uuid.insert(inb.uuid.clone(), id);
    sb.call_ids.insert(call_id.clone(), id);
    sb.dialogs.insert((call_id, tag.clone()), id);
    sb.out.push_back(Output::LegStarted {
        leg: id,
        uuid: inb.uuid.clone(),
        tenant_id: inb.target.tenant_id.clone(),
    });
    let mut ringing = response_to(&inb.invite, 180, Some(&tag));
    ringing.headers.push("Contact", contact.clone());
    sb.respond(inb.tx, ringing);
    let mut ok = response_to(&inb.invite, 200, Some(&tag));
    ok.headers.push("Contact", contact);
    ok.headers.push("Allow", ALLOW);
    ok.headers.push("Supported", "timer");
    ok.headers.push("Server", sb.cfg.local.user_agent.clone());
    if let UasDecision::Use {
        session,
        header,
        require,
    } = decision
    {
        sb.legs.get_mut(&id).expect("leg").session = Some(session);
        ok.headers.push("Session-Expires", header.header());
        if require {
            ok.headers.push("Require", "timer");
        }
    }
    ok.headers.push("Content-Type", "application/sdp");
    ok.body = answer.into_bytes();
    sb.respond(inb.tx, ok);
    let remote = inb.remote.clone().with_only(codec);
    let keys = srtp.map(|(mine, keys)| {
        sb.legs.get_mut(&id).expect("leg").media.crypto = vec![mine];
        keys
    });
    connect_media(sb, id, remote, keys);
    let answered = fields([
        ("call_type", Value::from("inbound")),
        ("from_number", Value::from(inb.from_number.clone())),
        ("to_number", Value::from(inb.to_number.clone())),
    ]);
    leg::publish(sb, id, "answered", answered);
    arm_session_timers(sb, now, id);
    sb.reply(req, Ok(Default::default()));
}

/// A re-offer is answered with the codec in force when the peer still lists it (no mid-call
/// switch of rate), else by the configured preference (`media.codecs`).
fn answer_preference(configured: &[sdp::Codec], in_force: Option<sdp::Codec>) -> Vec<sdp::Codec> {
    let mut prefer: Vec<sdp::Codec> = in_force.into_iter().collect();
    prefer.extend(configured.iter().filter(|c| Some(**c) != in_force));
    prefer
}

/// What our offers on this leg listed (empty: the default offer).
pub(super) fn offered_codecs(sb: &Switchboard, leg: LegId) -> Vec<sdp::Codec> {
    sb.legs
        .get(&leg)
        .map(|l| l.media.offer.clone())
        .unwrap_or_default()
}
