//! A sloppy carrier or PBX against the stack over real UDP sockets: what `msg::validate` would
//! refuse in a header the switch never reads must not cost the call. A response still reaches
//! its transaction unless the switch could not act on it; a request gets a 400 only for what
//! RFC 4475 says to refuse.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sip_core::io::{ClientEvent, ServerEvent, SipEvent, SipStack};
use sip_core::msg::{parse, Framing, NameAddr};
use sip_core::transaction::response_to;
use sip_core::{Message, Peer, Request, Response, Transport};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The stack, and the requests that reach its front door.
async fn stack() -> (SipStack, mpsc::Receiver<SipEvent>) {
    SipStack::bind(
        "127.0.0.1:0".parse().unwrap(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("bind")
}

async fn carrier() -> (UdpSocket, Peer) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer = Peer {
        transport: Transport::Udp,
        addr: sock.local_addr().unwrap(),
    };
    (sock, peer)
}

fn invite(n: usize, to: SocketAddr) -> Request {
    let mut r = Request::new("INVITE", &format!("sip:100@{to}"));
    r.headers.push(
        "Via",
        format!("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sloppy-{n}"),
    );
    r.headers.push("Max-Forwards", "70");
    r.headers
        .push("From", format!("<sip:switch@127.0.0.1>;tag=s{n}"));
    r.headers.push("To", format!("<sip:100@{to}>"));
    r.headers.push("Call-ID", format!("sloppy-{n}@127.0.0.1"));
    r.headers.push("CSeq", "1 INVITE");
    r.headers
        .push("Contact", "<sip:switch@127.0.0.1:5060>".to_string());
    r
}

async fn recv(sock: &UdpSocket) -> Message {
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("a message within 5 s")
        .unwrap();
    parse(&buf[..n], Framing::Datagram).expect("parses").0
}

async fn recv_request(sock: &UdpSocket) -> Request {
    match recv(sock).await {
        Message::Request(r) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

/// The carrier's 200 to `req`, changed by `edit`, sent to the stack.
async fn answer(
    sock: &UdpSocket,
    stack: &SipStack,
    req: &Request,
    edit: impl FnOnce(&mut Response),
) {
    let mut ok = response_to(req, 200, Some("c1"));
    ok.headers.push("Contact", "<sip:100@192.0.2.10:5060>");
    edit(&mut ok);
    let bytes = Message::Response(ok).to_bytes();
    sock.send_to(&bytes, stack.local_addr).await.unwrap();
}

async fn next_response(events: &mut mpsc::UnboundedReceiver<ClientEvent>) -> Option<Response> {
    match tokio::time::timeout(Duration::from_millis(700), events.recv()).await {
        Ok(Some(ClientEvent::Response { response, .. })) => Some(*response),
        Ok(other) => panic!("{other:?}"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_200_ok_with_an_odd_display_name_reaches_the_call() {
    let (stack, _front) = stack().await;
    let (sock, peer) = carrier().await;
    let (_, mut events) = stack.request(invite(1, peer.addr), peer).await;
    let req = recv_request(&sock).await;
    answer(&sock, &stack, &req, |ok| {
        let to = ok.headers.get("To").unwrap().to_string();
        // `<sip:100@...>;tag=c1` -> `Watson, Thomas < sip:100@... >;tag=c1;`
        let odd = format!(
            "Watson, Thomas {};",
            to.replace('<', "< ").replace('>', " >")
        );
        ok.headers.set("To", odd);
        ok.headers.push("Date", "Fri, 01 Jan 2010 16:00:00 EST");
        ok.headers.push("Expires", "Thu, 01 Dec 2040 16:00:00 GMT");
    })
    .await;
    let ok = next_response(&mut events).await.expect("the 200 OK");
    assert_eq!(ok.code, 200);
    let to = NameAddr::parse(ok.headers.get("To").unwrap()).unwrap();
    assert_eq!(to.display.as_deref(), Some("Watson, Thomas"));
    assert_eq!(to.tag(), Some("c1"));
    assert_eq!(stack.stats.malformed.load(Ordering::Relaxed), 0);
}

/// `validate` still refuses these responses; only the ones the switch cannot act on are dropped.
#[tokio::test]
async fn a_sloppy_response_is_passed_on_and_an_unusable_one_dropped() {
    let (stack, _front) = stack().await;
    let (sock, peer) = carrier().await;

    // Sloppy where nothing reads: an Expires that is no number, a Route in a response, a
    // garbled second Via.
    let (_, mut events) = stack.request(invite(2, peer.addr), peer).await;
    let req = recv_request(&sock).await;
    answer(&sock, &stack, &req, |ok| {
        ok.headers.push("Expires", "soon");
        ok.headers.push("Route", "garbage");
        ok.headers.push("Via", "SIP/2.0/UDP 192.0.2.15;;");
    })
    .await;
    let ok = next_response(&mut events).await.expect("the sloppy 200 OK");
    assert_eq!(ok.code, 200);
    assert_eq!(stack.stats.malformed.load(Ordering::Relaxed), 1);

    // A 2xx to INVITE whose Contact cannot be read: no remote target for the ACK and BYE.
    let (_, mut events) = stack.request(invite(3, peer.addr), peer).await;
    let req = recv_request(&sock).await;
    answer(&sock, &stack, &req, |ok| {
        ok.headers.set("Contact", "<sip:100 @192.0.2.10>");
    })
    .await;
    assert!(next_response(&mut events).await.is_none(), "dropped");
    assert_eq!(stack.stats.malformed.load(Ordering::Relaxed), 2);

    // The same request answered properly (a retransmission of the INVITE may come first).
    answer(&sock, &stack, &req, |_| {}).await;
    assert_eq!(next_response(&mut events).await.map(|r| r.code), Some(200));
    assert_eq!(stack.stats.malformed.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_sloppy_request_reaches_the_switch_and_a_broken_one_gets_400() {
    let (stack, mut front) = stack().await;
    let (sock, peer) = carrier().await;
    let options = |n: usize, from: &str| {
        format!(
            "OPTIONS sip:switch@{to} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-pbx-{n};rport;\r\n\
             Max-Forwards: 300\r\n\
             From: {from}\r\n\
             To: < sip:switch@{to} >;tag=\r\n\
             Call-ID: pbx-{n}@192.0.2.20\r\n\
             CSeq: 1 OPTIONS\r\n\
             Date: Fri, 1 Jan 2010 16:00:00 EST\r\n\
             Content-Length: 0\r\n\r\n",
            to = stack.local_addr,
            me = peer.addr,
        )
    };
    let sloppy = options(1, "Bell, Alexander <sip:a.g.bell@192.0.2.20>;tag=43;");
    sock.send_to(sloppy.as_bytes(), stack.local_addr)
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), front.recv())
        .await
        .expect("the OPTIONS at the front door");
    let Some(SipEvent::Server(ServerEvent::Request { request, .. })) = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(request.call_id(), Some("pbx-1@192.0.2.20"));
    assert_eq!(stack.stats.malformed.load(Ordering::Relaxed), 0);

    // An unterminated quote is still refused (RFC 4475 §3.1.2.6), with a 400 to the source.
    let broken = options(2, "\"Bell, Alexander <sip:a.g.bell@192.0.2.20>;tag=43");
    sock.send_to(broken.as_bytes(), stack.local_addr)
        .await
        .unwrap();
    let Message::Response(r) = recv(&sock).await else {
        panic!("expected the 400")
    };
    assert_eq!(r.code, 400);
    assert_eq!(r.reason, "Bad Request (malformed From or To)");
    assert_eq!(stack.stats.malformed.load(Ordering::Relaxed), 1);
}
