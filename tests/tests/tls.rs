//! SIP over TLS both ways: a client reaching the switch on sip.tls_listen, and the switch
//! pinging a gateway configured with ;transport=tls.

use std::sync::Arc;
use std::time::Duration;

use e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn self_signed() -> (
    rcgen::CertifiedKey<rcgen::KeyPair>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    (ck, key)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_over_tls_to_the_switch() {
    let (ck, _) = self_signed();
    let dir = std::env::temp_dir().join(format!("bs-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    let tls_port = free_port();
    let nats = Nats::start();
    let _sw = Switch::start(
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
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("the switch's certificate");
    let local = tls.get_ref().0.local_addr().unwrap();
    let req = format!(
        "OPTIONS sip:switch@127.0.0.1:{tls_port};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls1\r\nFrom: <sip:probe@localhost>;tag=p1\r\nTo: <sip:switch@127.0.0.1>\r\nCall-ID: tls-options-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("a response")
        .unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    assert!(resp.contains("Via: SIP/2.0/TLS"), "{resp}");
    assert!(resp.contains("Allow: INVITE"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_a_tls_gateway() {
    // A gateway that speaks only TLS and answers OPTIONS.
    let (ck, key) = self_signed();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let mut acc = String::new();
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    acc.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(end) = acc.find("\r\n\r\n") {
                        let msg: String = acc.drain(..end + 4).collect();
                        let header = |name: &str| {
                            msg.lines()
                                .find(|l| l.starts_with(name))
                                .unwrap_or("")
                                .to_string()
                        };
                        let resp = format!(
                            "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=gw\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
                            header("Via:"),
                            header("From:"),
                            header("To:"),
                            header("Call-ID:"),
                            header("CSeq:")
                        );
                        let _ = seen_tx.send(msg);
                        if tls.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let nats = Nats::start();
    let sw = Switch::start(&nats, &[]);
    let app = App::connect(&nats, &sw).await;
    let r = app
        .request(
            "request_add_sip_gateway",
            serde_json::json!({"name": "tls-gw", "params": {"proxy": format!("127.0.0.1:{port};transport=tls"), "ping": "1"}}),
        )
        .await;
    assert_eq!(r["status_code"], 0, "{r}");
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("an OPTIONS ping over TLS")
            .unwrap();
        assert!(msg.starts_with("OPTIONS sip:127.0.0.1:"), "{msg}");
        assert!(msg.contains("Via: SIP/2.0/TLS"), "{msg}");
    }
    let r = app
        .request(
            "request_get_sip_gateway",
            serde_json::json!({"name": "tls-gw"}),
        )
        .await;
    assert_eq!(r["gateways"][0]["status"], "UP", "{r}");
}
