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
