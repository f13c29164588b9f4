//! The transport's guard against a flood, over real sockets from other loopback addresses
//! (127.0.0.2, 127.0.0.3, …): the per-source rate limit, the dialogs it spares, the ACL's
//! stateless 403, and the caps and timeouts of TCP connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sip_core::io::{InboundFilter, ServerEvent, SipEvent, SipStack, StackOptions};
use sip_core::msg::{parse, Framing};
use sip_core::transaction::response_to;
use sip_core::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;

async fn stack(opts: StackOptions) -> (SipStack, mpsc::Receiver<SipEvent>) {
    SipStack::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        Default::default(),
        Default::default(),
        opts,
    )
    .await
    .expect("bind")
}

fn request(method: &str, n: usize, me: SocketAddr, to: SocketAddr, to_tag: Option<&str>) -> String {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let transport = "UDP";
    format!(
        "{method} sip:switch@{to} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {me};branch=z9hG4bK-{method}-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:scanner@{me}>;tag=f{n}\r\n\
         To: <sip:switch@{to}>{tag}\r\n\
         Call-ID: {method}-{n}@{me}\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Requests that reach the switch's front door within `wait`.
async fn requests_at_front(front: &mut mpsc::Receiver<SipEvent>, wait: Duration) -> usize {
    let mut n = 0;
    while let Ok(Some(ev)) = tokio::time::timeout(wait, front.recv()).await {
        if matches!(ev, SipEvent::Server(ServerEvent::Request { .. })) {
            n += 1;
        }
    }
    n
}

async fn udp_from(ip: &str) -> UdpSocket {
    UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0))
        .await
        .expect("bind a loopback alias (Linux routes all of 127/8 to lo)")
}

#[tokio::test]
async fn a_source_gets_its_rate_and_calls_in_a_dialog_get_through_all_the_same() {
    let (stack, mut front) = stack(StackOptions {
        rate_limit: 20,
        ..Default::default()
    })
    .await;
    let to = stack.local_addr;
    // A real caller at 127.0.0.1 with an answered call: the switch's 200 makes the dialog.
    let caller = udp_from("127.0.0.1").await;
    let me = caller.local_addr().unwrap();
    caller
        .send_to(request("INVITE", 0, me, to, None).as_bytes(), to)
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), front.recv())
        .await
        .unwrap()
        .unwrap();
    let SipEvent::Server(ServerEvent::Request {
        tx: Some(tx),
        request: invite,
        ..
    }) = ev
    else {
        panic!("{ev:?}")
    };
    stack.respond(tx, response_to(&invite, 200, Some("ours")));

    // A scanner at 127.0.0.2: 200 OPTIONS, ten times the rate; meanwhile the caller sends
    // 100 requests in its dialog, none of which is limited. Paced, so the kernel's receive
    // buffer drops nothing.
    let scanner = udp_from("127.0.0.2").await;
    let sme = scanner.local_addr().unwrap();
    let started = std::time::Instant::now();
    for n in 0..200 {
        scanner
            .send_to(request("OPTIONS", n, sme, to, None).as_bytes(), to)
            .await
            .unwrap();
        if n % 2 == 0 {
            let info = request("INFO", n, me, to, Some("ours"))
                .replace(&format!("INFO-{n}@"), "INVITE-0@");
            caller.send_to(info.as_bytes(), to).await.unwrap();
        }
        if n % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let reached = requests_at_front(&mut front, Duration::from_millis(500)).await;
    let dropped = stack.stats.dropped.rate.load(Ordering::Relaxed);
    // 100 INFOs + a burst of 20 OPTIONS, and what refilled at 20/s while all that was sent.
    let refill = (started.elapsed().as_secs_f64() * 20.0).ceil() as usize + 1;
    assert!(
        reached >= 120 && reached <= 120 + refill,
        "{reached} reached the switch, {dropped} dropped (refill {refill})"
    );
    assert_eq!(reached + dropped as usize, 300);
}

#[tokio::test]
async fn over_the_rate_on_tcp_is_a_503_with_retry_after() {
    let (stack, mut front) = stack(StackOptions {
        rate_limit: 5,
        server: Some("BotStream/test".into()),
        ..Default::default()
    })
    .await;
    let to = stack.local_addr;
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut conn = sock.connect(to).await.unwrap();
    let me = conn.local_addr().unwrap();
    let mut all = String::new();
    for n in 0..10 {
        all.push_str(&request("OPTIONS", n, me, to, None).replace("/UDP", "/TCP"));
    }
    conn.write_all(all.as_bytes()).await.unwrap();
    assert_eq!(
        requests_at_front(&mut front, Duration::from_millis(300)).await,
        5
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while got.windows(11).filter(|w| w == b"SIP/2.0 503").count() < 5 {
        let n = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut buf))
            .await
            .expect("five 503s")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let (m, _) = parse(&got, Framing::Stream).unwrap();
    let Message::Response(r) = m else { panic!() };
    assert_eq!(r.code, 503);
    assert_eq!(r.headers.get("Retry-After"), Some("5"));
    assert_eq!(r.headers.get("Server"), Some("BotStream/test"));
    assert_eq!(stack.stats.dropped.rate.load(Ordering::Relaxed), 5);
}

#[tokio::test]
async fn an_invite_from_outside_the_acl_gets_a_403_and_nothing_else() {
    let (stack, mut front) = stack(StackOptions::default()).await;
    stack.set_inbound_filter(InboundFilter {
        allowed: Arc::new(|ip: IpAddr| ip == IpAddr::from([127, 0, 0, 1])),
        reason: Some("Q.850;cause=21;text=\"CALL_REJECTED\"".into()),
    });
    let to = stack.local_addr;
    let scanner = udp_from("127.0.0.4").await;
    let me = scanner.local_addr().unwrap();
    scanner
        .send_to(request("INVITE", 1, me, to, None).as_bytes(), to)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), scanner.recv_from(&mut buf))
        .await
        .expect("a 403")
        .unwrap();
    let (Message::Response(r), _) = parse(&buf[..n], Framing::Datagram).unwrap() else {
        panic!()
    };
    assert_eq!(r.code, 403);
    assert!(r.headers.get("Reason").unwrap().contains("cause=21"));
    assert!(r.headers.get("To").unwrap().contains("tag="));
    assert_eq!(
        requests_at_front(&mut front, Duration::from_millis(200)).await,
        0
    );
    // No transaction was made for it, so none retransmits the 403.
    assert!(
        tokio::time::timeout(Duration::from_millis(800), scanner.recv_from(&mut buf))
            .await
            .is_err()
    );
    assert_eq!(stack.stats.dropped.acl.load(Ordering::Relaxed), 1);
    // An allowed caller's INVITE, and the scanner's OPTIONS, reach the switch.
    let caller = udp_from("127.0.0.1").await;
    let cme = caller.local_addr().unwrap();
    caller
        .send_to(request("INVITE", 2, cme, to, None).as_bytes(), to)
        .await
        .unwrap();
    scanner
        .send_to(request("OPTIONS", 3, me, to, None).as_bytes(), to)
        .await
        .unwrap();
    assert_eq!(
        requests_at_front(&mut front, Duration::from_millis(300)).await,
        2
    );
}

async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

#[tokio::test]
async fn tcp_connections_are_capped_per_source_and_closed_when_idle_or_slow() {
    let (stack, _front) = stack(StackOptions {
        max_connections_per_source: 3,
        first_message_timeout: Duration::from_secs(1),
        message_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let to = stack.local_addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.5", to).await);
    }
    // The fourth from the same source is closed at once; another source still gets in.
    let mut fourth = connect_from("127.0.0.5", to).await;
    assert!(closed_within(&mut fourth, Duration::from_millis(500)).await);
    let mut other = connect_from("127.0.0.6", to).await;
    assert!(!closed_within(&mut other, Duration::from_millis(300)).await);
    assert_eq!(stack.stats.dropped.connections.load(Ordering::Relaxed), 1);

    // A slow drip: a header a byte every 100 ms never completes within the message timeout.
    let mut drip = held.pop().unwrap();
    let me = drip.local_addr().unwrap();
    let msg = request("OPTIONS", 1, me, to, None).replace("/UDP", "/TCP");
    let started = tokio::time::Instant::now();
    let mut closed = false;
    for b in msg.as_bytes().iter().take(60) {
        if drip.write_all(std::slice::from_ref(b)).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed || closed_within(&mut drip, Duration::from_secs(2)).await);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Connections that never say anything go after the first-message timeout (swept each
    // second); their places free up for new ones.
    for mut c in held {
        assert!(closed_within(&mut c, Duration::from_secs(3)).await);
    }
    assert!(closed_within(&mut other, Duration::from_secs(3)).await);
    let mut again = connect_from("127.0.0.5", to).await;
    let me = again.local_addr().unwrap();
    again
        .write_all(
            request("OPTIONS", 2, me, to, None)
                .replace("/UDP", "/TCP")
                .as_bytes(),
        )
        .await
        .unwrap();
    assert!(!closed_within(&mut again, Duration::from_millis(1500)).await);
    assert!(stack.stats.dropped.timeout.load(Ordering::Relaxed) >= 4);
}
