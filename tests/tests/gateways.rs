//! SIP gateways and logical gateways (api.md §3.11–§3.15): registration, selection, limits,
//! persistence and sharing between pods.

use std::collections::HashMap;
use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_digest_and_unregisters_on_delete() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let registrar = Sipp::uas(
        "uas_register.xml",
        1,
        &["-key", "authuser", "acct1", "-key", "authpass", "pw1"],
    );
    let app = App::connect(&nats, &sw).await;
    app.add_gateway(
        "reg",
        registrar.port,
        &[
            ("register", "true"),
            ("username", "acct1"),
            ("password", "pw1"),
            ("realm", "carrier.example"),
        ],
    )
    .await;
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = app
            .request("request_get_sip_gateway", json!({"name": "reg"}))
            .await;
        let g = &r["gateways"][0];
        assert_eq!(
            g["params"]["password"], "***",
            "passwords never leave the switch: {r}"
        );
        if g["state"] == "REGED" {
            break;
        }
        assert!(std::time::Instant::now() < end, "never REGED: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = app
        .request("request_delete_sip_gateway", json!({"name": "reg"}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    registrar
        .finish(T)
        .expect("REGISTER with 401 answered, then REGISTER Expires: 0");
    let r = app
        .request("request_get_sip_gateway", json!({"name": "reg"}))
        .await;
    assert_eq!(r["status_code"], 143, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_gateway_spreads_calls_by_weight() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let subst = [("CODE", "486"), ("PHRASE", "Busy Here"), ("Q850", "")];
    let light = Sipp::uas_with("uas_refuse.xml", 1000, &[], &subst);
    let heavy = Sipp::uas_with("uas_refuse.xml", 1000, &[], &subst);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("light", light.port, &[]).await;
    app.add_gateway("heavy", heavy.port, &[]).await;
    let r = app
        .request(
            "request_add_logical_gateway",
            json!({"name": "pool", "gateways": [
                {"name": "light", "weightage": 1}, {"name": "heavy", "weightage": 3},
                {"name": "never", "weightage": 0}]}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let mut uuids = Vec::new();
    for _ in 0..40 {
        uuids.push(app.make_call("pool", json!({})).await);
    }
    let mut used: HashMap<String, u32> = HashMap::new();
    for u in &uuids {
        let o = app.event(u, "originate", T).await;
        *used
            .entry(o["gateway"].as_str().unwrap().to_string())
            .or_default() += 1;
        app.event(u, "hangup", T).await;
    }
    let (l, h) = (
        used.get("light").copied().unwrap_or(0),
        used.get("heavy").copied().unwrap_or(0),
    );
    assert_eq!(l + h, 40, "{used:?}");
    assert!(l >= 1 && h > l, "weights 1:3 over 40 calls gave {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_limit_is_counted_across_pods() {
    let nats = Nats::start();
    let a = Switch::start(&nats, &[]);
    let b = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_ring_forever.xml", 10, &[]);
    let mut app = App::connect(&nats, &a).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let r = app
        .request(
            "request_add_logical_gateway",
            json!({"name": "capped", "gateways": [{"name": "c", "weightage": 1, "max_limit": 1}]}),
        )
        .await;
    assert_eq!(r["status_code"], 0);
    let first = app.make_call("capped", json!({})).await;
    app.event(&first, "ringing", T).await;
    let r = app
        .request("request_make_call", call_to("capped", &app))
        .await;
    assert_eq!(r["status_code"], 115, "same pod: {r}");
    // The other pod sees the gateway, the logical gateway and the call through the store.
    app.use_switch(&b);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = app
            .request("request_make_call", call_to("capped", &app))
            .await;
        if r["status_code"] == 115 {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "pod b never saw pod a's call: {r}"
        );
        if r["status_code"] == 0 {
            panic!("pod b placed a call over the limit: {r}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = app
        .request("request_get_logical_gateway", json!({"name": "capped"}))
        .await;
    assert_eq!(r["logical_gateways"][0]["gateways"][0]["calls"], 1, "{r}");
    app.use_switch(&a);
    app.hang_up(&first).await;
    let second = app.make_call("capped", json!({})).await;
    app.request("request_drop_call", json!({"call_uuid": second}))
        .await;
}

fn call_to(gw: &str, app: &App) -> serde_json::Value {
    json!({"gateway": gw, "tenant_id": "t1", "to_number": "1", "from_number": "2", "event_subject": app.event_subject})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_survive_a_restart() {
    let nats = Nats::start();
    let mut first = Switch::start(&nats, &[]);
    let app = App::connect(&nats, &first).await;
    app.add_gateway("keep", 5999, &[("password", "hunter2"), ("ping", "30")])
        .await;
    let r = app
        .request(
            "request_add_logical_gateway",
            json!({"name": "lg", "gateways": [{"name": "keep", "weightage": 5}]}),
        )
        .await;
    assert_eq!(r["status_code"], 0);
    // An update removes a param given as "".
    let r = app
        .request(
            "request_add_sip_gateway",
            json!({"name": "keep", "params": {"ping": ""}}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    first.proc.terminate();
    first
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("SIGTERM ends the switch");

    let second = Switch::start(&nats, &[]);
    let mut app = app;
    app.use_switch(&second);
    let r = app
        .request("request_get_sip_gateway", json!({"name": "*"}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let g = &r["gateways"][0];
    assert_eq!(g["name"], "keep");
    assert_eq!(g["params"]["proxy"], "127.0.0.1:5999");
    assert_eq!(g["params"]["password"], "***");
    assert!(g["params"].get("ping").is_none(), "{g}");
    let r = app
        .request("request_get_logical_gateway", json!({"name": ""}))
        .await;
    assert_eq!(r["logical_gateways"][0]["name"], "lg", "{r}");
    let r = app
        .request("request_delete_logical_gateway", json!({"name": "lg"}))
        .await;
    assert_eq!(r["status_code"], 0);
    let r = app
        .request("request_delete_logical_gateway", json!({"name": "lg"}))
        .await;
    assert_eq!(r["status_code"], 142);
}
