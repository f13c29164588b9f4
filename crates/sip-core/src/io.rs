//! The only tokio code of sip-core: sockets, the clock, and one task that owns the transaction
//! layer. Everything the task learns it hands on through channels; it never waits on a slow
//! consumer (unbounded channels to tasks that drain them at once).
//!
//! Requests from the network and the responses to the transactions the switch started with
//! [`SipStack::request_tagged`] share one channel ([`SipEvent`]), so they reach the call core in
//! the order they arrived: a BYE sent right behind its 200 OK can never overtake it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::msg::{self, Framing, Message, Request, Response};
use crate::transaction::{
    self, Event, Output, Peer, TimerConfig, TransactionLayer, Transport, TxId,
};

/// What a client transaction's owner hears.
#[derive(Debug)]
pub enum ClientEvent {
    /// Boxed, like the requests below: a channel preallocates 32 slots of its message type, and a
    /// whole SIP message inline made that several KB per call. `source` is where it came from.
    Response {
        response: Box<Response>,
        source: Peer,
    },
    /// Timer B/F or a transport failure: no final response will come.
    Timeout,
}

/// Requests and server transaction events, for the switch.
#[derive(Debug)]
pub enum ServerEvent {
    Request {
        tx: Option<TxId>,
        request: Box<Request>,
        source: Peer,
    },
    Cancelled {
        invite_tx: TxId,
        request: Box<Request>,
    },
    AckTimeout {
        tx: TxId,
        call_id: String,
    },
}

/// Everything the switch hears from SIP, in arrival order.
#[derive(Debug)]
pub enum SipEvent {
    /// A response (or the end) of a transaction started with [`SipStack::request_tagged`].
    Client {
        tag: u64,
        event: ClientEvent,
    },
    Server(ServerEvent),
}

/// Where a client transaction's events go.
enum ClientSink {
    Own(mpsc::UnboundedSender<ClientEvent>),
    /// The switch's one channel, with the tag it chose.
    Tagged(u64),
}

enum Command {
    Request {
        request: Request,
        peer: Peer,
        events: mpsc::UnboundedSender<ClientEvent>,
        tx_id: tokio::sync::oneshot::Sender<TxId>,
    },
    Response {
        tx: TxId,
        response: Response,
    },
    RequestTagged {
        request: Request,
        peer: Peer,
        tag: u64,
    },
    Stateless {
        peer: Peer,
        message: Message,
    },
}

/// Counters the switch exports on /metrics.
#[derive(Debug, Default)]
pub struct SipStats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    /// Input that could not be framed, and messages that failed `msg::validate`: requests
    /// answered 400, responses dropped as unusable, and sloppy responses that were still passed
    /// on to their transaction (see `Driver::incoming`).
    pub malformed: AtomicU64,
    pub transactions: AtomicU64,
}

/// A handle to the SIP task; cheap to clone.
#[derive(Clone)]
pub struct SipStack {
    cmd: mpsc::UnboundedSender<Command>,
    pub local_addr: SocketAddr,
    /// Where SIP over TLS is accepted, if it is.
    pub tls_local_addr: Option<SocketAddr>,
    pub stats: Arc<SipStats>,
}

/// SIP over TLS: where to accept it (with our certificate) and how to open it towards gateways.
#[derive(Clone, Default)]
pub struct TlsOptions {
    pub listen: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// For gateways with `;transport=tls`; without it such requests fail like an unreachable peer.
    pub client: Option<Arc<rustls::ClientConfig>>,
}

impl SipStack {
    /// Binds UDP and TCP on `listen` (and TLS if configured) and starts the task. Requests, and
    /// the responses of tagged transactions, arrive on the returned receiver.
    pub async fn bind(
        listen: SocketAddr,
        tls: TlsOptions,
        timers: TimerConfig,
    ) -> std::io::Result<(SipStack, mpsc::UnboundedReceiver<SipEvent>)> {
        let udp = Arc::new(UdpSocket::bind(listen).await?);
        let local_addr = udp.local_addr()?;
        let tcp = TcpListener::bind(local_addr).await?;
        let tls_listener = match &tls.listen {
            Some((addr, config)) => Some((TcpListener::bind(addr).await?, config.clone())),
            None => None,
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (front_tx, front_rx) = mpsc::unbounded_channel();
        let (net_tx, net_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(SipStats::default());
        tokio::spawn(udp_reader(udp.clone(), net_tx.clone()));
        tokio::spawn(tcp_acceptor(tcp, net_tx.clone()));
        let tls_local = match tls_listener {
            Some((listener, config)) => {
                let addr = listener.local_addr().ok();
                tokio::spawn(tls_acceptor(
                    listener,
                    tokio_rustls::TlsAcceptor::from(config),
                    net_tx.clone(),
                ));
                addr
            }
            None => None,
        };
        let driver = Driver {
            layer: TransactionLayer::new(timers),
            udp,
            tls_client: tls.client.clone(),
            tcp_conns: HashMap::new(),
            connecting: HashMap::new(),
            net_tx,
            clients: HashMap::new(),
            front: front_tx,
            stats: stats.clone(),
        };
        tokio::spawn(driver.run(cmd_rx, net_rx));
        Ok((
            SipStack {
                cmd: cmd_tx,
                local_addr,
                tls_local_addr: tls_local,
                stats,
            },
            front_rx,
        ))
    }

    /// Starts a client transaction; its responses (and 2xx retransmissions) arrive on the
    /// returned receiver.
    pub async fn request(
        &self,
        request: Request,
        peer: Peer,
    ) -> (TxId, mpsc::UnboundedReceiver<ClientEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let (tx_id, id_rx) = tokio::sync::oneshot::channel();
        let _ = self.cmd.send(Command::Request {
            request,
            peer,
            events,
            tx_id,
        });
        // The driver only stops with the runtime; a missing id then means nothing will arrive.
        let id = id_rx.await.unwrap_or(TxId(0));
        (id, rx)
    }

    pub fn respond(&self, tx: TxId, response: Response) {
        let _ = self.cmd.send(Command::Response { tx, response });
    }

    /// Starts a client transaction whose responses arrive on the stack's own channel as
    /// [`SipEvent::Client`] with `tag`, in order with the requests from the network.
    pub fn request_tagged(&self, request: Request, peer: Peer, tag: u64) {
        let _ = self.cmd.send(Command::RequestTagged { request, peer, tag });
    }

    /// Sends outside any transaction (ACK for a 2xx).
    pub fn send_stateless(&self, peer: Peer, message: Message) {
        let _ = self.cmd.send(Command::Stateless { peer, message });
    }
}

enum NetEvent {
    Datagram(SocketAddr, Vec<u8>),
    Stream(Transport, SocketAddr, Message),
    StreamMalformed(SocketAddr),
    /// A TCP or TLS connection is up; messages to that peer go through its writer.
    StreamOpened(Peer, mpsc::UnboundedSender<Vec<u8>>),
    StreamClosed(Peer),
    /// Opening a connection to this peer failed (or took over 5 s).
    ConnectFailed(Peer),
}

struct Driver {
    layer: TransactionLayer,
    udp: Arc<UdpSocket>,
    tls_client: Option<Arc<rustls::ClientConfig>>,
    tcp_conns: HashMap<Peer, mpsc::UnboundedSender<Vec<u8>>>,
    /// Connections being opened, with what waits to go out on them: one attempt per peer, so
    /// a burst of requests to a trunk opens one connection, not one each.
    connecting: HashMap<Peer, Vec<Vec<u8>>>,
    net_tx: mpsc::UnboundedSender<NetEvent>,
    clients: HashMap<TxId, ClientSink>,
    front: mpsc::UnboundedSender<SipEvent>,
    stats: Arc<SipStats>,
}

async fn udp_reader(sock: Arc<UdpSocket>, out: mpsc::UnboundedSender<NetEvent>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if out
                    .send(NetEvent::Datagram(from, buf[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
            // ICMP port unreachable surfaces here on some systems; it is not fatal.
            Err(e) => tracing::debug!(error = %e, "udp recv"),
        }
    }
}

async fn tcp_acceptor(listener: TcpListener, out: mpsc::UnboundedSender<NetEvent>) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => spawn_connection(
                stream,
                Peer {
                    transport: Transport::Tcp,
                    addr: from,
                },
                out.clone(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tls_acceptor(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    out: mpsc::UnboundedSender<NetEvent>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let acceptor = acceptor.clone();
                let out = out.clone();
                // The handshake runs apart, so one slow or hostile client holds up no one.
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => spawn_connection(
                            tls,
                            Peer {
                                transport: Transport::Tls,
                                addr: from,
                            },
                            out,
                        ),
                        _ => tracing::debug!(%from, "TLS handshake failed"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "tls accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A connected stream (TCP or TLS): one task writes what the driver sends, one reads and frames.
fn spawn_connection<S>(stream: S, peer: Peer, out: mpsc::UnboundedSender<NetEvent>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (writer_tx, mut writer_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let _ = out.send(NetEvent::StreamOpened(peer, writer_tx));
    let (mut rd, mut wr) = tokio::io::split(stream);
    tokio::spawn(async move {
        while let Some(bytes) = writer_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        let mut chunk = vec![0u8; 16384];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            loop {
                match msg::parse(&buf, Framing::Stream) {
                    Ok((m, used)) => {
                        buf.drain(..used);
                        let _ = out.send(NetEvent::Stream(peer.transport, peer.addr, m));
                    }
                    Err(msg::ParseError::Incomplete) => break,
                    Err(_) => {
                        // A stream cannot be resynchronised after a framing error (§18.3).
                        let _ = out.send(NetEvent::StreamMalformed(peer.addr));
                        let _ = out.send(NetEvent::StreamClosed(peer));
                        return;
                    }
                }
            }
        }
        let _ = out.send(NetEvent::StreamClosed(peer));
    });
}

impl Driver {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Command>,
        mut net: mpsc::UnboundedReceiver<NetEvent>,
    ) {
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        loop {
            let deadline = self
                .layer
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                Some(c) = cmds.recv() => self.command(c),
                Some(n) = net.recv() => self.network(n),
                _ = tokio::time::sleep_until(deadline) => self.layer.handle_timeout(Instant::now()),
                _ = sweep.tick() => {
                    // Owners that went away no longer need 2xx retransmissions.
                    let layer = &self.layer;
                    self.clients.retain(|id, s| match s {
                        ClientSink::Own(s) => !s.is_closed(),
                        ClientSink::Tagged(_) => layer.has_client(*id),
                    });
                    self.stats.transactions.store(self.layer.len() as u64, Ordering::Relaxed);
                }
                else => return,
            }
            self.drain();
        }
    }

    fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Request {
                request,
                peer,
                events,
                tx_id,
            } => {
                let id = self.layer.send_request(now, request, peer);
                self.clients.insert(id, ClientSink::Own(events));
                let _ = tx_id.send(id);
            }
            Command::RequestTagged { request, peer, tag } => {
                let id = self.layer.send_request(now, request, peer);
                self.clients.insert(id, ClientSink::Tagged(tag));
            }
            Command::Response { tx, response } => self.layer.send_response(now, tx, response),
            Command::Stateless { peer, message } => self.layer.send_stateless(peer, &message),
        }
    }

    fn network(&mut self, n: NetEvent) {
        let now = Instant::now();
        match n {
            NetEvent::Datagram(from, bytes) => {
                if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                    return; // keep-alive
                }
                let peer = Peer {
                    transport: Transport::Udp,
                    addr: from,
                };
                match msg::parse(&bytes, Framing::Datagram) {
                    Ok((m, _)) => self.incoming(now, peer, m),
                    Err(e) => {
                        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%from, error = %e, "dropped malformed SIP datagram");
                    }
                }
            }
            NetEvent::Stream(transport, from, m) => {
                let peer = Peer {
                    transport,
                    addr: from,
                };
                self.incoming(now, peer, m);
            }
            NetEvent::StreamMalformed(from) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, "closed a TCP connection after a malformed message");
            }
            NetEvent::StreamOpened(peer, w) => {
                // Queued before the connection was up; sent first, in order, so a later
                // transmit cannot overtake them.
                for bytes in self.connecting.remove(&peer).unwrap_or_default() {
                    let _ = w.send(bytes);
                }
                self.tcp_conns.insert(peer, w);
            }
            NetEvent::StreamClosed(peer) => {
                self.tcp_conns.remove(&peer);
            }
            NetEvent::ConnectFailed(peer) => {
                for bytes in self.connecting.remove(&peer).unwrap_or_default() {
                    if let Some(id) = self.layer.client_tx_for(peer, &bytes) {
                        self.layer.transport_error(id);
                    }
                }
            }
        }
    }

    /// A request that fails `msg::validate` is answered 400 (RFC 3261 §8.2). A response is an
    /// answer to something we sent, and dropping it loses the call: it is dropped only when
    /// `msg::check_usable` says the switch could not act on it (no top Via, CSeq, Call-ID or
    /// readable From/To, or a 2xx to INVITE without a usable Contact or Record-Route). One that is
    /// sloppy in a header the switch does not read reaches its transaction. Both are counted as
    /// malformed.
    fn incoming(&mut self, now: Instant, peer: Peer, m: Message) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if let Err(why) = msg::validate(&m) {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            match &m {
                Message::Request(r) => {
                    tracing::debug!(from = %peer.addr, why, "malformed SIP request");
                    if r.method != "ACK" && r.top_via().is_some() {
                        let mut resp = transaction::response_to(r, 400, None);
                        resp.reason = format!("Bad Request ({why})");
                        self.layer.send_stateless(peer, &Message::Response(resp));
                    }
                    return;
                }
                Message::Response(_) => {
                    if let Err(unusable) = msg::check_usable(&m) {
                        tracing::debug!(
                            from = %peer.addr,
                            why = unusable,
                            "dropped a SIP response it cannot act on"
                        );
                        return;
                    }
                    tracing::debug!(
                        from = %peer.addr,
                        why,
                        "malformed SIP response passed on: what the switch reads is usable"
                    );
                }
            }
        }
        self.layer.handle_message(now, peer, m);
    }

    fn drain(&mut self) {
        while let Some(out) = self.layer.poll_output() {
            match out {
                Output::Transmit { peer, bytes } => self.transmit(peer, bytes),
                Output::Event(e) => self.deliver(e),
            }
        }
    }

    fn transmit(&mut self, peer: Peer, bytes: Vec<u8>) {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        match peer.transport {
            Transport::Udp => {
                if let Err(e) = self.udp.try_send_to(&bytes, peer.addr) {
                    tracing::debug!(to = %peer.addr, error = %e, "udp send");
                }
            }
            Transport::Tcp | Transport::Tls => {
                let bytes = match self.tcp_conns.get(&peer) {
                    Some(w) => match w.send(bytes) {
                        Ok(()) => return,
                        // The connection's writer is gone (closed): open a new one.
                        Err(mpsc::error::SendError(bytes)) => {
                            self.tcp_conns.remove(&peer);
                            bytes
                        }
                    },
                    None => bytes,
                };
                if let Some(waiting) = self.connecting.get_mut(&peer) {
                    waiting.push(bytes);
                    return;
                }
                // Open a connection and send once it is up; a failure ends the transactions
                // that were waiting for it.
                self.connecting.insert(peer, vec![bytes]);
                let net = self.net_tx.clone();
                let tls = self.tls_client.clone();
                tokio::spawn(async move {
                    let connect = async {
                        let tcp = TcpStream::connect(peer.addr).await.ok()?;
                        if peer.transport == Transport::Tcp {
                            spawn_connection(tcp, peer, net.clone());
                            return Some(());
                        }
                        // Trunks are addressed by IP here, so the certificate is not matched to a
                        // name (FreeSWITCH's default "tls-verify-policy none" likewise).
                        let connector = tokio_rustls::TlsConnector::from(tls?);
                        let name = rustls::pki_types::ServerName::IpAddress(peer.addr.ip().into());
                        let stream = connector.connect(name, tcp).await.ok()?;
                        spawn_connection(stream, peer, net.clone());
                        Some(())
                    };
                    if tokio::time::timeout(Duration::from_secs(5), connect)
                        .await
                        .ok()
                        .flatten()
                        .is_none()
                    {
                        let _ = net.send(NetEvent::ConnectFailed(peer));
                    }
                });
            }
        }
    }

    fn client_event(&self, sink: &ClientSink, event: ClientEvent) {
        match sink {
            ClientSink::Own(s) => {
                let _ = s.send(event);
            }
            ClientSink::Tagged(tag) => {
                let _ = self.front.send(SipEvent::Client { tag: *tag, event });
            }
        }
    }

    fn deliver(&mut self, e: Event) {
        match e {
            Event::Response {
                tx,
                response,
                source,
            } => {
                let final_non_2xx = response.code >= 300;
                // A non-INVITE transaction is over with its final response; an INVITE's sink stays
                // for 2xx retransmissions (the sweep drops it once its owner has gone).
                let done = final_non_2xx
                    || (response.code >= 200
                        && response.cseq().is_some_and(|c| c.method != "INVITE"));
                let event = ClientEvent::Response {
                    response: Box::new(response),
                    source,
                };
                let sink = if done { self.clients.remove(&tx) } else { None };
                if let Some(s) = sink.as_ref().or_else(|| self.clients.get(&tx)) {
                    self.client_event(s, event);
                }
            }
            Event::Timeout { tx } => {
                if let Some(s) = self.clients.remove(&tx) {
                    self.client_event(&s, ClientEvent::Timeout);
                }
            }
            Event::Request {
                tx,
                request,
                source,
            } => self.server(ServerEvent::Request {
                tx,
                request: Box::new(request),
                source,
            }),
            Event::Cancelled { invite_tx, request } => self.server(ServerEvent::Cancelled {
                invite_tx,
                request: Box::new(request),
            }),
            // The layer names the call itself, so nothing here has to remember which server
            // transaction belonged to which call (a map of that would grow with every OPTIONS).
            Event::AckTimeout { tx, call_id } => {
                self.server(ServerEvent::AckTimeout { tx, call_id })
            }
        }
    }

    fn server(&self, ev: ServerEvent) {
        let _ = self.front.send(SipEvent::Server(ev));
    }
}
