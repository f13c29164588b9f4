//! Inbound calls: answered, routed by the called number, ended by the caller or the app.

use std::time::Duration;

use e2e::*;

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
        .expect("answered with PCMA (the caller's first choice), BYE answered");
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
