//! Live call progress analysis: recorded answers (the labelled corpus) played by the app, echoed
//! back by the SIPp carrier, and analysed by the switch as the caller's audio.

use std::collections::HashMap;
use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

fn clip(name: &str) -> Option<Vec<i16>> {
    let path = repo_root().join("../shared/cpa-corpus").join(name);
    let bytes = std::fs::read(path).ok()?;
    Some(cpa::wav::read_wav_mono16(&bytes).expect("corpus wav").1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpa_decides_fax_person_and_machine_with_beep() {
    let cases = [
        ("fx_002.wav", "FX"),
        ("lv_010.wav", "LV"),
        ("am_005.wav", "AM"),
    ];
    let Some(clips) = cases
        .iter()
        .map(|(f, _)| clip(f))
        .collect::<Option<Vec<_>>>()
    else {
        eprintln!("shared/cpa-corpus not found: skipped");
        return;
    };
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut ws = WsServer::start().await;
    let mut app = App::connect(&nats, &sw).await;
    let r = app
        .request(
            "request_set_cpa_params",
            json!({"va_config_name": "dialer", "tenant_id": "t1", "analysis": "amd",
                   "tones": {"FX": "2100 20"}, "break_events": "FX,LV,BEEP", "log_voice": true}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let mut calls = Vec::new();
    for (i, _) in cases.iter().enumerate() {
        let carrier = Sipp::uas_with("uas_answer.xml", 1, &["-rtp_echo"], &[("REASON", "Q")]);
        let gw = format!("echo{i}");
        app.add_gateway(&gw, carrier.port, &[]).await;
        let uuid = app
            .make_call(
                &gw,
                json!({"cpa_config": "dialer", "channel_vars": {"sip_h_X-Campaign": "spring"}}),
            )
            .await;
        calls.push((uuid, carrier));
    }
    let mut by_uuid = HashMap::new();
    for (i, (uuid, _)) in calls.iter().enumerate() {
        app.event(uuid, "answered", T).await;
        let r = app
            .request("request_start_stream", json!({"call_uuid": uuid, "websocket_host": "127.0.0.1", "websocket_port": ws.port}))
            .await;
        assert_eq!(r["status_code"], 0, "{r}");
        by_uuid.insert(uuid.clone(), i);
    }
    let mut conns = Vec::new();
    for _ in 0..calls.len() {
        let conn = ws.accept(T).await;
        let i = by_uuid[conn.first["call_uuid"].as_str().unwrap()];
        conn.send_pcm(&clips[i]);
        conns.push(conn);
    }
    for (i, (uuid, _)) in calls.iter().enumerate() {
        let d = app.event(uuid, "cpa_detection", T).await;
        assert_eq!(d["result"], cases[i].1, "{}: {d}", cases[i].0);
        if cases[i].1 == "AM" {
            let beep = app.event(uuid, "cpa_detection", T).await;
            assert_eq!(beep["result"], "BEEP", "{beep}");
            let hz = beep["frequency_hz"].as_f64().unwrap();
            assert!(
                (hz - 800.0).abs() < 20.0,
                "the greeting's 800 Hz beep: {beep}"
            );
        }
        let done = app.event(uuid, "cpa_done", T).await;
        assert_eq!(done["reason"], "break_event", "{done}");
    }
    for (uuid, carrier) in calls {
        app.hang_up(&uuid).await;
        let _ = carrier.finish(T);
        // log_voice kept what was analysed, in the form `botstream analyze` reads.
        let log = sw.dir.join("data").join("cpa").join(format!("{uuid}.wav"));
        let bytes = std::fs::read(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let (rate, pcm) = cpa::wav::read_wav_mono16(&bytes).unwrap();
        assert_eq!(rate, 8000);
        assert!(pcm.len() > 8000, "{} samples", pcm.len());
    }
    drop(conns);
}
