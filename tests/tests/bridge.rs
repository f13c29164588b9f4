//! Several legs (api.md §3.8, §3.10): a call bridged to a human agent, and a supervisor who
//! listens, whispers and barges. Every party is a SIPp instance whose media is the test's own
//! RTP socket, so each test hears exactly what the switch sent that party.

use std::time::Duration;

use e2e::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);
/// A party that waits for the switch's BYE (it hangs up itself only after a minute).
const WAIT: &str = "60000";

async fn bridge(app: &App, uuid: &str, stop_stream: bool) -> String {
    let r = app
        .request(
            "request_bridge_call",
            json!({"call_uuid": uuid, "gateway": "agents", "to_number": "2001",
                   "from_number": "15559998888", "stop_stream": stop_stream}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    assert_eq!(r["request_name"], "request_bridge_call");
    r["bridge_call_uuid"]
        .as_str()
        .expect("bridge_call_uuid")
        .to_string()
}

async fn state(app: &App, uuid: &str) -> Value {
    let r = app
        .request("request_get_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    r["call"]["state"].clone()
}

/// The switch, an app, a customer carrier (PCMU) and an agent gateway (PCMA).
async fn setup(agent_hold: &str) -> (Nats, Switch, App, (RtpPeer, Sipp), (RtpPeer, Sipp)) {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let customer = media_party("uas_media_at.xml", false, &[("HOLD", WAIT)]).await;
    let agent = media_party("uas_media_at.xml", true, &[("HOLD", agent_hold)]).await;
    let app = App::connect(&nats, &sw).await;
    app.add_gateway("carrier", customer.1.port, &[]).await;
    app.add_gateway("agents", agent.1.port, &[]).await;
    (nats, sw, app, customer, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_and_agent_hear_each_other_across_codecs_then_the_agent_hangs_up() {
    let (_nats, _sw, mut app, (customer, carrier), (agent, agents)) = setup("5000").await;
    let uuid = app
        .make_call("carrier", json!({"call_params": {"lead": 7}}))
        .await;
    app.event(&uuid, "answered", T).await;
    customer.tone(700.0);
    agent.tone(1300.0);

    let b = bridge(&app, &uuid, false).await;
    let events = app.events_until_answered(&b, T).await;
    assert_eq!(
        names(&events),
        ["started", "ringing", "originate", "answered"]
    );
    let answered = &events[3]["event_data"];
    assert_eq!(answered["call_type"], "bridge");
    assert_eq!(answered["bridged_call_uuid"], uuid.as_str());
    assert_eq!(answered["call_params"]["lead"], 7, "the call's params");

    // PCMU on one side, PCMA on the other: each hears the other's tone, and only that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heard = customer.listen(Duration::from_secs(1)).await;
    assert!(
        heard.len() > 6000,
        "audio kept flowing: {} samples",
        heard.len()
    );
    assert!(hears(&heard, 1300.0) > 0.8, "the customer hears the agent");
    assert!(hears(&heard, 700.0) < 0.05, "and not themself");
    let heard = agent.listen(Duration::from_secs(1)).await;
    assert!(hears(&heard, 700.0) > 0.8, "the agent hears the customer");

    // A key press crosses as RFC 4733 and is reported for the customer's call.
    customer.press('7');
    let d = app.event(&uuid, "dtmf", T).await;
    assert_eq!(d["digit"], "7");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(agent.events().contains(&7), "{:?}", agent.events());

    // The agent hangs up: the call follows (no park_after_bridge).
    let h = app.event(&b, "hangup", T).await;
    assert_eq!(h["disposition"], "recv_bye");
    assert_eq!(h["outcome"], "Answered");
    assert_eq!(h["bridged_call_uuid"], uuid.as_str());
    let q = app.event(&b, "call_quality", T).await;
    assert!(q["packets_received"].as_u64().unwrap() > 100, "{q}");
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["disposition"], "send_bye");
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING");
    app.event(&uuid, "call_quality", T).await;
    carrier.finish(T).expect("the customer got our BYE");
    agents.finish(T).expect("the agent hung up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_hanging_up_ends_the_agent_leg() {
    let (_nats, _sw, mut app, (_customer, carrier), (_agent, agents)) = setup(WAIT).await;
    let uuid = app.make_call("carrier", json!({})).await;
    app.event(&uuid, "answered", T).await;
    let b = bridge(&app, &uuid, false).await;
    app.event(&b, "answered", T).await;
    // The customer's call is dropped (as its carrier's BYE would end it): the agent gets BYE.
    app.hang_up(&uuid).await;
    let h = app.event(&b, "hangup", T).await;
    assert_eq!(h["disposition"], "send_bye");
    assert_eq!(h["outcome"], "Answered");
    carrier.finish(T).unwrap();
    agents.finish(T).expect("the agent got our BYE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_agent_leg_ends_both() {
    let (_nats, _sw, mut app, (_customer, carrier), (_agent, agents)) = setup(WAIT).await;
    let uuid = app.make_call("carrier", json!({})).await;
    app.event(&uuid, "answered", T).await;
    let b = bridge(&app, &uuid, false).await;
    app.event(&b, "answered", T).await;
    let h = app.hang_up(&b).await;
    assert_eq!(h["disposition"], "send_bye");
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["disposition"], "send_bye");
    carrier.finish(T).unwrap();
    agents.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_agent_leaves_the_call_up() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let (customer, carrier) = media_party("uas_media_at.xml", false, &[("HOLD", WAIT)]).await;
    let busy = Sipp::uas_with(
        "uas_refuse.xml",
        1,
        &[],
        &[("CODE", "486"), ("PHRASE", "Busy Here")],
    );
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("carrier", carrier.port, &[]).await;
    app.add_gateway("agents", busy.port, &[]).await;
    let uuid = app.make_call("carrier", json!({})).await;
    app.event(&uuid, "answered", T).await;
    let b = bridge(&app, &uuid, true).await;
    let events = app.events_until_hangup(&b, T).await;
    assert_eq!(names(&events), ["started", "originate", "hangup"]);
    assert_eq!(events[1]["event_data"]["status_code"], 114);
    let h = &events[2]["event_data"];
    assert_eq!(h["hangup_cause"], "USER_BUSY");
    assert_eq!(h["sip_code"], 486);
    assert_eq!(h["outcome"], "Declined");
    busy.finish(T).unwrap();
    // The customer's call is still up, still hears the switch, and ends normally.
    assert_eq!(state(&app, &uuid).await, "answered");
    assert!(customer.listen(Duration::from_millis(300)).await.len() > 1000);
    app.hang_up(&uuid).await;
    carrier.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn park_after_bridge_keeps_the_call_and_its_stream_can_start_again() {
    let (_nats, _sw, mut app, (customer, carrier), (_agent, agents)) = setup("1500").await;
    let mut ws = WsServer::start().await;
    let uuid = app.make_call("carrier", json!({})).await;
    app.event(&uuid, "answered", T).await;
    let r = app
        .request(
            "request_set_channel_vars",
            json!({"call_uuid": uuid, "channel_vars": {"park_after_bridge": "true"}}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let _conn = app.stream_to(&uuid, &mut ws).await;
    app.event(&uuid, "stream_started", T).await;

    // stop_stream: the bot's stream ends when the agent answers.
    let b = bridge(&app, &uuid, true).await;
    app.event(&b, "answered", T).await;
    let s = app.event(&uuid, "stream_stopped", T).await;
    assert_eq!(s["reason"], "bridge");

    // The agent leaves after 1.5 s; the call stays, and the bot can take it back.
    let h = app.event(&b, "hangup", T).await;
    assert_eq!(h["disposition"], "recv_bye");
    agents.finish(T).unwrap();
    assert!(app
        .maybe_event(&uuid, "hangup", Duration::from_secs(1))
        .await
        .is_none());
    assert_eq!(state(&app, &uuid).await, "answered");
    let mut conn = app.stream_to(&uuid, &mut ws).await;
    app.event(&uuid, "stream_started", T).await;
    customer.tone(900.0);
    let heard = conn.collect(Duration::from_millis(600)).await;
    assert!(
        hears(&heard, 900.0) > 0.5,
        "the bot hears the customer again"
    );
    app.hang_up(&uuid).await;
    carrier.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_listens_then_whispers_then_barges() {
    let nats = Nats::start();
    let subject = format!("app.events.{}", free_port());
    let sw = Switch::start(&nats, &["--inbound-subject", &subject]);
    let mut app = App::connect_to(&nats, &sw, &subject).await;
    let (customer, carrier) = media_party("uas_media_at.xml", false, &[("HOLD", WAIT)]).await;
    let (agent, agents) = media_party("uas_media_at.xml", true, &[("HOLD", WAIT)]).await;
    app.add_gateway("carrier", carrier.port, &[]).await;
    app.add_gateway("agents", agents.port, &[]).await;
    let uuid = app.make_call("carrier", json!({})).await;
    app.event(&uuid, "answered", T).await;
    let b = bridge(&app, &uuid, false).await;
    app.event(&b, "answered", T).await;

    // The supervisor's phone calls in.
    let sup_rtp = RtpPeer::start(false).await;
    let sup_port = sup_rtp.port.to_string();
    let supervisor = Sipp::uac_with(
        "uac_media_at.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "5000"],
        &[("RTP_PORT", &sup_port), ("HOLD", WAIT)],
    );
    let sup = app.next_event("answered", T).await;
    let sup_uuid = sup["call_uuid"].as_str().unwrap().to_string();
    customer.tone(700.0);
    agent.tone(1300.0);
    sup_rtp.tone(1900.0);

    let snoop = |mode: &'static str| {
        let (app, uuid, sup_uuid) = (&app, uuid.clone(), sup_uuid.clone());
        async move {
            let r = app
                .request(
                    "request_snoop_on_call",
                    json!({"target_call_uuid": uuid, "listener_call_uuid": sup_uuid, "mode": mode}),
                )
                .await;
            assert_eq!(r["status_code"], 0, "{mode}: {r}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let listen = Duration::from_millis(800);

    snoop("listen").await;
    let heard = sup_rtp.listen(listen).await;
    assert!(
        hears(&heard, 700.0) > 0.25,
        "the supervisor hears the customer"
    );
    assert!(hears(&heard, 1300.0) > 0.25, "and the agent");
    assert!(
        hears(&customer.listen(listen).await, 1900.0) < 0.02,
        "nobody hears a listener"
    );
    assert!(hears(&agent.listen(listen).await, 1900.0) < 0.02);

    snoop("whisper").await;
    let heard = agent.listen(listen).await;
    assert!(hears(&heard, 1900.0) > 0.25, "the agent hears the whisper");
    assert!(hears(&heard, 700.0) > 0.25, "over the customer");
    assert!(
        hears(&customer.listen(listen).await, 1900.0) < 0.02,
        "the customer does not"
    );

    snoop("barge").await;
    let heard = customer.listen(listen).await;
    assert!(
        hears(&heard, 1900.0) > 0.25,
        "in barge the customer hears the supervisor"
    );
    assert!(hears(&heard, 1300.0) > 0.25, "beside the agent");
    let heard = sup_rtp.listen(listen).await;
    assert!(
        hears(&heard, 1900.0) < 0.02,
        "the supervisor does not hear themself"
    );

    // The call ends: the snoop with it; the supervisor's own call stays up.
    app.hang_up(&uuid).await;
    app.event(&b, "hangup", T).await;
    assert_eq!(state(&app, &sup_uuid).await, "answered");
    let heard = sup_rtp.listen(listen).await;
    assert!(hears(&heard, 700.0) < 0.02 && hears(&heard, 1300.0) < 0.02);
    app.hang_up(&sup_uuid).await;
    carrier.finish(T).unwrap();
    agents.finish(T).unwrap();
    supervisor.finish(T).unwrap();
}
