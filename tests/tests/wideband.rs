//! G.722 and Opus end to end (api.md §7 Codecs) against a real softphone: a 5 kHz sine cannot cross
//! G.711's 4 kHz band, so hearing it at a 16 kHz stream proves the caller's wideband audio
//! reached the app unresampled, and a 6 kHz tone the app plays proves the way back.

use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn tone16(freq: f64, n: usize, amplitude: f64) -> Vec<i16> {
    (0..n)
        .map(|i| {
            (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / 16000.0).sin()) as i16
        })
        .collect()
}

async fn wideband_both_ways(app: &App, uuid: &str, phone: &Baresip) {
    let mut ws = WsServer::start().await;
    let r = app
        .request(
            "request_start_stream",
            json!({"call_uuid": uuid, "websocket_host": "127.0.0.1",
                   "websocket_port": ws.port, "sample_rate": 16000}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let mut conn = ws.accept(T).await;
    let _ = conn.collect(Duration::from_millis(500)).await;
    let heard = conn.collect(Duration::from_millis(1000)).await;
    let r = tone_ratio(&heard, 5000.0, 16000.0);
    assert!(r > 0.5, "the bot hears the phone's 5 kHz sine: {r}");

    conn.send_pcm(&tone16(6000.0, 32000, 8000.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (rate, got) = phone.heard();
    assert!(rate >= 16000, "the phone decodes wideband: {rate} Hz");
    let tail = &got[got.len().saturating_sub(rate as usize)..];
    let r = tone_ratio(tail, 6000.0, rate as f64);
    assert!(r > 0.3, "the phone hears the bot's 6 kHz: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g722_phone_calls_in_and_the_app_hears_its_full_band() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let phone = Baresip::start("audio_codecs=G722/16000/1", 5000);
    phone.dial(&format!("sip:100@127.0.0.1:{}", sw.sip_port));
    let a = app.next_event("answered", T).await;
    let uuid = a["call_uuid"].as_str().unwrap().to_string();
    wideband_both_ways(&app, &uuid, &phone).await;
    assert!(
        phone.proc.log_text().contains("G722"),
        "{}",
        phone.proc.log_text()
    );
    let h = app.hang_up(&uuid).await;
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_codec_string_offers_g722_to_a_gateway() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect(&nats, &sw).await;
    let phone = Baresip::start("answermode=auto;audio_codecs=G722/16000/1", 5000);
    let r = app
        .request(
            "request_add_sip_gateway",
            json!({"name": "phone", "params": {"proxy": format!("127.0.0.1:{}", phone.sip_port)},
                   "variables": {"absolute_codec_string": "G722,PCMU,PCMA"}}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let uuid = app.make_call("phone", json!({"to_number": "phone"})).await;
    app.event(&uuid, "answered", T).await;
    wideband_both_ways(&app, &uuid, &phone).await;
    app.hang_up(&uuid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_codecs_decides_what_an_inbound_offer_is_answered_with() {
    let nats = Nats::start();
    // G.711 first: a phone that offers G.722 too is answered with PCMU, and the 16 kHz stream
    // carries narrowband audio (nothing of the 5 kHz sine survives).
    let sw = Switch::start(&nats, &["--media-codecs", "PCMU,PCMA,G722"]);
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let phone = Baresip::start("audio_codecs=G722/16000/1,PCMU", 5000);
    phone.dial(&format!("sip:100@127.0.0.1:{}", sw.sip_port));
    let a = app.next_event("answered", T).await;
    let uuid = a["call_uuid"].as_str().unwrap().to_string();
    let mut ws = WsServer::start().await;
    let r = app
        .request(
            "request_start_stream",
            json!({"call_uuid": uuid, "websocket_host": "127.0.0.1",
                   "websocket_port": ws.port, "sample_rate": 16000}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let mut conn = ws.accept(T).await;
    let _ = conn.collect(Duration::from_millis(500)).await;
    let heard = conn.collect(Duration::from_millis(1000)).await;
    assert!(heard.len() > 12000, "16 kHz frames: {}", heard.len());
    let r = tone_ratio(&heard, 5000.0, 16000.0);
    assert!(r < 0.1, "a narrowband call carries no 5 kHz: {r}");
    app.hang_up(&uuid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_phone_calls_in_and_the_app_hears_its_full_band() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    // baresip's Opus is stereo by default: the switch downmixes what it sends.
    let phone = Baresip::start("audio_codecs=opus/48000/2", 5000);
    phone.dial(&format!("sip:100@127.0.0.1:{}", sw.sip_port));
    let a = app.next_event("answered", T).await;
    let uuid = a["call_uuid"].as_str().unwrap().to_string();
    wideband_both_ways(&app, &uuid, &phone).await;
    let log = phone.proc.log_text();
    assert!(log.contains("Set audio encoder: opus"), "{log}");
    let h = app.hang_up(&uuid).await;
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_codec_string_offers_opus_to_a_gateway() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect(&nats, &sw).await;
    let phone = Baresip::start("answermode=auto;audio_codecs=opus/48000/2", 5000);
    let r = app
        .request(
            "request_add_sip_gateway",
            json!({"name": "phone", "params": {"proxy": format!("127.0.0.1:{}", phone.sip_port)},
                   "variables": {"absolute_codec_string": "OPUS,PCMU"}}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let uuid = app.make_call("phone", json!({"to_number": "phone"})).await;
    app.event(&uuid, "answered", T).await;
    wideband_both_ways(&app, &uuid, &phone).await;
    assert!(phone.proc.log_text().contains("Set audio decoder: opus"));
    app.hang_up(&uuid).await;
}

/// A G.722 phone bridged to a PCMA agent (an RTP socket behind SIPp): each hears the other
/// through the 8 kHz bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wideband_caller_bridged_to_a_narrowband_agent() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let (agent, agents) = media_party("uas_media_at.xml", true, &[("HOLD", "60000")]).await;
    app.add_gateway("agents", agents.port, &[]).await;
    let phone = Baresip::start("audio_codecs=G722/16000/1", 1000);
    phone.dial(&format!("sip:100@127.0.0.1:{}", sw.sip_port));
    let a = app.next_event("answered", T).await;
    let uuid = a["call_uuid"].as_str().unwrap().to_string();
    agent.tone(700.0);
    let r = app
        .request(
            "request_bridge_call",
            json!({"call_uuid": uuid, "gateway": "agents", "to_number": "2001",
                   "from_number": "15559998888", "stop_stream": false}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let b = r["bridge_call_uuid"].as_str().unwrap().to_string();
    app.event(&b, "answered", T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heard = agent.listen(Duration::from_secs(1)).await;
    assert!(
        hears(&heard, 1000.0) > 0.5,
        "the agent hears the phone: {}",
        hears(&heard, 1000.0)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rate, got) = phone.heard();
    let tail = &got[got.len().saturating_sub(rate as usize)..];
    let r = tone_ratio(tail, 700.0, rate.max(1) as f64);
    assert!(r > 0.3, "the phone hears the agent: {r}");
    let h = app.hang_up(&uuid).await;
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING");
    let h = app.event(&b, "hangup", T).await;
    assert_eq!(h["outcome"], "Answered");
    agents.finish(T).expect("the agent got our BYE");
}
