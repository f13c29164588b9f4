//! SRTP keyed by SDES (api.md §7 SRTP) against a real softphone: baresip with SRTP mandatory,
//! calling in and answering; SIPp for what must be refused.

use std::time::Duration;

use e2e::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

/// How much of `freq` the phone heard over its last `secs` seconds.
fn phone_hears(phone: &Baresip, freq: f64, secs: f64) -> f64 {
    let (rate, heard) = phone.heard();
    let n = (rate as f64 * secs) as usize;
    let tail = &heard[heard.len().saturating_sub(n)..];
    tone_ratio(tail, freq, rate.max(1) as f64)
}

/// The bot hears the phone's sine and the phone hears the bot's tone, over SRTP.
async fn audio_both_ways(app: &App, uuid: &str, phone: &Baresip) {
    let mut ws = WsServer::start().await;
    let mut conn = app.stream_to(uuid, &mut ws).await;
    let _ = conn.collect(Duration::from_millis(500)).await;
    let heard = conn.collect(Duration::from_millis(1000)).await;
    assert!(
        hears(&heard, 1000.0) > 0.5,
        "the bot hears the phone's 1 kHz sine: {}",
        hears(&heard, 1000.0)
    );
    conn.send_pcm(&tone(700.0, 16000, 8000.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = phone_hears(phone, 700.0, 1.0);
    assert!(r > 0.3, "the phone hears the bot's 700 Hz: {r}");
    assert!(
        phone.proc.log_text().contains("SRTP is Enabled"),
        "{}",
        phone.proc.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_with_srtp_mandatory_calls_in() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let phone = Baresip::start("mediaenc=srtp-mand;audio_codecs=PCMU", 1000);
    phone.dial(&format!("sip:100@127.0.0.1:{}", sw.sip_port));
    let a = app.next_event("answered", T).await;
    let uuid = a["call_uuid"].as_str().unwrap().to_string();
    audio_both_ways(&app, &uuid, &phone).await;
    let h = app.hang_up(&uuid).await;
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING");
    let (_, metrics) = sw.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("botstream_srtp_auth_failed_total 0"),
        "every packet authenticated"
    );
    assert!(
        !sw.proc.log_text().contains("inline:"),
        "keys never in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_gateway_calls_a_phone_with_srtp_mandatory() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let mut app = App::connect(&nats, &sw).await;
    let phone = Baresip::start("answermode=auto;mediaenc=srtp-mand;audio_codecs=PCMA", 1000);
    let r = app
        .request(
            "request_add_sip_gateway",
            json!({"name": "phone", "params": {"proxy": format!("127.0.0.1:{}", phone.sip_port)},
                   "variables": {"rtp_secure_media": "true"}}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    let uuid = app.make_call("phone", json!({"to_number": "phone"})).await;
    app.event(&uuid, "answered", T).await;
    audio_both_ways(&app, &uuid, &phone).await;
    app.hang_up(&uuid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_answer_to_a_secure_offer_ends_the_call() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let (_rtp, carrier) = media_party("uas_media_at.xml", false, &[("HOLD", "60000")]).await;
    let mut app = App::connect(&nats, &sw).await;
    app.add_gateway("carrier", carrier.port, &[]).await;
    let uuid = app
        .make_call(
            "carrier",
            json!({"channel_vars": {"rtp_secure_media": "true"}}),
        )
        .await;
    let events = app.events_until_hangup(&uuid, T).await;
    assert_eq!(
        names(&events),
        ["started", "ringing", "originate", "hangup"]
    );
    let h = &events[3]["event_data"];
    assert_eq!(h["hangup_cause"], "INCOMPATIBLE_DESTINATION");
    assert_eq!(h["disposition"], "send_bye");
    // SIPp logs the BYE a moment after the switch published the hangup.
    carrier.wait_traced(T, |m| !m.sent && m.is_request("BYE"));
    let msgs = carrier.messages();
    carrier.finish(T).expect("ACK, then our BYE");
    let invite = msgs.split("INVITE sip:").nth(1).expect("the INVITE");
    assert!(invite.contains("RTP/SAVP"), "{invite}");
    assert!(invite.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"));
    assert!(invite.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"));
    let bye = msgs.split("BYE sip:").nth(1).expect("a BYE");
    assert!(bye.contains("cause=88"), "{bye}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srtp_offer_the_switch_cannot_use_is_refused_488() {
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let target = format!("127.0.0.1:{}", sw.sip_port);
    for crypto in [
        "F8_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        "AES_CM_128_HMAC_SHA1_80 inline:tooshort",
        "AES_CM_128_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
    ] {
        let caller = Sipp::uac_with(
            "uac_srtp_refused.xml",
            &target,
            1,
            &["-s", "100"],
            &[("CRYPTO", crypto)],
        );
        caller.finish(T).unwrap_or_else(|e| panic!("{crypto}: {e}"));
    }
}

/// SDES keys travel in the SDP, so SRTP belongs with SIP over TLS: the same phone, calling in
/// over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_with_srtp_mandatory_calls_in_over_tls() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let dir = std::env::temp_dir().join(format!("bs-srtp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    let tls_port = free_port();
    let nats = Nats::start();
    let sw = Switch::start(
        &nats,
        &[
            "--sip-tls-listen",
            &format!("127.0.0.1:{tls_port}"),
            "--sip-tls-cert",
            cert_path.to_str().unwrap(),
            "--sip-tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let mut app = App::connect_to(&nats, &sw, "botstream.inbound").await;
    let phone = Baresip::start("mediaenc=srtp-mand;audio_codecs=PCMU", 1000);
    phone.dial(&format!("sip:100@127.0.0.1:{tls_port};transport=tls"));
    let a = app.next_event("answered", T).await;
    let uuid = a["call_uuid"].as_str().unwrap().to_string();
    audio_both_ways(&app, &uuid, &phone).await;
    let h = app.hang_up(&uuid).await;
    assert_eq!(h["hangup_cause"], "NORMAL_CLEARING");
    assert!(
        phone.proc.log_text().contains("tls"),
        "{}",
        phone.proc.log_text()
    );
}
