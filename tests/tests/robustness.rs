//! Bad input of every kind gets a clear error code or SIP response, never a crash or a wedged
//! switch; every request gets exactly one reply; SIGTERM drains.

use std::net::UdpSocket;
use std::time::Duration;

use e2e::*;
use futures::StreamExt;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

fn uuid_like() -> &'static str {
    "0a1b2c3d-0000-4000-8000-000000000001"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_of_the_contract() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let app = App::connect(&nats, &sw).await;
    let raw = |b: &str| b.as_bytes().to_vec();
    // (request bytes, expected status_code, expected request_name)
    let cases: Vec<(Vec<u8>, u64, &str)> = vec![
        (raw("{not json"), 134, "unknown"),
        (raw("[1,2]"), 134, "unknown"),
        (raw(""), 134, "unknown"),
        (raw(r#"{"event_data":{}}"#), 128, "unknown"),
        (
            raw(r#"{"event_name":"make_call","event_data":{}}"#),
            128,
            "make_call",
        ),
        (
            raw(r#"{"event_name":"request_make_call","event_data":[]}"#),
            128,
            "request_make_call",
        ),
        (
            raw(r#"{"event_name":"request_fly","event_data":{}}"#),
            139,
            "request_fly",
        ),
        (
            raw(
                r#"{"event_name":"request_make_call","event_data":{"gateway":"g","tenant_id":"t","from_number":"1","event_subject":"e"}}"#,
            ),
            130,
            "request_make_call",
        ),
        (
            raw(
                r#"{"event_name":"request_make_call","event_data":{"gateway":"g","tenant_id":"t","to_number":"1","from_number":"1","event_subject":"e","dial_timeout":2}}"#,
            ),
            135,
            "request_make_call",
        ),
        (
            raw(
                r#"{"event_name":"request_make_call","event_data":{"gateway":"g","tenant_id":"t","to_number":5,"from_number":"1","event_subject":"e"}}"#,
            ),
            135,
            "request_make_call",
        ),
        (
            raw(r#"{"event_name":"request_drop_call","event_data":{"call_uuid":"not-a-uuid"}}"#),
            135,
            "request_drop_call",
        ),
        (
            raw(&format!(
                r#"{{"event_name":"request_drop_call","event_data":{{"call_uuid":"{}"}}}}"#,
                uuid_like()
            )),
            107,
            "request_drop_call",
        ),
        (
            raw(&format!(
                r#"{{"event_name":"request_start_stream","event_data":{{"call_uuid":"{}","websocket_host":"ws://x","websocket_port":443}}}}"#,
                uuid_like()
            )),
            135,
            "request_start_stream",
        ),
        (
            raw(
                r#"{"event_name":"request_make_call","event_data":{"gateway":"nope","tenant_id":"t","to_number":"1","from_number":"1","event_subject":"e"}}"#,
            ),
            114,
            "request_make_call",
        ),
        (
            raw(
                r#"{"event_name":"request_make_call","event_data":{"gateway":"nope","tenant_id":"t","to_number":"1","from_number":"1","event_subject":"e","cpa_config":"none"}}"#,
            ),
            100,
            "request_make_call",
        ),
        (
            raw(
                r#"{"event_name":"request_add_sip_gateway","event_data":{"name":"bad","params":{"proxy":"host:notaport"}}}"#,
            ),
            141,
            "request_add_sip_gateway",
        ),
        (
            raw(r#"{"event_name":"request_delete_sip_gateway","event_data":{"name":"ghost"}}"#),
            142,
            "request_delete_sip_gateway",
        ),
        (
            raw(r#"{"event_name":"request_get_sip_gateway","event_data":{"name":"ghost"}}"#),
            143,
            "request_get_sip_gateway",
        ),
        (
            raw(
                r#"{"event_name":"request_set_cpa_params","event_data":{"va_config_name":"c","tenant_id":"t","analysis":"amd","sensitivity":9}}"#,
            ),
            135,
            "request_set_cpa_params",
        ),
        (
            raw(
                r#"{"event_name":"request_set_cpa_params","event_data":{"va_config_name":"c","tenant_id":"t","analysis":"amd"}}"#,
            ),
            0,
            "request_set_cpa_params",
        ),
    ];
    for (bytes, code, name) in cases {
        let text = String::from_utf8_lossy(&bytes).to_string();
        let r = app.raw(bytes).await;
        assert_eq!(r["status_code"], code, "{text} -> {r}");
        assert_eq!(r["request_name"], name, "{text} -> {r}");
        if code != 0 {
            assert!(
                r["status"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty() && s != "OK"),
                "{r}"
            );
        }
    }
    // The missing field is named.
    let r = app.raw(raw(r#"{"event_name":"request_make_call","event_data":{"gateway":"g","tenant_id":"t","from_number":"1","event_subject":"e"}}"#)).await;
    assert!(
        r["status"]
            .as_str()
            .is_some_and(|s| s.contains("to_number")),
        "{r}"
    );
    let r = app.raw(raw(r#"{"event_name":"request_make_call","event_data":{"gateway":"gw9","tenant_id":"t","to_number":"1","from_number":"1","event_subject":"e"}}"#)).await;
    assert!(
        r["status"].as_str().is_some_and(|s| s.contains("gw9")),
        "{r}"
    );
    let (_, metrics) = sw.http_get("/metrics").unwrap();
    assert!(
        metrics.contains(
            "botstream_api_requests_total{request=\"request_make_call\",status_code=\"114\"}"
        ),
        "{metrics}"
    );
    // Refused envelopes share one label, whatever name the client made up.
    assert!(
        metrics.contains("botstream_api_requests_total{request=\"invalid\",status_code=\"139\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("request_fly"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_exactly_one_reply() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let client = async_nats::connect(&nats.url).await.unwrap();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    let bodies = [
        "garbage",
        r#"{"event_name":"request_get_sip_gateway","event_data":{"name":"*"}}"#,
        r#"{"event_name":"request_list_calls","event_data":{}}"#,
        r#"{"event_name":"request_unknown","event_data":{}}"#,
    ];
    for b in bodies {
        client
            .publish_with_reply(sw.subject.clone(), inbox.clone(), b.into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let mut n = 0;
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(_)) = tokio::time::timeout_at(end, replies.next()).await {
        n += 1;
    }
    assert_eq!(n, bodies.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_quotas_and_port_exhaustion() {
    let nats = Nats::start();
    let cfg = config_file(
        "[tenants]\nenforce = true\n[[tenants.list]]\nid = \"t1\"\nmax_concurrent_calls = 1\n",
    );
    // Two RTP pairs only (base, base+2; RTCP on base+1, base+3).
    let base = 40000 + (std::process::id() % 500) as u16 * 8;
    let ports = format!("{base}-{}", base + 3);
    let sw = Switch::start(
        &nats,
        &["--config", cfg.to_str().unwrap(), "--rtp-ports", &ports],
    );
    let carrier = Sipp::uas("uas_ring_forever.xml", 5, &[]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let first = app.make_call("c", json!({})).await;
    app.event(&first, "ringing", T).await;
    let mut second = call("c", &app, "t1");
    let r = app.request("request_make_call", second.clone()).await;
    assert_eq!(r["status_code"], 112, "{r}");
    second["tenant_id"] = json!("stranger");
    let r = app.request("request_make_call", second).await;
    assert_eq!(r["status_code"], 111, "{r}");
    // Tenants apart, both RTP pairs taken: 131.
    let cfg2 = config_file(
        "[tenants]\nenforce = true\n[[tenants.list]]\nid = \"t1\"\nmax_concurrent_calls = 5\n",
    );
    drop(sw);
    let sw = Switch::start(
        &nats,
        &["--config", cfg2.to_str().unwrap(), "--rtp-ports", &ports],
    );
    app.use_switch(&sw);
    let a = app.make_call("c", json!({})).await;
    let a2 = app.make_call("c", json!({})).await;
    app.event(&a, "ringing", T).await;
    app.event(&a2, "ringing", T).await;
    let r = app
        .request("request_make_call", call("c", &app, "t1"))
        .await;
    assert_eq!(r["status_code"], 131, "{r}");
    for u in [&a, &a2] {
        app.hang_up(u).await;
    }
    // The pair is free again once the call is over.
    let b = app.make_call("c", json!({})).await;
    app.event(&b, "ringing", T).await;
    app.hang_up(&b).await;
}

fn call(gw: &str, app: &App, tenant: &str) -> Value {
    json!({"gateway": gw, "tenant_id": tenant, "to_number": "1", "from_number": "2", "event_subject": app.event_subject})
}

fn torture_messages() -> Vec<Vec<u8>> {
    let dir = repo_root().join("../shared/test-vectors/sip-torture");
    let mut out = Vec::new();
    for sub in ["rfc4475", "rfc5118"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            for e in rd.flatten() {
                out.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_sip_never_wedges_the_switch() {
    let nats = Nats::start();
    // Every datagram must be parsed to be counted: the rate limit (which drops a flood before
    // parsing it, tests/tests/flood.rs) is off here.
    let sw = Switch::start(&nats, &["--sip-rate-limit", "0"]);
    let target = format!("127.0.0.1:{}", sw.sip_port);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut junk: Vec<Vec<u8>> = torture_messages();
    junk.push(vec![0u8; 1500]);
    junk.push(vec![0xff; 65000]);
    junk.push(b"\r\n\r\n".to_vec());
    junk.push(b"INVITE sip:x SIP/2.0\r\nVia: garbage\r\n\r\n".to_vec());
    junk.push(b"SIP/2.0 999999 Huh\r\n\r\n".to_vec());
    let mut seed = 0x2545F4914F6CDD1Du64;
    for _ in 0..200 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 1400) as usize;
        junk.push((0..len).map(|i| (seed >> (i % 56)) as u8).collect());
    }
    for j in &junk {
        let _ = sock.send_to(j, &target);
        // Paced, so the kernel's receive buffer does not drop what we want counted.
        std::thread::sleep(Duration::from_millis(2));
    }
    // TCP: a stream that breaks framing is closed, nothing else.
    if let Ok(mut s) = std::net::TcpStream::connect(&target) {
        use std::io::Write;
        let _ = s.write_all(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -5\r\n\r\n");
        let _ = s.write_all(&[0u8; 70000]);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sw.http_get("/healthz").unwrap().0, 200);
    // Still answers OPTIONS and places calls.
    let carrier = Sipp::uas_with("uas_answer.xml", 1, &[], &[("REASON", r"Q\.850;cause=16")]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.answered_call("c").await;
    app.hang_up(&uuid).await;
    carrier.finish(T).unwrap();
    let (_, metrics) = sw.http_get("/metrics").unwrap();
    let malformed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("botstream_sip_malformed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(
        malformed > 100,
        "only {malformed} counted as malformed:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_ends_calls_with_system_shutdown() {
    let nats = Nats::start();
    let mut sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas_with(
        "uas_answer.xml",
        1,
        &[],
        &[("REASON", r"SIP;cause=501;text=.SYSTEM_SHUTDOWN.")],
    );
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.answered_call("c").await;
    sw.proc.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sw.http_get("/readyz").map(|r| r.0),
        Some(503),
        "not ready while draining"
    );
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["hangup_cause"], "SYSTEM_SHUTDOWN");
    let status = sw.proc.wait_exit(T).expect("exits after the drain");
    assert!(status.success(), "{status}");
    carrier.finish(T).expect("BYE with Reason SIP;cause=501");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stay_up_while_nats_goes_away() {
    let mut nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let other = Switch::start(&nats, &[]);
    let carrier = Sipp::uas_with("uas_answer.xml", 1, &[], &[("REASON", r"Q\.850;cause=16")]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("c", carrier.port, &[]).await;
    let uuid = app.answered_call("c").await;
    nats.restart(Duration::from_secs(2));
    // Both the app and the switch reconnect on their own; the call was never touched.
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    let r = loop {
        let body = serde_json::to_vec(
            &json!({"event_name": "request_get_call", "event_data": {"call_uuid": uuid}}),
        )
        .unwrap();
        match tokio::time::timeout(
            Duration::from_secs(2),
            app.nats.request(app.subject.clone(), body.into()),
        )
        .await
        {
            Ok(Ok(msg)) => {
                break serde_json::from_slice::<serde_json::Value>(&msg.payload).unwrap()
            }
            _ => {
                assert!(
                    tokio::time::Instant::now() < end,
                    "the switch never answered after NATS came back"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    assert_eq!(r["call"]["state"], "answered", "{r}");
    let r = app
        .request("request_drop_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    app.event(&uuid, "hangup", T).await;
    carrier
        .finish(T)
        .expect("the carrier's call lasted through the outage and ended with our BYE");
    // Gateways are still there (JetStream kept them), and a change made after the outage
    // reaches the other pod: its store watch came back too.
    let r = app
        .request("request_get_sip_gateway", json!({"name": "c"}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    app.add_gateway("after-outage", 5999, &[]).await;
    app.use_switch(&other);
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = app
            .request("request_get_sip_gateway", json!({"name": "after-outage"}))
            .await;
        if r["status_code"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the other pod never saw the new gateway: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
