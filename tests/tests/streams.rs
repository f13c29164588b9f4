//! The stream to the app, as a voice-AI developer relies on it (api.md §3.5): barge-in that says
//! what the caller heard, a socket that fails and is resumed without losing a frame, and the
//! Twilio Media Streams protocol. The caller is a SIPp party whose media is the test's own RTP
//! socket, so what the caller heard is measured where the caller is.

use std::time::Duration;

use e2e::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);
const WAIT: &str = "60000";

/// A call answered by a PCMU party at the test's socket, and the app that placed it.
async fn call() -> (Nats, Switch, App, RtpPeer, Sipp, String) {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let (rtp, party) = media_party("uas_media_at.xml", false, &[("HOLD", WAIT)]).await;
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("carrier", party.port, &[]).await;
    let uuid = app
        .make_call("carrier", json!({"call_params": {"lead": 42}}))
        .await;
    app.event(&uuid, "answered", T).await;
    (nats, sw, app, rtp, party, uuid)
}

async fn start_stream(app: &App, ws: &mut WsServer, data: Value) -> WsConn {
    let r = app.request("request_start_stream", data).await;
    assert_eq!(r["status_code"], 0, "{r}");
    ws.accept(T).await
}

/// The next text frame, skipping audio.
async fn next_text(conn: &mut WsConn) -> Value {
    let end = tokio::time::Instant::now() + T;
    loop {
        match tokio::time::timeout_at(end, conn.incoming.recv()).await {
            Ok(Some(WsIn::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
            Ok(Some(WsIn::Audio(_))) => continue,
            other => panic!("no text frame: {other:?}"),
        }
    }
}

/// ms of tone among the audio the caller received since `listen` started.
fn tone_ms(heard: &[i16]) -> u64 {
    heard
        .chunks(160)
        .filter(|f| f.len() == 160 && rms(f) > 1000.0)
        .count() as u64
        * 20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_says_how_much_the_caller_heard() {
    let (_nats, _sw, mut app, rtp, party, uuid) = call().await;
    let mut ws = WsServer::start().await;
    let port = ws.port;
    let mut conn = start_stream(
        &app,
        &mut ws,
        json!({"call_uuid": uuid, "websocket_host": "127.0.0.1", "websocket_port": port}),
    )
    .await;
    // 1 s of speech, a mark, 3 s more; the caller starts talking 2 s in and the bot stops.
    let from = std::time::Instant::now();
    conn.send_pcm(&tone(1000.0, 8000, 8000.0));
    conn.send_text(r#"{"event":"mark","name":"intro"}"#);
    conn.send_pcm(&tone(1000.0, 24000, 8000.0));
    let m = app.event(&uuid, "play_mark", T).await;
    assert_eq!(m["name"], "intro");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    conn.send_text(r#"{"event":"clear"}"#);
    let cleared = next_text(&mut conn).await;
    let cleared = if cleared["event"] == "mark" {
        next_text(&mut conn).await
    } else {
        cleared
    };
    assert_eq!(cleared["event"], "cleared", "{cleared}");
    assert_eq!(cleared["marks"], json!([]));
    let played = cleared["played_ms"].as_u64().unwrap();
    let dropped = cleared["dropped_ms"].as_u64().unwrap();
    assert_eq!(played + dropped, 3000, "{cleared}");
    // What reached the caller, measured at the caller: the mark's second plus what was played.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heard = tone_ms(&rtp.heard_since(from));
    assert!(
        heard.abs_diff(1000 + played) <= 40,
        "the caller heard {heard} ms of tone; the switch says 1000 + {played}"
    );
    // stop_play with nothing queued: nothing heard since the clear, nothing dropped.
    let r = app
        .request("request_stop_play", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(
        (r["played_ms"].as_u64(), r["dropped_ms"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    app.hang_up(&uuid).await;
    party.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_is_resumed_and_every_frame_arrives_once_in_order() {
    let (_nats, _sw, mut app, rtp, party, uuid) = call().await;
    rtp.count();
    let mut ws = WsServer::start().await;
    let port = ws.port;
    let mut conn = start_stream(
        &app,
        &mut ws,
        json!({"call_uuid": uuid, "websocket_host": "127.0.0.1", "websocket_port": port,
               "resume_secs": 5}),
    )
    .await;
    let frames =
        |audio: Vec<i16>| -> Vec<u32> { audio.chunks(160).filter_map(frame_number).collect() };
    let mut got = frames(conn.collect(Duration::from_millis(1500)).await);
    assert!(got.len() > 50, "{}", got.len());
    // The app crashes mid-sentence; its next process accepts the switch's reconnect.
    conn.kill();
    let mut conn = ws.accept(T).await;
    assert_eq!(conn.first["resumed"], true, "{}", conn.first);
    assert_eq!(conn.first["call_uuid"], uuid.as_str());
    let replay_from = conn.first["replay_from_ms"].as_u64().unwrap();
    let counted_ms = got.len() as u64 * 20;
    assert!(replay_from <= counted_ms, "{replay_from} > {counted_ms}");
    let r = app.event(&uuid, "stream_resumed", T).await;
    assert!(r["gap_ms"].as_u64().is_some(), "{r}");
    // The app skips what it already had (api.md §3.5) and must then have every frame once.
    let skip = ((counted_ms - replay_from) / 20) as usize;
    let after = frames(conn.collect(Duration::from_millis(1500)).await);
    assert!(after.len() > skip + 50, "{} {skip}", after.len());
    got.extend(&after[skip..]);
    for w in got.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a frame lost or repeated around {w:?}");
    }
    assert!(app
        .maybe_event(&uuid, "stream_stopped", Duration::from_millis(300))
        .await
        .is_none());
    app.hang_up(&uuid).await;
    party.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_app_gets_twilio_messages_and_is_heard() {
    let (_nats, _sw, mut app, rtp, party, uuid) = call().await;
    let mut ws = WsServer::start().await;
    let r = app
        .request(
            "request_start_stream",
            json!({"call_uuid": uuid, "websocket_host": "wss://127.0.0.1/media", "websocket_port": ws.port,
                   "protocol": "twilio", "sample_rate": 16000}),
        )
        .await;
    assert_eq!(r["status_code"], 135, "Twilio streams are 8 kHz: {r}");
    let port = ws.port;
    let mut conn = start_stream(
        &app,
        &mut ws,
        json!({"call_uuid": uuid, "websocket_host": "wss://127.0.0.1/media", "websocket_port": port,
               "protocol": "twilio", "metadata": {"bot": "b1", "n": 3}}),
    )
    .await;
    let sid = format!("MZ{}", uuid.replace('-', ""));
    assert_eq!(
        conn.first,
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    );
    let start = next_text(&mut conn).await;
    assert_eq!(start["event"], "start");
    assert_eq!(start["sequenceNumber"], "1");
    assert_eq!(start["streamSid"], sid.as_str());
    assert_eq!(start["start"]["callSid"], uuid.as_str());
    assert_eq!(start["start"]["accountSid"], "t1");
    assert_eq!(start["start"]["tracks"], json!(["inbound"]));
    assert_eq!(
        start["start"]["mediaFormat"],
        json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
    );
    assert_eq!(
        start["start"]["customParameters"],
        json!({"lead": "42", "bot": "b1", "n": "3"})
    );
    let s = app.event(&uuid, "stream_started", T).await;
    assert_eq!(s["protocol"], "twilio");
    let m1 = next_text(&mut conn).await;
    let m2 = next_text(&mut conn).await;
    assert_eq!(m1["event"], "media");
    assert_eq!(m1["sequenceNumber"], "2");
    assert_eq!(m1["media"]["track"], "inbound");
    assert_eq!(m1["media"]["chunk"], "1");
    assert_eq!(m1["media"]["timestamp"], "0");
    assert_eq!(m2["media"]["chunk"], "2");
    assert_eq!(m2["media"]["timestamp"], "20");

    // The caller presses a key: one dtmf message.
    rtp.press('4');
    let d = loop {
        let m = next_text(&mut conn).await;
        if m["event"] != "media" {
            break m;
        }
    };
    assert_eq!(d["event"], "dtmf", "{d}");
    assert_eq!(d["dtmf"], json!({"track": "inbound_track", "digit": "4"}));

    // The bot speaks (base64 μ-law), then a mark: the caller hears it, the mark comes back.
    let mut ulaw = Vec::new();
    media::g711::encode(media::g711::Law::Mu, &tone(1000.0, 8000, 8000.0), &mut ulaw);
    let payload = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&ulaw)
    };
    conn.send_text(
        &json!({"event": "media", "streamSid": sid, "media": {"payload": payload}}).to_string(),
    );
    conn.send_text(
        &json!({"event": "mark", "streamSid": sid, "mark": {"name": "greeting"}}).to_string(),
    );
    let heard = rtp.listen(Duration::from_millis(800)).await;
    assert!(hears(&heard, 1000.0) > 0.5, "the caller hears the bot");
    let mark = loop {
        let m = next_text(&mut conn).await;
        if m["event"] == "mark" {
            break m;
        }
    };
    assert_eq!(mark["mark"]["name"], "greeting");
    assert_eq!(mark["streamSid"], sid.as_str());
    app.event(&uuid, "play_mark", T).await;

    // Interrupted: clear flushes, and the mark queued behind comes back at once.
    conn.send_text(
        &json!({"event": "media", "streamSid": sid, "media": {"payload": payload}}).to_string(),
    );
    conn.send_text(
        &json!({"event": "mark", "streamSid": sid, "mark": {"name": "cut"}}).to_string(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.send_text(&json!({"event": "clear", "streamSid": sid}).to_string());
    let mark = loop {
        let m = next_text(&mut conn).await;
        if m["event"] == "mark" {
            break m;
        }
    };
    assert_eq!(mark["mark"]["name"], "cut");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rms(&rtp.listen(Duration::from_millis(400)).await) < 100.0,
        "flushed"
    );

    // Stopping the stream ends with Twilio's stop.
    let r = app
        .request("request_stop_stream", json!({"call_uuid": uuid}))
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let stop = loop {
        let m = next_text(&mut conn).await;
        if m["event"] != "media" {
            break m;
        }
    };
    assert_eq!(stop["event"], "stop");
    assert_eq!(stop["stop"]["callSid"], uuid.as_str());
    let _ = conn.out.send(Message::Close(None));
    app.hang_up(&uuid).await;
    party.finish(T).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_from_a_stranger_is_neither_heard_nor_answered() {
    let (_nats, sw, mut app, rtp, party, uuid) = call().await;
    let mut ws = WsServer::start().await;
    let port = ws.port;
    let mut conn = start_stream(
        &app,
        &mut ws,
        json!({"call_uuid": uuid, "websocket_host": "127.0.0.1", "websocket_port": port}),
    )
    .await;
    // The caller is quiet; a stranger on another address floods the call's RTP port with a
    // loud tone, hoping to be heard by the bot and to take the caller's audio for itself.
    let mut target = rtp.switch_addr();
    for _ in 0..100 {
        if target.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        target = rtp.switch_addr();
    }
    let target = target.expect("the switch sends to the caller");
    let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let flood = tokio::spawn(async move {
        let tone = tone(1000.0, 160, 16000.0);
        for i in 0..150u16 {
            let mut payload = Vec::new();
            media::g711::encode(media::g711::Law::Mu, &tone, &mut payload);
            let mut p = Vec::new();
            let h = media::rtp::RtpHeader {
                payload_type: 0,
                marker: false,
                seq: 40000 + i,
                timestamp: i as u32 * 160,
                ssrc: 0xbad,
            };
            media::rtp::write(&h, &payload, &mut p);
            let _ = stranger.send_to(&p, target).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let heard = conn.collect(Duration::from_millis(1200)).await;
    flood.await.unwrap();
    assert!(
        heard.len() > 5000,
        "the caller's audio still flows: {}",
        heard.len()
    );
    assert!(
        rms(&heard) < 100.0,
        "the bot never hears the stranger: rms {}",
        rms(&heard)
    );
    // The caller still gets the switch's audio: nothing was redirected.
    assert!(rtp.listen(Duration::from_millis(400)).await.len() > 2000);
    let (_, metrics) = sw.http_get("/metrics").unwrap();
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("botstream_rtp_foreign_dropped_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(dropped >= 100, "counted: {dropped}");
    app.hang_up(&uuid).await;
    party.finish(T).unwrap();
}
