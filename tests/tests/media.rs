//! The media path against real peers: a SIPp carrier echoing RTP, a TLS WebSocket app server,
//! SIPp's RFC 2833 captures.

use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

async fn echo_call(extra: serde_json::Value) -> (Nats, Switch, Sipp, App, String) {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas_with(
        "uas_answer.xml",
        1,
        &["-rtp_echo"],
        &[("REASON", r"Q\.850;cause=16")],
    );
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("echo", carrier.port, &[]).await;
    let mut data = json!({"channel_vars": {"sip_h_X-Campaign": "spring"}});
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    let uuid = app.make_call("echo", data).await;
    app.event(&uuid, "answered", T).await;
    (nats, sw, carrier, app, uuid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_audio_comes_back_through_the_carrier_echo_and_stop_play_stops_it() {
    let mut ws = WsServer::start().await;
    let (_nats, _sw, carrier, mut app, uuid) = echo_call(json!({"call_params": {"k": "v"}})).await;
    let r = app
        .request(
            "request_start_stream",
            json!({"call_uuid": uuid, "websocket_host": "127.0.0.1", "websocket_port": ws.port, "metadata": {"bot": "b1"}}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let mut conn = ws.accept(T).await;
    assert_eq!(conn.first["call_uuid"], uuid.as_str());
    assert_eq!(conn.first["sample_rate"], 8000);
    assert_eq!(conn.first["encoding"], "pcm_s16le");
    assert_eq!(conn.first["metadata"]["bot"], "b1");
    assert_eq!(conn.first["call_params"]["k"], "v");
    app.event(&uuid, "stream_started", T).await;
    let r = app
        .request(
            "request_start_stream",
            json!({"call_uuid": uuid, "websocket_host": "127.0.0.1", "websocket_port": ws.port}),
        )
        .await;
    assert_eq!(r["status_code"], 144, "{r}");

    // Before the app speaks, the echo brings back our silence.
    let quiet = conn.collect(Duration::from_millis(400)).await;
    assert!(
        quiet.len() >= 2000,
        "caller audio flows in 20 ms frames: {} samples",
        quiet.len()
    );
    assert!(rms(&quiet) < 100.0, "silence, rms {}", rms(&quiet));

    // A TTS burst: 5 s of 1 kHz in one frame, far faster than real time.
    conn.send_pcm(&tone(1000.0, 40000, 8000.0));
    conn.send_text(r#"{"event":"mark","name":"after-tone"}"#);
    let _ = conn.collect(Duration::from_millis(500)).await;
    let heard = conn.collect(Duration::from_millis(600)).await;
    assert!(
        tone_ratio(&heard, 1000.0, 8000.0) > 0.5 && rms(&heard) > 2000.0,
        "the tone came back: rms {}",
        rms(&heard)
    );

    let r = app
        .request("request_stop_play", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    assert_eq!(r["request_name"], "request_stop_play");
    // About 1.1 s of the 5 s tone was heard, the rest dropped (api.md §3.7).
    let (played, dropped) = (
        r["played_ms"].as_u64().unwrap(),
        r["dropped_ms"].as_u64().unwrap(),
    );
    assert!((900..=1500).contains(&played), "{r}");
    assert_eq!(played + dropped, 5000, "{r}");
    // The app hears the same on its socket, with the mark queued behind the flushed tone.
    let mut cleared = serde_json::Value::Null;
    let end = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(m)) = tokio::time::timeout_at(end, conn.incoming.recv()).await {
        if let WsIn::Text(t) = m {
            cleared = serde_json::from_str(&t).unwrap();
            break;
        }
    }
    assert_eq!(cleared["event"], "cleared", "{cleared}");
    assert_eq!(cleared["played_ms"], played);
    assert_eq!(cleared["marks"], json!(["after-tone"]));
    assert!(
        app.maybe_event(&uuid, "play_mark", Duration::from_millis(300))
            .await
            .is_none(),
        "a mark dropped unplayed was never reached"
    );
    let _ = conn.collect(Duration::from_millis(300)).await;
    let after = conn.collect(Duration::from_millis(500)).await;
    assert!(
        rms(&after) < 100.0,
        "stop_play silenced the tone: rms {}",
        rms(&after)
    );

    // The app drops its socket: the stream stops, the call stays.
    conn.out
        .send(tokio_tungstenite::tungstenite::Message::Close(None))
        .unwrap();
    let s = app.event(&uuid, "stream_stopped", T).await;
    assert_eq!(s["reason_code"], 0, "{s}");
    let r = app
        .request("request_get_call", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["call"]["state"], "answered", "{r}");
    let r = app
        .request("request_stop_stream", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 128, "no stream any more: {r}");

    app.hang_up(&uuid).await;
    let q = app.event(&uuid, "call_quality", T).await;
    assert!(
        q["mos"].as_str().unwrap().parse::<f64>().unwrap() > 4.0,
        "{q}"
    );
    assert!(q["packets_received"].as_u64().unwrap() > 50, "{q}");
    carrier.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_from_the_carrier_becomes_events() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect(&nats, &sw).await;
    let mut calls = Vec::new();
    for (file, digit) in [
        ("dtmf_2833_1.pcap", "1"),
        ("dtmf_2833_9.pcap", "9"),
        ("dtmf_2833_pound.pcap", "#"),
    ] {
        let pcap = format!("/usr/share/sip-tester/{file}");
        let carrier = Sipp::uas_with("uas_dtmf.xml", 1, &[], &[("PCAP", &pcap)]);
        let gw = format!("dtmf{digit}").replace('#', "pound");
        app.add_gateway(&gw, carrier.port, &[]).await;
        let uuid = app.make_call(&gw, json!({})).await;
        calls.push((uuid, digit, carrier));
    }
    for (uuid, digit, _) in &calls {
        let d = app.event(uuid, "dtmf", T).await;
        assert_eq!(d["digit"], *digit, "{d}");
        assert_eq!(d["source"], "rfc4733");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (uuid, _, carrier) in calls {
        assert!(
            app.maybe_event(&uuid, "dtmf", Duration::from_millis(10))
                .await
                .is_none(),
            "one event per key press"
        );
        app.hang_up(&uuid).await;
        carrier.finish(T).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_dtmf_loops_back_through_the_echo() {
    let (_nats, _sw, carrier, mut app, uuid) = echo_call(json!({})).await;
    let r = app
        .request(
            "request_send_dtmf",
            json!({"call_uuid": uuid, "digits": "4#", "duration_ms": 100}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let a = app.event(&uuid, "dtmf", T).await;
    let b = app.event(&uuid, "dtmf", T).await;
    assert_eq!(
        (a["digit"].as_str().unwrap(), b["digit"].as_str().unwrap()),
        ("4", "#")
    );
    app.hang_up(&uuid).await;
    carrier.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_has_the_caller_left_and_the_played_audio_right() {
    let mut ws = WsServer::start().await;
    let (_nats, sw, carrier, mut app, uuid) = echo_call(json!({"record": true})).await;
    let r = app
        .request("request_start_stream", json!({"call_uuid": uuid, "websocket_host": "wss://127.0.0.1", "websocket_port": ws.port}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let conn = ws.accept(T).await;
    conn.send_pcm(&tone(700.0, 8000, 8000.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.request("request_drop_call", json!({"call_uuid": uuid}))
        .await;
    let rec = app.event(&uuid, "record_stopped", T).await;
    app.event(&uuid, "hangup", T).await;
    carrier.finish(T).unwrap();
    let path = std::path::PathBuf::from(rec["path"].as_str().unwrap());
    assert!(path.starts_with(sw.dir.join("data")), "{path:?}");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 2, "stereo");
    let samples: Vec<i16> = bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    assert!(
        tone_ratio(&right, 700.0, 8000.0) > 0.3,
        "played audio on the right"
    );
    assert!(
        tone_ratio(&left, 700.0, 8000.0) > 0.3,
        "the caller (echo) on the left"
    );
    assert!(rec["duration_ms"].as_u64().unwrap() >= 1000, "{rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_media_ends_with_media_timeout() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &["--media-timeout", "2"]);
    // This carrier answers but never sends RTP.
    let carrier = Sipp::uas_with("uas_answer.xml", 1, &[], &[("REASON", r"SIP;cause=604")]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("mute", carrier.port, &[]).await;
    let uuid = app
        .make_call(
            "mute",
            json!({"channel_vars": {"sip_h_X-Campaign": "spring"}}),
        )
        .await;
    let h = app.event(&uuid, "hangup", T).await;
    assert_eq!(h["hangup_cause"], "MEDIA_TIMEOUT");
    assert_eq!(h["cause_class"], "TIMEOUT");
    carrier.finish(T).expect("BYE with Reason SIP;cause=604");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_khz_streams_both_ways() {
    let mut ws = WsServer::start().await;
    let (_nats, _sw, carrier, mut app, uuid) = echo_call(json!({})).await;
    let r = app
        .request(
            "request_start_stream",
            json!({"call_uuid": uuid, "websocket_host": "127.0.0.1", "websocket_port": ws.port, "sample_rate": 16000}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let mut conn = ws.accept(T).await;
    assert_eq!(conn.first["sample_rate"], 16000);
    // 2 s of 1 kHz at 16 kHz: resampled to 8 kHz for the caller, back up to 16 kHz for us.
    let tone16: Vec<i16> = (0..32000)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 16000.0).sin()) as i16)
        .collect();
    conn.send_pcm(&tone16);
    let _ = conn.collect(Duration::from_millis(500)).await;
    let heard = conn.collect(Duration::from_millis(600)).await;
    assert!(
        heard.len() > 8000,
        "16 kHz frames: {} samples in 600 ms",
        heard.len()
    );
    assert!(
        tone_ratio(&heard, 1000.0, 16000.0) > 0.5 && rms(&heard) > 2000.0,
        "rms {}",
        rms(&heard)
    );
    app.hang_up(&uuid).await;
    carrier.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_sixty_seconds_keeps_the_newest_and_says_so() {
    let mut ws = WsServer::start().await;
    let (_nats, _sw, carrier, mut app, uuid) = echo_call(json!({})).await;
    let conn = app.stream_to(&uuid, &mut ws).await;
    // 70 s of audio at once, in 1 s frames.
    for _ in 0..70 {
        conn.send_pcm(&tone(500.0, 8000, 3000.0));
    }
    let e = app.event(&uuid, "error", T).await;
    assert!(e["status"].as_str().unwrap().contains("dropped"), "{e}");
    // The call is fine and the queue is bounded: stop_play empties it at once.
    let r = app
        .request("request_stop_play", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    app.hang_up(&uuid).await;
    carrier.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_by_sip_info_becomes_an_event() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_info_dtmf.xml", 1, &[]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("info", carrier.port, &[]).await;
    let uuid = app.make_call("info", json!({})).await;
    let d = app.event(&uuid, "dtmf", T).await;
    assert_eq!(d["digit"], "7", "{d}");
    assert_eq!(d["source"], "info");
    app.hang_up(&uuid).await;
    carrier.finish(T).expect("INFO answered 200, then our BYE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_telephone_event_key_presses_are_heard_in_band() {
    let mut ws = WsServer::start().await;
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let carrier = Sipp::uas("uas_answer_no_te.xml", 1, &["-rtp_echo"]);
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("plain", carrier.port, &[]).await;
    let uuid = app.make_call("plain", json!({})).await;
    app.event(&uuid, "answered", T).await;
    let r = app
        .request(
            "request_send_dtmf",
            json!({"call_uuid": uuid, "digits": "5"}),
        )
        .await;
    assert_eq!(
        r["status_code"], 128,
        "no telephone-event to send with: {r}"
    );
    let conn = app.stream_to(&uuid, &mut ws).await;
    // The app plays the tones of 5 and 9 (120 ms each, 150 ms apart); the carrier's echo brings
    // them back as the caller's audio.
    let dual = |lo: f64, hi: f64| -> Vec<i16> {
        let a = tone(lo, 960, 6000.0);
        let b = tone(hi, 960, 6000.0);
        a.iter().zip(&b).map(|(x, y)| x + y).collect()
    };
    let mut audio = vec![0i16; 1200];
    audio.extend(dual(770.0, 1336.0));
    audio.extend(vec![0i16; 1200]);
    audio.extend(dual(852.0, 1477.0));
    audio.extend(vec![0i16; 1200]);
    conn.send_pcm(&audio);
    let a = app.event(&uuid, "dtmf", T).await;
    let b = app.event(&uuid, "dtmf", T).await;
    assert_eq!(
        (a["digit"].as_str().unwrap(), b["digit"].as_str().unwrap()),
        ("5", "9")
    );
    assert_eq!(a["source"], "inband");
    app.hang_up(&uuid).await;
    carrier.finish(T).unwrap();
}
