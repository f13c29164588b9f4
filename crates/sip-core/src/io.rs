//! The only tokio code of sip-core: sockets, the clock, and one task that owns the transaction
//! layer. Everything the task learns it hands on through channels; it never waits on a slow
//! consumer.
//!
//! What the network can make it hold is bounded (README "SIP under attack"): socket readers hand
//! the task messages through a bounded queue ([`NET_QUEUE`], so a flood waits in the kernel's
//! buffers, not in ours); requests outside the switch's dialogs pass the per-source rate limit
//! and the inbound ACL (`guard.rs`) before a transaction exists for them, and are refused while
//! [`StackOptions::max_server_transactions`] are live or the switch's queue ([`FRONT_QUEUE`]) is
//! nearly full; inbound TCP/TLS connections are capped in number, per source and in total, and
//! closed when idle; each connection's writer queue is bounded.
//!
//! Requests from the network and the responses to the transactions the switch started with
//! [`SipStack::request_tagged`] share one channel ([`SipEvent`]), so they reach the call core in
//! the order they arrived: a BYE sent right behind its 200 OK can never overtake it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify};

use crate::guard::{Dialogs, RateLimiter, SourceKey, Verdict};
use crate::msg::{self, Framing, Message, NameAddr, Request, Response};
use crate::transaction::{
    self, Event, Output, Peer, TimerConfig, TransactionLayer, Transport, TxId,
};

/// Messages read from the sockets and not yet taken by the SIP task.
pub const NET_QUEUE: usize = 4096;
/// Events for the switch not yet taken by it.
pub const FRONT_QUEUE: usize = 16_384;
/// Room kept in [`FRONT_QUEUE`] for responses and requests in dialogs: a new request from
/// outside is refused when less is free.
pub const FRONT_RESERVE: usize = 4096;
/// Messages waiting to be written to one inbound TCP/TLS connection; a peer that reads none of
/// them is not worth more, and is disconnected.
pub const WRITE_QUEUE: usize = 256;
/// The same for a connection the switch opened to a gateway (a burst of calls to a trunk).
pub const WRITE_QUEUE_OUT: usize = 4096;
/// `Retry-After` of the 503 that refuses a request over the rate limit on TCP/TLS.
pub const RETRY_AFTER_SECS: u32 = 5;

/// What the transport may be made to hold, and how fast one source may ask for it.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// operator.md `sip.rate_limit`: requests per second one source address (an IPv4 address,
    /// an IPv6 /64) may send outside its dialogs; 0 turns the limit off.
    pub rate_limit: u32,
    /// `Server` header of the responses the transport sends on its own (403, 503).
    pub server: Option<String>,
    /// Inbound TCP/TLS connections at once, all sources together.
    pub max_connections: usize,
    /// Inbound TCP/TLS connections at once from one source address.
    pub max_connections_per_source: usize,
    /// An inbound connection that has not delivered a message in this long is closed.
    pub first_message_timeout: Duration,
    /// A connection with no message for this long is closed, unless a dialog lives on it.
    pub idle_timeout: Duration,
    /// A message begun on a connection must be complete within this (slow-drip peers).
    pub message_timeout: Duration,
    /// Live server transactions beyond which new requests from outside are refused.
    pub max_server_transactions: usize,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            rate_limit: 0,
            server: None,
            max_connections: 1024,
            max_connections_per_source: 64,
            first_message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            message_timeout: Duration::from_secs(10),
            max_server_transactions: 32_768,
        }
    }
}

/// operator.md `sip.inbound_acl`, as the transport applies it: an INVITE outside any dialog from
/// a source that is not allowed is answered 403 at once, statelessly, before any transaction,
/// call or app hears of it.
#[derive(Clone)]
pub struct InboundFilter {
    pub allowed: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
    /// The 403's `Reason` header.
    pub reason: Option<String>,
}

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
    Filter(InboundFilter),
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
    /// Gauges, refreshed every second.
    pub transactions: AtomicU64,
    pub connections: AtomicU64,
    pub sources: AtomicU64,
    pub dialogs: AtomicU64,
    pub dropped: Dropped,
}

/// `botstream_sip_dropped_total{reason}`: what the transport refused before it cost anything.
#[derive(Debug, Default)]
pub struct Dropped {
    /// Requests over the per-source rate (dropped on UDP, 503 on TCP/TLS).
    pub rate: AtomicU64,
    /// Requests from a source ignored for having been over its rate for 10 s.
    pub banned: AtomicU64,
    /// INVITEs from outside the inbound ACL (answered 403 statelessly).
    pub acl: AtomicU64,
    /// TCP/TLS connections refused: too many from the source, or in all.
    pub connections: AtomicU64,
    /// TCP/TLS connections closed: idle, no first message, a message that never completed, or a
    /// peer that does not read.
    pub timeout: AtomicU64,
    /// Requests refused, or events not handed on, because the server transactions or the
    /// switch's queue were full.
    pub overload: AtomicU64,
}

impl Dropped {
    /// Every reason with its count, for /metrics.
    pub fn all(&self) -> [(&'static str, u64); 6] {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("rate", n(&self.rate)),
            ("banned", n(&self.banned)),
            ("acl", n(&self.acl)),
            ("connections", n(&self.connections)),
            ("timeout", n(&self.timeout)),
            ("overload", n(&self.overload)),
        ]
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Inbound TCP/TLS connections, counted where they are accepted.
#[derive(Default)]
struct ConnCounts {
    total: usize,
    per_source: HashMap<SourceKey, usize>,
}

/// A place among the inbound connections, given back when the connection ends.
struct ConnSlot {
    counts: Arc<Mutex<ConnCounts>>,
    key: SourceKey,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_source.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.key);
            }
        }
    }
}

/// What the acceptors share with the SIP task.
struct Accepting {
    counts: Arc<Mutex<ConnCounts>>,
    opts: StackOptions,
    stats: Arc<SipStats>,
}

impl Accepting {
    fn admit(&self, from: SocketAddr) -> Option<ConnSlot> {
        let key = SourceKey::of(from.ip());
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.per_source.get(&key).copied().unwrap_or(0);
        if c.total >= self.opts.max_connections || mine >= self.opts.max_connections_per_source {
            drop(c);
            bump(&self.stats.dropped.connections);
            tracing::debug!(%from, "TCP/TLS connection refused: too many");
            return None;
        }
        c.total += 1;
        *c.per_source.entry(key).or_default() += 1;
        Some(ConnSlot {
            counts: self.counts.clone(),
            key,
        })
    }
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
    ) -> std::io::Result<(SipStack, mpsc::Receiver<SipEvent>)> {
        Self::bind_with(listen, tls, timers, StackOptions::default()).await
    }

    /// [`SipStack::bind`] with the transport's limits.
    pub async fn bind_with(
        listen: SocketAddr,
        tls: TlsOptions,
        timers: TimerConfig,
        opts: StackOptions,
    ) -> std::io::Result<(SipStack, mpsc::Receiver<SipEvent>)> {
        let udp = Arc::new(UdpSocket::bind(listen).await?);
        let local_addr = udp.local_addr()?;
        let tcp = TcpListener::bind(local_addr).await?;
        let tls_listener = match &tls.listen {
            Some((addr, config)) => Some((TcpListener::bind(addr).await?, config.clone())),
            None => None,
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (front_tx, front_rx) = mpsc::channel(FRONT_QUEUE);
        let (net_tx, net_rx) = mpsc::channel(NET_QUEUE);
        let stats = Arc::new(SipStats::default());
        let accepting = Arc::new(Accepting {
            counts: Arc::default(),
            opts: opts.clone(),
            stats: stats.clone(),
        });
        tokio::spawn(udp_reader(udp.clone(), net_tx.clone()));
        tokio::spawn(tcp_acceptor(tcp, net_tx.clone(), accepting.clone()));
        let tls_local = match tls_listener {
            Some((listener, config)) => {
                let addr = listener.local_addr().ok();
                tokio::spawn(tls_acceptor(
                    listener,
                    tokio_rustls::TlsAcceptor::from(config),
                    net_tx.clone(),
                    accepting.clone(),
                ));
                addr
            }
            None => None,
        };
        let driver = Driver {
            layer: TransactionLayer::new(timers),
            udp,
            tls_client: tls.client.clone(),
            conns: HashMap::new(),
            connecting: HashMap::new(),
            net_tx,
            clients: HashMap::new(),
            front: front_tx,
            stats: stats.clone(),
            limiter: RateLimiter::new(opts.rate_limit),
            dialogs: Dialogs::new(),
            filter: None,
            opts,
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

    /// Applies the inbound ACL in the transport from now on (see [`InboundFilter`]).
    pub fn set_inbound_filter(&self, filter: InboundFilter) {
        let _ = self.cmd.send(Command::Filter(filter));
    }
}

enum NetEvent {
    Datagram(SocketAddr, Vec<u8>),
    Stream(Transport, SocketAddr, Message),
    StreamMalformed(SocketAddr),
    /// A TCP or TLS connection is up; messages to that peer go through its writer.
    StreamOpened(Box<Opened>),
    StreamClosed(Peer, u64),
    /// A connection's message took longer than `message_timeout`: it was closed.
    StreamTimedOut(Peer),
    /// Opening a connection to this peer failed (or took over 5 s).
    ConnectFailed(Peer),
}

struct Opened {
    peer: Peer,
    id: u64,
    writer: mpsc::Sender<Vec<u8>>,
    stop: Arc<Notify>,
    inbound: bool,
}

/// A live TCP/TLS connection, as the SIP task keeps it.
struct Conn {
    id: u64,
    writer: mpsc::Sender<Vec<u8>>,
    /// Ends the reader (and, with the writer dropped, the socket).
    stop: Arc<Notify>,
    inbound: bool,
    last_message: Instant,
    got_message: bool,
}

struct Driver {
    layer: TransactionLayer,
    udp: Arc<UdpSocket>,
    tls_client: Option<Arc<rustls::ClientConfig>>,
    conns: HashMap<Peer, Conn>,
    /// Connections being opened, with what waits to go out on them: one attempt per peer, so
    /// a burst of requests to a trunk opens one connection, not one each.
    connecting: HashMap<Peer, Vec<Vec<u8>>>,
    net_tx: mpsc::Sender<NetEvent>,
    clients: HashMap<TxId, ClientSink>,
    front: mpsc::Sender<SipEvent>,
    stats: Arc<SipStats>,
    limiter: RateLimiter,
    dialogs: Dialogs,
    filter: Option<InboundFilter>,
    opts: StackOptions,
}

async fn udp_reader(sock: Arc<UdpSocket>, out: mpsc::Sender<NetEvent>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                // Waits while the SIP task is behind: the kernel's buffer absorbs a burst.
                if out
                    .send(NetEvent::Datagram(from, buf[..n].to_vec()))
                    .await
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

async fn tcp_acceptor(
    listener: TcpListener,
    out: mpsc::Sender<NetEvent>,
    accepting: Arc<Accepting>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                // Over the caps the socket is closed at once (dropped).
                let Some(slot) = accepting.admit(from) else {
                    continue;
                };
                let peer = Peer {
                    transport: Transport::Tcp,
                    addr: from,
                };
                let timeout = accepting.opts.message_timeout;
                spawn_connection(stream, peer, out.clone(), Some(slot), timeout).await;
            }
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
    out: mpsc::Sender<NetEvent>,
    accepting: Arc<Accepting>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                // The handshake holds a place among the connections, so a flood of handshakes
                // that never finish is capped like one of idle connections.
                let Some(slot) = accepting.admit(from) else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let out = out.clone();
                let timeout = accepting.opts.message_timeout;
                let handshake = accepting
                    .opts
                    .first_message_timeout
                    .min(Duration::from_secs(5));
                let stats = accepting.stats.clone();
                // The handshake runs apart, so one slow or hostile client holds up no one.
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let peer = Peer {
                                transport: Transport::Tls,
                                addr: from,
                            };
                            spawn_connection(tls, peer, out, Some(slot), timeout).await
                        }
                        Ok(Err(_)) => tracing::debug!(%from, "TLS handshake failed"),
                        Err(_) => {
                            bump(&stats.dropped.timeout);
                            tracing::debug!(%from, "TLS handshake not done in time");
                        }
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

static CONN_IDS: AtomicU64 = AtomicU64::new(1);

/// A connected stream (TCP or TLS): one task writes what the driver sends, one reads and frames.
/// `slot` is the inbound connection's place under the caps (none for connections we opened).
async fn spawn_connection<S>(
    stream: S,
    peer: Peer,
    out: mpsc::Sender<NetEvent>,
    slot: Option<ConnSlot>,
    message_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let id = CONN_IDS.fetch_add(1, Ordering::Relaxed);
    let queue = if slot.is_some() {
        WRITE_QUEUE
    } else {
        WRITE_QUEUE_OUT
    };
    let (writer_tx, mut writer_rx) = mpsc::channel::<Vec<u8>>(queue);
    let stop = Arc::new(Notify::new());
    let opened = Opened {
        peer,
        id,
        writer: writer_tx,
        stop: stop.clone(),
        inbound: slot.is_some(),
    };
    if out
        .send(NetEvent::StreamOpened(Box::new(opened)))
        .await
        .is_err()
    {
        return;
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    tokio::spawn(async move {
        while let Some(bytes) = writer_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        // Held while the connection lives.
        let _slot = slot;
        let mut decoder = msg::StreamDecoder::new();
        let mut chunk = vec![0u8; 16384];
        // When the message now in the decoder began.
        let mut begun: Option<tokio::time::Instant> = None;
        loop {
            let deadline = begun.map(|b| b + message_timeout);
            let read = tokio::select! {
                _ = stop.notified() => return,
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let _ = out.send(NetEvent::StreamTimedOut(peer)).await;
                    break;
                }
                r = rd.read(&mut chunk) => r,
            };
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => decoder.push(&chunk[..n]),
            }
            loop {
                match decoder.next_message() {
                    Ok(Some(m)) => {
                        if out
                            .send(NetEvent::Stream(peer.transport, peer.addr, m))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        begun = None;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        // A stream cannot be resynchronised after a framing error (§18.3).
                        let _ = out.send(NetEvent::StreamMalformed(peer.addr)).await;
                        let _ = out.send(NetEvent::StreamClosed(peer, id)).await;
                        return;
                    }
                }
            }
            if decoder.pending() == 0 {
                begun = None;
            } else if begun.is_none() {
                begun = Some(tokio::time::Instant::now());
            }
        }
        let _ = out.send(NetEvent::StreamClosed(peer, id)).await;
    });
}

/// A request's tag for us: the To tag (in a dialog the far end addresses our tag there).
fn to_tag(r: &Request) -> Option<String> {
    r.headers
        .get("To")
        .and_then(NameAddr::parse)
        .and_then(|n| n.tag().map(str::to_string))
}

fn from_tag(headers: &msg::Headers) -> Option<String> {
    headers
        .get("From")
        .and_then(NameAddr::parse)
        .and_then(|n| n.tag().map(str::to_string))
}

impl Driver {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Command>,
        mut net: mpsc::Receiver<NetEvent>,
    ) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        let mut sweeps = 0u64;
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
                    sweeps += 1;
                    self.sweep(Instant::now(), sweeps.is_multiple_of(5));
                }
                else => return,
            }
            self.drain();
        }
    }

    /// Every second: idle connections, expired sources and dialogs, the gauges.
    fn sweep(&mut self, now: Instant, clients: bool) {
        if clients {
            // Owners that went away no longer need 2xx retransmissions.
            let layer = &self.layer;
            self.clients.retain(|id, s| match s {
                ClientSink::Own(s) => !s.is_closed(),
                ClientSink::Tagged(_) => layer.has_client(*id),
            });
        }
        self.limiter.sweep(now);
        self.dialogs.sweep(now);
        let (first, idle) = (self.opts.first_message_timeout, self.opts.idle_timeout);
        let dialogs = &self.dialogs;
        let stale: Vec<Peer> = self
            .conns
            .iter()
            .filter(|(peer, c)| {
                let limit = if c.got_message || !c.inbound {
                    idle
                } else {
                    first
                };
                now.saturating_duration_since(c.last_message) >= limit && !dialogs.has_peer(peer)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in stale {
            tracing::debug!(peer = %peer.addr, "closed an idle TCP/TLS connection");
            bump(&self.stats.dropped.timeout);
            self.close(&peer);
        }
        let st = &self.stats;
        st.transactions
            .store(self.layer.len() as u64, Ordering::Relaxed);
        st.connections
            .store(self.conns.len() as u64, Ordering::Relaxed);
        st.sources
            .store(self.limiter.len() as u64, Ordering::Relaxed);
        st.dialogs
            .store(self.dialogs.len() as u64, Ordering::Relaxed);
    }

    fn close(&mut self, peer: &Peer) {
        if let Some(c) = self.conns.remove(peer) {
            c.stop.notify_one();
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
                self.outgoing_request(now, &request);
                let id = self.layer.send_request(now, request, peer);
                self.clients.insert(id, ClientSink::Own(events));
                let _ = tx_id.send(id);
            }
            Command::RequestTagged { request, peer, tag } => {
                self.outgoing_request(now, &request);
                let id = self.layer.send_request(now, request, peer);
                self.clients.insert(id, ClientSink::Tagged(tag));
            }
            Command::Response { tx, response } => {
                // A 2xx to an INVITE makes (or refreshes) a dialog: our tag is in its To.
                let invite_2xx = (200..300).contains(&response.code)
                    && response.cseq().is_some_and(|c| c.method == "INVITE");
                if invite_2xx {
                    let call_id = response.headers.get("Call-ID");
                    let tag = response
                        .headers
                        .get("To")
                        .and_then(NameAddr::parse)
                        .and_then(|n| n.tag().map(str::to_string));
                    if let (Some(call_id), Some(tag), Some(peer)) =
                        (call_id, tag, self.layer.server_peer(tx))
                    {
                        self.dialogs.established(now, call_id, &tag, peer);
                    }
                }
                self.layer.send_response(now, tx, response)
            }
            Command::Stateless { peer, message } => self.layer.send_stateless(peer, &message),
            Command::Filter(f) => self.filter = Some(f),
        }
    }

    /// Our BYE ends its dialog (after its answer has had time to come).
    fn outgoing_request(&mut self, now: Instant, r: &Request) {
        if r.method == "BYE" {
            if let (Some(call_id), Some(tag)) = (r.call_id(), from_tag(&r.headers)) {
                self.dialogs.ending(now, call_id, &tag);
            }
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
                // A source with no dialog sends nothing the limit spares: it is counted before
                // its datagram costs a parse. Responses are spared (they may be answers to us).
                let lead = bytes
                    .iter()
                    .position(|b| *b != b'\r' && *b != b'\n')
                    .unwrap_or(0);
                let response = bytes[lead..].starts_with(b"SIP/");
                let counted =
                    self.limiter.enabled() && !response && !self.dialogs.has_ip(from.ip());
                if counted && !self.admit(now, peer, None) {
                    return;
                }
                match msg::parse(&bytes, Framing::Datagram) {
                    Ok((m, _)) => self.incoming(now, peer, m, counted),
                    Err(e) => {
                        if !counted {
                            // Junk counts against its source all the same.
                            let _ = self.limiter.check(now, from.ip());
                        }
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
                if let Some(c) = self.conns.get_mut(&peer) {
                    c.last_message = now;
                    c.got_message = true;
                }
                self.incoming(now, peer, m, false);
            }
            NetEvent::StreamMalformed(from) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, "closed a TCP connection after a malformed message");
            }
            NetEvent::StreamTimedOut(peer) => {
                bump(&self.stats.dropped.timeout);
                tracing::debug!(peer = %peer.addr, "closed a connection whose message never completed");
            }
            NetEvent::StreamOpened(o) => {
                let Opened {
                    peer,
                    id,
                    writer,
                    stop,
                    inbound,
                } = *o;
                // Queued before the connection was up; sent first, in order, so a later
                // transmit cannot overtake them.
                for bytes in self.connecting.remove(&peer).unwrap_or_default() {
                    let _ = writer.try_send(bytes);
                }
                let conn = Conn {
                    id,
                    writer,
                    stop,
                    inbound,
                    last_message: now,
                    got_message: false,
                };
                if let Some(old) = self.conns.insert(peer, conn) {
                    old.stop.notify_one();
                }
            }
            NetEvent::StreamClosed(peer, id) => {
                if self.conns.get(&peer).is_some_and(|c| c.id == id) {
                    self.conns.remove(&peer);
                }
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

    /// The rate limit for one message from outside the switch's dialogs: false when it is
    /// refused (a request over the rate on TCP/TLS gets a 503 first).
    fn admit(&mut self, now: Instant, peer: Peer, request: Option<&Request>) -> bool {
        let was_banned = self.limiter.banned(now, peer.addr.ip());
        match self.limiter.check(now, peer.addr.ip()) {
            Verdict::Pass => true,
            Verdict::Over => {
                bump(&self.stats.dropped.rate);
                if let Some(r) = request {
                    self.refuse(peer, r, 503);
                }
                false
            }
            Verdict::Banned => {
                bump(&self.stats.dropped.banned);
                if !was_banned {
                    tracing::warn!(source = %peer.addr.ip(), "SIP source over its rate for 10 s: ignored for 60 s");
                }
                false
            }
        }
    }

    /// A stateless answer on a reliable transport (on UDP, silence costs the flood more).
    fn refuse(&mut self, peer: Peer, r: &Request, code: u16) {
        if !peer.transport.reliable() || r.method == "ACK" || r.top_via().is_none() {
            return;
        }
        let mut resp = transaction::response_to(r, code, Some(&crate::dialog::new_tag()));
        if code == 503 {
            resp.headers
                .push("Retry-After", RETRY_AFTER_SECS.to_string());
        }
        if let Some(s) = &self.opts.server {
            resp.headers.push("Server", s.clone());
        }
        self.layer.send_stateless(peer, &Message::Response(resp));
    }

    /// A request that fails `msg::validate` is answered 400 (RFC 3261 §8.2). A response is an
    /// answer to something we sent, and dropping it loses the call: it is dropped only when
    /// `msg::check_usable` says the switch could not act on it (no top Via, CSeq, Call-ID or
    /// readable From/To, or a 2xx to INVITE without a usable Contact or Record-Route). One that is
    /// sloppy in a header the switch does not read reaches its transaction. Both are counted as
    /// malformed.
    ///
    /// Before any of that, a request outside the switch's dialogs passes the guard: the rate
    /// limit (unless `counted` already), the inbound ACL for INVITEs, and the caps.
    fn incoming(&mut self, now: Instant, peer: Peer, m: Message, counted: bool) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match &m {
            Message::Request(r) => {
                let tag = to_tag(r);
                let call_id = r.call_id().unwrap_or_default();
                let in_dialog = tag
                    .as_deref()
                    .is_some_and(|t| self.dialogs.touch(now, call_id, t));
                if in_dialog {
                    if r.method == "BYE" {
                        if let Some(t) = &tag {
                            self.dialogs.ending(now, call_id, t);
                        }
                    }
                } else if !self.guard(now, peer, r, tag.is_some(), counted) {
                    return;
                }
            }
            Message::Response(r) => {
                if self.layer.matches_client(r) {
                    // Our INVITE answered: a dialog, with our tag in From.
                    let invite_2xx = (200..300).contains(&r.code)
                        && r.cseq().is_some_and(|c| c.method == "INVITE");
                    if let (true, Some(call_id), Some(tag)) =
                        (invite_2xx, r.headers.get("Call-ID"), from_tag(&r.headers))
                    {
                        self.dialogs.established(now, call_id, &tag, peer);
                    }
                } else if self.limiter.enabled() && !counted {
                    // An answer to nothing we sent is junk, and counts like it.
                    let _ = self.limiter.check(now, peer.addr.ip());
                }
            }
        }
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

    /// A request outside the switch's dialogs: false when the transport refuses it here.
    fn guard(
        &mut self,
        now: Instant,
        peer: Peer,
        r: &Request,
        tagged: bool,
        counted: bool,
    ) -> bool {
        if !counted && self.limiter.enabled() && !self.admit(now, peer, Some(r)) {
            return false;
        }
        // The ACL: a new call from a source that may not place one is refused before any
        // transaction, call or app hears of it. (A retransmission gets the same 403 again.)
        if r.method == "INVITE" && !tagged {
            if let Some(f) = &self.filter {
                if !(f.allowed)(peer.addr.ip()) {
                    bump(&self.stats.dropped.acl);
                    tracing::debug!(from = %peer.addr, "inbound INVITE refused by the ACL");
                    let reason = f.reason.clone();
                    let mut resp =
                        transaction::response_to(r, 403, Some(&crate::dialog::new_tag()));
                    if let Some(s) = &self.opts.server {
                        resp.headers.push("Server", s.clone());
                    }
                    if let Some(reason) = reason {
                        resp.headers.push("Reason", reason);
                    }
                    if r.top_via().is_some() {
                        self.layer.send_stateless(peer, &Message::Response(resp));
                    }
                    return false;
                }
            }
        }
        // Room: a retransmission only repeats an answer; a new transaction needs a place, and
        // the switch room to hear of it.
        if r.method != "ACK"
            && !self.layer.matches_server(r)
            && (self.layer.server_len() >= self.opts.max_server_transactions
                || self.front.capacity() < FRONT_RESERVE)
        {
            bump(&self.stats.dropped.overload);
            self.refuse(peer, r, 503);
            return false;
        }
        true
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
                let bytes = match self.conns.get(&peer) {
                    Some(c) => match c.writer.try_send(bytes) {
                        Ok(()) => return,
                        // The peer reads nothing of what we write: not worth more memory.
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::debug!(peer = %peer.addr, "closed a connection that does not read");
                            bump(&self.stats.dropped.timeout);
                            self.close(&peer);
                            return;
                        }
                        // The connection's writer is gone (closed): open a new one.
                        Err(mpsc::error::TrySendError::Closed(bytes)) => {
                            self.conns.remove(&peer);
                            bytes
                        }
                    },
                    None => bytes,
                };
                if let Some(waiting) = self.connecting.get_mut(&peer) {
                    if waiting.len() < WRITE_QUEUE_OUT {
                        waiting.push(bytes);
                    }
                    return;
                }
                // Open a connection and send once it is up; a failure ends the transactions
                // that were waiting for it.
                self.connecting.insert(peer, vec![bytes]);
                let net = self.net_tx.clone();
                let tls = self.tls_client.clone();
                let timeout = self.opts.message_timeout;
                tokio::spawn(async move {
                    let connect = async {
                        let tcp = TcpStream::connect(peer.addr).await.ok()?;
                        if peer.transport == Transport::Tcp {
                            return Some(Box::new(tcp) as Box<dyn Stream>);
                        }
                        // Trunks are addressed by IP here, so the certificate is not matched to a
                        // name (FreeSWITCH's default "tls-verify-policy none" likewise).
                        let connector = tokio_rustls::TlsConnector::from(tls?);
                        let name = rustls::pki_types::ServerName::IpAddress(peer.addr.ip().into());
                        let stream = connector.connect(name, tcp).await.ok()?;
                        Some(Box::new(stream) as Box<dyn Stream>)
                    };
                    match tokio::time::timeout(Duration::from_secs(5), connect).await {
                        Ok(Some(stream)) => {
                            spawn_connection(stream, peer, net, None, timeout).await
                        }
                        _ => {
                            let _ = net.send(NetEvent::ConnectFailed(peer)).await;
                        }
                    }
                });
            }
        }
    }

    fn client_event(&mut self, sink: &ClientSink, event: ClientEvent) {
        match sink {
            ClientSink::Own(s) => {
                let _ = s.send(event);
            }
            ClientSink::Tagged(tag) => {
                let ev = SipEvent::Client { tag: *tag, event };
                self.hand_on(ev);
            }
        }
    }

    /// Hands the switch an event; never waits. The queue is only full when the switch has been
    /// stuck for thousands of events, and then what does not fit is counted and logged.
    fn hand_on(&mut self, ev: SipEvent) {
        if let Err(e) = self.front.try_send(ev) {
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                bump(&self.stats.dropped.overload);
                tracing::warn!("the switch's SIP queue is full: an event was dropped");
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
                let sink = if done {
                    self.clients.remove(&tx)
                } else {
                    self.clients.get(&tx).map(ClientSink::clone_ref)
                };
                if let Some(s) = sink {
                    self.client_event(&s, event);
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

    fn server(&mut self, ev: ServerEvent) {
        self.hand_on(SipEvent::Server(ev));
    }
}

/// TCP or TLS, once connected.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

impl ClientSink {
    fn clone_ref(&self) -> ClientSink {
        match self {
            ClientSink::Own(s) => ClientSink::Own(s.clone()),
            ClientSink::Tagged(t) => ClientSink::Tagged(*t),
        }
    }
}
