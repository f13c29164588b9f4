//! NATS goes away in the middle of a call: the call goes on, and every event published while
//! NATS was away reaches the app once it is back, in order, none twice (shell.rs `publisher`);
//! requests are answered again without anyone restarting anything.

use std::time::Duration;

use e2e::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// The events of `uuid` seen within `within`, in arrival order.
async fn collect(app: &mut App, uuid: &str, within: Duration) -> Vec<Value> {
    use futures::StreamExt;
    let end = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout_at(end, app.events.next()).await {
        let v: Value = serde_json::from_slice(&msg.payload).expect("event is JSON");
        if v["event_data"]["call_uuid"] == uuid {
            out.push(v);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_an_outage_arrive_after_it_in_order_and_once() {
    let mut nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    // The carrier presses 1, 2, 3 and hangs up 2 s after the answer: NATS is away by then.
    let carrier = Sipp::uas_with("uas_info_outage.xml", 1, &[], &[("PAUSE", "2000")]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.make_call("c", json!({})).await;
    let before = app.events_until_answered(&uuid, T).await;
    assert_eq!(
        names(&before),
        ["started", "ringing", "originate", "answered"],
        "{before:?}"
    );

    let outage = Duration::from_secs(5);
    nats.stop();
    tokio::time::sleep(outage).await;
    // The call lived through it: the carrier's keys were answered and its BYE too.
    carrier
        .finish(Duration::from_secs(5))
        .expect("INFOs and BYE answered while NATS was away");
    nats.restart(Duration::ZERO);

    // Both the app's client and the switch reconnect on their own; the switch waits
    // REPLAY_GRACE (5 s) for apps to subscribe again, then sends what it kept.
    let after = collect(&mut app, &uuid, Duration::from_secs(20)).await;
    let got = names(&after);
    let digits: Vec<&str> = after
        .iter()
        .filter(|e| e["event_name"] == "botstream::dtmf")
        .map(|e| e["event_data"]["digit"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(digits, ["1", "2", "3"], "{got:?}");
    let hangups: Vec<&Value> = after
        .iter()
        .filter(|e| e["event_name"] == "botstream::hangup")
        .collect();
    assert_eq!(hangups.len(), 1, "{got:?}");
    assert_eq!(hangups[0]["event_data"]["disposition"], "recv_bye");
    // In order: the keys, then the hangup, then (if any) the call's quality; nothing twice.
    let order: Vec<&str> = got
        .iter()
        .map(String::as_str)
        .filter(|n| *n != "call_quality")
        .collect();
    assert_eq!(order, ["dtmf", "dtmf", "dtmf", "hangup"], "{got:?}");
    assert!(got.iter().filter(|n| *n == "call_quality").count() <= 1);
    assert!(got
        .last()
        .is_some_and(|n| n == "hangup" || n == "call_quality"));
    // Timestamps say when the events happened, not when NATS was back.
    let stamp = |e: &Value| {
        e["event_data"]["timestamp"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(stamp(&after[0]) < stamp(&after[after.len() - 1]) || after.len() == 1);

    // Requests are answered again, and nothing was dropped. The directory learnt that the
    // call ended (its write waited for NATS).
    let r = app
        .request("request_get_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 108, "{r}");
    let r = app.request("request_list_calls", json!({})).await;
    assert_eq!(r["status_code"], 0, "{r}");
    assert!(
        !r["calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["call_uuid"] == uuid),
        "the ended call is still listed: {r}"
    );
    let (_, metrics) = sw.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("botstream_events_dropped_total 0"),
        "{metrics}"
    );
    // And a new call's events flow as before.
    let carrier = Sipp::uas_with("uas_answer.xml", 1, &[], &[("REASON", r"Q\.850;cause=16")]);
    app.add_gateway("c2", carrier.port, &[]).await;
    let uuid = app.answered_call("c2").await;
    app.hang_up(&uuid).await;
    carrier.finish(T).unwrap();
}
