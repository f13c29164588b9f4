//! One task per call leg owns everything about it: its SIP dialog, its ports, its gateway slot.
//! Request handlers talk to it only through [`CallCommand`]s, so a call's state is never shared.
//!
//! Outbound: `request_make_call` → INVITE (digest auth if challenged) → ringing → answered or a
//! failure with its cause (§5) → BYE/CANCEL. Inbound: an INVITE that passed the front door is
//! answered and then lives in the same dialog loop as an answered outbound call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sip_core::auth::{self, Credentials};
use sip_core::dialog::{new_branch, new_tag, Dialog};
use sip_core::io::{ClientEvent, ServerEvent};
use sip_core::msg::{Message, Request, Response};
use sip_core::sdp;
use sip_core::transaction::response_to;
use sip_core::{Peer, TxId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::cause::{self, HangupCause};
use crate::error::{ApiError, StatusCode};
use crate::events::{fields, EventSink, Hangup};
use crate::switch::{CallCommand, Switch};

pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, NOTIFY";

/// `sip_h_X-Foo` channel variables become `X-Foo` headers (§3.2, §3.4).
fn custom_headers(vars: &BTreeMap<String, String>) -> impl Iterator<Item = (&str, &str)> {
    vars.iter()
        .filter_map(|(k, v)| k.strip_prefix("sip_h_").map(|h| (h, v.as_str())))
}

/// The Reason header the switch puts on its BYE, CANCEL and final error responses (§5).
pub fn reason(cause: HangupCause) -> String {
    cause::reason_header_value(cause)
}

/// The media side of a call: the leg task (which owns the ports) and what SDP settled.
pub struct MediaSession {
    pub port: u16,
    pub session_id: u64,
    pub remote: Option<sdp::MediaDescription>,
    pub codec: Option<sdp::Codec>,
    leg: mpsc::UnboundedSender<media::leg::Command>,
    events: mpsc::UnboundedReceiver<media::leg::Event>,
    /// Set once media flowed both ways, so `call_quality` follows the hangup.
    pub answered: bool,
}

impl MediaSession {
    pub fn new(lease: media::PortLease, cfg: media::leg::MediaConfig) -> Self {
        let port = lease.port;
        let (tx, rx) = mpsc::unbounded_channel();
        let leg = media::leg::spawn(lease, cfg, tx);
        MediaSession {
            port,
            session_id: rand_u32() as u64,
            remote: None,
            codec: None,
            leg,
            events: rx,
            answered: false,
        }
    }

    /// Starts sending to the negotiated address (RTP is symmetric from then on). Without
    /// telephone-event, key presses arrive as tones: an in-band detector listens instead.
    pub fn connect_with_dtmf(&mut self, events: &EventSink) {
        self.connect();
        if self
            .remote
            .as_ref()
            .is_some_and(|r| r.telephone_event.is_none())
        {
            let (tap, audio) = mpsc::channel(64);
            self.send(media::leg::Command::Tap(tap));
            tokio::spawn(crate::cpa_run::inband_dtmf(audio, events.clone()));
        }
    }

    fn connect(&mut self) {
        let (Some(remote), Some(codec)) = (&self.remote, self.codec) else {
            return;
        };
        let law = match codec {
            sdp::Codec::Pcmu => media::g711::Law::Mu,
            sdp::Codec::Pcma => media::g711::Law::A,
        };
        self.answered = true;
        let _ = self.leg.send(media::leg::Command::Remote {
            addr: remote.addr,
            law,
            telephone_event: remote.telephone_event,
        });
    }

    pub fn send(&self, c: media::leg::Command) {
        let _ = self.leg.send(c);
    }

    /// Stops the leg; returns its statistics and the events it still had to tell.
    async fn stop(&mut self) -> (Option<media::leg::Report>, Vec<media::leg::Event>) {
        let (done, rx) = oneshot::channel();
        let _ = self.leg.send(media::leg::Command::Stop { done });
        let report = tokio::time::timeout(Duration::from_secs(2), rx)
            .await
            .ok()
            .and_then(|r| r.ok());
        let mut rest = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            rest.push(e);
        }
        (report, rest)
    }
}

fn rand_u32() -> u32 {
    // uuid's generator is already seeded from the OS; no second RNG for one number.
    uuid::Uuid::new_v4().as_u128() as u32
}

pub struct OutboundCall {
    pub sw: Arc<Switch>,
    pub uuid: String,
    pub to_number: String,
    pub from_number: String,
    pub dial_timeout: Duration,
    pub max_call_secs: Option<u32>,
    pub vars: BTreeMap<String, String>,
    pub gateway: Arc<gateway::GatewayConfig>,
    pub gateway_up: bool,
    pub slot: gateway::CallSlot,
    pub media: MediaSession,
    pub events: EventSink,
    /// make_call's `record`: a stereo WAV of the whole answered call (api.md §3.16).
    pub record: bool,
    /// make_call's `cpa_config`, resolved: analysis runs from answer.
    pub cpa: Option<crate::request::SetCpaParams>,
}

/// How dialing ended.
enum Dialed {
    Answered {
        invite: Request,
        ok: Response,
        peer: Peer,
        tx_events: mpsc::UnboundedReceiver<ClientEvent>,
    },
    Failed(Hangup),
}

/// State the dialog loop needs, shared by both directions.
struct Leg {
    sw: Arc<Switch>,
    uuid: String,
    direction: &'static str,
    events: EventSink,
    vars: BTreeMap<String, String>,
    started: Instant,
    answered: Option<Instant>,
    from_number: String,
    to_number: String,
    /// Set while a stream is up, for `request_get_call`.
    streaming: bool,
    /// Live CPA; awaited at hangup so its cpa_done comes before the hangup event.
    cpa_task: Option<tokio::task::JoinHandle<()>>,
}

impl Leg {
    /// Ends the media, tells what it still had to say, then the hangup, then the quality
    /// (api.md §4 order: … → stream_stopped → hangup → call_quality).
    async fn end(&mut self, h: Hangup, media: &mut MediaSession) {
        let (report, rest) = media.stop().await;
        for e in rest {
            self.media_event(e).await;
        }
        if let Some(t) = self.cpa_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        self.hangup(h).await;
        if let (true, Some(r)) = (media.answered, report) {
            let q =
                media::quality::estimate(r.packets_expected, r.packets_lost, r.jitter_ms, r.rtt_ms);
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
            self.events.publish("call_quality", f).await;
        }
    }

    /// A media event as the app hears it (api.md §4).
    async fn media_event(&mut self, e: media::leg::Event) {
        use media::leg::Event as E;
        match e {
            E::Dtmf { digit, source } => {
                self.events
                    .publish(
                        "dtmf",
                        fields([
                            ("digit", Value::from(digit.to_string())),
                            ("source", Value::from(source)),
                        ]),
                    )
                    .await
            }
            E::StreamStarted => {
                self.streaming = true;
                self.events.publish("stream_started", Map::new()).await
            }
            E::StreamStopped { reason, code } => {
                self.streaming = false;
                self.events
                    .publish(
                        "stream_stopped",
                        fields([
                            ("reason", Value::from(reason)),
                            ("reason_code", Value::from(code)),
                        ]),
                    )
                    .await
            }
            E::PlayMark { name } => {
                self.events
                    .publish("play_mark", fields([("name", Value::from(name))]))
                    .await
            }
            E::Error { status } => {
                self.events
                    .publish(
                        "error",
                        fields([
                            ("status", Value::from(status)),
                            ("status_code", Value::from(0)),
                        ]),
                    )
                    .await
            }
            E::RecordStopped { path, duration_ms } => {
                self.events
                    .publish(
                        "record_stopped",
                        fields([
                            ("path", Value::from(path.display().to_string())),
                            ("duration_ms", Value::from(duration_ms)),
                        ]),
                    )
                    .await
            }
            E::MediaTimeout => {}
        }
    }

    async fn hangup(&self, h: Hangup) {
        let now = Instant::now();
        let duration_ms = now.duration_since(self.started).as_millis() as u64;
        let billsec = self
            .answered
            .map(|a| now.duration_since(a).as_secs())
            .unwrap_or(0);
        tracing::info!(call_uuid = %self.uuid, cause = h.cause.name(), disposition = h.disposition, "hangup");
        self.events
            .publish("hangup", h.fields(duration_ms, billsec))
            .await;
        self.sw.call_ended(&self.uuid, self.direction, h.cause);
    }

    fn info(&self, state: &str) -> Value {
        json!({
            "call_uuid": self.uuid,
            "state": state,
            "direction": self.direction,
            "tenant_id": self.events.tenant_id,
            "dialer_pod_id": self.sw.cfg.pod_id,
            "duration_ms": self.started.elapsed().as_millis() as u64,
            "answered": self.answered.is_some(),
            "billsec": self.answered.map(|a| a.elapsed().as_secs()).unwrap_or(0),
            "from_number": self.from_number,
            "to_number": self.to_number,
            "stream": self.streaming,
        })
    }
}

impl OutboundCall {
    pub async fn run(self, mut commands: mpsc::UnboundedReceiver<CallCommand>) {
        let OutboundCall {
            sw,
            uuid,
            to_number,
            from_number,
            dial_timeout,
            max_call_secs,
            vars,
            gateway: gw,
            gateway_up,
            slot,
            mut media,
            events,
            record,
            cpa,
        } = self;
        let mut leg = Leg {
            sw: sw.clone(),
            uuid: uuid.clone(),
            direction: "outbound",
            events: events.clone(),
            vars,
            started: Instant::now(),
            answered: None,
            from_number: from_number.clone(),
            to_number: to_number.clone(),
            streaming: false,
            cpa_task: None,
        };
        let call_id = format!("{uuid}@{}", sw.local.host);
        // Registered before the INVITE leaves: a carrier may send BYE right behind its 200.
        let mut dialog_events = sw.stack.register_call(&call_id);
        let originate = |status: &str, code: u16| {
            fields([
                ("gateway", Value::from(gw.name.clone())),
                ("to_number", Value::from(to_number.clone())),
                ("from_number", Value::from(from_number.clone())),
                ("event_subject", Value::from(events.subject.clone())),
                ("status", Value::from(status)),
                ("status_code", Value::from(code)),
            ])
        };
        events.publish("started", Map::new()).await;

        let dialed = if !gateway_up {
            Dialed::Failed(Hangup {
                cause: HangupCause::GATEWAY_DOWN,
                sip_code: None,
                sip_reason: Some(format!("gateway '{}' is DOWN", gw.name)),
                disposition: "send_refuse",
            })
        } else {
            match gateway::agent::resolve(gw.next_hop()).await {
                None => Dialed::Failed(Hangup {
                    cause: HangupCause::from_name("DESTINATION_OUT_OF_ORDER")
                        .unwrap_or(HangupCause::NORMAL_TEMPORARY_FAILURE),
                    sip_code: None,
                    sip_reason: Some(format!("cannot resolve {}", gw.next_hop().host)),
                    disposition: "send_refuse",
                }),
                Some(peer) => {
                    dial(
                        &mut leg,
                        &gw,
                        peer,
                        &call_id,
                        &to_number,
                        &from_number,
                        dial_timeout,
                        &mut media,
                        &mut commands,
                    )
                    .await
                }
            }
        };
        match dialed {
            Dialed::Failed(h) => {
                let status = format!(
                    "{} ({})",
                    h.cause.name(),
                    h.sip_code.map(|c| c.to_string()).unwrap_or_default()
                );
                events
                    .publish(
                        "originate",
                        originate(&status, StatusCode::DialFailed.code()),
                    )
                    .await;
                leg.end(h, &mut media).await;
            }
            Dialed::Answered {
                invite,
                ok,
                peer,
                tx_events,
            } => {
                let mut dialog = Dialog::from_uac(&invite, &ok, peer);
                if gw.outbound_proxy.is_none() && dialog.route_set.is_empty() {
                    // Without a route set, in-dialog requests go to the far end's Contact (§12.2.1.1).
                    if let Some(p) = target_peer(&dialog.remote_target, peer).await {
                        dialog.peer = p;
                    }
                }
                let invite_seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
                sw.stack
                    .send_stateless(peer, Message::Request(dialog.ack(invite_seq, &sw.local)));
                if let Some(remote) = sdp::parse(&ok.body) {
                    media.codec = remote.codecs.first().copied();
                    media.remote = Some(remote);
                }
                media.connect_with_dtmf(&events);
                if record {
                    let (done, _) = oneshot::channel();
                    let path = sw.data_dir.join(format!("recordings/{uuid}.wav"));
                    media.send(media::leg::Command::StartRecord { path, done });
                }
                leg.answered = Some(Instant::now());
                if let Some(config) = cpa {
                    leg.cpa_task = Some(start_cpa(&sw, &uuid, &events, &media, config));
                }
                events.publish("originate", originate("OK", 0)).await;
                events
                    .publish(
                        "answered",
                        fields([
                            ("call_type", Value::from("outbound")),
                            ("from_number", Value::from(from_number.clone())),
                            ("to_number", Value::from(to_number.clone())),
                        ]),
                    )
                    .await;
                let limit = max_call_secs.map(|s| Instant::now() + Duration::from_secs(s as u64));
                let h = in_dialog(
                    &mut leg,
                    dialog,
                    Some((invite_seq, tx_events)),
                    None,
                    &mut media,
                    &mut dialog_events,
                    &mut commands,
                    limit,
                )
                .await;
                leg.end(h, &mut media).await;
            }
        }
        sw.stack.unregister_call(&call_id);
        drop(slot);
        drop(media);
    }
}

/// Taps the caller's audio into a CPA task (api.md §3.1): events go to the configuration's
/// subject if it has one, and with `log_voice` the analysed audio is kept under the data dir.
fn start_cpa(
    sw: &Switch,
    uuid: &str,
    events: &EventSink,
    media: &MediaSession,
    config: crate::request::SetCpaParams,
) -> tokio::task::JoinHandle<()> {
    let (tap, audio) = mpsc::channel(64);
    media.send(media::leg::Command::Tap(tap));
    let mut sink = events.clone();
    if let Some(subject) = &config.event_subject {
        sink.subject = subject.clone();
    }
    let log = config
        .log_voice
        .then(|| sw.data_dir.join(format!("cpa/{uuid}.wav")));
    tokio::spawn(crate::cpa_run::run(config, audio, sink, log))
}

/// Where a SIP URI points (its host and port, and transport param), resolved.
async fn target_peer(uri: &str, default: Peer) -> Option<Peer> {
    let u = sip_core::msg::Uri::parse(uri)?;
    let transport = u
        .params
        .get("transport")
        .and_then(sip_core::Transport::from_name)
        .unwrap_or(default.transport);
    let t = gateway::Target {
        host: u.host,
        port: u.port.unwrap_or(5060),
        transport,
    };
    gateway::agent::resolve(&t).await
}

/// Builds our INVITE (§3.2): the gateway's domain, caller id, custom headers and SDP offer.
#[allow(clippy::too_many_arguments)]
fn build_invite(
    sw: &Switch,
    gw: &gateway::GatewayConfig,
    peer: Peer,
    call_id: &str,
    from_tag: &str,
    cseq: u32,
    to: &str,
    from: &str,
    vars: &BTreeMap<String, String>,
    media: &MediaSession,
) -> Request {
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
        .push("Via", sw.local.via(peer.transport, &new_branch()));
    r.headers.push("Max-Forwards", "70");
    r.headers.push(
        "From",
        format!("\"{from}\" <sip:{from_user}@{from_domain}>;tag={from_tag}"),
    );
    r.headers.push("To", format!("<sip:{to}@{domain}>"));
    r.headers.push("Call-ID", call_id);
    r.headers.push("CSeq", format!("{cseq} INVITE"));
    r.headers
        .push("Contact", sw.local.contact(&from_user, peer.transport));
    if !gw.caller_id_in_from {
        r.headers
            .push("P-Asserted-Identity", format!("<sip:{from}@{from_domain}>"));
    }
    r.headers.push("Allow", ALLOW);
    r.headers.push("User-Agent", sw.local.user_agent.clone());
    for (name, value) in custom_headers(&gw.variables).chain(custom_headers(vars)) {
        r.headers.set(name, value);
    }
    r.headers.push("Content-Type", "application/sdp");
    r.body = sdp::offer(media.session_id, 1, sw.cfg.public_ip, media.port).into_bytes();
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
    c.headers.push("Reason", reason(cause));
    c
}

#[allow(clippy::too_many_arguments)]
async fn dial(
    leg: &mut Leg,
    gw: &gateway::GatewayConfig,
    peer: Peer,
    call_id: &str,
    to: &str,
    from: &str,
    dial_timeout: Duration,
    media: &mut MediaSession,
    commands: &mut mpsc::UnboundedReceiver<CallCommand>,
) -> Dialed {
    let sw = leg.sw.clone();
    let from_tag = new_tag();
    let mut cseq = 1;
    let mut invite = build_invite(
        &sw, gw, peer, call_id, &from_tag, cseq, to, from, &leg.vars, media,
    );
    let (_, mut rx) = sw.stack.request(invite.clone(), peer).await;
    let deadline = Instant::now() + dial_timeout;
    let mut provisional = false;
    let mut ringing = false;
    // Set once we decided to give up: the cause and whether the CANCEL went out yet.
    let mut cancel: Option<(HangupCause, bool)> = None;
    let mut challenges = 0;
    let mut pending_drop: Option<tokio::sync::oneshot::Sender<Result<(), ApiError>>> = None;

    loop {
        tokio::select! {
            ev = rx.recv() => {
                let resp = match ev {
                    Some(ClientEvent::Response(r)) => r,
                    Some(ClientEvent::Timeout) | None => {
                        // Timer B: nobody answered the INVITE at all (§5).
                        let (cause, disposition) = match cancel {
                            Some((c, _)) => (c, "send_cancel"),
                            None => (HangupCause::RECOVERY_ON_TIMER_EXPIRE, "send_refuse"),
                        };
                        if let Some(d) = pending_drop.take() { let _ = d.send(Ok(())); }
                        return Dialed::Failed(Hangup { cause, sip_code: None, sip_reason: Some("no response to INVITE".into()), disposition });
                    }
                };
                match resp.code {
                    100..=199 => {
                        provisional = true;
                        if resp.code > 100 && !ringing {
                            ringing = true;
                            let early = resp.code == 183 || !resp.body.is_empty();
                            leg.events.publish("ringing", fields([("early_media", Value::from(early))])).await;
                        }
                        if let Some((c, false)) = cancel {
                            send_cancel(&sw, &invite, peer, c).await;
                            cancel = Some((c, true));
                        }
                    }
                    200..=299 => {
                        if let Some((c, _)) = cancel {
                            // The answer crossed our CANCEL: complete the dialog and end it (§9.1).
                            let mut d = Dialog::from_uac(&invite, &resp, peer);
                            let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
                            sw.stack.send_stateless(peer, Message::Request(d.ack(seq, &sw.local)));
                            send_bye(&sw, &mut d, c, &leg.vars).await;
                            if let Some(dn) = pending_drop.take() { let _ = dn.send(Ok(())); }
                            return Dialed::Failed(Hangup { cause: c, sip_code: Some(resp.code), sip_reason: Some(resp.reason.clone()), disposition: "send_cancel" });
                        }
                        return Dialed::Answered { invite, ok: *resp, peer, tx_events: rx };
                    }
                    401 | 407 if cancel.is_none() && challenges < 2 => {
                        let header = if resp.code == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
                        let challenge = resp.headers.get(header).and_then(auth::parse_challenge);
                        let creds = gw.username.as_deref().zip(gw.password.as_deref());
                        match (challenge, creds) {
                            // A second challenge is an answer refused, unless the nonce was only stale.
                            (Some(ch), Some((user, pass))) if challenges == 0 || ch.stale => {
                                challenges += 1;
                                cseq += 1;
                                let mut next = build_invite(&sw, gw, peer, call_id, &from_tag, cseq, to, from, &leg.vars, media);
                                let answer = auth::authorization(&ch, &Credentials { username: user, password: pass }, "INVITE", &next.uri, 1, &new_tag());
                                next.headers.push(if resp.code == 401 { "Authorization" } else { "Proxy-Authorization" }, answer);
                                invite = next;
                                let (_, r) = sw.stack.request(invite.clone(), peer).await;
                                rx = r;
                                provisional = false;
                            }
                            _ => return Dialed::Failed(refused(&resp)),
                        }
                    }
                    _ => {
                        if let Some(d) = pending_drop.take() { let _ = d.send(Ok(())); }
                        return Dialed::Failed(match cancel {
                            Some((c, _)) => Hangup { cause: c, sip_code: Some(resp.code), sip_reason: Some(resp.reason.clone()), disposition: "send_cancel" },
                            None => refused(&resp),
                        });
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if cancel.is_none() => {
                tracing::info!(call_uuid = %leg.uuid, "dial timeout: cancelling");
                give_up(&mut cancel, HangupCause::NO_ANSWER, provisional, &sw, &invite, peer).await;
            }
            cmd = commands.recv() => match cmd {
                Some(CallCommand::Drop { cause, done }) => {
                    give_up(&mut cancel, cause, provisional, &sw, &invite, peer).await;
                    // Replied at once: the CANCEL is out (or will be at the first provisional).
                    let _ = done.send(Ok(()));
                }
                Some(CallCommand::Shutdown) => {
                    give_up(&mut cancel, HangupCause::SYSTEM_SHUTDOWN, provisional, &sw, &invite, peer).await;
                }
                Some(CallCommand::SetVars { vars, done }) => {
                    leg.vars.extend(vars);
                    let _ = done.send(Ok(()));
                }
                Some(CallCommand::Info { done }) => {
                    let _ = done.send(leg.info(if ringing { "ringing" } else { "dialing" }));
                }
                Some(CallCommand::Media { done, .. }) => {
                    let _ = done.send(Err(ApiError::new(StatusCode::StreamInitFailed, "the call is not answered yet")));
                }
                None => {}
            }
        }
    }
}

/// Stream, playback, DTMF and recording requests on an answered call (api.md §3.5–§3.7,
/// §3.16). Each answers through `done` once the leg has acted; nothing here waits on the app.
fn media_request(
    leg: &Leg,
    media: &MediaSession,
    request: MediaRequest,
    done: oneshot::Sender<Result<Map<String, Value>, ApiError>>,
) {
    use media::leg::Command as C;
    match request {
        MediaRequest::StartStream(s) => {
            let s = *s;
            let mut first = Map::new();
            first.insert("call_uuid".into(), Value::from(leg.uuid.clone()));
            first.insert(
                "tenant_id".into(),
                Value::from(leg.events.tenant_id.clone()),
            );
            if let Some(p) = &leg.events.call_params {
                first.insert("call_params".into(), Value::Object(p.clone()));
            }
            first.insert("from_number".into(), Value::from(leg.from_number.clone()));
            first.insert("to_number".into(), Value::from(leg.to_number.clone()));
            first.insert("sample_rate".into(), Value::from(s.sample_rate));
            first.insert("encoding".into(), Value::from("pcm_s16le"));
            first.insert("channels".into(), Value::from(1));
            if let Some(m) = &s.metadata {
                first.insert("metadata".into(), Value::Object(m.clone()));
            }
            let (tx, rx) = oneshot::channel();
            media.send(C::StartStream {
                url: s.url,
                first_frame: Value::Object(first).to_string(),
                sample_rate: s.sample_rate,
                done: tx,
            });
            tokio::spawn(async move {
                let r = match rx.await {
                    Ok(Ok(())) => Ok(Map::new()),
                    Ok(Err(e)) if e == media::leg::ALREADY_STREAMING => {
                        Err(ApiError::new(StatusCode::AlreadyStreaming, e))
                    }
                    Ok(Err(e)) => Err(ApiError::new(StatusCode::StreamInitFailed, e)),
                    Err(_) => Err(ApiError::new(
                        StatusCode::StreamInitFailed,
                        "the call ended",
                    )),
                };
                let _ = done.send(r);
            });
        }
        MediaRequest::StopStream => {
            let (tx, rx) = oneshot::channel();
            media.send(C::StopStream {
                reason: "stop_stream".into(),
                done: tx,
            });
            answer_when_acted(
                rx,
                done,
                StatusCode::InvalidRequest,
                "the call has no stream",
            );
        }
        MediaRequest::StopPlay => {
            let (tx, rx) = oneshot::channel();
            media.send(C::StopPlay { done: tx });
            answer_when_acted(
                rx,
                done,
                StatusCode::StopPlayFailed,
                "the call has no stream playing",
            );
        }
        MediaRequest::SendDtmf {
            digits,
            duration_ms,
        } => {
            if media
                .remote
                .as_ref()
                .and_then(|r| r.telephone_event)
                .is_none()
            {
                let _ = done.send(Err(ApiError::new(
                    StatusCode::InvalidRequest,
                    "the far end did not offer telephone-event",
                )));
                return;
            }
            media.send(C::SendDtmf {
                digits,
                duration_ms,
            });
            let _ = done.send(Ok(Map::new()));
        }
        MediaRequest::StartRecord { path } => {
            let (tx, rx) = oneshot::channel();
            let shown = path.display().to_string();
            media.send(C::StartRecord { path, done: tx });
            tokio::spawn(async move {
                let r = match rx.await {
                    Ok(Ok(())) => {
                        let mut m = Map::new();
                        m.insert("path".into(), Value::from(shown));
                        Ok(m)
                    }
                    Ok(Err(e)) => Err(ApiError::new(StatusCode::InvalidRequest, e)),
                    Err(_) => Err(ApiError::new(StatusCode::InvalidRequest, "the call ended")),
                };
                let _ = done.send(r);
            });
        }
        MediaRequest::StopRecord => {
            let (tx, rx) = oneshot::channel();
            media.send(C::StopRecord { done: tx });
            answer_when_acted(
                rx,
                done,
                StatusCode::InvalidRequest,
                "the call is not being recorded",
            );
        }
    }
}

/// Answers `done` once the leg says whether it had something to act on (a stream, a recording).
fn answer_when_acted(
    acted: oneshot::Receiver<bool>,
    done: oneshot::Sender<Result<Map<String, Value>, ApiError>>,
    refusal: StatusCode,
    why: &'static str,
) {
    tokio::spawn(async move {
        let r = match acted.await {
            Ok(true) => Ok(Map::new()),
            _ => Err(ApiError::new(refusal, why)),
        };
        let _ = done.send(r);
    });
}

/// A media request as the call task receives it.
pub enum MediaRequest {
    /// Boxed: the call's command channel preallocates 32 slots of the largest command.
    StartStream(Box<crate::request::StartStream>),
    StopStream,
    StopPlay,
    SendDtmf {
        digits: String,
        duration_ms: u32,
    },
    StartRecord {
        path: std::path::PathBuf,
    },
    StopRecord,
}

/// Stops dialing with `cause` (the first reason wins). CANCEL may only follow a provisional
/// response (RFC 3261 §9.1); before one, it goes out when the first provisional arrives.
async fn give_up(
    cancel: &mut Option<(HangupCause, bool)>,
    cause: HangupCause,
    provisional: bool,
    sw: &Switch,
    invite: &Request,
    peer: Peer,
) {
    if cancel.is_some() {
        return;
    }
    *cancel = Some((cause, provisional));
    if provisional {
        send_cancel(sw, invite, peer, cause).await;
    }
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

async fn send_cancel(sw: &Switch, invite: &Request, peer: Peer, cause: HangupCause) {
    let (_, rx) = sw.stack.request(build_cancel(invite, cause), peer).await;
    // The 200 to CANCEL changes nothing: the INVITE's 487 ends the call.
    drop(rx);
}

async fn send_bye(
    sw: &Switch,
    dialog: &mut Dialog,
    cause: HangupCause,
    vars: &BTreeMap<String, String>,
) {
    let mut bye = dialog.request("BYE", &sw.local);
    bye.headers.push("Reason", reason(cause));
    for (name, value) in custom_headers(vars) {
        bye.headers.set(name, value);
    }
    let (_, rx) = sw.stack.request(bye, dialog.peer).await;
    drop(rx);
}

/// The answered call: requests from the far end, commands from the app, timers. Returns how it
/// ended.
#[allow(clippy::too_many_arguments)]
async fn in_dialog(
    leg: &mut Leg,
    mut dialog: Dialog,
    mut invite_tx: Option<(u32, mpsc::UnboundedReceiver<ClientEvent>)>,
    answer: Option<(TxId, Response)>,
    media: &mut MediaSession,
    dialog_events: &mut mpsc::UnboundedReceiver<ServerEvent>,
    commands: &mut mpsc::UnboundedReceiver<CallCommand>,
    limit: Option<Instant>,
) -> Hangup {
    let sw = leg.sw.clone();
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let our_answer = answer.map(|(_, r)| r);
    loop {
        tokio::select! {
            ev = async { match invite_tx.as_mut() { Some((_, rx)) => rx.recv().await, None => std::future::pending().await } } => {
                match ev {
                    // A retransmitted 2xx: our ACK was lost (§13.2.2.4).
                    Some(ClientEvent::Response(r)) if (200..300).contains(&r.code) => {
                        let seq = invite_tx.as_ref().map(|(s, _)| *s).unwrap_or(1);
                        sw.stack.send_stateless(dialog.peer, Message::Request(dialog.ack(seq, &sw.local)));
                        let _ = r;
                    }
                    Some(_) => {}
                    None => invite_tx = None,
                }
            }
            ev = dialog_events.recv() => {
                let Some(ev) = ev else { continue };
                match ev {
                    ServerEvent::Request { tx, request, .. } => {
                        if let Some(h) = in_dialog_request(leg, &mut dialog, tx, *request, media, our_answer.as_ref()).await {
                            return h;
                        }
                    }
                    ServerEvent::AckTimeout { .. } => {
                        // Our 200 was never acknowledged (§13.3.1.4): the caller is gone.
                        send_bye(&sw, &mut dialog, HangupCause::RECOVERY_ON_TIMER_EXPIRE, &leg.vars).await;
                        return Hangup { cause: HangupCause::RECOVERY_ON_TIMER_EXPIRE, sip_code: None, sip_reason: Some("no ACK for 200".into()), disposition: "send_bye" };
                    }
                    ServerEvent::Cancelled { .. } => {}
                }
            }
            ev = media.events.recv() => {
                match ev {
                    Some(media::leg::Event::MediaTimeout) => {
                        send_bye(&sw, &mut dialog, HangupCause::MEDIA_TIMEOUT, &leg.vars).await;
                        return Hangup { cause: HangupCause::MEDIA_TIMEOUT, sip_code: None, sip_reason: Some("no RTP".into()), disposition: "send_bye" };
                    }
                    Some(e) => leg.media_event(e).await,
                    None => {}
                }
            }
            cmd = commands.recv() => match cmd {
                Some(CallCommand::Drop { cause, done }) => {
                    send_bye(&sw, &mut dialog, cause, &leg.vars).await;
                    let _ = done.send(Ok(()));
                    return Hangup { cause, sip_code: None, sip_reason: None, disposition: "send_bye" };
                }
                Some(CallCommand::Media { request, done }) => media_request(leg, media, request, done),
                Some(CallCommand::Shutdown) => {
                    send_bye(&sw, &mut dialog, HangupCause::SYSTEM_SHUTDOWN, &leg.vars).await;
                    return Hangup { cause: HangupCause::SYSTEM_SHUTDOWN, sip_code: None, sip_reason: None, disposition: "send_bye" };
                }
                Some(CallCommand::SetVars { vars, done }) => {
                    leg.vars.extend(vars);
                    let _ = done.send(Ok(()));
                }
                Some(CallCommand::Info { done }) => {
                    let _ = done.send(leg.info("answered"));
                }
                None => {}
            },
            _ = tokio::time::sleep_until(limit.unwrap_or(far)) => {
                send_bye(&sw, &mut dialog, HangupCause::ALLOTTED_TIMEOUT, &leg.vars).await;
                return Hangup { cause: HangupCause::ALLOTTED_TIMEOUT, sip_code: None, sip_reason: None, disposition: "send_bye" };
            }
        }
    }
}

/// A request inside the dialog. Returns the hangup when it ends the call.
async fn in_dialog_request(
    leg: &mut Leg,
    dialog: &mut Dialog,
    tx: Option<TxId>,
    request: Request,
    media: &mut MediaSession,
    our_answer: Option<&Response>,
) -> Option<Hangup> {
    let sw = leg.sw.clone();
    let Some(tx) = tx else {
        return None; // ACK: nothing to answer
    };
    let local_tag =
        sip_core::msg::NameAddr::parse(&dialog.local).and_then(|n| n.tag().map(str::to_string));
    let respond = |code: u16| {
        let mut r = response_to(&request, code, local_tag.as_deref());
        r.headers.push("Server", sw.local.user_agent.clone());
        r
    };
    match request.method.as_str() {
        "BYE" => {
            sw.stack.respond(tx, respond(200));
            let reason_header = request.headers.get_all("Reason").join(", ");
            let cause =
                cause::parse_reason_header(&reason_header).unwrap_or(HangupCause::NORMAL_CLEARING);
            Some(Hangup {
                cause,
                sip_code: None,
                sip_reason: None,
                disposition: "recv_bye",
            })
        }
        "INVITE" | "UPDATE" => {
            // Re-INVITE / UPDATE (hold, new address, session refresh): answer with our same
            // stream, follow the new remote address.
            let mut r = respond(200);
            r.headers.push("Contact", dialog.contact.clone());
            r.headers.push("Allow", ALLOW);
            if !request.body.is_empty() || request.method == "INVITE" {
                if let Some(remote) = sdp::parse(&request.body) {
                    media.remote = Some(remote);
                }
                let body = match &media.remote {
                    Some(remote) => {
                        sdp::answer(remote, media.session_id, sw.cfg.public_ip, media.port)
                            .map(|(s, _)| s)
                    }
                    None => Some(sdp::offer(
                        media.session_id,
                        2,
                        sw.cfg.public_ip,
                        media.port,
                    )),
                };
                match body {
                    Some(b) => {
                        r.headers.push("Content-Type", "application/sdp");
                        r.body = b.into_bytes();
                    }
                    None => r = respond(488),
                }
            }
            if let Some(target) = request
                .headers
                .get("Contact")
                .and_then(sip_core::msg::NameAddr::parse)
            {
                dialog.remote_target = target.uri;
            }
            sw.stack.respond(tx, r);
            let _ = our_answer;
            None
        }
        "INFO" => {
            // SIP INFO application/dtmf-relay: a key press signalled in SIP (§3.16, `dtmf`).
            let ct = request
                .headers
                .get("Content-Type")
                .unwrap_or("")
                .to_ascii_lowercase();
            if ct.starts_with("application/dtmf") {
                if let Some(digit) = media::dtmf::parse_dtmf_relay(&request.body) {
                    media.send(media::leg::Command::SipDtmf { digit });
                }
            }
            sw.stack.respond(tx, respond(200));
            None
        }
        "OPTIONS" | "NOTIFY" => {
            sw.stack.respond(tx, respond(200));
            None
        }
        _ => {
            let mut r = respond(405);
            r.headers.push("Allow", ALLOW);
            sw.stack.respond(tx, r);
            None
        }
    }
}

/// An inbound call that passed the front door (ACL, route, codec, ports).
pub struct InboundCall {
    pub sw: Arc<Switch>,
    pub uuid: String,
    pub tx: TxId,
    pub invite: Request,
    pub source: Peer,
    pub from_number: String,
    pub to_number: String,
    pub media: MediaSession,
    pub answer_sdp: String,
    pub events: EventSink,
    pub slot: Option<gateway::CallSlot>,
    pub vars: BTreeMap<String, String>,
}

impl InboundCall {
    pub async fn run(
        self,
        mut commands: mpsc::UnboundedReceiver<CallCommand>,
        mut dialog_events: mpsc::UnboundedReceiver<ServerEvent>,
    ) {
        let InboundCall {
            sw,
            uuid,
            tx,
            invite,
            source,
            from_number,
            to_number,
            mut media,
            answer_sdp,
            events,
            slot,
            vars,
        } = self;
        let call_id = invite.call_id().unwrap_or_default().to_string();
        let tag = new_tag();
        let contact = sw.local.contact("botstream", source.transport);
        let dialog = Dialog::from_uas(&invite, &tag, contact.clone(), source);
        let mut leg = Leg {
            sw: sw.clone(),
            uuid: uuid.clone(),
            direction: "inbound",
            events: events.clone(),
            vars,
            started: Instant::now(),
            answered: None,
            from_number: from_number.clone(),
            to_number: to_number.clone(),
            streaming: false,
            cpa_task: None,
        };

        let mut ringing = response_to(&invite, 180, Some(&tag));
        ringing.headers.push("Contact", contact.clone());
        sw.stack.respond(tx, ringing);
        let mut ok = response_to(&invite, 200, Some(&tag));
        ok.headers.push("Contact", contact);
        ok.headers.push("Allow", ALLOW);
        ok.headers.push("Server", sw.local.user_agent.clone());
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = answer_sdp.into_bytes();
        sw.stack.respond(tx, ok.clone());
        media.connect_with_dtmf(&events);
        leg.answered = Some(Instant::now());
        events
            .publish(
                "answered",
                fields([
                    ("call_type", Value::from("inbound")),
                    ("from_number", Value::from(from_number)),
                    ("to_number", Value::from(to_number)),
                ]),
            )
            .await;
        let h = in_dialog(
            &mut leg,
            dialog,
            None,
            Some((tx, ok)),
            &mut media,
            &mut dialog_events,
            &mut commands,
            None,
        )
        .await;
        leg.end(h, &mut media).await;
        sw.stack.unregister_call(&call_id);
        drop(slot);
        drop(media);
    }
}
