//! What carriers do to long calls (api.md §7): RFC 4028 session timers, and a far end that holds
//! and resumes the call.

use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

/// A switch whose session timers run in seconds instead of the default half hour.
fn switch(nats: &Nats) -> Switch {
    Switch::start(
        nats,
        &[
            "--sip-session-expires",
            "6",
            "--sip-min-se",
            "2",
            "--media-timeout",
            "2",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_refreshed_by_the_switch_outlives_its_interval() {
    let nats = Nats::start();
    let sw = switch(&nats);
    let (_rtp, carrier) = media_party("uas_session_refresh_at.xml", false, &[("SE", "6")]).await;
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("carrier", carrier.port, &[]).await;
    let uuid = app.make_call("carrier", json!({})).await;
    let answered = std::time::Instant::now();
    app.event(&uuid, "answered", T).await;
    // The carrier hangs up only after two refreshes (at 3 s and 6 s), a second after the second.
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["disposition"], "recv_bye", "{h}");
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING");
    let lived = answered.elapsed();
    assert!(
        lived > Duration::from_secs(6),
        "past its 6 s interval: {lived:?}"
    );
    carrier
        .finish(T)
        .expect("two re-INVITEs with Session-Expires: 6;refresher=uac");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_far_end_never_refreshes_is_ended_before_it_expires() {
    let nats = Nats::start();
    let sw = switch(&nats);
    let (_rtp, carrier) = media_party("uas_session_expire_at.xml", false, &[("SE", "6")]).await;
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("carrier", carrier.port, &[]).await;
    let uuid = app.make_call("carrier", json!({})).await;
    app.event(&uuid, "answered", T).await;
    let answered = std::time::Instant::now();
    let h = app.event(&uuid, "hangup", T).await;
    let lived = answered.elapsed();
    assert_eq!(h["hangup_cause"], "RECOVERY_ON_TIMER_EXPIRE", "{h}");
    assert_eq!(h["disposition"], "send_bye");
    // RFC 4028 §10: 6 s less the lesser of 32 s and a third: BYE at 4 s, before the expiry.
    assert!(
        lived > Duration::from_millis(3500) && lived < Duration::from_millis(5900),
        "{lived:?}"
    );
    carrier
        .finish(T)
        .expect("our BYE with Reason: Q.850;cause=102");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_calls_send_nothing_and_do_not_time_out_then_resume() {
    let nats = Nats::start();
    let sw = switch(&nats);
    let (rtp, carrier) = media_party("uas_hold_resume_at.xml", false, &[("HOLD", "2500")]).await;
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("carrier", carrier.port, &[]).await;
    let uuid = app.make_call("carrier", json!({})).await;
    app.event(&uuid, "answered", T).await;
    assert!(rtp.listen(Duration::from_millis(600)).await.len() > 3000);
    // The carrier holds at 1 s (answered a=recvonly): we send nothing, and its own silence for
    // longer than the 2 s media timeout does not end the call.
    tokio::time::sleep(Duration::from_millis(700)).await;
    rtp.mute(true);
    let held = rtp.listen(Duration::from_millis(1500)).await;
    assert!(
        held.len() <= 320,
        "nothing sent on hold: {} samples",
        held.len()
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    rtp.mute(false);
    // Resumed (a=sendrecv answered a=sendrecv): audio flows again.
    assert!(rtp.listen(Duration::from_millis(800)).await.len() > 4000);
    let r = app
        .request("request_get_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["call"]["state"], "answered", "{r}");
    let h = app.hang_up(&uuid).await;
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING");
    carrier
        .finish(T)
        .expect("hold answered recvonly, resume answered sendrecv");
}
