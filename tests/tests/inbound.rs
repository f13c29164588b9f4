//! Inbound calls: answered, routed by the called number, ended by the caller or the app.

use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_caller_is_answered_and_routed() {
    let nats = Nats::start();
    let dir = std::env::temp_dir().join(format!("bs-inbound-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("routes.toml");
    let app_subject = format!("app.inbound.{}", free_port());
    std::fs::write(
        &cfg,
        format!(
            "[[inbound.routes]]\nto_prefix = \"1800\"\ntenant_id = \"acme\"\nevent_subject = \"{app_subject}\"\ncall_params = {{ campaign = \"support\" }}\n"
        ),
    )
    .unwrap();
    let sw = Switch::start(&nats, &["--config", cfg.to_str().unwrap()]);
    let client = async_nats::connect(&nats.url).await.unwrap();
    let mut sub = client.subscribe(app_subject.clone()).await.unwrap();
    client.flush().await.unwrap();
    let caller = Sipp::uac(
        "uac_inbound.xml",
        &format!("127.0.0.1:{}", sw.sip_port),
        1,
        &["-s", "18005550100"],
    );
    use futures::StreamExt;
    let mut got = Vec::new();
    while got.len() < 2 {
        let msg = tokio::time::timeout(T, sub.next())
            .await
            .expect("inbound events")
            .unwrap();
        got.push(serde_json::from_slice::<serde_json::Value>(&msg.payload).unwrap());
    }
    assert_eq!(got[0]["event_name"], "botstream::answered");
    let a = &got[0]["event_data"];
    assert_eq!(a["call_type"], "inbound");
    assert_eq!(a["tenant_id"], "acme");
    assert_eq!(a["to_number"], "18005550100");
    assert_eq!(a["from_number"], "15551230000");
    assert_eq!(a["call_params"]["campaign"], "support");
    assert_eq!(got[1]["event_name"], "botstream::hangup");
    assert_eq!(got[1]["event_data"]["disposition"], "recv_bye");
    assert_eq!(got[1]["event_data"]["hangup_cause"], "NORMAL_CLEARING");
    caller
        .finish(T)
        .expect("answered with PCMA (the caller's first choice), BYE answered");
    let _ = json!({});
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
