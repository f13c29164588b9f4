//! The tokio shell around the call core: one task owns the [`Switchboard`], feeds it what SIP,
//! the API, the media legs and the clock say, and carries out its outputs. It never waits on a
//! slow peer: SIP and media commands go on unbounded channels to tasks that drain them at once,
//! and events go to a publisher task through a bounded queue that sheds (and counts) when NATS
//! cannot keep up or is away.
//!
//! The publisher delivers each event once, in order, across NATS outages (see [`publisher`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use sip_core::io::SipEvent;
use sip_core::Message;
use tokio::sync::{mpsc, oneshot};

use crate::board::{BoardConfig, Command, LegId, MediaInput, Output, ReqId, Switchboard};
use crate::error::ApiError;
use crate::switch::Switch;

pub type Reply = Result<Map<String, Value>, ApiError>;

/// Events waiting for NATS; beyond this they are dropped and counted
/// (`botstream_events_dropped_total`). The publisher holds one batch more in hand.
pub const PUBLISH_QUEUE: usize = 20_000;
/// Events published together and confirmed by one marker.
const BATCH: usize = 256;
/// How long a batch's marker may take to come back before the batch counts as not delivered.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// After a reconnection, how long the publisher waits before it sends what it kept: the apps'
/// clients are reconnecting too (async-nats retries at most every 4 s, nats.go and nats.py every
/// 2 s), and an event published before an app has subscribed again is lost to it.
pub const REPLAY_GRACE: Duration = Duration::from_secs(5);

/// What a new leg holds while it lives: its RTP ports (handed to its media task) and its place
/// in a gateway's call count.
pub struct LegResources {
    pub leg: LegId,
    pub lease: media::PortLease,
    pub slot: Option<gateway::CallSlot>,
}

pub enum BoardInput {
    Command {
        cmd: Box<Command>,
        reply: Option<oneshot::Sender<Reply>>,
        resources: Option<LegResources>,
    },
    Media(LegId, MediaInput),
}

/// How request handlers reach the board.
#[derive(Clone)]
pub struct BoardHandle {
    tx: mpsc::UnboundedSender<BoardInput>,
    next_leg: Arc<AtomicU64>,
}

/// The board's input channel, made before the switch so the switch can hold the handle.
pub fn channel() -> (BoardHandle, mpsc::UnboundedReceiver<BoardInput>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        BoardHandle {
            tx,
            next_leg: Arc::new(AtomicU64::new(1)),
        },
        rx,
    )
}

impl BoardHandle {
    pub fn new_leg(&self) -> LegId {
        LegId(self.next_leg.fetch_add(1, Ordering::Relaxed))
    }

    /// Hands the board a command and waits for its one reply.
    pub async fn request(&self, cmd: Command, resources: Option<LegResources>) -> Reply {
        let (done, rx) = oneshot::channel();
        let sent = self.tx.send(BoardInput::Command {
            cmd: Box::new(cmd),
            reply: Some(done),
            resources,
        });
        if sent.is_err() {
            return Err(ApiError::new(
                crate::error::StatusCode::CannotAddCall,
                "the switch is stopping",
            ));
        }
        rx.await.unwrap_or_else(|_| {
            Err(ApiError::new(
                crate::error::StatusCode::CannotAddCall,
                "the switch is stopping",
            ))
        })
    }

    /// A command whose reply nobody waits for.
    pub fn send(&self, cmd: Command) {
        let _ = self.tx.send(BoardInput::Command {
            cmd: Box::new(cmd),
            reply: None,
            resources: None,
        });
    }
}

struct LegIo {
    media: mpsc::UnboundedSender<media::leg::Command>,
    /// Held for the gateway's call count; released with the leg.
    _slot: Option<gateway::CallSlot>,
}

struct Shell {
    sw: Arc<Switch>,
    board: Switchboard,
    legs: HashMap<LegId, LegIo>,
    replies: HashMap<u64, oneshot::Sender<Reply>>,
    next_req: u64,
    media_events: mpsc::UnboundedSender<(u64, media::leg::Event)>,
    inputs: mpsc::UnboundedSender<BoardInput>,
    publish: mpsc::Sender<(String, Vec<u8>)>,
}

/// Starts the board's task.
pub fn spawn(
    sw: Arc<Switch>,
    cfg: BoardConfig,
    handle: &BoardHandle,
    inputs: mpsc::UnboundedReceiver<BoardInput>,
    sip: mpsc::Receiver<SipEvent>,
) {
    let (media_tx, media_rx) = mpsc::unbounded_channel();
    let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
    tokio::spawn(publisher(sw.clone(), publish_rx));
    let shell = Shell {
        sw,
        board: Switchboard::new(cfg),
        legs: HashMap::new(),
        replies: HashMap::new(),
        next_req: 0,
        media_events: media_tx,
        inputs: handle.tx.clone(),
        publish: publish_tx,
    };
    tokio::spawn(shell.run(inputs, sip, media_rx));
}

/// Publishes events in order, each once, across NATS outages; a NATS that is away slows only
/// this task.
///
/// Core NATS confirms nothing, and async-nats loses what sat in its write buffer (or the
/// kernel's) when a connection dies. So events go out in batches, each followed by a marker
/// published to the publisher's own inbox: the server handles one connection's messages in
/// order, so the marker coming back means every event before it was routed. A batch whose marker
/// does not come back within [`ACK_WAIT`] is kept; once NATS is back (and [`REPLAY_GRACE`] has
/// passed, for the apps to subscribe again) the publisher first listens for that marker, which
/// async-nats may still deliver from its queue, and publishes the batch again only if it never
/// comes. Events wait meanwhile in the [`PUBLISH_QUEUE`]; beyond it they are dropped and counted.
///
/// One case remains in which an event arrives twice: the server dies after routing part of a
/// batch but before the marker that follows it in the same write.
async fn publisher(sw: Arc<Switch>, mut rx: mpsc::Receiver<(String, Vec<u8>)>) {
    use futures::StreamExt;
    let nats = sw.nats.clone();
    let inbox = nats.new_inbox();
    let mut acks = loop {
        match nats.subscribe(inbox.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "event publisher: cannot subscribe to its inbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let connects = || nats.statistics().connects.load(Ordering::Relaxed);
    let mut batch: std::collections::VecDeque<(String, bytes::Bytes)> = Default::default();
    let mut seq: u64 = 0;
    // The marker of the batch in hand, when it went out and was not confirmed.
    let mut unconfirmed: Option<u64> = None;
    let mut seen_connects = connects();
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some((subject, bytes)) => batch.push_back((subject, bytes.into())),
                None => return,
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok((subject, bytes)) => batch.push_back((subject, bytes.into())),
                Err(_) => break,
            }
        }
        let connected = nats.connection_state() == async_nats::connection::State::Connected;
        if !connected || unconfirmed.is_some() || connects() != seen_connects {
            // An outage: wait for NATS, then for the apps, listening meanwhile for the marker
            // of the batch in hand in case it got through after all.
            let grace_end = async {
                while nats.connection_state() != async_nats::connection::State::Connected {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(REPLAY_GRACE).await;
            };
            tokio::pin!(grace_end);
            loop {
                tokio::select! {
                    _ = &mut grace_end => break,
                    m = acks.next() => {
                        if let (Some(m), Some(want)) = (m, unconfirmed) {
                            if m.payload.as_ref() == want.to_string().as_bytes() {
                                batch.clear();
                                unconfirmed = None;
                            }
                        }
                    }
                }
            }
            seen_connects = connects();
            if batch.is_empty() {
                continue;
            }
            if let Some(n) = unconfirmed.take() {
                tracing::info!(
                    events = batch.len(),
                    marker = n,
                    "NATS is back: sending events again"
                );
            }
        }
        seq += 1;
        let mut sent = true;
        for (subject, bytes) in &batch {
            if let Err(e) = nats.publish(subject.clone(), bytes.clone()).await {
                // Only an invalid subject or an oversized event fails here; it never will.
                tracing::warn!(error = %e, %subject, "event not published");
                sw.metrics.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if nats
            .publish(inbox.clone(), seq.to_string().into())
            .await
            .is_err()
        {
            sent = false;
        }
        let confirmed = sent
            && tokio::time::timeout(ACK_WAIT, async {
                while let Some(m) = acks.next().await {
                    if m.payload.as_ref() == seq.to_string().as_bytes() {
                        return true;
                    }
                }
                false
            })
            .await
            .unwrap_or(false);
        if confirmed {
            batch.clear();
        } else {
            tracing::warn!(
                events = batch.len(),
                "events not confirmed by NATS: kept for when it is back"
            );
            unconfirmed = Some(seq);
        }
    }
}

impl Shell {
    async fn run(
        mut self,
        mut inputs: mpsc::UnboundedReceiver<BoardInput>,
        mut sip: mpsc::Receiver<SipEvent>,
        mut media: mpsc::UnboundedReceiver<(u64, media::leg::Event)>,
    ) {
        loop {
            let deadline = self
                .board
                .poll_timeout()
                .map(|(at, _)| tokio::time::Instant::from_std(at))
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                Some(ev) = sip.recv() => self.guarded(|b| b.handle_sip(Instant::now(), ev)),
                Some(input) = inputs.recv() => self.input(input),
                Some((leg, ev)) = media.recv() => self.guarded(|b| {
                    b.handle_media(Instant::now(), LegId(leg), MediaInput::Leg(ev))
                }),
                _ = tokio::time::sleep_until(deadline) => {
                    self.guarded(|b| b.handle_timeout(Instant::now()))
                }
                else => return,
            }
            self.drain();
        }
    }

    /// Runs one step of the core. A bug that panics in it costs the step, not the switch: the
    /// shell (and every other call) goes on, and the panic is logged and counted.
    fn guarded(&mut self, step: impl FnOnce(&mut Switchboard)) {
        let board = &mut self.board;
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(board)));
        if caught.is_err() {
            self.sw.metrics.core_panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!("the call core panicked; the step was abandoned");
        }
    }

    fn input(&mut self, input: BoardInput) {
        let now = Instant::now();
        match input {
            BoardInput::Command {
                cmd,
                reply,
                resources,
            } => {
                if let Some(r) = resources {
                    self.add_leg(r);
                }
                let req = reply.map(|tx| {
                    self.next_req += 1;
                    self.replies.insert(self.next_req, tx);
                    ReqId(self.next_req)
                });
                self.guarded(|b| b.handle_command(now, req, *cmd));
            }
            BoardInput::Media(leg, m) => self.guarded(|b| b.handle_media(now, leg, m)),
        }
    }

    /// A new leg's media task starts with its ports; the board then drives it.
    fn add_leg(&mut self, r: LegResources) {
        let media = media::leg::spawn(
            r.leg.0,
            r.lease,
            self.sw.media.clone(),
            self.media_events.clone(),
        );
        self.legs.insert(
            r.leg,
            LegIo {
                media,
                _slot: r.slot,
            },
        );
    }

    fn media(&self, leg: LegId, c: media::leg::Command) {
        if let Some(io) = self.legs.get(&leg) {
            let _ = io.media.send(c);
        }
    }

    /// Taps a leg's audio (on its 20 ms clock) into a task of its own.
    fn tap(&self, leg: LegId) -> mpsc::Receiver<Vec<i16>> {
        let (tx, rx) = mpsc::channel(64);
        self.media(leg, media::leg::Command::Tap(tx));
        rx
    }

    fn drain(&mut self) {
        while let Some(out) = self.board.poll_output() {
            self.output(out);
        }
    }

    fn output(&mut self, out: Output) {
        let stack = &self.sw.stack;
        match out {
            Output::Send { tag, request, peer } => stack.request_tagged(request, peer, tag),
            Output::Ack { request, peer } => stack.send_stateless(peer, Message::Request(request)),
            Output::Respond { tx, response } => stack.respond(tx, response),
            Output::Media { leg, command } => self.media(leg, command),
            Output::Link {
                from,
                tap,
                to,
                feed,
            } => {
                let (tx, rx) = media::mix::link(from.0, tap, to.0, feed);
                self.media(from, media::leg::Command::LinkOut(tx));
                self.media(to, media::leg::Command::LinkIn(rx));
            }
            Output::Unlink { from, to } => {
                self.media(from, media::leg::Command::UnlinkTo { peer: to.0 });
                self.media(to, media::leg::Command::UnlinkFrom { peer: from.0 });
            }
            Output::StartCpa { leg, config, log } => {
                let audio = self.tap(leg);
                let back = self.inputs.clone();
                tokio::spawn(async move {
                    let b = back.clone();
                    crate::cpa_run::run(*config, audio, log, move |o| {
                        let _ = b.send(BoardInput::Media(leg, MediaInput::Cpa(o)));
                    })
                    .await;
                    let _ = back.send(BoardInput::Media(leg, MediaInput::CpaEnded));
                });
            }
            Output::InbandDtmf { leg } => {
                let audio = self.tap(leg);
                let back = self.inputs.clone();
                tokio::spawn(crate::cpa_run::inband_dtmf(audio, move |d| {
                    let _ = back.send(BoardInput::Media(leg, MediaInput::InbandDtmf(d)));
                }));
            }
            Output::Publish {
                subject,
                name,
                mut data,
            } => {
                data.insert("timestamp".into(), Value::from(crate::events::timestamp()));
                let ev = json!({"event_name": format!("botstream::{name}"), "event_data": data});
                let bytes = serde_json::to_vec(&ev).unwrap_or_default();
                if self.publish.try_send((subject, bytes)).is_err() {
                    self.sw
                        .metrics
                        .events_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Output::Reply { req, result } => {
                if let Some(tx) = self.replies.remove(&req.0) {
                    let _ = tx.send(result);
                }
            }
            Output::NewInbound {
                tx,
                request,
                source,
            } => {
                if let Some((inbound, resources)) =
                    crate::service::admit_inbound(&self.sw, tx, *request, source)
                {
                    self.add_leg(resources);
                    let cmd = Command::Inbound(Box::new(inbound));
                    self.guarded(|b| b.handle_command(Instant::now(), None, cmd));
                }
            }
            Output::LegStarted {
                leg: _,
                uuid,
                tenant_id,
            } => self.sw.call_started(&uuid, &tenant_id),
            Output::LegEnded {
                leg,
                uuid,
                direction,
                cause,
                started,
            } => {
                // Dropping the command sender ends the media task if it is still running.
                self.legs.remove(&leg);
                if started {
                    self.sw.call_ended(&uuid, direction, cause);
                }
            }
        }
    }
}
