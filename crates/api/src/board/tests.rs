//! The call core on a virtual clock: each test plays the carrier (and the app) against the board
//! by hand, output by output, and nothing sleeps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sip_core::io::{ClientEvent, ServerEvent, SipEvent};
use sip_core::msg::{Request, Response};
use sip_core::transaction::response_to;
use sip_core::{Peer, Transport, TxId};

use super::*;

const CARRIER: &str = "10.0.0.1:5060";
const AGENT_GW: &str = "10.0.0.2:5060";

fn peer(addr: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr.parse().unwrap(),
    }
}

fn cfg() -> BoardConfig {
    BoardConfig {
        local: Local {
            host: "192.0.2.10".into(),
            port: 5060,
            user_agent: "BotStream/test".into(),
        },
        public_ip: "192.0.2.10".parse().unwrap(),
        pod_id: "pod-a".into(),
        data_dir: "/tmp/botstream-board-tests".into(),
        t1: Duration::from_millis(500),
        session_expires: 1800,
        min_se: 90,
        refer_timeout: Duration::from_secs(120),
        codecs: vec![sdp::Codec::G722, sdp::Codec::Pcmu, sdp::Codec::Pcma],
    }
}

fn gateway(name: &str, addr: &str, params: &[(&str, &str)]) -> Arc<gateway::GatewayConfig> {
    let mut p: BTreeMap<String, String> = [("proxy".to_string(), addr.to_string())].into();
    for (k, v) in params {
        p.insert(k.to_string(), v.to_string());
    }
    Arc::new(
        gateway::GatewayConfig::from_stored(&gateway::StoredGateway {
            name: name.into(),
            params: p,
            variables: Default::default(),
        })
        .unwrap(),
    )
}

/// The board, its clock, and everything it said so far (taken by the helpers below).
struct Bench {
    sb: Switchboard,
    now: Instant,
    out: Vec<Output>,
    next_leg: u64,
    next_tx: u64,
    next_req: u64,
}

/// An answered leg's far end as a test plays it.
struct Far {
    call_id: String,
    /// The far end's own tag and ours.
    far_tag: String,
    our_tag: String,
    cseq: u32,
    /// Our URI in their To (a UAC's From), their URI in their From.
    ours: String,
    theirs: String,
}

impl Bench {
    fn new() -> Bench {
        Self::with(cfg())
    }

    fn with(cfg: BoardConfig) -> Bench {
        Bench {
            sb: Switchboard::new(cfg),
            now: Instant::now(),
            out: Vec::new(),
            next_leg: 0,
            next_tx: 0,
            next_req: 0,
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.sb.poll_output() {
            self.out.push(o);
        }
    }

    fn command(&mut self, cmd: Command) -> ReqId {
        self.next_req += 1;
        let req = ReqId(self.next_req);
        self.sb.handle_command(self.now, Some(req), cmd);
        self.drain();
        req
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.sb.handle_timeout(self.now);
        self.drain();
    }

    /// Runs every timer due within `d`, in order.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some((at, _)) = self.sb.poll_timeout() {
            if at > end {
                break;
            }
            self.now = at;
            self.sb.handle_timeout(at);
            self.drain();
        }
        self.now = end;
    }

    fn dial(
        &mut self,
        gw: Arc<gateway::GatewayConfig>,
        to: &str,
        vars: &[(&str, &str)],
    ) -> (LegId, String) {
        self.next_leg += 1;
        let leg = LegId(self.next_leg);
        let uuid = format!("00000000-0000-4000-8000-{:012}", self.next_leg);
        let addr = gw.proxy.host_port();
        let d = Dial {
            leg,
            uuid: uuid.clone(),
            target: EventTarget {
                subject: "app.events".into(),
                tenant_id: "t1".into(),
                call_params: None,
            },
            to_number: to.into(),
            from_number: "15559998888".into(),
            gateway: gw,
            gateway_up: true,
            peer: Some(peer(&addr)),
            dial_timeout: Duration::from_secs(30),
            max_call: None,
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            record: false,
            cpa: None,
            media: MediaInfo {
                port: 20000 + self.next_leg as u16 * 2,
                session_id: 7,
            },
        };
        let req = self.command(Command::Dial {
            dial: Box::new(d),
            bridge: None,
        });
        assert!(self.reply(req).is_ok());
        (leg, uuid)
    }

    fn bridge(
        &mut self,
        call_uuid: &str,
        gw: Arc<gateway::GatewayConfig>,
        vars: &[(&str, &str)],
    ) -> Result<(LegId, String), ApiError> {
        self.next_leg += 1;
        let leg = LegId(self.next_leg);
        let uuid = format!("00000000-0000-4000-8000-{:012}", self.next_leg);
        let addr = gw.proxy.host_port();
        let d = Dial {
            leg,
            uuid: uuid.clone(),
            target: EventTarget {
                subject: String::new(),
                tenant_id: String::new(),
                call_params: None,
            },
            to_number: "2001".into(),
            from_number: "15559998888".into(),
            gateway: gw,
            gateway_up: true,
            peer: Some(peer(&addr)),
            dial_timeout: Duration::from_secs(20),
            max_call: None,
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            record: false,
            cpa: None,
            media: MediaInfo {
                port: 20000 + self.next_leg as u16 * 2,
                session_id: 9,
            },
        };
        let req = self.command(Command::Dial {
            dial: Box::new(d),
            bridge: Some(Bridge {
                call_uuid: call_uuid.into(),
                stop_stream: true,
            }),
        });
        self.reply(req).map(|r| {
            assert_eq!(r["bridge_call_uuid"], uuid.as_str());
            (leg, uuid)
        })
    }

    /// The reply to `req` (exactly one).
    fn reply(&mut self, req: ReqId) -> Result<Map<String, Value>, ApiError> {
        let i = self
            .out
            .iter()
            .position(|o| matches!(o, Output::Reply { req: r, .. } if *r == req))
            .unwrap_or_else(|| panic!("no reply to {req:?}: {:#?}", self.out));
        let Output::Reply { result, .. } = self.out.remove(i) else {
            unreachable!()
        };
        assert!(
            !self
                .out
                .iter()
                .any(|o| matches!(o, Output::Reply { req: r, .. } if *r == req)),
            "a second reply"
        );
        result
    }

    /// The next request the board sent with `method`, and its tag.
    fn sent(&mut self, method: &str) -> (u64, Request, Peer) {
        let i = self
            .out
            .iter()
            .position(|o| matches!(o, Output::Send { request, .. } if request.method == method))
            .unwrap_or_else(|| panic!("no {method} sent: {:#?}", self.out));
        let Output::Send { tag, request, peer } = self.out.remove(i) else {
            unreachable!()
        };
        (tag, request, peer)
    }

    fn no_request(&self, method: &str) {
        assert!(
            !self
                .out
                .iter()
                .any(|o| matches!(o, Output::Send { request, .. } if request.method == method)),
            "unexpected {method}: {:#?}",
            self.out
        );
    }

    fn acked(&mut self) -> Request {
        let i = self
            .out
            .iter()
            .position(|o| matches!(o, Output::Ack { .. }))
            .unwrap_or_else(|| panic!("no ACK: {:#?}", self.out));
        let Output::Ack { request, .. } = self.out.remove(i) else {
            unreachable!()
        };
        request
    }

    /// The names of the events published since the last call, in order, for `uuid`.
    fn events(&mut self, uuid: &str) -> Vec<(String, Map<String, Value>)> {
        let mut got = Vec::new();
        self.out.retain(|o| match o {
            Output::Publish { name, data, .. } if data["call_uuid"] == uuid => {
                got.push((name.to_string(), data.clone()));
                false
            }
            _ => true,
        });
        got
    }

    fn names(&mut self, uuid: &str) -> Vec<String> {
        self.events(uuid).into_iter().map(|(n, _)| n).collect()
    }

    fn event(&mut self, uuid: &str, name: &str) -> Map<String, Value> {
        let evs = self.events(uuid);
        evs.iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no {name} for {uuid}: {evs:?}"))
    }

    fn media_commands(&mut self, leg: LegId) -> Vec<media::leg::Command> {
        let mut got = Vec::new();
        let mut rest = Vec::new();
        for o in self.out.drain(..) {
            match o {
                Output::Media { leg: l, command } if l == leg => got.push(command),
                other => rest.push(other),
            }
        }
        self.out = rest;
        got
    }

    fn respond_to(
        &mut self,
        tag: u64,
        req: &Request,
        code: u16,
        from: &str,
        edit: impl FnOnce(&mut Response),
    ) {
        let mut r = response_to(req, code, Some("far1"));
        edit(&mut r);
        self.sb.handle_sip(
            self.now,
            SipEvent::Client {
                tag,
                event: ClientEvent::Response {
                    response: Box::new(r),
                    source: peer(from),
                },
            },
        );
        self.drain();
    }

    /// A request from the far end inside the leg's dialog; returns the board's response to it.
    fn far_request(
        &mut self,
        far: &mut Far,
        method: &str,
        edit: impl FnOnce(&mut Request),
    ) -> Response {
        far.cseq += 1;
        let mut r = Request::new(method, "sip:botstream@192.0.2.10:5060");
        r.headers.push(
            "Via",
            format!("SIP/2.0/UDP {CARRIER};branch=z9hG4bKfar{}", far.cseq),
        );
        r.headers
            .push("From", format!("<{}>;tag={}", far.theirs, far.far_tag));
        r.headers
            .push("To", format!("<{}>;tag={}", far.ours, far.our_tag));
        r.headers.push("Call-ID", far.call_id.clone());
        r.headers.push("CSeq", format!("{} {method}", far.cseq));
        edit(&mut r);
        self.server_request(r)
    }

    fn server_request(&mut self, r: Request) -> Response {
        self.next_tx += 1;
        let tx = TxId(self.next_tx);
        self.sb.handle_sip(
            self.now,
            SipEvent::Server(ServerEvent::Request {
                tx: Some(tx),
                request: Box::new(r),
                source: peer(CARRIER),
            }),
        );
        self.drain();
        let i = self
            .out
            .iter()
            .position(|o| matches!(o, Output::Respond { tx: t, response } if *t == tx && response.code >= 200))
            .unwrap_or_else(|| panic!("no final response: {:#?}", self.out));
        let Output::Respond { response, .. } = self.out.remove(i) else {
            unreachable!()
        };
        self.out
            .retain(|o| !matches!(o, Output::Respond { tx: t, .. } if *t == tx));
        response
    }

    /// The media of `leg` stops and reports; the board then publishes the hangup.
    fn media_stopped(&mut self, leg: LegId) {
        let report = media::leg::Report {
            packets_received: 100,
            packets_expected: 100,
            packets_lost: 0,
            jitter_ms: 1.0,
            rtt_ms: None,
        };
        self.sb.handle_media(
            self.now,
            leg,
            MediaInput::Leg(media::leg::Event::Stopped(Some(report))),
        );
        self.drain();
    }

    fn ended(&mut self, leg: LegId) -> HangupCause {
        let i = self
            .out
            .iter()
            .position(|o| matches!(o, Output::LegEnded { leg: l, .. } if *l == leg))
            .unwrap_or_else(|| panic!("{leg:?} not ended: {:#?}", self.out));
        let Output::LegEnded { cause, .. } = self.out.remove(i) else {
            unreachable!()
        };
        cause
    }
}

const SDP_PCMA: &str = "v=0\r\no=far 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";

fn with_sdp(r: &mut Response, sdp: &str) {
    r.headers.push("Contact", format!("<sip:far@{CARRIER}>"));
    r.headers.push("Content-Type", "application/sdp");
    r.body = sdp.as_bytes().to_vec();
}

/// Answers the INVITE `tag`/`inv` with 200 and PCMA; returns the far end as the test plays it.
fn answer(b: &mut Bench, tag: u64, inv: &Request, from: &str, extra: &[(&str, &str)]) -> Far {
    b.respond_to(tag, inv, 200, from, |r| {
        with_sdp(r, SDP_PCMA);
        for (k, v) in extra {
            r.headers.push(k, *v);
        }
    });
    let from_hdr = sip_core::msg::NameAddr::parse(inv.headers.get("From").unwrap()).unwrap();
    let to_hdr = sip_core::msg::NameAddr::parse(inv.headers.get("To").unwrap()).unwrap();
    Far {
        call_id: inv.call_id().unwrap().to_string(),
        far_tag: "far1".into(),
        our_tag: from_hdr.tag().unwrap().to_string(),
        cseq: 100,
        ours: from_hdr.uri,
        theirs: to_hdr.uri,
    }
}

fn challenge(code: u16, realm: &str, nonce: &str) -> impl FnOnce(&mut Response) {
    let name = if code == 407 {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    };
    let value = format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5");
    move |r: &mut Response| r.headers.push(name, value)
}

#[test]
fn challenged_twice_answered_held_refreshed_bridged_then_the_agent_hangs_up() {
    let t0 = std::time::Instant::now();
    let mut b = Bench::new();
    let carrier = gateway(
        "carrier",
        CARRIER,
        &[("username", "acct"), ("password", "pw")],
    );
    let (a, a_uuid) = b.dial(carrier, "15550001111", &[]);
    assert_eq!(b.names(&a_uuid), ["started"]);

    // 407 from the proxy, then 401 from the far end: both answered, the second INVITE carrying
    // every credential so far.
    let (tag, inv, _) = b.sent("INVITE");
    assert_eq!(inv.headers.get("Supported"), Some("timer"));
    assert_eq!(inv.headers.get("Session-Expires"), Some("1800"));
    b.respond_to(
        tag,
        &inv,
        407,
        CARRIER,
        challenge(407, "proxy.example", "n1"),
    );
    let (tag, inv, _) = b.sent("INVITE");
    assert_eq!(inv.cseq().unwrap().seq, 2);
    assert!(inv
        .headers
        .get("Proxy-Authorization")
        .unwrap()
        .contains("realm=\"proxy.example\""));
    assert!(inv.headers.get("Authorization").is_none());
    b.respond_to(
        tag,
        &inv,
        401,
        CARRIER,
        challenge(401, "carrier.example", "n2"),
    );
    let (tag, inv, _) = b.sent("INVITE");
    assert_eq!(inv.cseq().unwrap().seq, 3);
    let pa = inv.headers.get("Proxy-Authorization").unwrap();
    assert!(
        pa.contains("nc=00000002"),
        "the proxy's nonce is counted on: {pa}"
    );
    assert!(inv
        .headers
        .get("Authorization")
        .unwrap()
        .contains("realm=\"carrier.example\""));

    b.respond_to(tag, &inv, 180, CARRIER, |_| {});
    assert_eq!(b.names(&a_uuid), ["ringing"]);
    let mut far = answer(
        &mut b,
        tag,
        &inv,
        CARRIER,
        &[
            ("Session-Expires", "90;refresher=uac"),
            ("Require", "timer"),
        ],
    );
    assert_eq!(b.acked().cseq().unwrap().seq, 3);
    assert_eq!(b.names(&a_uuid), ["originate", "answered"]);
    let remote = b.media_commands(a);
    assert!(
        matches!(
            remote[..],
            [media::leg::Command::Remote {
                codec: media::session::AudioCodec::Pcma,
                ..
            }]
        ),
        "{remote:?}"
    );

    // The carrier holds the call: a=sendonly is answered a=recvonly and the playout pauses.
    let hold = SDP_PCMA.replace("a=rtpmap", "a=sendonly\r\na=rtpmap");
    let r = b.far_request(&mut far, "INVITE", |r| {
        r.headers.push("Content-Type", "application/sdp");
        r.body = hold.into_bytes();
    });
    assert_eq!(r.code, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("a=recvonly"));
    assert!(b
        .media_commands(a)
        .iter()
        .any(|c| matches!(c, media::leg::Command::Hold(true))));

    // That re-INVITE asked for no timer, so the session timer is off (RFC 4028 §9); the
    // carrier's next refresh puts it back with us as refresher.
    let r = b.far_request(&mut far, "UPDATE", |r| {
        r.headers.push("Session-Expires", "90;refresher=uas");
        r.headers.push("Supported", "timer");
    });
    assert_eq!(r.code, 200);
    assert_eq!(r.headers.get("Session-Expires"), Some("90;refresher=uas"));

    // Half the interval later we refresh, with the credentials learnt (nonces counted on).
    b.run_for(Duration::from_secs(45));
    let (tag, refresh, _) = b.sent("INVITE");
    assert_eq!(
        refresh.headers.get("Session-Expires"),
        Some("90;refresher=uac")
    );
    assert!(refresh
        .headers
        .get("Authorization")
        .unwrap()
        .contains("nc=00000002"));
    b.respond_to(tag, &refresh, 200, CARRIER, |r| {
        with_sdp(r, SDP_PCMA);
        r.headers.push("Session-Expires", "90;refresher=uac");
    });
    assert_eq!(b.acked().method, "ACK");
    b.run_for(Duration::from_secs(44));
    b.no_request("BYE");

    // Bridged to an agent: when the agent answers, the parties hear each other.
    let agents = gateway("agents", AGENT_GW, &[]);
    let (agent, agent_uuid) = b.bridge(&a_uuid, agents, &[]).unwrap();
    let (tag, ainv, apeer) = b.sent("INVITE");
    assert_eq!(apeer, peer(AGENT_GW));
    let started = b.event(&agent_uuid, "started");
    assert_eq!(started["bridged_call_uuid"], a_uuid.as_str());
    let mut agent_far = answer(&mut b, tag, &ainv, AGENT_GW, &[]);
    b.acked();
    let links: Vec<_> = b
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Link { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(links.len(), 2);
    assert!(links.contains(&(a, agent)) && links.contains(&(agent, a)));
    assert_eq!(b.event(&agent_uuid, "answered")["call_type"], "bridge");

    // The agent hangs up: the call follows with our BYE.
    let r = b.far_request(&mut agent_far, "BYE", |_| {});
    assert_eq!(r.code, 200);
    let (_, bye, _) = b.sent("BYE");
    assert_eq!(bye.call_id(), Some(far.call_id.as_str()));
    assert!(b.out.iter().any(|o| matches!(o, Output::Unlink { .. })));
    b.media_stopped(agent);
    b.media_stopped(a);
    let h = b.event(&agent_uuid, "hangup");
    assert_eq!(h["disposition"], "recv_bye");
    assert_eq!(h["outcome"], "Answered");
    let h = b.event(&a_uuid, "hangup");
    assert_eq!(h["disposition"], "send_bye");
    assert_eq!(b.ended(a), HangupCause::NORMAL_CLEARING);
    assert!(b.sb.is_empty());
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "a virtual clock: {:?}",
        t0.elapsed()
    );
}

/// An answered outbound call through the plain carrier.
fn answered_call(b: &mut Bench) -> (LegId, String, Far) {
    let (leg, uuid) = b.dial(gateway("carrier", CARRIER, &[]), "15550001111", &[]);
    let (tag, inv, _) = b.sent("INVITE");
    let far = answer(b, tag, &inv, CARRIER, &[]);
    b.acked();
    b.events(&uuid);
    b.media_commands(leg);
    (leg, uuid, far)
}

#[test]
fn requests_with_the_wrong_tags_get_481_and_change_nothing() {
    let mut b = Bench::new();
    let (leg, uuid, mut far) = answered_call(&mut b);
    for method in ["BYE", "INVITE", "INFO", "REFER"] {
        let mut spoof = Far {
            far_tag: "spoofed".into(),
            call_id: far.call_id.clone(),
            our_tag: far.our_tag.clone(),
            cseq: far.cseq,
            ours: far.ours.clone(),
            theirs: far.theirs.clone(),
        };
        assert_eq!(
            b.far_request(&mut spoof, method, |_| {}).code,
            481,
            "{method}"
        );
        let mut wrong_to = Far {
            our_tag: "guessed".into(),
            far_tag: far.far_tag.clone(),
            call_id: far.call_id.clone(),
            cseq: far.cseq,
            ours: far.ours.clone(),
            theirs: far.theirs.clone(),
        };
        assert_eq!(
            b.far_request(&mut wrong_to, method, |_| {}).code,
            481,
            "{method}"
        );
    }
    assert!(b.names(&uuid).is_empty(), "nothing happened to the call");
    // A CSeq below the last one is out of order (§12.2.2).
    assert_eq!(b.far_request(&mut far, "OPTIONS", |_| {}).code, 200);
    far.cseq = 50;
    assert_eq!(b.far_request(&mut far, "INFO", |_| {}).code, 500);
    far.cseq = 200;
    assert_eq!(b.far_request(&mut far, "OPTIONS", |_| {}).code, 200);
    // The real peer still can.
    assert_eq!(b.far_request(&mut far, "BYE", |_| {}).code, 200);
    b.media_stopped(leg);
    assert_eq!(b.event(&uuid, "hangup")["disposition"], "recv_bye");
}

#[test]
fn an_invite_reusing_a_live_call_id_is_not_a_reinvite() {
    let mut b = Bench::new();
    let (_, uuid, far) = answered_call(&mut b);
    let mut r = Request::new("INVITE", "sip:botstream@192.0.2.10");
    r.headers
        .push("Via", "SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKx");
    r.headers.push("From", "<sip:evil@10.9.9.9>;tag=e");
    r.headers.push("To", "<sip:botstream@192.0.2.10>");
    r.headers.push("Call-ID", far.call_id.clone());
    r.headers.push("CSeq", "1 INVITE");
    assert_eq!(b.server_request(r).code, 482);
    assert!(b.names(&uuid).is_empty());
}

#[test]
fn call_ids_and_tags_are_random_not_the_call_uuid() {
    let mut b = Bench::new();
    let (_, uuid) = b.dial(gateway("carrier", CARRIER, &[]), "1", &[]);
    let (_, inv, _) = b.sent("INVITE");
    let call_id = inv.call_id().unwrap();
    assert!(!call_id.contains(&uuid) && !call_id.contains(&uuid.replace('-', "")));
    assert!(call_id.split('@').next().unwrap().len() >= 32);
    let (_, uuid2) = b.dial(gateway("carrier", CARRIER, &[]), "1", &[]);
    let (_, inv2, _) = b.sent("INVITE");
    assert_ne!(inv2.call_id(), inv.call_id());
    assert_ne!(uuid, uuid2);
}

#[test]
fn a_cancel_whose_487_never_comes_ends_the_call_at_64_t1() {
    let mut b = Bench::new();
    let (leg, uuid) = b.dial(gateway("carrier", CARRIER, &[]), "1", &[]);
    let (tag, inv, _) = b.sent("INVITE");
    b.respond_to(tag, &inv, 180, CARRIER, |_| {});
    b.run_for(Duration::from_secs(30));
    let (_, cancel, _) = b.sent("CANCEL");
    assert!(cancel.headers.get("Reason").unwrap().contains("cause=19"));
    b.run_for(Duration::from_secs(31));
    assert!(b.out.iter().all(|o| !matches!(o, Output::LegEnded { .. })));
    b.run_for(Duration::from_secs(2));
    b.media_stopped(leg);
    let h = b.event(&uuid, "hangup");
    assert_eq!(h["hangup_cause"], "NO_ANSWER");
    assert_eq!(h["disposition"], "send_cancel");
    assert_eq!(b.ended(leg), HangupCause::NO_ANSWER);
}

#[test]
fn a_challenge_from_elsewhere_is_not_answered() {
    let mut b = Bench::new();
    let gw = gateway(
        "carrier",
        CARRIER,
        &[("username", "acct"), ("password", "pw")],
    );
    let (leg, uuid) = b.dial(gw, "1", &[]);
    let (tag, inv, _) = b.sent("INVITE");
    b.respond_to(tag, &inv, 401, "10.6.6.6:5060", challenge(401, "any", "n"));
    b.no_request("INVITE");
    assert_eq!(b.names(&uuid), ["started", "originate"]);
    b.media_stopped(leg);
    let h = b.event(&uuid, "hangup");
    assert_eq!(h["hangup_cause"], "CALL_REJECTED");
    assert!(
        h["sip_reason"].as_str().unwrap().contains("10.6.6.6"),
        "{h:?}"
    );
}

#[test]
fn a_realm_the_gateway_does_not_name_is_not_answered() {
    let mut b = Bench::new();
    let gw = gateway(
        "carrier",
        CARRIER,
        &[
            ("username", "acct"),
            ("password", "pw"),
            ("realm", "carrier.example"),
        ],
    );
    let (_, uuid) = b.dial(gw, "1", &[]);
    let (tag, inv, _) = b.sent("INVITE");
    b.respond_to(tag, &inv, 407, CARRIER, challenge(407, "evil.example", "n"));
    b.no_request("INVITE");
    let o = b.event(&uuid, "originate");
    assert_eq!(o["status_code"], 114);
}

#[test]
fn an_answer_with_no_codec_in_common_is_hung_up() {
    for answer in ["m=audio 6000 RTP/AVP 18", "m=audio 6000 RTP/AVP 9"] {
        an_answer_is_hung_up(answer);
    }
}

/// G.729, or G.722 that our PCMU/PCMA offer did not list (RFC 3264 §6).
fn an_answer_is_hung_up(m_line: &str) {
    let mut b = Bench::new();
    let (leg, uuid) = b.dial(gateway("carrier", CARRIER, &[]), "1", &[]);
    let (tag, inv, _) = b.sent("INVITE");
    let sdp = format!("v=0\r\nc=IN IP4 10.0.0.1\r\n{m_line}\r\n");
    b.respond_to(tag, &inv, 200, CARRIER, |r| with_sdp(r, &sdp));
    b.acked();
    let (_, bye, _) = b.sent("BYE");
    assert!(bye.headers.get("Reason").unwrap().contains("cause=88"));
    b.media_stopped(leg);
    let h = b.event(&uuid, "hangup");
    assert_eq!(h["hangup_cause"], "INCOMPATIBLE_DESTINATION");
}

#[test]
fn a_refused_reoffer_leaves_the_call_as_it_was() {
    let mut b = Bench::new();
    let (leg, _, mut far) = answered_call(&mut b);
    let r = b.far_request(&mut far, "INVITE", |r| {
        r.headers.push("Content-Type", "application/sdp");
        r.body = b"v=0\r\nc=IN IP4 10.0.0.9\r\nm=audio 7000 RTP/AVP 18\r\n".to_vec();
    });
    assert_eq!(r.code, 488);
    assert!(b.media_commands(leg).is_empty());
    // A new address is followed.
    let moved = SDP_PCMA.replace("10.0.0.1", "10.0.0.7");
    let r = b.far_request(&mut far, "INVITE", |r| {
        r.headers.push("Content-Type", "application/sdp");
        r.body = moved.into_bytes();
    });
    assert_eq!(r.code, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("o=BotStream 7 2 "));
    let cmds = b.media_commands(leg);
    assert!(
        cmds.iter().any(|c| matches!(c, media::leg::Command::Remote { addr, .. } if addr.ip().to_string() == "10.0.0.7")),
        "{cmds:?}"
    );
}

#[test]
fn an_unrefreshed_session_is_ended_before_it_expires() {
    let mut b = Bench::new();
    let (leg, uuid) = b.dial(gateway("carrier", CARRIER, &[]), "1", &[]);
    let (tag, inv, _) = b.sent("INVITE");
    answer(
        &mut b,
        tag,
        &inv,
        CARRIER,
        &[("Session-Expires", "120;refresher=uas")],
    );
    b.acked();
    b.run_for(Duration::from_secs(87));
    b.no_request("BYE");
    b.no_request("INVITE");
    b.run_for(Duration::from_secs(2));
    let (_, bye, _) = b.sent("BYE");
    assert!(bye.headers.get("Reason").unwrap().contains("cause=102"));
    b.media_stopped(leg);
    assert_eq!(
        b.event(&uuid, "hangup")["hangup_cause"],
        "RECOVERY_ON_TIMER_EXPIRE"
    );
}

#[test]
fn a_422_is_answered_with_the_min_se_it_names() {
    let mut b = Bench::new();
    b.dial(gateway("carrier", CARRIER, &[]), "1", &[]);
    let (tag, inv, _) = b.sent("INVITE");
    b.respond_to(tag, &inv, 422, CARRIER, |r| {
        r.headers.push("Min-SE", "3600")
    });
    let (_, inv, _) = b.sent("INVITE");
    assert_eq!(inv.headers.get("Session-Expires"), Some("3600"));
    assert_eq!(inv.cseq().unwrap().seq, 2);
}

#[test]
fn a_transfer_accepted_and_notified_200_ends_the_call_blind_transfer() {
    let mut b = Bench::new();
    let (leg, uuid, mut far) = answered_call(&mut b);
    let req = b.command(Command::Transfer {
        uuid: uuid.clone(),
        destination: Destination::Number("3001".into()),
    });
    assert!(b.reply(req).is_ok());
    let (tag, refer, _) = b.sent("REFER");
    assert_eq!(
        refer.headers.get("Refer-To"),
        Some("<sip:3001@10.0.0.1:5060>")
    );
    assert_eq!(refer.headers.get_all("Contact").len(), 1, "{refer:?}");
    b.respond_to(tag, &refer, 202, CARRIER, |_| {});
    let notify = |status: &'static str| {
        move |r: &mut Request| {
            r.headers.push("Event", "refer");
            r.headers.push("Subscription-State", "active");
            r.headers.push("Content-Type", "message/sipfrag");
            r.body = status.as_bytes().to_vec();
        }
    };
    assert_eq!(
        b.far_request(&mut far, "NOTIFY", notify("SIP/2.0 100 Trying"))
            .code,
        200
    );
    b.no_request("BYE");
    assert_eq!(
        b.far_request(&mut far, "NOTIFY", notify("SIP/2.0 200 OK"))
            .code,
        200
    );
    let (_, bye, _) = b.sent("BYE");
    assert!(bye.headers.get("Reason").unwrap().contains("cause=600"));
    b.media_stopped(leg);
    let h = b.event(&uuid, "hangup");
    assert_eq!(h["hangup_cause"], "BLIND_TRANSFER");
    assert_eq!(h["disposition"], "send_refer");
}

#[test]
fn a_refused_refer_leaves_the_call_up_with_an_error_event() {
    let mut b = Bench::new();
    let (_, uuid, _) = answered_call(&mut b);
    let req = b.command(Command::Transfer {
        uuid: uuid.clone(),
        destination: Destination::Uri("sip:queue@pbx.example".into()),
    });
    assert!(b.reply(req).is_ok());
    let (tag, refer, _) = b.sent("REFER");
    b.respond_to(tag, &refer, 403, CARRIER, |_| {});
    let e = b.event(&uuid, "error");
    assert_eq!(e["status_code"], 403);
    b.no_request("BYE");
    // A second transfer may be tried.
    let req = b.command(Command::Transfer {
        uuid,
        destination: Destination::Number("1".into()),
    });
    assert!(b.reply(req).is_ok());
}

#[test]
fn a_busy_agent_leaves_the_call_up() {
    let mut b = Bench::new();
    let (a, a_uuid, _) = answered_call(&mut b);
    let (agent, agent_uuid) = b
        .bridge(&a_uuid, gateway("agents", AGENT_GW, &[]), &[])
        .unwrap();
    let (tag, inv, _) = b.sent("INVITE");
    b.respond_to(tag, &inv, 486, AGENT_GW, |_| {});
    b.media_stopped(agent);
    let h = b.event(&agent_uuid, "hangup");
    assert_eq!(h["hangup_cause"], "USER_BUSY");
    assert_eq!(h["outcome"], "Declined");
    assert_eq!(h["bridged_call_uuid"], a_uuid.as_str());
    b.no_request("BYE");
    assert!(b.sb.legs[&a].is_confirmed());
    // The call can be bridged again.
    assert!(b
        .bridge(&a_uuid, gateway("agents", AGENT_GW, &[]), &[])
        .is_ok());
}

#[test]
fn the_call_hanging_up_cancels_a_ringing_agent() {
    let mut b = Bench::new();
    let (a, a_uuid, mut far) = answered_call(&mut b);
    let (agent, agent_uuid) = b
        .bridge(&a_uuid, gateway("agents", AGENT_GW, &[]), &[])
        .unwrap();
    let (tag, inv, _) = b.sent("INVITE");
    b.respond_to(tag, &inv, 180, AGENT_GW, |_| {});
    b.far_request(&mut far, "BYE", |_| {});
    let (ctag, cancel, _) = b.sent("CANCEL");
    b.respond_to(ctag, &cancel, 200, AGENT_GW, |_| {});
    b.respond_to(tag, &inv, 487, AGENT_GW, |_| {});
    b.media_stopped(a);
    b.media_stopped(agent);
    let h = b.event(&agent_uuid, "hangup");
    assert_eq!(h["outcome"], "Abandoned");
    assert_eq!(h["hangup_cause"], "ORIGINATOR_CANCEL");
}

#[test]
fn park_after_bridge_keeps_the_call_when_the_agent_leaves() {
    let mut b = Bench::new();
    let (a, a_uuid, _) = answered_call(&mut b);
    let req = b.command(Command::SetVars {
        uuid: a_uuid.clone(),
        vars: [("park_after_bridge".to_string(), "true".to_string())].into(),
    });
    assert!(b.reply(req).is_ok());
    let (agent, _) = b
        .bridge(&a_uuid, gateway("agents", AGENT_GW, &[]), &[])
        .unwrap();
    let (tag, inv, _) = b.sent("INVITE");
    let mut agent_far = answer(&mut b, tag, &inv, AGENT_GW, &[]);
    b.far_request(&mut agent_far, "BYE", |_| {});
    b.media_stopped(agent);
    b.no_request("BYE");
    assert!(b.sb.legs[&a].is_confirmed());
    // Dropping the call now ends it alone.
    let req = b.command(Command::Drop {
        uuid: a_uuid,
        cause: HangupCause::NORMAL_CLEARING,
    });
    assert!(b.reply(req).is_ok());
    b.sent("BYE");
}

#[test]
fn dtmf_crosses_the_bridge() {
    let mut b = Bench::new();
    let (a, a_uuid, _) = answered_call(&mut b);
    let (agent, _) = b
        .bridge(&a_uuid, gateway("agents", AGENT_GW, &[]), &[])
        .unwrap();
    let (tag, inv, _) = b.sent("INVITE");
    answer(&mut b, tag, &inv, AGENT_GW, &[]);
    b.media_commands(agent);
    b.sb.handle_media(
        b.now,
        a,
        MediaInput::Leg(media::leg::Event::Dtmf {
            digit: '5',
            source: "rfc4733",
        }),
    );
    b.drain();
    assert_eq!(b.event(&a_uuid, "dtmf")["digit"], "5");
    let cmds = b.media_commands(agent);
    assert!(
        cmds.iter()
            .any(|c| matches!(c, media::leg::Command::SendDtmf { digits, .. } if digits == "5")),
        "{cmds:?}"
    );
}

fn links(b: &mut Bench) -> Vec<(LegId, media::mix::Tap, LegId, media::mix::Feed)> {
    let mut got = Vec::new();
    b.out.retain(|o| match o {
        Output::Link {
            from,
            tap,
            to,
            feed,
        } => {
            got.push((*from, *tap, *to, *feed));
            false
        }
        _ => true,
    });
    got.sort();
    got
}

#[test]
fn a_supervisor_listens_whispers_and_barges() {
    use media::mix::{Feed, Tap};
    let mut b = Bench::new();
    let (a, a_uuid, _) = answered_call(&mut b);
    let (agent, _) = b
        .bridge(&a_uuid, gateway("agents", AGENT_GW, &[]), &[])
        .unwrap();
    let (tag, inv, _) = b.sent("INVITE");
    answer(&mut b, tag, &inv, AGENT_GW, &[]);
    links(&mut b);
    let (sup, sup_uuid, _) = answered_call(&mut b);
    let snoop = |b: &mut Bench, mode| {
        let req = b.command(Command::Snoop {
            target: a_uuid.clone(),
            listener: sup_uuid.clone(),
            mode,
        });
        b.reply(req)
    };
    assert!(snoop(&mut b, SnoopMode::Listen).is_ok());
    assert_eq!(
        links(&mut b),
        [
            (a, Tap::Received, sup, Feed::Main),
            (a, Tap::Sent, sup, Feed::Main)
        ]
    );
    assert!(snoop(&mut b, SnoopMode::Whisper).is_ok());
    assert_eq!(links(&mut b), [(sup, Tap::Received, agent, Feed::Inject)]);
    assert!(snoop(&mut b, SnoopMode::Barge).is_ok());
    // The whisper link to the agent stays; the customer now hears the supervisor too.
    assert_eq!(links(&mut b), [(sup, Tap::Received, a, Feed::Inject)]);
    assert!(!b.out.iter().any(|o| matches!(o, Output::Unlink { .. })));
    // The target ending ends the snoop; the supervisor's call stays.
    let req = b.command(Command::Drop {
        uuid: a_uuid.clone(),
        cause: HangupCause::NORMAL_CLEARING,
    });
    assert!(b.reply(req).is_ok());
    let unlinked: Vec<_> = b
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Unlink { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert!(
        unlinked.contains(&(a, sup)) && unlinked.contains(&(sup, a)),
        "{unlinked:?}"
    );
    assert!(b.sb.legs[&sup].is_confirmed());
}

#[test]
fn whisper_needs_an_agent() {
    let mut b = Bench::new();
    let (_, a_uuid, _) = answered_call(&mut b);
    let (_, sup_uuid, _) = answered_call(&mut b);
    let req = b.command(Command::Snoop {
        target: a_uuid,
        listener: sup_uuid,
        mode: SnoopMode::Whisper,
    });
    assert_eq!(
        b.reply(req).unwrap_err().code,
        crate::error::StatusCode::InvalidRequest
    );
}

#[test]
fn every_request_on_an_ending_call_gets_one_reply() {
    let mut b = Bench::new();
    let (leg, uuid, _) = answered_call(&mut b);
    let stream = crate::request::StartStream {
        call_uuid: uuid.clone(),
        url: "wss://127.0.0.1:1".into(),
        host: "127.0.0.1".into(),
        port: 1,
        sample_rate: 8000,
        metadata: None,
        protocol: media::stream::Protocol::Botstream,
        resume_secs: 0,
    };
    let pending = b.command(Command::Media {
        uuid: uuid.clone(),
        request: MediaRequest::StartStream(Box::new(stream)),
    });
    let drop = b.command(Command::Drop {
        uuid: uuid.clone(),
        cause: HangupCause::NORMAL_CLEARING,
    });
    assert!(b.reply(drop).is_ok());
    let again = b.command(Command::Drop {
        uuid: uuid.clone(),
        cause: HangupCause::NORMAL_CLEARING,
    });
    assert_eq!(
        b.reply(again).unwrap_err().code,
        crate::error::StatusCode::CallEnded
    );
    b.media_stopped(leg);
    assert_eq!(
        b.reply(pending).unwrap_err().code,
        crate::error::StatusCode::CallEnded
    );
}

#[test]
fn a_dead_media_task_ends_its_call() {
    let mut b = Bench::new();
    let (leg, uuid, _) = answered_call(&mut b);
    b.sb.handle_media(
        b.now,
        leg,
        MediaInput::Leg(media::leg::Event::Stopped(None)),
    );
    b.drain();
    let (_, bye, _) = b.sent("BYE");
    assert!(bye.headers.get("Reason").unwrap().contains("cause=41"));
    assert_eq!(
        b.event(&uuid, "hangup")["hangup_cause"],
        "NORMAL_TEMPORARY_FAILURE"
    );
}

#[test]
fn the_teardown_does_not_wait_forever_for_the_media() {
    let mut b = Bench::new();
    let (leg, uuid, mut far) = answered_call(&mut b);
    b.far_request(&mut far, "BYE", |_| {});
    assert!(b.names(&uuid).is_empty());
    b.advance(Duration::from_secs(3));
    assert_eq!(
        b.names(&uuid),
        ["hangup"],
        "no call_quality without statistics"
    );
    b.ended(leg);
}

#[test]
fn an_inbound_call_is_answered_with_the_timer_it_asked_for() {
    let mut b = Bench::new();
    let mut inv = Request::new("INVITE", "sip:100@192.0.2.10");
    inv.headers
        .push("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKin");
    inv.headers.push("From", "<sip:caller@10.0.0.1>;tag=c1");
    inv.headers.push("To", "<sip:100@192.0.2.10>");
    inv.headers.push("Call-ID", "inbound-1");
    inv.headers.push("CSeq", "1 INVITE");
    inv.headers.push("Contact", "<sip:caller@10.0.0.1:5060>");
    inv.headers.push("Session-Expires", "60");
    inv.headers.push("Supported", "timer");
    inv.body = SDP_PCMA.as_bytes().to_vec();
    b.sb.handle_sip(
        b.now,
        SipEvent::Server(ServerEvent::Request {
            tx: Some(TxId(77)),
            request: Box::new(inv.clone()),
            source: peer(CARRIER),
        }),
    );
    b.drain();
    assert!(matches!(b.out[..], [Output::NewInbound { .. }]));
    b.out.clear();
    let inbound = |se: &str| {
        let mut i = inv.clone();
        i.headers.set("Session-Expires", se);
        Inbound {
            leg: LegId(50),
            uuid: "00000000-0000-4000-8000-000000000050".into(),
            tx: TxId(77),
            invite: i,
            source: peer(CARRIER),
            from_number: "caller".into(),
            to_number: "100".into(),
            target: EventTarget {
                subject: "in".into(),
                tenant_id: "t".into(),
                call_params: None,
            },
            remote: sip_core::sdp::parse(SDP_PCMA.as_bytes()).unwrap(),
            media: MediaInfo {
                port: 30000,
                session_id: 3,
            },
            gateway: None,
        }
    };
    // Below our Min-SE from a timer-aware caller: 422.
    b.sb.handle_command(b.now, None, Command::Inbound(Box::new(inbound("60"))));
    b.drain();
    let resp = b
        .out
        .iter()
        .find_map(|o| match o {
            Output::Respond { response, .. } => Some(response.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(resp.code, 422);
    assert_eq!(resp.headers.get("Min-SE"), Some("90"));
    b.out.clear();
    b.sb.handle_command(b.now, None, Command::Inbound(Box::new(inbound("600"))));
    b.drain();
    let ok = b
        .out
        .iter()
        .find_map(|o| match o {
            Output::Respond { response, .. } if response.code == 200 => Some(response.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ok.headers.get("Session-Expires"), Some("600;refresher=uac"));
    assert_eq!(ok.headers.get("Require"), Some("timer"));
    let answered = b.event("00000000-0000-4000-8000-000000000050", "answered");
    assert_eq!(answered["call_type"], "inbound");
}

const SRTP_ANSWER: &str = "v=0\r\no=far 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";

#[test]
fn a_secure_gateway_offers_srtp_and_keys_the_media_from_the_answer() {
    let mut b = Bench::new();
    let gw = gateway("carrier", CARRIER, &[]);
    let (leg, uuid) = b.dial(gw, "1", &[("rtp_secure_media", "true")]);
    let (tag, inv, _) = b.sent("INVITE");
    let offer = sip_core::sdp::parse(&inv.body).unwrap();
    assert!(offer.secure);
    assert_eq!(offer.crypto.len(), 2);
    assert_eq!(
        offer.crypto[0].suite,
        sip_core::sdp::CryptoSuite::AesCm128HmacSha1_80
    );
    b.respond_to(tag, &inv, 200, CARRIER, |r| with_sdp(r, SRTP_ANSWER));
    b.acked();
    let cmds = b.media_commands(leg);
    let Some(media::leg::Command::Remote {
        srtp: Some(keys), ..
    }) = cmds.first()
    else {
        panic!("{cmds:?}")
    };
    assert_eq!(keys.suite, media::session::SrtpSuite::AesCm128HmacSha1_32);
    assert_eq!(keys.local, offer.crypto[1].key, "our tag-2 key sends");
    assert_eq!(&keys.remote[..3], &[0x59, 0x53, 0x5f], "their key receives");
    assert_eq!(b.names(&uuid), ["started", "originate", "answered"]);
}

#[test]
fn a_plain_answer_to_a_secure_offer_ends_the_call() {
    let mut b = Bench::new();
    let (leg, uuid) = b.dial(
        gateway("carrier", CARRIER, &[]),
        "1",
        &[("rtp_secure_media", "true")],
    );
    let (tag, inv, _) = b.sent("INVITE");
    b.respond_to(tag, &inv, 200, CARRIER, |r| with_sdp(r, SDP_PCMA));
    b.acked();
    let (_, bye, _) = b.sent("BYE");
    assert!(bye.headers.get("Reason").unwrap().contains("cause=88"));
    b.media_stopped(leg);
    let h = b.event(&uuid, "hangup");
    assert_eq!(h["hangup_cause"], "INCOMPATIBLE_DESTINATION");
    assert_eq!(h["sip_reason"], "a plain answer to a secure offer");
}

fn inbound_with(b: &mut Bench, sdp: &str) -> Response {
    let mut inv = Request::new("INVITE", "sip:100@192.0.2.10");
    inv.headers
        .push("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKsec");
    inv.headers.push("From", "<sip:caller@10.0.0.1>;tag=c1");
    inv.headers.push("To", "<sip:100@192.0.2.10>");
    inv.headers
        .push("Call-ID", format!("secure-{}", b.next_leg));
    inv.headers.push("CSeq", "1 INVITE");
    inv.headers.push("Contact", "<sip:caller@10.0.0.1:5060>");
    inv.body = sdp.as_bytes().to_vec();
    b.next_leg += 1;
    let inbound = Inbound {
        leg: LegId(b.next_leg),
        uuid: format!("00000000-0000-4000-8000-{:012}", b.next_leg),
        tx: TxId(900 + b.next_leg),
        invite: inv,
        source: peer(CARRIER),
        from_number: "caller".into(),
        to_number: "100".into(),
        target: EventTarget {
            subject: "in".into(),
            tenant_id: "t".into(),
            call_params: None,
        },
        remote: sip_core::sdp::parse(sdp.as_bytes()).unwrap(),
        media: MediaInfo {
            port: 30000,
            session_id: 3,
        },
        gateway: None,
    };
    b.sb.handle_command(b.now, None, Command::Inbound(Box::new(inbound)));
    b.drain();
    b.out
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Respond { response, .. } if response.code >= 200 => Some(response.clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_secure_inbound_offer_is_answered_with_srtp_or_refused() {
    let mut b = Bench::new();
    let offer = SRTP_ANSWER.replace(
        "a=crypto:2 AES_CM_128_HMAC_SHA1_32",
        "a=crypto:7 AES_CM_128_HMAC_SHA1_80",
    );
    let ok = inbound_with(&mut b, &offer);
    assert_eq!(ok.code, 200);
    let answer = sip_core::sdp::parse(&ok.body).unwrap();
    assert!(answer.secure, "never a plain answer to a secure offer");
    assert_eq!(answer.crypto.len(), 1);
    assert_eq!(answer.crypto[0].tag, 7);
    assert_eq!(
        answer.crypto[0].suite,
        sip_core::sdp::CryptoSuite::AesCm128HmacSha1_80
    );
    assert_ne!(
        &answer.crypto[0].key[..3],
        &[0x59, 0x53, 0x5f],
        "a key of our own"
    );
    // Nothing usable (an unknown suite, a malformed key): 488.
    let unusable = SRTP_ANSWER.replace("AES_CM_128_HMAC_SHA1_32", "F8_128_HMAC_SHA1_80");
    assert_eq!(inbound_with(&mut b, &unusable).code, 488);
    let malformed = SRTP_ANSWER.replace("inline:WVNf", "inline:!!");
    assert_eq!(inbound_with(&mut b, &malformed).code, 488);
}
