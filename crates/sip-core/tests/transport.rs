//! The stack's TCP transport against a real socket: requests to a peer with no connection yet
//! share one connection attempt, and a peer that cannot be reached fails every request that
//! waited for it.

use std::time::Duration;

use sip_core::io::{ClientEvent, SipStack};
use sip_core::{Peer, Request, Transport};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn options(n: usize, to: std::net::SocketAddr) -> Request {
    let uri = format!("sip:{to}");
    let mut r = Request::new("OPTIONS", &uri);
    r.headers.push(
        "Via",
        format!("SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-burst-{n}"),
    );
    r.headers.push("Max-Forwards", "70");
    r.headers
        .push("From", format!("<sip:test@127.0.0.1>;tag=t{n}"));
    r.headers.push("To", format!("<{uri}>"));
    r.headers.push("Call-ID", format!("burst-{n}@127.0.0.1"));
    r.headers.push("CSeq", "1 OPTIONS");
    r
}

async fn stack() -> SipStack {
    SipStack::bind(
        "127.0.0.1:0".parse().unwrap(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("bind")
    .0
}

#[tokio::test]
async fn a_burst_to_a_new_peer_opens_one_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = listener.local_addr().unwrap();
    let peer = Peer {
        transport: Transport::Tcp,
        addr: to,
    };
    let stack = stack().await;
    let mut pending = Vec::new();
    for n in 0..5 {
        pending.push(stack.request(options(n, to), peer).await.1);
    }
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("a connection")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(12).filter(|w| w == b"OPTIONS sip:").count() < 5 {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("all five requests on the first connection")
            .unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    // In the order they were sent.
    let text = String::from_utf8_lossy(&got);
    let order: Vec<usize> = (0..5)
        .map(|n| text.find(&format!("burst-{n}@")).expect("each request"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.accept())
            .await
            .is_err(),
        "a second connection was opened"
    );
    drop(pending);
}

#[tokio::test]
async fn every_request_waiting_on_a_refused_connection_fails() {
    // A port nothing listens on: bind, note it, close.
    let to = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let peer = Peer {
        transport: Transport::Tcp,
        addr: to,
    };
    let stack = stack().await;
    let mut pending = Vec::new();
    for n in 0..3 {
        pending.push(stack.request(options(n, to), peer).await.1);
    }
    for rx in &mut pending {
        let ev = tokio::time::timeout(Duration::from_secs(6), rx.recv())
            .await
            .expect("an answer for every request, well before Timer F");
        assert!(matches!(ev, Some(ClientEvent::Timeout)), "{ev:?}");
    }
}
