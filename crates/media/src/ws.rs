//! The WebSocket stream to the app (api.md §3.5): wss only, caller audio out as binary PCM
//! frames, the app's audio, `clear` and `mark` back. The session task never blocks the media
//! task: outgoing frames go through a bounded queue that sheds when the app is slow, and the
//! app's audio reaches the playout queue through a bounded channel, so a fast app is slowed by
//! TCP backpressure instead of growing memory.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// What the app sent, for the media task.
#[derive(Debug)]
pub enum FromApp {
    /// s16le PCM at the stream's sample rate, any length.
    Audio(Vec<u8>),
    Clear,
    Mark(String),
    /// The stream is over; `code` 0 when the app closed it normally.
    Closed {
        reason: String,
        code: u16,
    },
}

/// What the media task sends to the app.
#[derive(Debug)]
pub enum ToApp {
    /// A caller frame and when its RTP packet arrived (for the forwarding latency).
    Audio(Vec<u8>, std::time::Instant),
    Text(String),
    /// Close with a normal close frame (stop_stream, hangup).
    Close,
}

/// The handle the media task keeps for a live stream.
pub struct StreamHandle {
    pub to_app: mpsc::Sender<ToApp>,
    pub from_app: mpsc::Receiver<FromApp>,
    pub sample_rate: u32,
}

/// How much caller audio may wait for a slow app before frames are shed (10 s of 20 ms frames).
const OUT_QUEUE: usize = 500;
/// App messages waiting for the media task; beyond this the app's socket is not read.
const IN_QUEUE: usize = 64;

/// Accepts any server certificate: the original switch accepted self-signed app certificates,
/// and apps rely on it (api.md §3.5). `ws.tls_verify = true` turns real verification on.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client configuration for every stream, built once at start-up.
pub fn tls_config(
    verify: bool,
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("ws.ca_file {}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("ws.ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ws.ca_file {}: {e}", path.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Opens the stream: TLS and WebSocket handshakes within `timeout`, then the first text frame.
/// The session runs in its own task until either side closes.
pub async fn open(
    url: &str,
    tls: Arc<ClientConfig>,
    first_frame: String,
    sample_rate: u32,
    timeout: Duration,
    counters: Arc<crate::leg::MediaCounters>,
) -> Result<StreamHandle, String> {
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url,
        Some(ws_config()),
        true,
        Some(connector),
    );
    let (ws, _) = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| format!("WebSocket handshake with {url} took longer than {timeout:?}"))?
        .map_err(|e| format!("WebSocket connection to {url} failed: {e}"))?;
    let (mut sink, mut source) = ws.split();
    sink.send(Message::Text(first_frame.into()))
        .await
        .map_err(|e| format!("WebSocket {url}: {e}"))?;
    let (to_app, mut outgoing) = mpsc::channel::<ToApp>(OUT_QUEUE);
    let (incoming, from_app) = mpsc::channel::<FromApp>(IN_QUEUE);
    tokio::spawn(async move {
        let closed = loop {
            tokio::select! {
                out = outgoing.recv() => match out {
                    Some(ToApp::Audio(b, arrived)) => {
                        // Whatever else is already queued goes in the same flush: one TLS write
                        // instead of one per frame when the app or the machine falls behind.
                        let mut stamps = vec![arrived];
                        let mut failed = sink.feed(Message::Binary(b.into())).await.err();
                        let mut deferred = None;
                        while failed.is_none() && stamps.len() < 32 {
                            match outgoing.try_recv() {
                                Ok(ToApp::Audio(b, at)) => {
                                    stamps.push(at);
                                    failed = sink.feed(Message::Binary(b.into())).await.err();
                                }
                                Ok(other) => {
                                    deferred = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        if failed.is_none() {
                            failed = sink.flush().await.err();
                        }
                        if let Some(e) = failed {
                            break FromApp::Closed { reason: format!("socket error: {e}"), code: 1006 };
                        }
                        for at in stamps {
                            counters.forward_latency.record(at.elapsed());
                        }
                        match deferred {
                            Some(ToApp::Text(t)) => {
                                if let Err(e) = sink.send(Message::Text(t.into())).await {
                                    break FromApp::Closed { reason: format!("socket error: {e}"), code: 1006 };
                                }
                            }
                            Some(ToApp::Close) => {
                                let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
                                let _ = sink.close().await;
                                return;
                            }
                            _ => {}
                        }
                    }
                    Some(ToApp::Text(t)) => {
                        if let Err(e) = sink.send(Message::Text(t.into())).await {
                            break FromApp::Closed { reason: format!("socket error: {e}"), code: 1006 };
                        }
                    }
                    Some(ToApp::Close) | None => {
                        let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
                        let _ = sink.close().await;
                        return;
                    }
                },
                msg = source.next() => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        if incoming.send(FromApp::Audio(b.to_vec())).await.is_err() { return; }
                    }
                    Some(Ok(Message::Text(t))) => {
                        if let Some(m) = parse_control(&t) {
                            if incoming.send(m).await.is_err() { return; }
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let normal = frame.as_ref().is_none_or(|f| matches!(f.code, CloseCode::Normal | CloseCode::Away));
                        let code = if normal { 0 } else { frame.map(|f| u16::from(f.code)).unwrap_or(1006) };
                        break FromApp::Closed { reason: "closed by the app".into(), code };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break FromApp::Closed { reason: format!("socket error: {e}"), code: 1006 },
                    None => break FromApp::Closed { reason: "socket closed".into(), code: 1006 },
                },
            }
        };
        let _ = incoming.send(closed).await;
    });
    Ok(StreamHandle {
        to_app,
        from_app,
        sample_rate,
    })
}

/// Buffers sized for thousands of streams: tungstenite's defaults (128 KiB read and write
/// buffers, 64 MiB messages) cost ~240 KiB per call and let one app make us hold 64 MiB. Frames
/// are 320-640 bytes and each is sent at once, so small buffers lose nothing; a TTS burst of up
/// to two minutes at 16 kHz still fits one message.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(4 * 1024 * 1024))
        .max_frame_size(Some(4 * 1024 * 1024))
}

/// `{"event":"clear"}` and `{"event":"mark","name":"..."}`; anything else is ignored.
fn parse_control(text: &str) -> Option<FromApp> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    match v.get("event")?.as_str()? {
        "clear" => Some(FromApp::Clear),
        "mark" => Some(FromApp::Mark(
            v.get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_string(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames() {
        assert!(matches!(
            parse_control(r#"{"event":"clear"}"#),
            Some(FromApp::Clear)
        ));
        assert!(
            matches!(parse_control(r#"{"event":"mark","name":"m1"}"#), Some(FromApp::Mark(n)) if n == "m1")
        );
        assert!(parse_control("nope").is_none());
        assert!(parse_control(r#"{"event":"dance"}"#).is_none());
    }

    #[test]
    fn both_tls_modes_build() {
        assert!(tls_config(false, None).is_ok());
        assert!(tls_config(true, None).is_ok());
        assert!(tls_config(true, Some(std::path::Path::new("/nonexistent.pem"))).is_err());
    }
}
