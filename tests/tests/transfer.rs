//! Blind transfer (api.md §3.9) against SIPp carriers: REFER accepted and completed by NOTIFY,
//! REFER refused, destinations from the dial plan or as numbers, and a carrier's own REFER.

use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

async fn state(app: &App, uuid: &str) -> serde_json::Value {
    let r = app
        .request("request_get_call", json!({"call_uuid": uuid}))
        .await;
    r["call"]["state"].clone()
}

/// A switch whose dial plan names `sales`.
fn switch(nats: &Nats) -> Switch {
    let cfg = config_file("[dialplan]\nsales = \"sip:sales@pbx.example.com:5070\"\n");
    Switch::start(nats, &["--config", cfg.to_str().expect("path")])
}

/// An answered call through gateway `c` to `carrier`, with `sip_h_X-Campaign` set at dial time and `sip_h_X-Agent`
/// set mid-call.
async fn answered(app: &mut App, carrier: &Sipp) -> String {
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.answered_call("c").await;
    let r = app
        .request(
            "request_set_channel_vars",
            json!({"call_uuid": uuid, "channel_vars": {"sip_h_X-Agent": "42"}}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    uuid
}

/// Transfers an answered call to `destination` through a carrier that accepts and completes it;
/// `refer_to` is the Refer-To the carrier must get. Returns the REFER as the carrier saw it.
async fn completed_transfer(destination: &str, refer_to: impl Fn(u16) -> String) -> Traced {
    let nats = Nats::start();
    let sw = switch(&nats);
    // A number's Refer-To names the gateway, so the carrier's port.
    let carrier = Sipp::uas("uas_refer.xml", 1, &[]);
    let want = refer_to(carrier.port);
    let mut app = App::connect(&nats, &sw).await;
    let uuid = answered(&mut app, &carrier).await;
    let r = app
        .request(
            "request_transfer_call",
            json!({"call_uuid": uuid, "destination": destination}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let events = app.events_until_hangup(&uuid, T).await;
    assert!(!names(&events).contains(&"error".into()), "{events:?}");
    let h = &events[events.len() - 1]["event_data"];
    assert_eq!(h["hangup_cause"], "BLIND_TRANSFER", "{h}");
    assert_eq!(h["disposition"], "send_refer", "{h}");
    assert_eq!(h["sip_code"], 200, "the NOTIFY's sipfrag: {h}");
    let refer = carrier.wait_traced(T, |m| !m.sent && m.is_request("REFER"));
    carrier
        .finish(T)
        .expect("REFER with the X- headers, NOTIFY 100 then 200, BYE with Reason SIP cause 600");
    assert_eq!(refer.header("Refer-To"), Some(format!("<{want}>").as_str()));
    let r = app
        .request("request_get_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 108, "{r}");
    refer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_sip_uri_completes_with_blind_transfer() {
    let uri = "sip:agent7@10.0.0.7:5070;transport=udp";
    let refer = completed_transfer(uri, |_| uri.to_string()).await;
    assert_eq!(refer.header("X-Campaign"), Some("spring"));
    assert_eq!(refer.header("X-Agent"), Some("42"));
    assert!(refer.header("Referred-By").is_some(), "{refer:?}");
    // A target refresh request carries exactly one Contact (RFC 3261 §8.1.1.8, RFC 3515 §2.4.1).
    assert_eq!(refer.headers("Contact").len(), 1, "{refer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_dial_plan_name_refers_to_its_uri() {
    completed_transfer("sales", |_| "sip:sales@pbx.example.com:5070".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_number_refers_to_it_at_the_gateway() {
    completed_transfer("2001", |port| format!("sip:2001@127.0.0.1:{port}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refer_is_an_error_event_and_the_call_stays_up() {
    let nats = Nats::start();
    let sw = switch(&nats);
    let carrier = Sipp::uas("uas_refer_refused.xml", 1, &[]);
    let mut app = App::connect(&nats, &sw).await;
    let uuid = answered(&mut app, &carrier).await;
    let r = app
        .request(
            "request_transfer_call",
            json!({"call_uuid": uuid, "destination": "sales"}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let e = app.event(&uuid, "error", T).await;
    assert_eq!(e["status_code"], 403, "{e}");
    assert!(e["status"].as_str().unwrap_or("").contains("403"), "{e}");
    assert!(app
        .maybe_event(&uuid, "hangup", Duration::from_millis(500))
        .await
        .is_none());
    assert_eq!(state(&app, &uuid).await, "answered");
    let h = app.hang_up(&uuid).await;
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING", "{h}");
    assert_eq!(h["disposition"], "send_bye", "{h}");
    carrier.finish(T).expect("REFER refused, then our BYE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carriers_refer_is_refused_as_the_allow_header_says() {
    let nats = Nats::start();
    let sw = switch(&nats);
    let carrier = Sipp::uas("uas_sends_refer.xml", 1, &[]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.make_call("c", json!({})).await;
    app.event(&uuid, "answered", T).await;
    let refused = carrier.wait_traced(T, |m| !m.sent && m.is_response(405, "REFER"));
    let invite = carrier.wait_traced(T, |m| !m.sent && m.is_request("INVITE"));
    let methods = |m: &Traced| -> Vec<String> {
        m.headers("Allow")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_uppercase())
            .collect()
    };
    let (on_405, on_invite) = (methods(&refused), methods(&invite));
    assert!(
        !on_405.is_empty(),
        "a 405 must say what is allowed: {refused:?}"
    );
    assert_eq!(on_405, on_invite, "one Allow for the dialog");
    assert!(!on_405.contains(&"REFER".to_string()), "{on_405:?}");
    assert!(on_405.contains(&"BYE".to_string()), "{on_405:?}");
    assert!(app
        .maybe_event(&uuid, "hangup", Duration::from_millis(300))
        .await
        .is_none());
    assert_eq!(state(&app, &uuid).await, "answered");
    app.hang_up(&uuid).await;
    carrier.finish(T).expect("405 to the REFER, then our BYE");
}
