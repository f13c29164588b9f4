//! Tenant quotas (operator.md `[[tenants]]`, api.md §6 codes 110–113) on two pods sharing one
//! NATS: every code is reachable on either pod, and a tenant's concurrent calls are counted
//! across both.

use std::time::Duration;

use e2e::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

fn call(app: &App, tenant: &str) -> Value {
    json!({"gateway": "c", "tenant_id": tenant, "to_number": "1", "from_number": "2",
           "event_subject": app.event_subject})
}

async fn code_on(app: &mut App, pod: &Switch, tenant: &str) -> (u64, Value) {
    app.use_switch(pod);
    let r = app.request("request_make_call", call(app, tenant)).await;
    (r["status_code"].as_u64().unwrap_or(999), r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_code_on_two_pods_with_calls_counted_across_them() {
    let nats = Nats::start();
    // operator.md's form: `[[tenants]]` entries; `expires` and `suspended` are the extension
    // that makes 110 and 113 reachable (README "Tenant quotas").
    let cfg = config_file(
        r#"
tenants_enforce = true
[[tenants]]
id = "t1"
max_concurrent_calls = 2
[[tenants]]
id = "old"
max_concurrent_calls = 5
expires = "2020-01-01T00:00:00Z"
[[tenants]]
id = "frozen"
max_concurrent_calls = 5
suspended = true
"#,
    );
    let cfg = cfg.to_str().unwrap();
    let a = Switch::start(&nats, &["--config", cfg]);
    let b = Switch::start(&nats, &["--config", cfg]);
    let carrier = Sipp::uas("uas_ring_forever.xml", 5, &[]);
    let mut app = App::connect(&nats, &a).await;
    app.add_gateway("c", carrier.port, &[]).await;
    // Both pods have the gateway (KV watch) before calls go to b.
    tokio::time::sleep(Duration::from_millis(300)).await;

    for pod in [&a, &b] {
        let (code, r) = code_on(&mut app, pod, "stranger").await;
        assert_eq!(code, 111, "{r}");
        assert!(r["status"].as_str().unwrap().contains("stranger"), "{r}");
        let (code, r) = code_on(&mut app, pod, "old").await;
        assert_eq!(code, 110, "{r}");
        let (code, r) = code_on(&mut app, pod, "frozen").await;
        assert_eq!(code, 113, "{r}");
    }

    // One call of t1 on each pod: t1 is at its limit of 2 on both.
    let (code, r) = code_on(&mut app, &a, "t1").await;
    assert_eq!(code, 0, "{r}");
    let on_a = r["call_uuid"].as_str().unwrap().to_string();
    let (code, r) = code_on(&mut app, &b, "t1").await;
    assert_eq!(code, 0, "{r}");
    let on_b = r["call_uuid"].as_str().unwrap().to_string();
    app.event(&on_a, "ringing", T).await;
    app.event(&on_b, "ringing", T).await;
    // Counts travel through KV in milliseconds; give them a moment on a busy machine.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for pod in [&a, &b] {
        let (code, r) = code_on(&mut app, pod, "t1").await;
        assert_eq!(code, 112, "{r}");
        assert!(r["status"].as_str().unwrap().contains("on all pods"), "{r}");
    }

    // The call on b ends: a may place one again, and b is full again with it.
    app.use_switch(&b);
    app.hang_up(&on_b).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, r) = code_on(&mut app, &a, "t1").await;
    assert_eq!(code, 0, "{r}");
    let again = r["call_uuid"].as_str().unwrap().to_string();
    app.event(&again, "ringing", T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, r) = code_on(&mut app, &b, "t1").await;
    assert_eq!(code, 112, "{r}");

    app.use_switch(&a);
    for u in [&on_a, &again] {
        app.hang_up(u).await;
    }
    let (_, metrics) = a.http_get("/metrics").unwrap();
    for c in [110, 111, 112, 113] {
        assert!(
            metrics.contains(&format!(
                "botstream_api_requests_total{{request=\"request_make_call\",status_code=\"{c}\"}}"
            )),
            "{c}: {metrics}"
        );
    }
}
