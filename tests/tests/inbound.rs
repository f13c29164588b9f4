//! Inbound calls: answered, routed by the called number, ended by the caller or the app.

use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_caller_is_answered_and_routed() {
    let nats = Nats::start();
    let app_subject = format!("app.inbound.{}", free_port());
    let cfg = config_file(&format!(
        "[[inbound.routes]]\nto_prefix = \"1800\"\ntenant_id = \"acme\"\nevent_subject = \"{app_subject}\"\ncall_params = {{ campaign = \"support\" }}\n"
    ));
    let sw = Switch::start(&nats, &["--config", cfg.to_str().unwrap()]);
    let mut app = App::connect_to(&nats, &sw, &app_subject).await;
    let caller = Sipp::uac(
        "uac_inbound.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "18005550100"],
    );
    let a = app.next_event("answered", T).await;
    assert_eq!(a["call_type"], "inbound");
    assert_eq!(a["tenant_id"], "acme");
    assert_eq!(a["to_number"], "18005550100");
    assert_eq!(a["from_number"], "15551230000");
    assert_eq!(a["call_params"]["campaign"], "support");
    let uuid = a["call_uuid"].as_str().unwrap().to_string();
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["disposition"], "recv_bye");
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING");
    caller
        .finish(T)
        .expect("answered with PCMU (the first of media.codecs the caller offers), BYE answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_outside_the_acl_get_403() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &["--sip-inbound-acl", "10.99.0.0/16"]);
    let caller = Sipp::uac(
        "uac_refused.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "100"],
    );
    caller.finish(T).expect("403 with a Reason header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_with_video_is_answered_stream_for_stream() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let caller = Sipp::uac(
        "uac_inbound_video.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "100"],
    );
    app.next_event("answered", T).await;
    caller
        .finish(T)
        .expect("m=video 0 then our m=audio, in the offer's order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_named_by_host_name_passes_the_acl_at_its_resolved_address() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &["--sip-inbound-acl", "10.99.0.0/16"]);
    let target = format!("127.0.0.1:{}", sw.sip_port);
    // Outside the ACL and from no gateway: refused.
    let refused = Sipp::uac("uac_refused.xml", &target, 1, &["-s", "100"]);
    refused.finish(T).expect("403 before the trunk exists");
    // A gateway whose proxy is "localhost": its address is 127.0.0.1, where the caller is.
    let app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let r = app
        .request(
            "request_add_sip_gateway",
            json!({"name": "trunk", "params": {"proxy": "localhost:5999"}}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut app = app;
    let caller = Sipp::uac("uac_inbound.xml", &target, 1, &["-s", "100"]);
    let a = app.next_event("answered", T).await;
    assert_eq!(a["call_type"], "inbound");
    caller
        .finish(T)
        .expect("admitted by the trunk's resolved address");
}
