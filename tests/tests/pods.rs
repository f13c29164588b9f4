//! Several pods behind one request subject (queue group `botstream`): a request for a call
//! reaches whichever pod NATS picks, and is answered by the pod that owns the call.

use std::collections::HashSet;
use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_requests_reach_the_owning_pod() {
    let nats = Nats::start();
    let subject = format!("botstream.api.shared{}", free_port());
    let a = Switch::start_pod(&nats, &subject);
    let _b = Switch::start_pod(&nats, &subject);
    let carrier = Sipp::uas("uas_ring_forever.xml", 12, &[]);
    let mut app = App::connect(&nats, &a).await;
    app.add_gateway("c", carrier.port, &[]).await;
    // A CPA configuration stored through one pod is there for calls on the other.
    let r = app
        .request(
            "request_set_cpa_params",
            json!({"va_config_name": "amd1", "tenant_id": "t1", "analysis": "amd"}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    // Both pods must have the gateway before calls spread over them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut uuids = Vec::new();
    let mut pods = HashSet::new();
    for _ in 0..8 {
        let r = app
            .request(
                "request_make_call",
                json!({"gateway": "c", "tenant_id": "t1", "to_number": "1", "from_number": "2",
                       "event_subject": app.event_subject, "cpa_config": "amd1"}),
            )
            .await;
        assert_eq!(r["status_code"], 0, "{r}");
        pods.insert(r["dialer_pod_id"].as_str().unwrap().to_string());
        uuids.push(r["call_uuid"].as_str().unwrap().to_string());
    }
    assert_eq!(
        pods.len(),
        2,
        "8 calls over a queue group of 2 pods all landed on one: {pods:?}"
    );
    for u in &uuids {
        app.event(u, "ringing", T).await;
    }
    let r = app
        .request("request_list_calls", json!({"tenant_id": "t1"}))
        .await;
    assert_eq!(r["calls"].as_array().unwrap().len(), 8, "{r}");
    for u in &uuids {
        let r = app
            .request("request_get_call", json!({"call_uuid": u}))
            .await;
        assert_eq!(r["status_code"], 0, "{r}");
        assert_eq!(r["call"]["state"], "ringing", "{r}");
        let r = app
            .request("request_drop_call", json!({"call_uuid": u}))
            .await;
        assert_eq!(r["status_code"], 0, "drop through any pod: {r}");
    }
    for u in &uuids {
        let h = app.event(u, "hangup", T).await;
        assert_eq!(h["disposition"], "send_cancel");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for u in &uuids {
        let r = app
            .request("request_drop_call", json!({"call_uuid": u}))
            .await;
        assert_eq!(r["status_code"], 108, "ended, whichever pod answers: {r}");
    }
}
