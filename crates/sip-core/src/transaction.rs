//! The transaction layer of RFC 3261 §17 (with the RFC 6026 "Accepted" states), as a plain state
//! machine: the shell feeds it messages and the time, and drains what to send, what to tell the
//! transaction user, and when to wake it next. Nothing here reads a clock or touches a socket, so
//! "INVITE lost twice, answered after Timer A fired at 0.5 s and 1 s" is a test that runs in
//! microseconds.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::msg::{Message, Request, Response};

/// RFC 3261 §17.1.1.1 base timers, in a value so tests (and odd networks) can change them.
#[derive(Debug, Clone, Copy)]
pub struct TimerConfig {
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// How long a message may stay in the network (5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Reliable transports get no retransmissions and zero-length wait states (§17.1.1.2).
    pub fn reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
    pub fn from_name(s: &str) -> Option<Transport> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }
}

/// Where a message goes or came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

/// The RFC 3261 timers, each named by its letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// §17.1.1.2: INVITE retransmission (UDP), doubling from T1.
    A,
    /// §17.1.1.2: INVITE transaction timeout, 64·T1.
    B,
    /// §17.1.1.2: wait for response retransmissions after a non-2xx final (32 s on UDP).
    D,
    /// §17.1.2.2: non-INVITE retransmission (UDP), doubling from T1 up to T2.
    E,
    /// §17.1.2.2: non-INVITE transaction timeout, 64·T1.
    F,
    /// §17.2.1: INVITE non-2xx final response retransmission (UDP).
    G,
    /// §17.2.1: wait for the ACK of a non-2xx final, 64·T1.
    H,
    /// §17.2.1: absorb ACK retransmissions (T4 on UDP).
    I,
    /// §17.2.2: absorb non-INVITE request retransmissions (64·T1 on UDP).
    J,
    /// §17.1.2.2: absorb non-INVITE response retransmissions (T4 on UDP).
    K,
    /// RFC 6026 §7.1: client INVITE "Accepted" lifetime (64·T1), so 2xx retransmissions still
    /// reach the TU for a fresh ACK.
    M,
    /// RFC 6026 §7.1: server INVITE "Accepted" lifetime; also drives the 2xx retransmission of
    /// §13.3.1.4 until the ACK comes (the UAS core's duty, kept here next to its twin Timer G).
    L,
    /// §13.3.1.4: 2xx retransmission, doubling from T1 up to T2.
    G2xx,
    /// §9.1: a CANCELled INVITE still without a final response 64·T1 after the CANCEL is
    /// destroyed (Timer B stopped at its provisional, so nothing else would end it).
    Cancelled,
    /// A new server transaction the TU has not answered: dropped at 64·T1 (the client gave up by
    /// Timer B/F), or [`PROCEEDING_LIMIT`] after an INVITE's last provisional. RFC 3261 leaves a
    /// server transaction without a final response alive for ever; a TU that forgets one (or a
    /// flood of requests it never answers) must not keep it.
    Unanswered,
}

/// How long an INVITE server transaction may stay in Proceeding after its last provisional
/// (RFC 3261 §16.6's Timer C for proxies is "greater than 3 minutes").
pub const PROCEEDING_LIMIT: Duration = Duration::from_secs(200);

#[derive(Debug)]
pub enum Output {
    Transmit { peer: Peer, bytes: Vec<u8> },
    Event(Event),
}

#[derive(Debug)]
pub enum Event {
    /// A response for one of our client transactions (2xx retransmissions included, so the TU
    /// can re-send its ACK). `source` is where it came from: a digest challenge is only answered
    /// when it comes from the party the request was sent to.
    Response {
        tx: TxId,
        response: Response,
        source: Peer,
    },
    /// Timer B or F fired, or the transport failed: no final response will come.
    Timeout { tx: TxId },
    /// A new request; `tx` is `None` for an ACK (it has no transaction of its own).
    Request {
        tx: Option<TxId>,
        request: Request,
        source: Peer,
    },
    /// A CANCEL matched a live server INVITE transaction; 200 to the CANCEL was already sent.
    Cancelled { invite_tx: TxId, request: Request },
    /// A 2xx we sent was never acknowledged within 64·T1 (§13.3.1.4): the TU should send BYE.
    AckTimeout { tx: TxId, call_id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
}

#[derive(Debug)]
struct ClientTx {
    invite: bool,
    state: State,
    peer: Peer,
    request: Vec<u8>,
    /// Kept to build the ACK for a non-2xx final (§17.1.1.3).
    original: Request,
    interval: Duration,
    key: (String, String),
}

#[derive(Debug)]
struct ServerTx {
    invite: bool,
    state: State,
    peer: Peer,
    last_response: Option<Vec<u8>>,
    interval: Duration,
    key: ServerKey,
    /// For the 2xx retransmission: matched against the ACK by Call-ID and CSeq number.
    ack_match: Option<(String, u32)>,
}

/// §17.2.3: branch, sent-by and method (ACK folded onto INVITE). Requests without the magic
/// cookie get the RFC 2543 fallback of Call-ID, From tag, CSeq number and Via.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: String,
    sent_by: String,
    method: String,
}

pub struct TransactionLayer {
    cfg: TimerConfig,
    next_id: u64,
    clients: HashMap<TxId, ClientTx>,
    client_keys: HashMap<(String, String), TxId>,
    servers: HashMap<TxId, ServerTx>,
    server_keys: HashMap<ServerKey, TxId>,
    /// Accepted INVITE server transactions still waiting for the ACK of their 2xx, by Call-ID
    /// and CSeq number: an ACK finds its transaction without a scan.
    acks: HashMap<(String, u32), TxId>,
    timers: BTreeMap<(Instant, u64), (TxId, Timer)>,
    /// Each transaction's armed timers, so removing one costs its own timers, not a scan.
    tx_timers: HashMap<TxId, Vec<(Instant, u64)>>,
    timer_seq: u64,
    out: VecDeque<Output>,
}

fn server_key(req: &Request) -> Option<ServerKey> {
    let via = req.top_via()?;
    let sent_by = format!(
        "{}:{}",
        via.host.to_ascii_lowercase(),
        via.port.unwrap_or(0)
    );
    let method = match req.method.as_str() {
        "ACK" => "INVITE".to_string(),
        m => m.to_string(),
    };
    let branch = match via.branch() {
        Some(b) if b.starts_with("z9hG4bK") => b.to_string(),
        _ => {
            // RFC 2543 peers: identify by the dialog-ish fields instead of the branch.
            let from_tag = req
                .headers
                .get("From")
                .and_then(crate::msg::NameAddr::parse)
                .and_then(|n| n.tag().map(str::to_string))
                .unwrap_or_default();
            let seq = req.cseq().map(|c| c.seq).unwrap_or(0);
            format!(
                "2543|{}|{}|{}|{}",
                req.call_id().unwrap_or(""),
                from_tag,
                seq,
                via.branch().unwrap_or("")
            )
        }
    };
    Some(ServerKey {
        branch,
        sent_by,
        method,
    })
}

impl TransactionLayer {
    pub fn new(cfg: TimerConfig) -> Self {
        TransactionLayer {
            cfg,
            next_id: 1,
            clients: HashMap::new(),
            client_keys: HashMap::new(),
            servers: HashMap::new(),
            server_keys: HashMap::new(),
            acks: HashMap::new(),
            timers: BTreeMap::new(),
            tx_timers: HashMap::new(),
            timer_seq: 0,
            out: VecDeque::new(),
        }
    }

    pub fn config(&self) -> TimerConfig {
        self.cfg
    }

    fn id(&mut self) -> TxId {
        self.next_id += 1;
        TxId(self.next_id)
    }

    fn arm(&mut self, at: Instant, tx: TxId, t: Timer) {
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), (tx, t));
        self.tx_timers
            .entry(tx)
            .or_default()
            .push((at, self.timer_seq));
    }

    /// Cancels every armed timer of `tx` of kind `t`.
    fn disarm(&mut self, tx: TxId, t: Timer) {
        let Some(keys) = self.tx_timers.get_mut(&tx) else {
            return;
        };
        let timers = &mut self.timers;
        keys.retain(|k| match timers.get(k) {
            Some((_, kind)) if *kind == t => {
                timers.remove(k);
                false
            }
            _ => true,
        });
    }

    /// Forgets every timer of a transaction that is gone.
    fn disarm_all(&mut self, tx: TxId) {
        for k in self.tx_timers.remove(&tx).unwrap_or_default() {
            self.timers.remove(&k);
        }
    }

    fn transmit(&mut self, peer: Peer, bytes: Vec<u8>) {
        self.out.push_back(Output::Transmit { peer, bytes });
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Live transactions, for metrics and leak tests.
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    /// Live server transactions (the ones the network can create).
    pub fn server_len(&self) -> usize {
        self.servers.len()
    }

    /// Armed timers (bounded by a few per live transaction; for leak tests).
    pub fn timer_len(&self) -> usize {
        self.timers.len()
    }

    /// Whether a response belongs to one of our client transactions (§17.1.3).
    pub fn matches_client(&self, response: &Response) -> bool {
        let Some(branch) = response
            .top_via()
            .and_then(|v| v.branch().map(str::to_string))
        else {
            return false;
        };
        let Some(method) = response.cseq().map(|c| c.method) else {
            return false;
        };
        self.client_keys.contains_key(&(branch, method))
    }

    /// Whether a request is a retransmission of (or the non-2xx ACK for) a live server
    /// transaction.
    pub fn matches_server(&self, request: &Request) -> bool {
        server_key(request).is_some_and(|k| self.server_keys.contains_key(&k))
    }

    /// Where a server transaction's responses go.
    pub fn server_peer(&self, tx: TxId) -> Option<Peer> {
        self.servers.get(&tx).map(|s| s.peer)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a client transaction. The request must carry its top Via with a branch.
    /// ACK requests must go through [`Self::send_stateless`] instead.
    pub fn send_request(&mut self, now: Instant, request: Request, peer: Peer) -> TxId {
        let id = self.id();
        let invite = request.method == "INVITE";
        let branch = request
            .top_via()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        // A CANCEL's INVITE: the same branch (§9.1).
        let cancelled = (request.method == "CANCEL").then(|| (branch.clone(), "INVITE".into()));
        let key = (branch, request.method.clone());
        let bytes = request.to_bytes();
        let t1 = self.cfg.t1;
        let tx = ClientTx {
            invite,
            state: if invite {
                State::Calling
            } else {
                State::Trying
            },
            peer,
            request: bytes.clone(),
            original: request,
            interval: t1,
            key: key.clone(),
        };
        self.clients.insert(id, tx);
        self.client_keys.insert(key, id);
        self.transmit(peer, bytes);
        if !peer.transport.reliable() {
            self.arm(now + t1, id, if invite { Timer::A } else { Timer::E });
        }
        self.arm(now + 64 * t1, id, if invite { Timer::B } else { Timer::F });
        if let Some(&invite_tx) = cancelled.and_then(|k| self.client_keys.get(&k)) {
            self.arm(now + 64 * t1, invite_tx, Timer::Cancelled);
        }
        id
    }

    /// Sends without a transaction: the ACK for a 2xx (§13.2.2.4), which belongs to the dialog.
    pub fn send_stateless(&mut self, peer: Peer, message: &Message) {
        self.transmit(peer, message.to_bytes());
    }

    /// The TU's response on a server transaction. Unknown or finished transactions are ignored:
    /// a late answer from a slow TU must not resurrect anything.
    pub fn send_response(&mut self, now: Instant, tx: TxId, response: Response) {
        let cfg = self.cfg;
        let Some(st) = self.servers.get_mut(&tx) else {
            return;
        };
        if !matches!(st.state, State::Trying | State::Proceeding) {
            return;
        }
        let bytes = response.to_bytes();
        st.last_response = Some(bytes.clone());
        let peer = st.peer;
        let code = response.code;
        let reliable = peer.transport.reliable();
        let invite = st.invite;
        if code < 200 {
            st.state = State::Proceeding;
            self.transmit(peer, bytes);
            if invite {
                // The TU is at work on it; give it the Proceeding limit from this provisional.
                self.disarm(tx, Timer::Unanswered);
                self.arm(now + PROCEEDING_LIMIT, tx, Timer::Unanswered);
            }
            return;
        }
        self.disarm(tx, Timer::Unanswered);
        let Some(st) = self.servers.get_mut(&tx) else {
            return;
        };
        if st.invite {
            if code < 300 {
                st.state = State::Accepted;
                st.interval = cfg.t1;
                st.ack_match = response
                    .cseq()
                    .zip(response.headers.get("Call-ID"))
                    .map(|(c, id)| (id.to_string(), c.seq));
                if let Some(key) = st.ack_match.clone() {
                    self.acks.insert(key, tx);
                }
                self.transmit(peer, bytes);
                if !reliable {
                    self.arm(now + cfg.t1, tx, Timer::G2xx);
                }
                self.arm(now + 64 * cfg.t1, tx, Timer::L);
            } else {
                st.state = State::Completed;
                st.interval = cfg.t1;
                self.transmit(peer, bytes);
                if !reliable {
                    self.arm(now + cfg.t1, tx, Timer::G);
                }
                self.arm(now + 64 * cfg.t1, tx, Timer::H);
            }
        } else {
            st.state = State::Completed;
            self.transmit(peer, bytes);
            let wait = if reliable {
                Duration::ZERO
            } else {
                64 * cfg.t1
            };
            self.arm(now + wait, tx, Timer::J);
        }
    }

    /// A message from the network.
    pub fn handle_message(&mut self, now: Instant, source: Peer, message: Message) {
        match message {
            Message::Response(r) => self.handle_response(now, source, r),
            Message::Request(r) => self.handle_request(now, source, r),
        }
    }

    fn handle_response(&mut self, now: Instant, source: Peer, response: Response) {
        let Some(branch) = response
            .top_via()
            .and_then(|v| v.branch().map(str::to_string))
        else {
            return;
        };
        let Some(method) = response.cseq().map(|c| c.method) else {
            return;
        };
        // A response that matches nothing is discarded (§18.1.2), the rest go to their tx.
        let Some(&id) = self.client_keys.get(&(branch, method)) else {
            return;
        };
        let cfg = self.cfg;
        let Some(ct) = self.clients.get_mut(&id) else {
            return;
        };
        let code = response.code;
        let reliable = ct.peer.transport.reliable();
        if ct.invite {
            match (ct.state, code) {
                (State::Calling | State::Proceeding, 100..=199) => {
                    ct.state = State::Proceeding;
                    self.out.push_back(Output::Event(Event::Response {
                        tx: id,
                        response,
                        source,
                    }));
                }
                (State::Calling | State::Proceeding, 200..=299) => {
                    ct.state = State::Accepted;
                    self.arm(now + 64 * cfg.t1, id, Timer::M);
                    self.out.push_back(Output::Event(Event::Response {
                        tx: id,
                        response,
                        source,
                    }));
                }
                (State::Accepted, 200..=299) => {
                    self.out.push_back(Output::Event(Event::Response {
                        tx: id,
                        response,
                        source,
                    }));
                }
                (State::Calling | State::Proceeding, _) if code >= 300 => {
                    ct.state = State::Completed;
                    let ack = non_2xx_ack(&ct.original, &response);
                    let peer = ct.peer;
                    self.transmit(peer, ack.to_bytes());
                    let wait = if reliable {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(32)
                    };
                    self.arm(now + wait, id, Timer::D);
                    self.out.push_back(Output::Event(Event::Response {
                        tx: id,
                        response,
                        source,
                    }));
                }
                (State::Completed, 300..=699) => {
                    // The ACK was lost: send it again (§17.1.1.2).
                    let ack = non_2xx_ack(&ct.original, &response);
                    let peer = ct.peer;
                    self.transmit(peer, ack.to_bytes());
                }
                _ => {}
            }
        } else {
            match (ct.state, code) {
                (State::Trying | State::Proceeding, 100..=199) => {
                    ct.state = State::Proceeding;
                    self.out.push_back(Output::Event(Event::Response {
                        tx: id,
                        response,
                        source,
                    }));
                }
                (State::Trying | State::Proceeding, 200..=699) => {
                    ct.state = State::Completed;
                    let wait = if reliable { Duration::ZERO } else { cfg.t4 };
                    self.arm(now + wait, id, Timer::K);
                    self.out.push_back(Output::Event(Event::Response {
                        tx: id,
                        response,
                        source,
                    }));
                }
                _ => {}
            }
        }
    }

    fn handle_request(&mut self, now: Instant, source: Peer, request: Request) {
        let Some(key) = server_key(&request) else {
            return;
        };
        if let Some(&id) = self.server_keys.get(&key) {
            let cfg = self.cfg;
            let Some(st) = self.servers.get_mut(&id) else {
                return;
            };
            if request.method == "ACK" {
                match st.state {
                    State::Completed => {
                        // §17.2.1: the ACK for our non-2xx final.
                        st.state = State::Confirmed;
                        let wait = if st.peer.transport.reliable() {
                            Duration::ZERO
                        } else {
                            cfg.t4
                        };
                        self.arm(now + wait, id, Timer::I);
                    }
                    State::Accepted => {
                        // The ACK for our 2xx, from a UA that reused the INVITE's branch or an
                        // RFC 2543 peer whose fallback key folds it onto the INVITE: it belongs
                        // to the dialog, not to this transaction (§13.3.1.4, §17.2.3). Swallowing
                        // it here would leave Timer L to end an acknowledged call.
                        if let Some(key) = st.ack_match.take() {
                            if self.acks.get(&key) == Some(&id) {
                                self.acks.remove(&key);
                            }
                        }
                        self.out.push_back(Output::Event(Event::Request {
                            tx: None,
                            request,
                            source,
                        }));
                    }
                    _ => {}
                }
                return;
            }
            // A retransmitted request: repeat our last response, if any.
            if let Some(bytes) = st.last_response.clone() {
                let peer = st.peer;
                if st.state != State::Accepted {
                    self.transmit(peer, bytes);
                }
            }
            return;
        }
        if request.method == "ACK" {
            // The ACK for a 2xx is its own transaction (§17.1.1.3); stop the 2xx retransmission.
            if let (Some(call_id), Some(cseq)) = (request.call_id(), request.cseq()) {
                if let Some(id) = self.acks.remove(&(call_id.to_string(), cseq.seq)) {
                    if let Some(st) = self.servers.get_mut(&id) {
                        st.ack_match = None;
                    }
                }
            }
            self.out.push_back(Output::Event(Event::Request {
                tx: None,
                request,
                source,
            }));
            return;
        }
        let id = self.id();
        let invite = request.method == "INVITE";
        let st = ServerTx {
            invite,
            state: if invite {
                State::Proceeding
            } else {
                State::Trying
            },
            peer: response_peer(&request, source),
            last_response: None,
            interval: self.cfg.t1,
            key: key.clone(),
            ack_match: None,
        };
        self.servers.insert(id, st);
        self.server_keys.insert(key.clone(), id);
        self.arm(now + 64 * self.cfg.t1, id, Timer::Unanswered);
        if request.method == "CANCEL" {
            // §9.2: the CANCEL matches the INVITE with the same branch; answer it here so the TU
            // only has to end the call.
            let invite_key = ServerKey {
                method: "INVITE".into(),
                ..key
            };
            let target = self.server_keys.get(&invite_key).copied();
            let live = target.filter(|t| {
                self.servers
                    .get(t)
                    .is_some_and(|s| s.state == State::Proceeding)
            });
            let code = if live.is_some() { 200 } else { 481 };
            let resp = response_to(&request, code, None);
            self.send_response(now, id, resp);
            if let Some(invite_tx) = live {
                self.out
                    .push_back(Output::Event(Event::Cancelled { invite_tx, request }));
            }
            return;
        }
        self.out.push_back(Output::Event(Event::Request {
            tx: Some(id),
            request,
            source,
        }));
    }

    /// Fires every timer due at `now`. Early calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((&(at, seq), _)) = self.timers.iter().next() {
            if at > now {
                break;
            }
            let Some((tx, timer)) = self.timers.remove(&(at, seq)) else {
                break;
            };
            if let Some(keys) = self.tx_timers.get_mut(&tx) {
                keys.retain(|k| *k != (at, seq));
            }
            self.fire(now, tx, timer);
        }
    }

    fn fire(&mut self, now: Instant, id: TxId, timer: Timer) {
        let cfg = self.cfg;
        match timer {
            Timer::A | Timer::E => {
                let Some(ct) = self.clients.get_mut(&id) else {
                    return;
                };
                let active = match timer {
                    Timer::A => ct.state == State::Calling,
                    _ => matches!(ct.state, State::Trying | State::Proceeding),
                };
                if !active {
                    return;
                }
                let (peer, bytes) = (ct.peer, ct.request.clone());
                ct.interval = if timer == Timer::A {
                    ct.interval * 2
                } else if ct.state == State::Proceeding {
                    cfg.t2
                } else {
                    (ct.interval * 2).min(cfg.t2)
                };
                let next = ct.interval;
                self.transmit(peer, bytes);
                self.arm(now + next, id, timer);
            }
            Timer::B | Timer::F => {
                let Some(ct) = self.clients.get(&id) else {
                    return;
                };
                let pending = match timer {
                    Timer::B => ct.state == State::Calling,
                    _ => matches!(ct.state, State::Trying | State::Proceeding),
                };
                if pending {
                    self.remove_client(id);
                    self.out.push_back(Output::Event(Event::Timeout { tx: id }));
                } else if timer == Timer::B && ct.state == State::Proceeding {
                    // A provisional stopped Timer B (§17.1.1.2); the TU's own dial timeout and
                    // CANCEL bound the wait from here.
                }
            }
            Timer::D | Timer::K | Timer::M => self.remove_client(id),
            Timer::Cancelled => {
                // The TU gave the call up on its own guard; only the transaction is left.
                if self
                    .clients
                    .get(&id)
                    .is_some_and(|ct| ct.state == State::Proceeding)
                {
                    self.remove_client(id);
                }
            }
            Timer::G | Timer::G2xx => {
                let Some(st) = self.servers.get_mut(&id) else {
                    return;
                };
                let active = match timer {
                    Timer::G => st.state == State::Completed,
                    _ => st.state == State::Accepted && st.ack_match.is_some(),
                };
                if !active {
                    return;
                }
                st.interval = (st.interval * 2).min(cfg.t2);
                let next = st.interval;
                if let Some(bytes) = st.last_response.clone() {
                    let peer = st.peer;
                    self.transmit(peer, bytes);
                }
                self.arm(now + next, id, timer);
            }
            Timer::H => {
                if self
                    .servers
                    .get(&id)
                    .is_some_and(|s| s.state == State::Completed)
                {
                    self.remove_server(id);
                }
            }
            Timer::L => {
                let unacked = self.servers.get(&id).and_then(|s| s.ack_match.clone());
                self.remove_server(id);
                if let Some((call_id, _)) = unacked {
                    self.out
                        .push_back(Output::Event(Event::AckTimeout { tx: id, call_id }));
                }
            }
            Timer::I | Timer::J => self.remove_server(id),
            Timer::Unanswered => {
                if self
                    .servers
                    .get(&id)
                    .is_some_and(|s| matches!(s.state, State::Trying | State::Proceeding))
                {
                    self.remove_server(id);
                }
            }
        }
    }

    fn remove_client(&mut self, id: TxId) {
        if let Some(ct) = self.clients.remove(&id) {
            self.client_keys.remove(&ct.key);
        }
        self.disarm_all(id);
    }

    fn remove_server(&mut self, id: TxId) {
        if let Some(st) = self.servers.remove(&id) {
            self.server_keys.remove(&st.key);
            if let Some(key) = st.ack_match {
                if self.acks.get(&key) == Some(&id) {
                    self.acks.remove(&key);
                }
            }
        }
        self.disarm_all(id);
    }

    /// The transport could not deliver a request (TCP connect refused): §17.1.1.2 says to treat it
    /// like a timeout.
    pub fn transport_error(&mut self, id: TxId) {
        if let Some(ct) = self.clients.get(&id) {
            if matches!(ct.state, State::Calling | State::Trying | State::Proceeding) {
                self.remove_client(id);
                self.out.push_back(Output::Event(Event::Timeout { tx: id }));
            }
        }
    }

    /// Which client transaction carried these bytes (for transport errors).
    pub fn client_tx_for(&self, peer: Peer, bytes: &[u8]) -> Option<TxId> {
        self.clients
            .iter()
            .find(|(_, c)| c.peer == peer && c.request == bytes)
            .map(|(id, _)| *id)
    }

    /// Whether a client transaction is still alive (its 2xx retransmissions may still come).
    pub fn has_client(&self, id: TxId) -> bool {
        self.clients.contains_key(&id)
    }

    /// The request that started a client transaction (to build its CANCEL).
    pub fn client_request(&self, id: TxId) -> Option<&Request> {
        self.clients.get(&id).map(|c| &c.original)
    }
}

/// §18.2.2: responses go back where the request came from. With `rport` or over a stream that is
/// the source address; otherwise the source IP with the Via port (RFC 3261 §18.2.2, `received`).
fn response_peer(req: &Request, source: Peer) -> Peer {
    if source.transport.reliable() {
        return source;
    }
    match req.top_via() {
        Some(v) if !v.params.has("rport") => {
            let port = v.port.unwrap_or(5060);
            Peer {
                transport: source.transport,
                addr: SocketAddr::new(source.addr.ip(), port),
            }
        }
        _ => source,
    }
}

/// §17.1.1.3: the ACK for a non-2xx final shares the INVITE's branch, Call-ID, From, Request-URI
/// and Route, takes the response's To (with its tag), and its CSeq number with method ACK.
fn non_2xx_ack(invite: &Request, response: &Response) -> Request {
    let mut ack = Request::new("ACK", &invite.uri);
    if let Some(v) = invite.headers.get("Via") {
        ack.headers.push("Via", v);
    }
    for name in ["Max-Forwards", "From"] {
        if let Some(v) = invite.headers.get(name) {
            ack.headers.push(name, v);
        }
    }
    if let Some(v) = response.headers.get("To") {
        ack.headers.push("To", v);
    }
    if let Some(v) = invite.headers.get("Call-ID") {
        ack.headers.push("Call-ID", v);
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    ack.headers.push("CSeq", format!("{seq} ACK"));
    for r in invite.headers.get_all("Route") {
        ack.headers.push("Route", r);
    }
    ack
}

/// A response to `req` with the headers §8.2.6.2 copies; `to_tag` is added to To if it has none.
pub fn response_to(req: &Request, code: u16, to_tag: Option<&str>) -> Response {
    let mut headers = crate::msg::Headers::new();
    for v in req.headers.get_all("Via") {
        headers.push("Via", v);
    }
    if let Some(v) = req.headers.get("From") {
        headers.push("From", v);
    }
    if let Some(v) = req.headers.get("To") {
        let has_tag = crate::msg::NameAddr::parse(v).is_some_and(|n| n.tag().is_some());
        match to_tag {
            Some(tag) if !has_tag && code > 100 => headers.push("To", crate::msg::add_tag(v, tag)),
            _ => headers.push("To", v),
        }
    }
    for name in ["Call-ID", "CSeq"] {
        if let Some(v) = req.headers.get(name) {
            headers.push(name, v);
        }
    }
    Response {
        code,
        reason: crate::msg::reason_phrase(code).to_string(),
        headers,
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{parse, Framing};

    fn peer() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5080".parse().unwrap(),
        }
    }

    fn invite() -> Request {
        let mut r = Request::new("INVITE", "sip:100@127.0.0.1:5080");
        r.headers
            .push("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport");
        r.headers.push("From", "<sip:a@h>;tag=1");
        r.headers.push("To", "<sip:100@h>");
        r.headers.push("Call-ID", "cid");
        r.headers.push("CSeq", "1 INVITE");
        r
    }

    fn resp(code: u16, method: &str) -> Response {
        let raw = format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:100@h>;tag=2\r\nCall-ID: cid\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        match parse(raw.as_bytes(), Framing::Datagram).unwrap().0 {
            Message::Response(r) => r,
            _ => unreachable!(),
        }
    }

    fn drain(tl: &mut TransactionLayer) -> Vec<Output> {
        std::iter::from_fn(|| tl.poll_output()).collect()
    }

    fn transmits(outs: &[Output]) -> usize {
        outs.iter()
            .filter(|o| matches!(o, Output::Transmit { .. }))
            .count()
    }

    #[test]
    fn invite_lost_twice_then_answered() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        let id = tl.send_request(t0, invite(), peer());
        assert_eq!(transmits(&drain(&mut tl)), 1);
        assert_eq!(tl.poll_timeout(), Some(t0 + Duration::from_millis(500)));
        tl.handle_timeout(t0 + Duration::from_millis(499));
        assert!(drain(&mut tl).is_empty(), "an early timeout is a no-op");
        tl.handle_timeout(t0 + Duration::from_millis(500));
        assert_eq!(transmits(&drain(&mut tl)), 1);
        tl.handle_timeout(t0 + Duration::from_millis(1500));
        assert_eq!(transmits(&drain(&mut tl)), 1, "Timer A doubled to 1 s");
        tl.handle_message(
            t0 + Duration::from_millis(1600),
            peer(),
            Message::Response(resp(200, "INVITE")),
        );
        let outs = drain(&mut tl);
        assert!(matches!(outs[..], [Output::Event(Event::Response { tx, .. })] if tx == id));
        tl.handle_timeout(t0 + Duration::from_secs(10));
        assert!(drain(&mut tl).is_empty(), "no retransmission after 2xx");
        // 2xx retransmissions still reach the TU while Accepted (RFC 6026).
        tl.handle_message(
            t0 + Duration::from_secs(11),
            peer(),
            Message::Response(resp(200, "INVITE")),
        );
        assert_eq!(drain(&mut tl).len(), 1);
        tl.handle_timeout(t0 + Duration::from_secs(40));
        assert!(tl.is_empty());
    }

    #[test]
    fn timer_b_times_out_a_silent_peer() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        let id = tl.send_request(t0, invite(), peer());
        let mut sent = 0;
        let mut timeout = false;
        while let Some(at) = tl.poll_timeout() {
            tl.handle_timeout(at);
            for o in drain(&mut tl) {
                match o {
                    Output::Transmit { .. } => sent += 1,
                    Output::Event(Event::Timeout { tx }) => {
                        assert_eq!(tx, id);
                        assert_eq!(at, t0 + Duration::from_secs(32));
                        timeout = true;
                    }
                    _ => {}
                }
            }
        }
        // Sent at 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5.
        assert_eq!(sent, 7);
        assert!(timeout);
        assert!(tl.is_empty());
    }

    #[test]
    fn non_2xx_final_is_acked_and_reacked() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        tl.send_request(t0, invite(), peer());
        drain(&mut tl);
        tl.handle_message(t0, peer(), Message::Response(resp(486, "INVITE")));
        let outs = drain(&mut tl);
        let Output::Transmit { bytes, .. } = &outs[0] else {
            panic!()
        };
        let ack = String::from_utf8_lossy(bytes);
        assert!(ack.starts_with("ACK sip:100@127.0.0.1:5080 SIP/2.0"));
        assert!(ack.contains("branch=z9hG4bKabc"));
        assert!(ack.contains("To: <sip:100@h>;tag=2"));
        assert!(ack.contains("CSeq: 1 ACK"));
        tl.handle_message(t0, peer(), Message::Response(resp(486, "INVITE")));
        assert_eq!(transmits(&drain(&mut tl)), 1);
        tl.handle_timeout(t0 + Duration::from_secs(32));
        assert!(tl.is_empty());
    }

    #[test]
    fn non_invite_retransmits_up_to_t2() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        let mut opt = invite();
        opt.method = "OPTIONS".into();
        opt.headers.set("CSeq", "1 OPTIONS");
        tl.send_request(t0, opt, peer());
        drain(&mut tl);
        let mut at = vec![];
        while let Some(t) = tl.poll_timeout() {
            tl.handle_timeout(t);
            if transmits(&drain(&mut tl)) > 0 {
                at.push((t - t0).as_millis());
            }
        }
        assert_eq!(
            at,
            vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
    }

    #[test]
    fn server_invite_non_2xx_retransmits_until_ack() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        tl.handle_message(t0, peer(), Message::Request(invite()));
        let Some(Output::Event(Event::Request {
            tx: Some(tx),
            request,
            ..
        })) = tl.poll_output()
        else {
            panic!()
        };
        tl.send_response(t0, tx, response_to(&request, 486, Some("x")));
        assert_eq!(transmits(&drain(&mut tl)), 1);
        tl.handle_timeout(t0 + Duration::from_millis(500));
        assert_eq!(transmits(&drain(&mut tl)), 1, "Timer G");
        let mut ack = invite();
        ack.method = "ACK".into();
        ack.headers.set("CSeq", "1 ACK");
        tl.handle_message(
            t0 + Duration::from_millis(600),
            peer(),
            Message::Request(ack),
        );
        assert!(
            drain(&mut tl).is_empty(),
            "the ACK of a non-2xx is absorbed"
        );
        tl.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(
            transmits(&drain(&mut tl)),
            0,
            "no retransmission once confirmed"
        );
        tl.handle_timeout(t0 + Duration::from_secs(10));
        assert!(tl.is_empty());
    }

    #[test]
    fn cancel_matches_the_invite() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        tl.handle_message(t0, peer(), Message::Request(invite()));
        let Some(Output::Event(Event::Request { tx: Some(tx), .. })) = tl.poll_output() else {
            panic!()
        };
        let mut cancel = invite();
        cancel.method = "CANCEL".into();
        cancel.headers.set("CSeq", "1 CANCEL");
        tl.handle_message(t0, peer(), Message::Request(cancel));
        let outs = drain(&mut tl);
        let Output::Transmit { bytes, .. } = &outs[0] else {
            panic!()
        };
        assert!(bytes.starts_with(b"SIP/2.0 200"));
        assert!(
            matches!(outs[1], Output::Event(Event::Cancelled { invite_tx, .. }) if invite_tx == tx)
        );
    }

    #[test]
    fn a_cancelled_invite_without_a_final_response_is_destroyed_at_64_t1() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        let id = tl.send_request(t0, invite(), peer());
        tl.handle_message(t0, peer(), Message::Response(resp(180, "INVITE")));
        let at = t0 + Duration::from_secs(5);
        let mut cancel = invite();
        cancel.method = "CANCEL".into();
        cancel.headers.set("CSeq", "1 CANCEL");
        tl.send_request(at, cancel, peer());
        tl.handle_message(at, peer(), Message::Response(resp(200, "CANCEL")));
        drain(&mut tl);
        // The 487 never comes (§9.1): the INVITE goes 64·T1 after the CANCEL, not before.
        tl.handle_timeout(at + Duration::from_secs(31));
        assert!(tl.has_client(id));
        tl.handle_timeout(at + Duration::from_secs(32));
        assert!(!tl.has_client(id), "the INVITE transaction leaked");
        tl.handle_timeout(at + Duration::from_secs(40));
        assert!(tl.is_empty());
    }

    #[test]
    fn our_to_tag_replaces_an_empty_one_and_a_trailing_semicolon() {
        for to in ["<sip:100@h>;tag=", "<sip:100@h>;", "<sip:100@h>"] {
            let mut request = invite();
            request.headers.set("To", to);
            let r = response_to(&request, 200, Some("x"));
            assert_eq!(r.headers.get("To"), Some("<sip:100@h>;tag=x"), "{to}");
        }
        // A To that already has a tag is echoed as it came.
        let mut request = invite();
        request.headers.set("To", "<sip:100@h>;tag=9;");
        let r = response_to(&request, 200, Some("x"));
        assert_eq!(r.headers.get("To"), Some("<sip:100@h>;tag=9;"));
    }

    #[test]
    fn unacked_2xx_is_retransmitted_then_reported() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        tl.handle_message(t0, peer(), Message::Request(invite()));
        let Some(Output::Event(Event::Request {
            tx: Some(tx),
            request,
            ..
        })) = tl.poll_output()
        else {
            panic!()
        };
        tl.send_response(t0, tx, response_to(&request, 200, Some("x")));
        drain(&mut tl);
        let mut sent = 0;
        let mut timed_out = false;
        while let Some(t) = tl.poll_timeout() {
            tl.handle_timeout(t);
            for o in drain(&mut tl) {
                match o {
                    Output::Transmit { .. } => sent += 1,
                    Output::Event(Event::AckTimeout { .. }) => timed_out = true,
                    _ => {}
                }
            }
        }
        assert!(sent >= 9);
        assert!(timed_out);
    }

    /// Answers `invite()` with a 2xx and returns the layer, ready for the ACK.
    fn answered(t0: Instant) -> TransactionLayer {
        let mut tl = TransactionLayer::new(TimerConfig::default());
        tl.handle_message(t0, peer(), Message::Request(invite()));
        let Some(Output::Event(Event::Request {
            tx: Some(tx),
            request,
            ..
        })) = tl.poll_output()
        else {
            panic!()
        };
        tl.send_response(t0, tx, response_to(&request, 200, Some("x")));
        drain(&mut tl);
        tl
    }

    /// Whether any Timer L reported a missing ACK by the time every timer ran out.
    fn ack_timed_out(tl: &mut TransactionLayer) -> bool {
        let mut timed_out = false;
        while let Some(t) = tl.poll_timeout() {
            tl.handle_timeout(t);
            timed_out |= drain(tl)
                .iter()
                .any(|o| matches!(o, Output::Event(Event::AckTimeout { .. })));
        }
        timed_out
    }

    #[test]
    fn ack_reusing_the_invite_branch_reaches_the_dialog() {
        let t0 = Instant::now();
        let mut tl = answered(t0);
        let mut ack = invite();
        ack.method = "ACK".into();
        ack.headers.set("CSeq", "1 ACK");
        tl.handle_message(t0, peer(), Message::Request(ack));
        let outs = drain(&mut tl);
        assert!(
            matches!(&outs[..], [Output::Event(Event::Request { tx: None, request, .. })] if request.method == "ACK"),
            "{outs:?}"
        );
        assert!(!ack_timed_out(&mut tl), "the ACK stopped Timer L");
    }

    #[test]
    fn ack_from_an_rfc2543_peer_reaches_the_dialog() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        let mut inv = invite();
        inv.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5080");
        tl.handle_message(t0, peer(), Message::Request(inv.clone()));
        let Some(Output::Event(Event::Request { tx: Some(tx), .. })) = tl.poll_output() else {
            panic!()
        };
        tl.send_response(t0, tx, response_to(&inv, 200, Some("x")));
        drain(&mut tl);
        let mut ack = inv;
        ack.method = "ACK".into();
        ack.headers.set("CSeq", "1 ACK");
        ack.headers.set("To", "<sip:100@h>;tag=x");
        tl.handle_message(t0, peer(), Message::Request(ack));
        let outs = drain(&mut tl);
        assert!(
            matches!(&outs[..], [Output::Event(Event::Request { tx: None, .. })]),
            "{outs:?}"
        );
        assert!(!ack_timed_out(&mut tl));
    }
    #[test]
    fn a_request_the_tu_never_answers_is_dropped_at_64_t1() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        let mut opt = invite();
        opt.method = "OPTIONS".into();
        opt.headers.set("CSeq", "1 OPTIONS");
        tl.handle_message(t0, peer(), Message::Request(opt));
        tl.handle_message(t0, peer(), Message::Request(invite()));
        drain(&mut tl);
        assert_eq!(tl.server_len(), 2);
        assert_eq!(tl.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        tl.handle_timeout(t0 + Duration::from_secs(32));
        assert!(
            tl.is_empty(),
            "no transaction outlives its client's Timer B/F"
        );
        assert_eq!(tl.timer_len(), 0);
        assert_eq!(tl.poll_timeout(), None);
    }

    #[test]
    fn a_provisional_gives_an_invite_the_proceeding_limit() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        tl.handle_message(t0, peer(), Message::Request(invite()));
        let Some(Output::Event(Event::Request {
            tx: Some(tx),
            request,
            ..
        })) = tl.poll_output()
        else {
            panic!()
        };
        tl.send_response(t0, tx, response_to(&request, 180, Some("x")));
        tl.handle_timeout(t0 + Duration::from_secs(60));
        assert_eq!(tl.server_len(), 1, "ringing past 64·T1 is fine");
        // The final response still goes out, and the guard no longer applies.
        tl.send_response(
            t0 + Duration::from_secs(61),
            tx,
            response_to(&request, 486, Some("x")),
        );
        drain(&mut tl);
        tl.handle_timeout(t0 + Duration::from_secs(61) + 64 * Duration::from_millis(500));
        assert!(tl.is_empty());
        assert_eq!(tl.timer_len(), 0);
        drain(&mut tl);
        // One that never gets past its provisional goes at the limit.
        let t1 = t0 + Duration::from_secs(100);
        tl.handle_message(t1, peer(), Message::Request(invite()));
        let Some(Output::Event(Event::Request {
            tx: Some(tx),
            request,
            ..
        })) = tl.poll_output()
        else {
            panic!()
        };
        tl.send_response(t1, tx, response_to(&request, 180, Some("x")));
        tl.handle_timeout(t1 + PROCEEDING_LIMIT - Duration::from_millis(1));
        assert_eq!(tl.server_len(), 1);
        tl.handle_timeout(t1 + PROCEEDING_LIMIT);
        assert!(tl.is_empty());
        assert_eq!(tl.timer_len(), 0);
    }

    #[test]
    fn many_transactions_leave_no_timer_behind() {
        let t0 = Instant::now();
        let mut tl = TransactionLayer::new(TimerConfig::default());
        for i in 0..2000u32 {
            let mut r = invite();
            r.method = if i % 2 == 0 { "OPTIONS" } else { "INVITE" }.into();
            r.headers.set(
                "Via",
                format!("SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{i}"),
            );
            r.headers.set("Call-ID", format!("c{i}"));
            r.headers.set("CSeq", format!("1 {}", r.method));
            tl.handle_message(t0, peer(), Message::Request(r));
        }
        let reqs: Vec<(TxId, Request)> = std::iter::from_fn(|| tl.poll_output())
            .filter_map(|o| match o {
                Output::Event(Event::Request {
                    tx: Some(tx),
                    request,
                    ..
                }) => Some((tx, request)),
                _ => None,
            })
            .collect();
        assert_eq!(reqs.len(), 2000);
        for (i, (tx, r)) in reqs.iter().enumerate() {
            let code = [200, 486, 100][i % 3];
            tl.send_response(t0, *tx, response_to(r, code, Some("x")));
        }
        // The 2xx of every third INVITE is acknowledged through the index.
        for (tx, r) in reqs.iter().filter(|(_, r)| r.method == "INVITE").step_by(3) {
            let _ = tx;
            let mut ack = r.clone();
            ack.method = "ACK".into();
            ack.headers
                .set("Via", "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKack");
            ack.headers
                .set("CSeq", format!("{} ACK", r.cseq().unwrap().seq));
            tl.handle_message(t0, peer(), Message::Request(ack));
        }
        drain(&mut tl);
        while let Some(at) = tl.poll_timeout() {
            tl.handle_timeout(at);
            drain(&mut tl);
        }
        assert!(tl.is_empty());
        assert_eq!(tl.timer_len(), 0);
        assert!(tl.tx_timers.is_empty());
        assert!(tl.acks.is_empty());
    }

    #[test]
    fn an_ack_finds_its_2xx_through_the_index() {
        let t0 = Instant::now();
        let mut tl = answered(t0);
        assert_eq!(tl.acks.len(), 1);
        let mut ack = invite();
        ack.method = "ACK".into();
        ack.headers.set(
            "Via",
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother;rport",
        );
        ack.headers.set("CSeq", "1 ACK");
        tl.handle_message(t0, peer(), Message::Request(ack));
        assert!(tl.acks.is_empty());
        assert!(!ack_timed_out(&mut tl));
    }
}
