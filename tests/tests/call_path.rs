//! The call path end to end: an app on NATS, the switch, a SIPp carrier.

use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_answers_app_drops_carrier_sees_bye() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas_with(
        "uas_answer.xml",
        1,
        &[],
        &[("REASON", r"Q\.850;cause=16;text=.NORMAL_CLEARING.")],
    );
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("carrier", carrier.port, &[]).await;

    let uuid = app
        .make_call(
            "carrier",
            json!({"call_params": {"lead": 42}, "channel_vars": {"sip_h_X-Campaign": "spring"}}),
        )
        .await;
    let answered = app.event(&uuid, "answered", T).await;
    assert_eq!(answered["call_type"], "outbound");
    assert_eq!(answered["call_params"]["lead"], 42);
    let r = app
        .request("request_drop_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    assert_eq!(r["request_name"], "request_drop_call");
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING");
    assert_eq!(h["event_data"], "NORMAL_CLEARING");
    assert_eq!(h["q850_code"], 16);
    assert_eq!(h["disposition"], "send_bye");
    assert_eq!(h["cause_class"], "NORMAL");
    carrier
        .finish(T)
        .expect("the carrier saw INVITE/ACK/BYE with our headers");

    // The call is gone: a second drop names it as ended.
    let r = app
        .request("request_drop_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 108, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_contract_order() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_answer_hangup.xml", 1, &["-key", "cause", "16"]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("carrier", carrier.port, &[]).await;
    let uuid = app.make_call("carrier", json!({})).await;
    let events = app.events_until_hangup(&uuid, T).await;
    assert_eq!(
        names(&events),
        ["started", "ringing", "originate", "answered", "hangup"]
    );
    let originate = &events[2]["event_data"];
    assert_eq!(originate["status"], "OK");
    assert_eq!(originate["gateway"], "carrier");
    let h = &events[4]["event_data"];
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING");
    assert_eq!(h["disposition"], "recv_bye");
    assert!(h["billsec"].as_u64().unwrap() >= 1, "{h}");
    for e in &events {
        let ts = e["event_data"]["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), 27, "RFC 3339 with microseconds: {ts}");
    }
    carrier.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_tcp() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas_with(
        "uas_answer.xml",
        1,
        &["-t", "t1"],
        &[("REASON", r"Q\.850;cause=16")],
    );
    let mut app = App::connect(&nats, &sw).await;
    let r = app
        .request(
            "request_add_sip_gateway",
            json!({"name": "tcp", "params": {"proxy": format!("127.0.0.1:{};transport=tcp", carrier.port)}}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let uuid = app
        .make_call(
            "tcp",
            json!({"channel_vars": {"sip_h_X-Campaign": "spring"}}),
        )
        .await;
    app.event(&uuid, "answered", T).await;
    app.hang_up(&uuid).await;
    let msgs = carrier.messages();
    carrier.finish(T).expect("INVITE/ACK/BYE over TCP");
    assert!(msgs.contains("SIP/2.0/TCP"), "{msgs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_vars_set_mid_call_go_on_the_bye() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas_with("uas_answer.xml", 1, &[], &[("REASON", r"Q\.850;cause=16")]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.answered_call("c").await;
    let r = app
        .request(
            "request_set_channel_vars",
            json!({"call_uuid": uuid, "channel_vars": {"sip_h_X-Agent": "42"}}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    app.hang_up(&uuid).await;
    carrier.wait_traced(T, |m| !m.sent && m.is_request("BYE"));
    let msgs = carrier.messages();
    carrier.finish(T).unwrap();
    let bye = msgs.split("BYE sip:").nth(1).expect("a BYE");
    assert!(bye.contains("X-Agent: 42"), "{bye}");
    let r = app
        .request(
            "request_set_channel_vars",
            json!({"call_uuid": uuid, "channel_vars": {"a": "b"}}),
        )
        .await;
    assert_eq!(r["status_code"], 108, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_reinvite_for_hold_is_answered() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_reinvite.xml", 1, &[]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.make_call("c", json!({})).await;
    app.event(&uuid, "answered", T).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.request("request_drop_call", json!({"call_uuid": uuid}))
        .await;
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["disposition"], "send_bye");
    carrier
        .finish(T)
        .expect("re-INVITE answered with a=recvonly, then our BYE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_answers_options() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let probe = Sipp::uac(
        "uac_options.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "ping"],
    );
    probe.finish(T).expect("200 with Allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_drops_an_inbound_call() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    // No route matches: the default inbound subject of operator.md.
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let caller = Sipp::uac_with(
        "uac_inbound_wait.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "5550"],
        &[("REASON", r"Q\.850;cause=16")],
    );
    let a = app.next_event("answered", T).await;
    assert_eq!(a["tenant_id"], "default");
    let uuid = a["call_uuid"].as_str().unwrap().to_string();
    let r = app
        .request("request_drop_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["disposition"], "send_bye");
    caller.finish(T).expect("BYE with Reason received");
}
