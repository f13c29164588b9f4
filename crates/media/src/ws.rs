//! The WebSocket stream to the app (api.md §3.5): wss only, caller audio out as binary PCM
//! frames, the app's audio, `clear` and `mark` back.
//!
//! The call's media task drives the socket itself through [`Session::poll_io`]: a frame is
//! written in the same wake-up that received its RTP packet. A task of its own per stream cost
//! two channel hops and two task wake-ups per 20 ms frame (the largest user-space cost in the
//! `make bench` profile). Nothing here blocks the media task: frames wait in a bounded queue
//! that sheds when the app stops reading, and the app's messages are read only as fast as the
//! media task takes them, so a fast app is slowed by TCP backpressure instead of growing memory.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{Sink, SinkExt, Stream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::leg::MediaCounters;

/// What the app sent, for the media task.
#[derive(Debug)]
pub enum FromApp {
    /// s16le PCM at the stream's sample rate, any length.
    Audio(Vec<u8>),
    Clear,
    Mark(String),
    /// A text frame, read by the stream's protocol ([`crate::stream::AppStream::from_app_text`]).
    Text(String),
    /// The stream is over; `code` 0 when the app closed it normally.
    Closed {
        reason: String,
        code: u16,
    },
}

/// A message waiting for the socket; caller audio carries when its RTP packet arrived (for the
/// forwarding latency).
struct Outgoing {
    msg: Message,
    arrived: Option<Instant>,
}

/// How much caller audio may wait for a slow app before frames are shed (10 s of 20 ms frames).
const OUT_QUEUE: usize = 500;
/// App messages taken per wake-up, so an app flooding us cannot starve the 20 ms clock.
const READS_PER_POLL: usize = 16;
/// How long a closing handshake may take once the stream is stopped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A live stream, owned and polled by the call's media task.
pub struct Session {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    out: VecDeque<Outgoing>,
    /// Arrival times of frames handed to the socket but not yet flushed.
    unflushed: Vec<Instant>,
    needs_flush: bool,
    counters: Arc<MediaCounters>,
}

impl Session {
    /// Queues a message of the stream's protocol; it is written on the media task's next poll.
    /// Caller audio (`arrived` given) is shed and counted when the app has not read 10 s of it;
    /// anything else (marks, DTMF, the opening frames) never is.
    pub fn send(&mut self, m: crate::stream::Outgoing, arrived: Option<Instant>) {
        if arrived.is_some() && self.out.len() >= OUT_QUEUE {
            self.counters
                .ws_frames_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let msg = match m {
            crate::stream::Outgoing::Binary(b) => Message::Binary(b.into()),
            crate::stream::Outgoing::Text(t) => Message::Text(t.into()),
        };
        self.out.push_back(Outgoing { msg, arrived });
    }

    /// Writes what is queued, then reads. Ready only with something from the app, or with
    /// [`FromApp::Closed`] once the socket is gone (after which it must not be polled again).
    pub fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<FromApp> {
        let closed = |e: tokio_tungstenite::tungstenite::Error| FromApp::Closed {
            reason: format!("socket error: {e}"),
            code: 1006,
        };
        while !self.out.is_empty() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(closed(e)),
                Poll::Pending => break,
            }
            let Some(Outgoing { msg, arrived }) = self.out.pop_front() else {
                break;
            };
            if let Some(at) = arrived {
                self.unflushed.push(at);
            }
            if let Err(e) = Pin::new(&mut self.ws).start_send(msg) {
                return Poll::Ready(closed(e));
            }
            self.needs_flush = true;
        }
        if self.needs_flush {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.needs_flush = false;
                    for at in self.unflushed.drain(..) {
                        self.counters.forward_latency.record(at.elapsed());
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(closed(e)),
                Poll::Pending => {}
            }
        }
        for _ in 0..READS_PER_POLL {
            let msg = match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(m) => m,
            };
            match msg {
                Some(Ok(Message::Binary(b))) => return Poll::Ready(FromApp::Audio(b.to_vec())),
                Some(Ok(Message::Text(t))) => return Poll::Ready(FromApp::Text(t.to_string())),
                Some(Ok(Message::Close(frame))) => {
                    let normal = frame
                        .as_ref()
                        .is_none_or(|f| matches!(f.code, CloseCode::Normal | CloseCode::Away));
                    let code = if normal {
                        0
                    } else {
                        frame.map(|f| u16::from(f.code)).unwrap_or(1006)
                    };
                    return Poll::Ready(FromApp::Closed {
                        reason: "closed by the app".into(),
                        code,
                    });
                }
                // Pings are answered by tungstenite on the next write or flush.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(closed(e)),
                None => {
                    return Poll::Ready(FromApp::Closed {
                        reason: "socket closed".into(),
                        code: 1006,
                    })
                }
            }
        }
        // Budget spent with more to read: come back after the other work of this turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Sends what is still queued and a normal close frame, in the background: the media task
    /// does not wait for a slow app, and the socket is dropped after [`CLOSE_WAIT`] at most.
    pub fn close(self) {
        let Session { mut ws, out, .. } = self;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CLOSE_WAIT, async move {
                for Outgoing { msg, .. } in out {
                    if ws.feed(msg).await.is_err() {
                        return;
                    }
                }
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    }))
                    .await;
            })
            .await;
        });
    }
}

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

/// Opens the stream: TLS and WebSocket handshakes within `timeout`, then the opening text frames
/// of its protocol.
pub async fn open(
    url: &str,
    tls: Arc<ClientConfig>,
    first_frames: Vec<String>,
    timeout: Duration,
    counters: Arc<MediaCounters>,
) -> Result<Session, String> {
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url,
        Some(ws_config()),
        true,
        Some(connector),
    );
    let (mut ws, _) = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| format!("WebSocket handshake with {url} took longer than {timeout:?}"))?
        .map_err(|e| format!("WebSocket connection to {url} failed: {e}"))?;
    for frame in first_frames {
        ws.feed(Message::Text(frame.into()))
            .await
            .map_err(|e| format!("WebSocket {url}: {e}"))?;
    }
    ws.flush()
        .await
        .map_err(|e| format!("WebSocket {url}: {e}"))?;
    Ok(Session {
        ws,
        out: VecDeque::new(),
        unflushed: Vec::new(),
        needs_flush: false,
        counters,
    })
}

/// Buffers sized for thousands of streams: tungstenite's defaults (128 KiB read and write
/// buffers, 64 MiB messages) cost ~240 KiB per call and let one app make us hold 64 MiB. Frames
/// are 320-640 bytes and each is sent at once, so small buffers lose nothing; a TTS burst of up
/// to two minutes at 16 kHz still fits one message. The read chunk is small because tungstenite
/// zero-fills it before every read (a memset per frame) and it stays resident; reads come from
/// rustls's plaintext, so a smaller chunk costs copies, not syscalls.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(4 * 1024 * 1024))
        .max_frame_size(Some(4 * 1024 * 1024))
}

/// `{"event":"clear"}` and `{"event":"mark","name":"..."}`; anything else is ignored. A mark
/// name longer than [`crate::playout::MAX_MARK_NAME`] bytes is cut to it.
pub fn parse_control(text: &str) -> Option<FromApp> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    match v.get("event")?.as_str()? {
        "clear" => Some(FromApp::Clear),
        "mark" => Some(FromApp::Mark(bounded(
            v.get("name").and_then(|n| n.as_str()).unwrap_or(""),
        ))),
        _ => None,
    }
}

/// A mark name from the app, cut to [`crate::playout::MAX_MARK_NAME`] bytes.
pub fn bounded(name: &str) -> String {
    let mut end = name.len().min(crate::playout::MAX_MARK_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
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
        // Other fields and types are ignored as before; a 4 MiB name is cut.
        assert!(matches!(
            parse_control(r#"{"event":"clear","x":[1,{"y":null}]}"#),
            Some(FromApp::Clear)
        ));
        assert!(
            matches!(parse_control(r#"{"event":"mark"}"#), Some(FromApp::Mark(n)) if n.is_empty())
        );
        let huge = format!(r#"{{"event":"mark","name":"{}"}}"#, "x".repeat(4 << 20));
        assert!(
            matches!(parse_control(&huge), Some(FromApp::Mark(n)) if n.len() == crate::playout::MAX_MARK_NAME)
        );
        assert!(
            matches!(parse_control(r#"{"event":"mark","name":"caf\u00e9"}"#), Some(FromApp::Mark(n)) if n == "café")
        );
        assert!(parse_control(r#"{"event":"dance"}"#).is_none());
    }

    #[test]
    fn both_tls_modes_build() {
        assert!(tls_config(false, None).is_ok());
        assert!(tls_config(true, None).is_ok());
        assert!(tls_config(true, Some(std::path::Path::new("/nonexistent.pem"))).is_err());
    }
}
