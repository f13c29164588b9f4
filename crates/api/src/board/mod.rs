//! The call core: every call leg of the pod and how they are joined, as one plain state machine.
//!
//! The shell (`crate::shell`) owns the sockets, the media tasks, NATS and the clock; it feeds the
//! board what happened and carries out what the board asks, in the shape of the SIP transaction
//! layer:
//!
//! ```text
//!   handle_command(now, req, Command)      an API request (or an admitted inbound INVITE)
//!   handle_sip(now, SipEvent)              a request, or a response to one of our requests
//!   handle_media(now, leg, MediaInput)     what a leg's media (or its CPA) reported
//!   handle_timeout(now)                    fires the call timers that are due
//!   poll_output() -> Output                send / ack / respond / media / link / publish / reply
//!   poll_timeout() -> (Instant, CallTimer) the next deadline
//! ```
//!
//! After any `handle_*` the shell drains `poll_output` to `None`, then sleeps until
//! `poll_timeout`. Nothing here reads a clock or touches a socket, so a whole call — challenged,
//! answered, held, refreshed, bridged, hung up — is a unit test that runs in microseconds.
//!
//! Legs are keyed by [`LegId`]; a bridge or a listener is data ([`joins`]), and the audio links
//! between media legs follow from it as outputs.

mod api;
mod dial;
mod dialog;
mod joins;
mod leg;
mod srtp;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sip_core::dialog::Local;
use sip_core::io::{ClientEvent, ServerEvent, SipEvent};
use sip_core::msg::{NameAddr, Request, Response};
use sip_core::transaction::response_to;
use sip_core::{sdp, Peer, TxId};

use crate::cause::HangupCause;
use crate::error::ApiError;
use crate::request::{SetCpaParams, SnoopMode};

pub use joins::Join;
use leg::Leg;

/// What the switch allows in a dialog. REFER is not listed: the switch sends REFER (transfer) but
/// does not carry out one from the far end, and answers it 405 as this list says.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY";

/// A call leg, chosen by the shell (which keeps the leg's ports and media task under it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

/// An API request waiting for its one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReqId(pub u64);

/// What the core needs from the configuration.
#[derive(Debug, Clone)]
pub struct BoardConfig {
    pub local: Local,
    pub public_ip: IpAddr,
    pub pod_id: String,
    pub data_dir: PathBuf,
    /// RFC 3261 T1: a CANCEL that gets no final response is given up after 64·T1 (§9.1).
    pub t1: Duration,
    /// RFC 4028: the interval our INVITEs ask for (0: ask for none) and the smallest we accept.
    pub session_expires: u32,
    pub min_se: u32,
    /// `media.codecs`: what an offer is answered with, by preference (api.md §7 Codecs).
    pub codecs: Vec<sdp::Codec>,
    /// How long a REFER accepted with 202 may go without a final NOTIFY.
    pub refer_timeout: Duration,
}

/// The media side of a new leg: its RTP port (the shell holds the socket) and SDP session id.
#[derive(Debug, Clone, Copy)]
pub struct MediaInfo {
    pub port: u16,
    pub session_id: u64,
}

/// Who a call's events are for (api.md §4).
#[derive(Debug, Clone)]
pub struct EventTarget {
    pub subject: String,
    pub tenant_id: String,
    pub call_params: Option<Map<String, Value>>,
}

/// An outbound leg to dial: `request_make_call`, or the agent leg of `request_bridge_call`.
#[derive(Debug, Clone)]
pub struct Dial {
    pub leg: LegId,
    pub uuid: String,
    pub target: EventTarget,
    pub to_number: String,
    pub from_number: String,
    pub gateway: Arc<gateway::GatewayConfig>,
    pub gateway_up: bool,
    /// The gateway's next hop, resolved; `None` when it does not resolve.
    pub peer: Option<Peer>,
    pub dial_timeout: Duration,
    pub max_call: Option<Duration>,
    pub vars: BTreeMap<String, String>,
    pub record: bool,
    pub cpa: Option<SetCpaParams>,
    pub media: MediaInfo,
}

/// An inbound INVITE the shell admitted (ACL, ports, route, codec).
#[derive(Debug, Clone)]
pub struct Inbound {
    pub leg: LegId,
    pub uuid: String,
    pub tx: TxId,
    pub invite: Request,
    pub source: Peer,
    pub from_number: String,
    pub to_number: String,
    pub target: EventTarget,
    pub remote: sdp::MediaDescription,
    pub media: MediaInfo,
    /// The trunk it came from, if any (a transfer's number goes to its domain).
    pub gateway: Option<Arc<gateway::GatewayConfig>>,
}

/// Where `request_transfer_call` sends the far end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A `sip:`/`sips:` URI (from the request or the dial plan).
    Uri(String),
    /// A number, at the call's gateway domain.
    Number(String),
}

/// A stream, playback, DTMF or recording request (api.md §3.5–§3.7, §3.16).
#[derive(Debug, Clone)]
pub enum MediaRequest {
    StartStream(Box<crate::request::StartStream>),
    StopStream,
    StopPlay,
    SendDtmf { digits: String, duration_ms: u32 },
    StartRecord { path: PathBuf },
    StopRecord,
}

/// What the shell hands the board.
#[derive(Debug, Clone)]
pub enum Command {
    /// `request_make_call`; with `bridge`, `request_bridge_call` on that call.
    Dial {
        dial: Box<Dial>,
        bridge: Option<Bridge>,
    },
    Inbound(Box<Inbound>),
    Drop {
        uuid: String,
        cause: HangupCause,
    },
    SetVars {
        uuid: String,
        vars: BTreeMap<String, String>,
    },
    GetCall {
        uuid: String,
    },
    Media {
        uuid: String,
        request: MediaRequest,
    },
    Transfer {
        uuid: String,
        destination: Destination,
    },
    Snoop {
        target: String,
        listener: String,
        mode: SnoopMode,
    },
    /// Drain is over: end every call with SYSTEM_SHUTDOWN.
    Shutdown,
}

/// The bridge half of a `Dial`: the call the new leg joins.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub call_uuid: String,
    pub stop_stream: bool,
}

/// What a leg's media (or the analysis tapping it) reported.
#[derive(Debug)]
pub enum MediaInput {
    Leg(media::leg::Event),
    Cpa(cpa::Output),
    /// The CPA task is over (after its `cpa_done`).
    CpaEnded,
    /// A key press heard in the audio (no telephone-event negotiated).
    InbandDtmf(char),
}

/// What the board asks the shell to do.
#[derive(Debug)]
pub enum Output {
    /// A request in a new client transaction; its responses come back with `tag`.
    Send {
        tag: u64,
        request: Request,
        peer: Peer,
    },
    /// Outside any transaction: the ACK for a 2xx.
    Ack {
        request: Request,
        peer: Peer,
    },
    Respond {
        tx: TxId,
        response: Response,
    },
    Media {
        leg: LegId,
        command: media::leg::Command,
    },
    /// A one-way audio link between two media legs (bridge, listener).
    Link {
        from: LegId,
        tap: media::mix::Tap,
        to: LegId,
        feed: media::mix::Feed,
    },
    /// Ends every link from `from` to `to`.
    Unlink {
        from: LegId,
        to: LegId,
    },
    /// Starts call progress analysis on the leg's audio.
    StartCpa {
        leg: LegId,
        config: Box<SetCpaParams>,
        log: Option<PathBuf>,
    },
    /// Starts listening for key presses in the leg's audio.
    InbandDtmf {
        leg: LegId,
    },
    /// An event: `data` lacks only the timestamp, which the shell stamps as it publishes.
    Publish {
        subject: String,
        name: &'static str,
        data: Map<String, Value>,
    },
    Reply {
        req: ReqId,
        result: Result<Map<String, Value>, ApiError>,
    },
    /// An INVITE for a new dialog: the shell admits it (ACL, ports, route) into a
    /// [`Command::Inbound`] or refuses it.
    NewInbound {
        tx: TxId,
        request: Box<Request>,
        source: Peer,
    },
    /// A leg took its place among the pod's calls (directory, metrics, quotas).
    LegStarted {
        leg: LegId,
        uuid: String,
        tenant_id: String,
    },
    /// The leg is over: the shell lets its ports, media task and gateway slot go. Emitted for
    /// every leg the board was given, started or refused.
    LegEnded {
        leg: LegId,
        uuid: String,
        direction: &'static str,
        cause: HangupCause,
        started: bool,
    },
}

/// The call timers, each kept per leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallTimer {
    /// `dial_timeout`: no answer by then → CANCEL, NO_ANSWER.
    Dial,
    /// RFC 3261 §9.1: a CANCEL whose INVITE never gets a final response is given up at 64·T1.
    CancelGuard,
    /// `max_call_secs`: ALLOTTED_TIMEOUT.
    MaxCall,
    /// RFC 4028: our refresh (re-INVITE or UPDATE) at half the interval.
    SessionRefresh,
    /// RFC 4028 §10: no refresh in time, BYE.
    SessionExpiry,
    /// A REFER accepted but never followed by a final NOTIFY.
    ReferGuard,
    /// Bounds the wait for the media's statistics and CPA's last event at hangup.
    Teardown,
}

/// What a client transaction of ours was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Invite,
    /// CANCEL, BYE, an ACK-less INFO: nothing follows from the answer.
    Fire,
    Refresh,
    Refer,
}

pub struct Switchboard {
    cfg: BoardConfig,
    legs: HashMap<LegId, Leg>,
    by_uuid: HashMap<String, LegId>,
    /// RFC 3261 §12: Call-ID and our tag; the far end's tag is checked on the leg.
    dialogs: HashMap<(String, String), LegId>,
    /// Every live leg's Call-ID (merged requests, ACK timeouts).
    call_ids: HashMap<String, LegId>,
    clients: HashMap<u64, (LegId, Purpose)>,
    next_tag: u64,
    joins: Vec<Join>,
    /// The links in force, as last told to the shell.
    links: BTreeSet<joins::Link>,
    timers: BTreeSet<(Instant, LegId, CallTimer)>,
    out: VecDeque<Output>,
    shutting_down: bool,
}

impl Switchboard {
    pub fn new(cfg: BoardConfig) -> Switchboard {
        Switchboard {
            cfg,
            legs: HashMap::new(),
            by_uuid: HashMap::new(),
            dialogs: HashMap::new(),
            call_ids: HashMap::new(),
            clients: HashMap::new(),
            next_tag: 0,
            joins: Vec::new(),
            links: BTreeSet::new(),
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            shutting_down: false,
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<(Instant, CallTimer)> {
        self.timers.iter().next().map(|(at, _, t)| (*at, *t))
    }

    /// Live legs (for drain and tests).
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    pub fn handle_command(&mut self, now: Instant, req: Option<ReqId>, cmd: Command) {
        api::command(self, now, req, cmd);
    }

    pub fn handle_sip(&mut self, now: Instant, ev: SipEvent) {
        match ev {
            SipEvent::Client { tag, event } => self.client_event(now, tag, event),
            SipEvent::Server(ServerEvent::Request {
                tx,
                request,
                source,
            }) => self.request(now, tx, *request, source),
            SipEvent::Server(ServerEvent::Cancelled { invite_tx, .. }) => {
                let leg = self
                    .legs
                    .values()
                    .find(|l| l.invite_tx == Some(invite_tx))
                    .map(|l| l.id);
                if let Some(id) = leg {
                    dialog::cancelled(self, now, id);
                }
            }
            SipEvent::Server(ServerEvent::AckTimeout { call_id, .. }) => {
                if let Some(&id) = self.call_ids.get(&call_id) {
                    dialog::ack_timeout(self, now, id);
                }
            }
        }
    }

    pub fn handle_media(&mut self, now: Instant, leg: LegId, input: MediaInput) {
        if self.legs.contains_key(&leg) {
            leg::media_input(self, now, leg, input);
        }
    }

    /// Fires every timer due at `now`; an early call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, leg, timer)) = self.timers.iter().next() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, leg, timer));
            let Some(l) = self.legs.get_mut(&leg) else {
                continue;
            };
            if l.timers.remove(&timer) != Some(at) {
                continue;
            }
            match timer {
                CallTimer::Dial | CallTimer::CancelGuard => dial::timer(self, now, leg, timer),
                CallTimer::Teardown => leg::finalize(self, leg),
                _ => dialog::timer(self, now, leg, timer),
            }
        }
    }

    fn client_event(&mut self, now: Instant, tag: u64, event: ClientEvent) {
        let Some(&(leg, purpose)) = self.clients.get(&tag) else {
            return;
        };
        // An INVITE's entry stays for 2xx retransmissions until the leg goes; others end with
        // their final response.
        let fin = match &event {
            ClientEvent::Response { response, .. } => response.code >= 200,
            ClientEvent::Timeout => true,
        };
        if fin && purpose != Purpose::Invite {
            self.clients.remove(&tag);
        }
        if !self.legs.contains_key(&leg) {
            return;
        }
        match purpose {
            Purpose::Invite => dial::invite_event(self, now, leg, tag, event),
            Purpose::Fire => {}
            Purpose::Refresh => dialog::refresh_event(self, now, leg, event),
            Purpose::Refer => dialog::refer_event(self, now, leg, event),
        }
    }

    /// A request from the network: matched to its dialog by Call-ID and both tags (RFC 3261
    /// §12.2.2), or a new call, or answered here.
    fn request(&mut self, now: Instant, tx: Option<TxId>, req: Request, source: Peer) {
        let call_id = req.call_id().unwrap_or_default().to_string();
        let tag_of = |name: &str| {
            req.headers
                .get(name)
                .and_then(NameAddr::parse)
                .and_then(|n| n.tag().map(str::to_string))
        };
        let (from_tag, to_tag) = (tag_of("From"), tag_of("To"));
        let Some(to_tag) = to_tag else {
            return self.out_of_dialog(tx, req, source, &call_id);
        };
        let leg = self.dialogs.get(&(call_id, to_tag)).copied().filter(|id| {
            self.legs
                .get(id)
                .is_some_and(|l| l.remote_tag_matches(from_tag.as_deref()))
        });
        match (leg, tx) {
            (Some(id), _) => dialog::request(self, now, id, tx, req),
            // An ACK that matches nothing is dropped (§17.2.3); anything else gets 481 and
            // changes nothing.
            (None, None) => {}
            (None, Some(tx)) => self.reply_plain(tx, &req, 481),
        }
    }

    fn out_of_dialog(&mut self, tx: Option<TxId>, req: Request, source: Peer, call_id: &str) {
        let Some(tx) = tx else {
            return; // an ACK with no To tag belongs to nothing
        };
        match req.method.as_str() {
            // §8.2.2.2: the same Call-ID without our tag while the call lives is a merged or
            // looped request, never a re-INVITE of that call.
            "INVITE" if self.call_ids.contains_key(call_id) => self.reply_plain(tx, &req, 482),
            "INVITE" if self.shutting_down => {
                let mut r = self.response(&req, 503);
                r.headers.push(
                    "Reason",
                    crate::cause::reason_header_value(HangupCause::SYSTEM_SHUTDOWN),
                );
                self.respond(tx, r);
            }
            "INVITE" => self.out.push_back(Output::NewInbound {
                tx,
                request: Box::new(req),
                source,
            }),
            "OPTIONS" => {
                let mut r = self.response(&req, 200);
                r.headers.push("Allow", ALLOW);
                r.headers.push("Accept", "application/sdp");
                self.respond(tx, r);
            }
            "BYE" | "UPDATE" | "INFO" | "REFER" | "NOTIFY" | "PRACK" => {
                self.reply_plain(tx, &req, 481)
            }
            "REGISTER" | "SUBSCRIBE" | "MESSAGE" | "PUBLISH" => self.reply_plain(tx, &req, 405),
            _ => self.reply_plain(tx, &req, 501),
        }
    }

    /// A response of ours outside any dialog: a fresh To tag, our Server header.
    fn response(&self, req: &Request, code: u16) -> Response {
        let mut r = response_to(req, code, Some(&sip_core::dialog::new_tag()));
        r.headers.push("Server", self.cfg.local.user_agent.clone());
        if code == 405 {
            r.headers.push("Allow", ALLOW);
        }
        r
    }

    fn reply_plain(&mut self, tx: TxId, req: &Request, code: u16) {
        let r = self.response(req, code);
        self.respond(tx, r);
    }

    fn respond(&mut self, tx: TxId, response: Response) {
        self.out.push_back(Output::Respond { tx, response });
    }

    /// Sends a request in a new client transaction for `leg`.
    fn send(&mut self, leg: LegId, purpose: Purpose, request: Request, peer: Peer) -> u64 {
        self.next_tag += 1;
        let tag = self.next_tag;
        self.clients.insert(tag, (leg, purpose));
        self.out.push_back(Output::Send { tag, request, peer });
        tag
    }

    fn media(&mut self, leg: LegId, command: media::leg::Command) {
        self.out.push_back(Output::Media { leg, command });
    }

    fn reply(&mut self, req: Option<ReqId>, result: Result<Map<String, Value>, ApiError>) {
        if let Some(req) = req {
            self.out.push_back(Output::Reply { req, result });
        }
    }

    fn set_timer(&mut self, leg: LegId, timer: CallTimer, at: Instant) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        if let Some(old) = l.timers.insert(timer, at) {
            self.timers.remove(&(old, leg, timer));
        }
        self.timers.insert((at, leg, timer));
    }

    fn clear_timer(&mut self, leg: LegId, timer: CallTimer) {
        if let Some(old) = self
            .legs
            .get_mut(&leg)
            .and_then(|l| l.timers.remove(&timer))
        {
            self.timers.remove(&(old, leg, timer));
        }
    }

    fn leg_of(&self, uuid: &str) -> Option<LegId> {
        self.by_uuid.get(uuid).copied()
    }
}
