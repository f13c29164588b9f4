//! Every way a call ends carries the cause of api.md §5, checked against SIPp carriers.

use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

/// (status, phrase, Reason Q.850 cause or none, expected cause, q850, class)
type Refusal = (
    u16,
    &'static str,
    Option<u16>,
    &'static str,
    u16,
    &'static str,
);

const REFUSALS: &[Refusal] = &[
    (486, "Busy Here", None, "USER_BUSY", 17, "BUSY"),
    (
        404,
        "Not Found",
        None,
        "UNALLOCATED_NUMBER",
        1,
        "UNOBTAINABLE",
    ),
    (
        480,
        "Temporarily Unavailable",
        None,
        "NO_USER_RESPONSE",
        18,
        "NOANSWER",
    ),
    (
        480,
        "Temporarily Unavailable",
        Some(19),
        "NO_ANSWER",
        19,
        "NOANSWER",
    ),
    // One carrier says 487 where another says 480; the Reason header tells the truth.
    (
        487,
        "Request Terminated",
        Some(19),
        "NO_ANSWER",
        19,
        "NOANSWER",
    ),
    (
        503,
        "Service Unavailable",
        None,
        "NORMAL_TEMPORARY_FAILURE",
        41,
        "FAILED",
    ),
    (603, "Decline", None, "CALL_REJECTED", 21, "REJECTED"),
    (
        484,
        "Address Incomplete",
        None,
        "INVALID_NUMBER_FORMAT",
        28,
        "UNOBTAINABLE",
    ),
    (603, "Decline", Some(17), "USER_BUSY", 17, "BUSY"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_maps_to_its_cause() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect(&nats, &sw).await;
    let mut calls = Vec::new();
    for (i, (code, phrase, q850, ..)) in REFUSALS.iter().enumerate() {
        let code_s = code.to_string();
        let q = q850.map(|q| q.to_string()).unwrap_or_default();
        let scenario = if q850.is_some() {
            "uas_refuse_reason.xml"
        } else {
            "uas_refuse.xml"
        };
        let carrier = Sipp::uas_with(
            scenario,
            1,
            &[],
            &[("CODE", &code_s), ("PHRASE", phrase), ("Q850", &q)],
        );
        let gw = format!("refuse{i}");
        app.add_gateway(&gw, carrier.port, &[]).await;
        let uuid = app.make_call(&gw, json!({})).await;
        calls.push((uuid, carrier));
    }
    for ((uuid, carrier), (code, _, _, cause, q850, class)) in calls.into_iter().zip(REFUSALS) {
        let events = app.events_until_hangup(&uuid, T).await;
        assert_eq!(names(&events), ["started", "originate", "hangup"], "{code}");
        let originate = &events[1]["event_data"];
        assert_eq!(originate["status_code"], 114, "{originate}");
        let h = &events[2]["event_data"];
        assert_eq!(h["hangup_cause"], *cause, "{code}: {h}");
        assert_eq!(h["q850_code"], *q850, "{code}: {h}");
        assert_eq!(h["cause_class"], *class, "{code}: {h}");
        assert_eq!(
            h["sip_code"], *code,
            "the carrier's own code is still reported: {h}"
        );
        assert_eq!(h["disposition"], "recv_refuse");
        assert_eq!(h["billsec"], 0);
        carrier.finish(T).expect("the refusal was ACKed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringing_forever_is_cancelled_at_dial_timeout() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_ring_forever.xml", 1, &[]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("ringer", carrier.port, &[]).await;
    let uuid = app.make_call("ringer", json!({"dial_timeout": 5})).await;
    let events = app.events_until_hangup(&uuid, T).await;
    assert_eq!(
        names(&events),
        ["started", "ringing", "originate", "hangup"]
    );
    let h = &events[3]["event_data"];
    assert_eq!(h["hangup_cause"], "NO_ANSWER");
    assert_eq!(h["disposition"], "send_cancel");
    assert_eq!(h["sip_code"], 487);
    let secs = h["duration_ms"].as_u64().unwrap();
    assert!(
        (4900..9000).contains(&secs),
        "cancelled after the 5 s dial timeout: {h}"
    );
    carrier.finish(T).expect("CANCEL with Reason, 487 ACKed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_drops_a_ringing_call_with_its_cause() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_ring_forever.xml", 1, &[]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("ringer", carrier.port, &[]).await;
    let uuid = app.make_call("ringer", json!({})).await;
    app.event(&uuid, "ringing", T).await;
    let r = app
        .request(
            "request_drop_call",
            json!({"call_uuid": uuid, "cause": "CALL_REJECTED"}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["hangup_cause"], "CALL_REJECTED");
    assert_eq!(h["disposition"], "send_cancel");
    carrier.finish(T).expect("the carrier saw CANCEL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_hangup_reason_gives_the_cause() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_answer_hangup.xml", 1, &["-key", "cause", "31"]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.make_call("c", json!({})).await;
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["hangup_cause"], "NORMAL_UNSPECIFIED");
    assert_eq!(h["disposition"], "recv_bye");
    carrier.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_call_secs_ends_with_allotted_timeout() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    // Causes above 127 travel as a SIP Reason (api.md §5).
    let carrier = Sipp::uas_with(
        "uas_answer.xml",
        1,
        &[],
        &[("REASON", r"SIP;cause=602;text=.ALLOTTED_TIMEOUT.")],
    );
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app
        .make_call(
            "c",
            json!({"max_call_secs": 1, "channel_vars": {"sip_h_X-Campaign": "spring"}}),
        )
        .await;
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["hangup_cause"], "ALLOTTED_TIMEOUT");
    assert_eq!(h["cause_class"], "TIMEOUT");
    assert_eq!(h["disposition"], "send_bye");
    assert_eq!(h["billsec"], 1);
    carrier.finish(T).expect("BYE with Reason SIP;cause=602");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_challenge_is_answered_with_digest() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas(
        "uas_auth.xml",
        1,
        &[
            "-key",
            "authuser",
            "trunkuser",
            "-key",
            "authpass",
            "s3cret!",
        ],
    );
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway(
        "auth",
        carrier.port,
        &[("username", "trunkuser"), ("password", "s3cret!")],
    )
    .await;
    let uuid = app.make_call("auth", json!({})).await;
    app.event(&uuid, "answered", T).await;
    let r = app
        .request("request_drop_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 0);
    app.event(&uuid, "hangup", T).await;
    carrier
        .finish(T)
        .expect("verifyauth accepted our answer to the 401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_challenge_is_answered_with_proxy_authorization() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_auth_407.xml", 1, &[]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway(
        "proxy",
        carrier.port,
        &[("username", "trunkuser"), ("password", "s3cret!")],
    )
    .await;
    let uuid = app.make_call("proxy", json!({})).await;
    app.event(&uuid, "answered", T).await;
    app.hang_up(&uuid).await;
    carrier
        .finish(T)
        .expect("a Proxy-Authorization answering the 407");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_call_rejected() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas(
        "uas_auth.xml",
        1,
        &["-key", "authuser", "trunkuser", "-key", "authpass", "right"],
    );
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway(
        "auth",
        carrier.port,
        &[("username", "trunkuser"), ("password", "wrong")],
    )
    .await;
    let uuid = app.make_call("auth", json!({})).await;
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["hangup_cause"], "CALL_REJECTED", "{h}");
    assert_eq!(h["sip_code"], 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_carrier_is_recovery_on_timer_expire() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect(&nats, &sw).await;
    // Nothing listens there: every INVITE retransmission goes unanswered until Timer B (32 s).
    app.add_gateway("void", free_port(), &[]).await;
    let uuid = app.make_call("void", json!({"dial_timeout": 60})).await;
    let h = app.event(&uuid, "hangup", Duration::from_secs(45)).await;
    assert_eq!(h["hangup_cause"], "RECOVERY_ON_TIMER_EXPIRE");
    assert_eq!(h["cause_class"], "TIMEOUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_pings_mark_the_gateway_down() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("silent", free_port(), &[("ping", "1")])
        .await;
    let end = std::time::Instant::now() + Duration::from_secs(8);
    loop {
        let r = app
            .request("request_get_sip_gateway", json!({"name": "silent"}))
            .await;
        if r["gateways"][0]["status"] == "DOWN" {
            break;
        }
        assert!(std::time::Instant::now() < end, "never DOWN: {r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let uuid = app.make_call("silent", json!({})).await;
    let events = app.events_until_hangup(&uuid, T).await;
    assert_eq!(names(&events), ["started", "originate", "hangup"]);
    assert_eq!(events[2]["event_data"]["hangup_cause"], "GATEWAY_DOWN");
    let (_, metrics) = sw.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("botstream_gateway_up{gateway=\"silent\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_pings_keep_the_gateway_up() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_options.xml", 3, &[]);
    let app = App::connect(&nats, &sw).await;
    app.add_gateway("pinged", carrier.port, &[("ping", "1")])
        .await;
    carrier.finish(T).expect("three OPTIONS pings answered");
    let r = app
        .request("request_get_sip_gateway", json!({"name": "pinged"}))
        .await;
    assert_eq!(r["gateways"][0]["status"], "UP", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_caller_that_never_acks_is_hung_up() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let caller = Sipp::uac(
        "uac_no_ack.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "5551"],
    );
    let h = app.next_event("hangup", Duration::from_secs(45)).await;
    assert_eq!(h["hangup_cause"], "RECOVERY_ON_TIMER_EXPIRE", "{h}");
    assert_eq!(h["disposition"], "send_bye");
    caller.finish(T).expect("BYE with Reason cause 102");
}
