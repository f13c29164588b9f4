//! Dialogs against real peers where they go wrong: requests forged into a live call, the two
//! shapes of an ACK for our 2xx, digest challenges the switch must refuse or chain, an answer with
//! no codec in common, and a carrier that never finishes a CANCELled INVITE.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

async fn state(app: &App, uuid: &str) -> serde_json::Value {
    let r = app
        .request("request_get_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    r["call"]["state"].clone()
}

/// What identifies the call's dialog, as the carrier saw it.
struct Ids {
    call_id: String,
    /// The switch's tag (From of its INVITE) and the carrier's (To of its 200).
    switch_tag: String,
    carrier_tag: String,
    /// Where in-dialog requests to the switch go (its Contact).
    target: String,
}

/// Sends a request from `sock` to the switch as if from the carrier and returns the final
/// response to it (provisionals and strays skipped); an INVITE's failure is ACKed.
#[allow(clippy::too_many_arguments)]
fn forge(
    sock: &UdpSocket,
    port: u16,
    ids: &Ids,
    method: &str,
    from_tag: &str,
    to_tag: &str,
    cseq: u32,
    extra: &str,
    body: &str,
) -> String {
    let me = sock.local_addr().expect("addr");
    let branch = format!("z9hG4bKforged{cseq}");
    let head = format!(
        "Via: SIP/2.0/UDP {me};branch={branch};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:15550001111@127.0.0.1>;tag={from_tag}\r\n\
         To: <sip:15559998888@127.0.0.1>;tag={to_tag}\r\nCall-ID: {}\r\n",
        ids.call_id
    );
    let req = format!(
        "{method} {} SIP/2.0\r\n{head}CSeq: {cseq} {method}\r\nContact: <sip:x@{me}>\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        ids.target,
        body.len()
    );
    sock.send_to(req.as_bytes(), ("127.0.0.1", port))
        .expect("send");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no final response to the forged {method}: {e}"));
        let resp = String::from_utf8_lossy(&buf[..n]).to_string();
        let code: u16 = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if !resp.contains(&branch) || code < 200 {
            continue;
        }
        if method == "INVITE" {
            let to = resp
                .lines()
                .find_map(|l| l.strip_prefix("To:"))
                .unwrap_or("")
                .trim();
            let head = head.replace(
                &format!("To: <sip:15559998888@127.0.0.1>;tag={to_tag}"),
                &format!("To: {to}"),
            );
            let ack = format!(
                "ACK {} SIP/2.0\r\n{head}CSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
                ids.target
            );
            sock.send_to(ack.as_bytes(), ("127.0.0.1", port))
                .expect("send");
        }
        return resp;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_in_dialog_requests_get_481_and_change_nothing() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let (rtp, carrier) = media_party("uas_media_at.xml", false, &[("HOLD", "30000")]).await;
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.make_call("c", json!({})).await;
    app.event(&uuid, "answered", T).await;
    let invite = carrier.wait_traced(T, |m| !m.sent && m.is_request("INVITE"));
    let ok = carrier.wait_traced(T, |m| m.sent && m.is_response(200, "INVITE"));
    let ids = Ids {
        call_id: invite.header("Call-ID").expect("Call-ID").to_string(),
        switch_tag: invite.tag("From").expect("our tag"),
        carrier_tag: ok.tag("To").expect("carrier tag"),
        target: invite
            .header("Contact")
            .expect("Contact")
            .trim_matches(['<', '>'])
            .to_string(),
    };
    assert!(
        !ids.call_id.contains(&uuid),
        "the Call-ID must not give the call_uuid away: {}",
        ids.call_id
    );

    // Another host on the path, knowing the Call-ID but not both tags.
    let attacker = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let hijack = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    hijack
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let sdp = format!(
        "v=0\r\no=x 1 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        hijack.local_addr().expect("addr").port()
    );
    let requests = [
        ("BYE", "Reason: Q.850;cause=17\r\n", String::new()),
        ("INVITE", "Content-Type: application/sdp\r\n", sdp),
        (
            "INFO",
            "Content-Type: application/dtmf-relay\r\n",
            "Signal=5\r\nDuration=160\r\n".to_string(),
        ),
        (
            "REFER",
            "Refer-To: <sip:fraud@127.0.0.2>\r\n",
            String::new(),
        ),
    ];
    let mut cseq = 100;
    for (method, extra, body) in &requests {
        let (sw_tag, c_tag) = (ids.switch_tag.as_str(), ids.carrier_tag.as_str());
        for (from, to) in [("forged", sw_tag), (c_tag, "forged"), ("x1", "x2")] {
            cseq += 1;
            let r = forge(
                &attacker,
                sw.sip_port,
                &ids,
                method,
                from,
                to,
                cseq,
                extra,
                body,
            );
            assert!(
                r.starts_with("SIP/2.0 481 "),
                "{method} with From tag {from}, To tag {to}:\n{r}"
            );
        }
    }
    assert_eq!(state(&app, &uuid).await, "answered");
    assert!(app
        .maybe_event(&uuid, "hangup", Duration::from_millis(500))
        .await
        .is_none());
    assert!(app
        .maybe_event(&uuid, "dtmf", Duration::from_millis(100))
        .await
        .is_none());
    // The media stayed with the carrier: nothing went to the forged re-INVITE's address.
    let since = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(rtp.heard_since(since).len() > 1600, "audio still flows");
    let mut buf = [0u8; 2048];
    assert!(hijack.recv_from(&mut buf).is_err(), "media was hijacked");

    // RFC 3261 §12.2.2: a dialog is its Call-ID and tags, not the address a request comes from,
    // so a BYE with both right tags ends the call wherever it comes from.
    let r = forge(
        &attacker,
        sw.sip_port,
        &ids,
        "BYE",
        &ids.carrier_tag,
        &ids.switch_tag,
        200,
        "",
        "",
    );
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["disposition"], "recv_bye", "{h}");
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING", "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_acked_with_a_new_or_the_invite_branch_stops_retransmitting() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let target = format!("127.0.0.1:{}", sw.sip_port);
    // (called number, the ACK's Via, whether it reuses the INVITE's branch)
    let shapes = [
        (
            "5551",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            false,
        ),
        ("5552", "[last_Via:]", true),
    ];
    let callers: Vec<Sipp> = shapes
        .iter()
        .map(|(to, via, _)| {
            Sipp::uac_with(
                "uac_ack_shape.xml",
                &target,
                1,
                &["-s", to],
                &[("ACK_VIA", via)],
            )
        })
        .collect();
    let mut uuids = std::collections::HashMap::new();
    for _ in &shapes {
        let a = app.next_event("answered", T).await;
        let to = a["to_number"].as_str().expect("to_number").to_string();
        uuids.insert(to, a["call_uuid"].as_str().expect("uuid").to_string());
    }
    // Timer G2xx would have sent the 200 again at 0.5 s and 1.5 s without the ACK.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for ((to, _, reused), caller) in shapes.iter().zip(&callers) {
        let uuid = &uuids[*to];
        assert_eq!(state(&app, uuid).await, "answered", "{to}");
        let log = caller.traced();
        let invite = log.iter().find(|m| m.sent && m.is_request("INVITE"));
        let ack = log.iter().find(|m| m.sent && m.is_request("ACK"));
        let (invite, ack) = (invite.expect("INVITE"), ack.expect("ACK"));
        assert_eq!(
            invite.branch() == ack.branch(),
            *reused,
            "the scenario sent the ACK shape under test: {ack:?}"
        );
        let oks = log
            .iter()
            .filter(|m| !m.sent && m.is_response(200, "INVITE"))
            .count();
        assert_eq!(oks, 1, "{to}: the 200 was sent again after the ACK");
    }
    for (to, ..) in &shapes {
        let h = app.hang_up(&uuids[*to]).await;
        assert_eq!(h["hangup_cause"], "NORMAL_CLEARING", "{h}");
        assert_eq!(h["disposition"], "send_bye", "{h}");
    }
    for c in callers {
        c.finish(T).expect("BYE with Reason Q.850 cause 16");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_for_another_realm_is_refused_without_credentials() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut carrier = Sipp::uas_with(
        "uas_challenge_foreign.xml",
        1,
        &[],
        &[("REALM", "elsewhere.example")],
    );
    let mut app = App::connect(&nats, &sw).await;
    let gw = [
        ("username", "trunkuser"),
        ("password", "s3cret!"),
        ("realm", "carrier.example"),
    ];
    app.add_gateway("c", carrier.port, &gw).await;
    let uuid = app.make_call("c", json!({})).await;
    let events = app.events_until_hangup(&uuid, T).await;
    assert_eq!(names(&events), ["started", "originate", "hangup"]);
    let h = &events[2]["event_data"];
    assert_eq!(h["hangup_cause"], "CALL_REJECTED", "{h}");
    assert_eq!(h["sip_code"], 401, "{h}");
    assert_eq!(h["disposition"], "recv_refuse", "{h}");
    let why = h["sip_reason"].as_str().unwrap_or("");
    assert!(why.contains("elsewhere.example"), "{h}");
    let exit = carrier.proc.wait_exit(T);
    let log = carrier.traced();
    assert!(exit.is_some_and(|s| s.success()), "{}", carrier.traces());
    let invites = log.iter().filter(|m| m.is_request("INVITE")).count();
    assert_eq!(invites, 1, "{}", carrier.messages());
    assert!(
        !carrier.messages().contains("Authorization:"),
        "credentials went to a foreign realm"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_407_then_a_401_are_both_answered() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let keys = [
        "-key",
        "authuser",
        "trunkuser",
        "-key",
        "authpass",
        "s3cret!",
    ];
    let carrier = Sipp::uas("uas_auth_chain.xml", 1, &keys);
    let mut app = App::connect(&nats, &sw).await;
    let gw = [("username", "trunkuser"), ("password", "s3cret!")];
    app.add_gateway("c", carrier.port, &gw).await;
    let uuid = app.make_call("c", json!({})).await;
    app.event(&uuid, "answered", T).await;
    let invites: Vec<Traced> = carrier
        .traced()
        .into_iter()
        .filter(|m| !m.sent && m.is_request("INVITE"))
        .collect();
    assert_eq!(invites.len(), 3, "{}", carrier.messages());
    let realm = |m: &Traced, h: &str| {
        m.header(h)
            .and_then(|v| v.split("realm=\"").nth(1))
            .and_then(|r| r.split('"').next())
            .map(str::to_string)
    };
    let seen: Vec<(Option<String>, Option<String>)> = invites
        .iter()
        .map(|m| (realm(m, "Proxy-Authorization"), realm(m, "Authorization")))
        .collect();
    let (p, c) = (Some("proxy.example".into()), Some("carrier.example".into()));
    assert_eq!(seen, [(None, None), (p.clone(), None), (p, c)]);
    for (i, m) in invites.iter().enumerate() {
        assert_eq!(m.header("CSeq"), Some(format!("{} INVITE", i + 1).as_str()));
    }
    app.hang_up(&uuid).await;
    carrier
        .finish(T)
        .expect("verifyauth accepted the third INVITE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_no_codec_in_common_is_acked_then_ended() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_answer_g729.xml", 1, &[]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.make_call("c", json!({})).await;
    let events = app.events_until_hangup(&uuid, T).await;
    assert_eq!(
        names(&events),
        ["started", "ringing", "originate", "hangup"]
    );
    assert_eq!(events[2]["event_data"]["status_code"], 114);
    let h = &events[3]["event_data"];
    assert_eq!(h["hangup_cause"], "INCOMPATIBLE_DESTINATION", "{h}");
    assert_eq!(h["q850_code"], 88, "{h}");
    assert_eq!(h["disposition"], "send_bye", "{h}");
    assert_eq!(h["sip_code"], 200, "{h}");
    carrier
        .finish(T)
        .expect("the 200 ACKed, then BYE with Reason Q.850 cause 88");
}

/// Slow: the switch's T1 is fixed at 500 ms (no option shortens it), so the INVITE is given up
/// 64·T1 = 32 s after the CANCEL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_whose_487_never_comes_ends_at_64_t1() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_cancel_no_487.xml", 1, &[]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.make_call("c", json!({"dial_timeout": 5})).await;
    let events = app
        .events_until_hangup(&uuid, Duration::from_secs(60))
        .await;
    assert_eq!(
        names(&events),
        ["started", "ringing", "originate", "hangup"]
    );
    let h = &events[3]["event_data"];
    assert_eq!(h["hangup_cause"], "NO_ANSWER", "{h}");
    assert_eq!(h["disposition"], "send_cancel", "{h}");
    let ms = h["duration_ms"].as_u64().expect("duration_ms");
    assert!(
        (36_500..40_000).contains(&ms),
        "dial timeout 5 s + 64·T1 32 s: {h}"
    );
    carrier.finish(T).expect("the CANCEL came and was answered");
    let r = app
        .request("request_get_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 108, "{r}");
}
