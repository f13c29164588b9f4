//! One task per call leg owns its media: the RTP/RTCP sockets, the 20 ms send clock, the stream
//! to the app, DTMF, recording, receive statistics and the audio links to other legs (bridges,
//! listeners). The call core talks to it with [`Command`]s and hears back through [`Event`]s,
//! each tagged with the leg's id; a command that answers an API request names it (`req`) and is
//! answered with [`Event::Done`]. The protocol cores (G.711, RTP, playout, DTMF, RTCP) are plain
//! state machines this shell drives.
//!
//! Caller audio is forwarded to the app the moment a packet arrives (no jitter buffer on that
//! path: the app wants it now, and late or duplicate packets are simply dropped); audio to the
//! caller leaves on an absolute 20 ms schedule so it never drifts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::jitter::{JitterBuffer, Pulled};
use crate::mix::{self, Feed, LinkRx, LinkTx, Tap};
use crate::playout::PlayoutQueue;
use crate::ports::PortLease;
use crate::resample::{Downsampler, Upsampler};
use crate::rtcp;
use crate::rtp;
use crate::session::{RtpSession, SessionEvent};
use crate::stream::{AfterClose, AppStream, StreamConfig};
use crate::wav::StereoWavWriter;
use crate::ws::{self, FromApp, Session};

const FRAME: Duration = Duration::from_millis(20);
const SAMPLES: usize = 160;
/// The app may queue this much audio ahead (api.md §3.5: TTS bursts); older audio is dropped.
const PLAYOUT_MAX_MS: u32 = 60_000;
/// The error text for a second start_stream (the api maps it to 144).
pub const ALREADY_STREAMING: &str = "the call already has a stream";

/// A handshake's result and the request it answers (`None`: a reconnect).
type Opened = (Result<Session, String>, Option<u64>);

/// Counters shared with /metrics.
#[derive(Debug)]
pub struct MediaCounters {
    pub rtp_in: AtomicU64,
    pub rtp_out: AtomicU64,
    pub streams_active: AtomicI64,
    /// Caller frames shed because the app read too slowly.
    pub ws_frames_dropped: AtomicU64,
    /// RTP and RTCP refused because it came from somewhere else than the peer's learnt source.
    pub rtp_foreign_dropped: AtomicU64,
    /// SRTP packets that failed authentication (bad tag, replay, wrong key, truncated).
    pub srtp_auth_failed: AtomicU64,
    /// 20 ms sends given up because a call's task woke over 200 ms late (a starved machine):
    /// audio to the caller lost inside the switch.
    pub ticks_skipped: AtomicU64,
    /// From an RTP packet's arrival to its PCM frame written to the app's socket.
    pub forward_latency: LatencyHistogram,
    /// From an RTP packet's arrival on one leg of a bridge to its audio leaving the other leg.
    pub bridge_latency: LatencyHistogram,
}

/// Fixed buckets (upper bounds in µs) so recording is one atomic add on the hot path.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    25, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000, 10000, 50000,
];
/// Across a bridge a frame waits for the other leg's next 20 ms tick, so the buckets are coarser.
pub const BRIDGE_BUCKETS_US: [u64; 12] = [
    1000, 2500, 5000, 7500, 10000, 12500, 15000, 17500, 20000, 25000, 40000, 60000,
];

#[derive(Debug)]
pub struct LatencyHistogram {
    bounds: &'static [u64; 12],
    /// One counter per bucket, plus one for everything slower.
    counts: [AtomicU64; 13],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new(&LATENCY_BUCKETS_US)
    }
}

impl Default for MediaCounters {
    fn default() -> Self {
        MediaCounters {
            rtp_in: AtomicU64::new(0),
            rtp_out: AtomicU64::new(0),
            streams_active: AtomicI64::new(0),
            ws_frames_dropped: AtomicU64::new(0),
            ticks_skipped: AtomicU64::new(0),
            rtp_foreign_dropped: AtomicU64::new(0),
            srtp_auth_failed: AtomicU64::new(0),
            forward_latency: LatencyHistogram::default(),
            bridge_latency: LatencyHistogram::new(&BRIDGE_BUCKETS_US),
        }
    }
}

impl LatencyHistogram {
    pub fn new(bounds: &'static [u64; 12]) -> Self {
        LatencyHistogram {
            bounds,
            counts: Default::default(),
        }
    }

    /// The upper bounds of the buckets, in µs.
    pub fn bounds(&self) -> &'static [u64; 12] {
        self.bounds
    }

    pub fn record(&self, d: Duration) {
        let us = d.as_micros() as u64;
        let i = self
            .bounds
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative); the last is above the largest bound.
    pub fn snapshot(&self) -> [u64; 13] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

#[derive(Clone)]
pub struct MediaConfig {
    pub media_timeout: Duration,
    pub tls: Arc<rustls::ClientConfig>,
    pub counters: Arc<MediaCounters>,
}

#[derive(Debug)]
pub enum Command {
    /// Where to send and how (from the SDP answer or offer).
    Remote {
        addr: SocketAddr,
        codec: crate::session::AudioCodec,
        /// The codec's payload type in this call.
        payload_type: u8,
        /// telephone-event's payload type and clock.
        telephone_event: Option<(u8, u32)>,
        /// SDES keys when the call is SRTP.
        srtp: Option<crate::session::SrtpKeys>,
    },
    /// The far end put the call on hold (`a=sendonly`/`inactive`): send nothing, keep the app's
    /// audio queued, and do not count the silence as a media timeout. `false` resumes.
    Hold(bool),
    StartStream {
        req: u64,
        config: Box<StreamConfig>,
    },
    /// A key press to tell the app, for protocols that carry them (Twilio's `dtmf`).
    StreamDtmf {
        digit: char,
    },
    /// Answered with [`Event::Done`] when `req` is given (an error when there was no stream).
    StopStream {
        req: Option<u64>,
        reason: String,
    },
    /// An error when there was no stream to stop playing.
    StopPlay {
        req: u64,
    },
    SendDtmf {
        digits: String,
        duration_ms: u32,
    },
    StartRecord {
        req: Option<u64>,
        path: PathBuf,
    },
    /// An error when the call was not being recorded.
    StopRecord {
        req: u64,
    },
    /// Decoded caller audio, 20 ms at a time, for call progress analysis.
    Tap(mpsc::Sender<Vec<i16>>),
    /// This leg's audio to another leg (a bridge or a listener).
    LinkOut(LinkTx),
    /// Another leg's audio into this leg's outgoing frames.
    LinkIn(LinkRx),
    /// Ends the links carrying this leg's audio to leg `peer`.
    UnlinkTo {
        peer: u64,
    },
    /// Ends the links bringing leg `peer`'s audio into this leg.
    UnlinkFrom {
        peer: u64,
    },
    /// Ends the leg; its last event is [`Event::Stopped`] with the statistics.
    Stop,
}

#[derive(Debug)]
pub enum Event {
    Dtmf {
        digit: char,
        source: &'static str,
    },
    StreamStarted,
    StreamStopped {
        reason: String,
        code: u16,
    },
    /// The app's socket failed and a new one took over (api.md §3.5 `resume_secs`).
    StreamResumed {
        gap_ms: u64,
    },
    PlayMark {
        name: String,
    },
    MediaTimeout,
    /// An asynchronous failure for the app (api.md §4 `error`).
    Error {
        status: String,
    },
    RecordStopped {
        path: PathBuf,
        duration_ms: u64,
    },
    /// The answer to a command that named a request; a stop_play's says what the clear cut.
    Done {
        req: u64,
        result: Result<Option<crate::stream::Cleared>, String>,
    },
    /// The leg is gone. `None` when it ended without being told to (its task failed): the call
    /// core ends the call.
    Stopped(Option<Report>),
}

pub use crate::session::Report;

/// Starts leg `id`'s media task; its events arrive on `events` tagged with `id`.
pub fn spawn(
    id: u64,
    lease: PortLease,
    cfg: MediaConfig,
    events: mpsc::UnboundedSender<(u64, Event)>,
) -> mpsc::UnboundedSender<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(Leg::new(id, lease, cfg, events).run(rx));
    tx
}

/// The stream to the app: what it is ([`AppStream`]) and its socket, absent while the first
/// handshake or a reconnect is under way.
struct Stream {
    app: AppStream,
    session: Option<Session>,
    /// A handshake is in flight (its result comes back on the `opened` channel).
    opening: bool,
}

struct Recording {
    writer: StereoWavWriter,
    path: PathBuf,
}

struct Leg {
    id: u64,
    lease: PortLease,
    cfg: MediaConfig,
    events: mpsc::UnboundedSender<(u64, Event)>,
    /// Set once [`Event::Stopped`] went out; until then dropping the leg reports a failure.
    stopped: bool,
    /// RTP and RTCP: sources, codec, statistics, key presses (no I/O: [`RtpSession`]).
    rtp: RtpSession,
    playout: Option<PlayoutQueue>,
    started: Instant,
    /// The caller's audio on our 20 ms clock (reordered, losses concealed) for the consumers
    /// that need a steady timeline: the recording and call progress analysis. The stream to the
    /// app does not wait for it.
    jitter: JitterBuffer,
    stream: Option<Stream>,
    opened: Option<mpsc::Sender<Opened>>,
    recording: Option<Recording>,
    /// Consumers of the caller's audio on our clock (CPA, in-band DTMF).
    taps: Vec<mpsc::Sender<Vec<i16>>>,
    links_out: Vec<LinkTx>,
    links_in: Vec<LinkRx>,
    /// A wideband call runs at 16 kHz; what other legs, the recording and CPA take is 8 kHz.
    wide: Resamplers,
}

/// The 8 kHz views of a 16 kHz call, each with its own filter state.
#[derive(Default)]
struct Resamplers {
    /// The caller's audio, for other legs, the recording and CPA.
    caller: Downsampler,
    /// What we send, for listeners (before injected audio) and the recording (after it).
    sent: Downsampler,
    played: Downsampler,
    /// Other legs' audio, into our frames.
    main: Upsampler,
    inject: Upsampler,
}

impl Drop for Leg {
    /// A task that ends without [`Command::Stop`] (a panic) still tells the call core, so the
    /// call ends with a cause instead of staying up with no media.
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.events.send((self.id, Event::Stopped(None)));
        }
    }
}

fn now_ntp() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rtcp::ntp_from_unix(d.as_secs(), d.subsec_nanos())
}

impl Leg {
    fn new(
        id: u64,
        lease: PortLease,
        cfg: MediaConfig,
        events: mpsc::UnboundedSender<(u64, Event)>,
    ) -> Leg {
        let media_timeout = cfg.media_timeout;
        Leg {
            id,
            lease,
            cfg,
            events,
            stopped: false,
            rtp: RtpSession::new(
                std::time::Instant::now(),
                media_timeout,
                rand::random(),
                rand::random(),
                rand::random(),
            ),
            playout: None,
            started: Instant::now(),
            jitter: JitterBuffer::new(SAMPLES, 50),
            stream: None,
            opened: None,
            recording: None,
            taps: Vec::new(),
            links_out: Vec::new(),
            links_in: Vec::new(),
            wide: Resamplers::default(),
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        // One receive buffer for both sockets (an MTU; G.711 RTP is 172 bytes): wait for either
        // to be readable, then read. Two buffers held for a call's life cost 4 KiB per call.
        let mut buf = vec![0u8; 1500];
        let start = Instant::now();
        let mut ticks: u64 = 0;
        let mut next_tick = start + FRAME;
        let mut rtcp_at = start + Duration::from_secs(5);
        // Handshakes run in their own task (up to 3 s) and come back here, so the 20 ms clock
        // never waits on an app.
        let (opened, mut connected) = mpsc::channel::<Opened>(2);
        self.opened = Some(opened);
        // Timers live across loop turns and are reset when they fire: building new ones on
        // every turn (every RTP packet) would register two timer entries per packet.
        let tick = tokio::time::sleep_until(next_tick);
        let rtcp_timer = tokio::time::sleep_until(rtcp_at);
        tokio::pin!(tick, rtcp_timer);
        loop {
            // Last in the biased order, so it runs after whatever this wake-up brought: the
            // frames those packets queued are written in the same turn.
            let retry_at = self
                .stream
                .as_ref()
                .filter(|s| !s.opening)
                .and_then(|s| s.app.next_try())
                .map(tokio::time::Instant::from_std);
            let app_io = std::future::poll_fn(|cx| {
                match self.stream.as_mut().and_then(|s| s.session.as_mut()) {
                    Some(s) => s.poll_io(cx),
                    None => std::task::Poll::Pending,
                }
            });
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                r = self.lease.rtp.readable() => {
                    if r.is_ok() {
                        // Drain what is queued; WouldBlock ends the turn.
                        while let Ok((n, from)) = self.lease.rtp.try_recv_from(&mut buf) {
                            self.on_rtp(&buf[..n], from);
                        }
                    }
                }
                r = self.lease.rtcp.readable() => {
                    if r.is_ok() {
                        while let Ok((n, from)) = self.lease.rtcp.try_recv_from(&mut buf) {
                            self.on_rtcp(&buf[..n], from);
                        }
                    }
                }
                Some((result, req)) = connected.recv() => self.stream_opened(result, req),
                _ = retry => self.reconnect(),
                _ = &mut tick => {
                    self.tick().await;
                    ticks += 1;
                    // An absolute schedule: a late wake-up is caught up, never accumulated.
                    next_tick = start + FRAME * (ticks as u32 + 1);
                    let now = Instant::now();
                    if next_tick + Duration::from_millis(200) < now {
                        // Asleep for long (suspended host): skip ahead rather than burst.
                        let caught_up = ((now - start).as_millis() / 20) as u64;
                        self.cfg
                            .counters
                            .ticks_skipped
                            .fetch_add(caught_up.saturating_sub(ticks), Ordering::Relaxed);
                        ticks = caught_up;
                        next_tick = start + FRAME * (ticks as u32 + 1);
                    }
                    tick.as_mut().reset(next_tick);
                }
                _ = &mut rtcp_timer => {
                    self.send_rtcp().await;
                    rtcp_at += Duration::from_secs(5);
                    rtcp_timer.as_mut().reset(rtcp_at);
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Stop) | None => {
                        let report = self.finish("hangup");
                        self.emit(Event::Stopped(Some(report)));
                        self.stopped = true;
                        return;
                    }
                    Some(c) => self.command(c).await,
                },
                m = app_io => self.on_app(m),
            }
        }
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send((self.id, e));
    }

    fn done(&self, req: u64, result: Result<(), String>) {
        self.emit(Event::Done {
            req,
            result: result.map(|()| None),
        });
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Remote {
                addr,
                codec,
                payload_type,
                telephone_event,
                srtp,
            } => {
                let remote = crate::session::Remote {
                    addr,
                    codec,
                    payload_type,
                    telephone_event,
                    srtp,
                };
                self.rtp.set_remote(std::time::Instant::now(), remote);
                // A re-INVITE that changes the call's rate starts the app's queue afresh.
                let rate = codec.rate();
                if let (Some(q), Some(s)) = (self.playout.as_ref(), self.stream.as_ref()) {
                    if q.output_rate() != rate {
                        self.playout = Some(PlayoutQueue::with_output(
                            s.app.cfg.sample_rate,
                            rate,
                            PLAYOUT_MAX_MS,
                        ));
                    }
                }
            }
            Command::Hold(on) => self.rtp.set_held(std::time::Instant::now(), on),
            Command::StartStream { req, config } => {
                if self.stream.is_some() {
                    self.done(req, Err(ALREADY_STREAMING.into()));
                    return;
                }
                self.playout = Some(PlayoutQueue::with_output(
                    config.sample_rate,
                    self.rtp.codec().rate(),
                    PLAYOUT_MAX_MS,
                ));
                let mut app = AppStream::new(*config);
                let frames = app.opening_frames(std::time::Instant::now());
                let url = app.cfg.url.clone();
                self.stream = Some(Stream {
                    app,
                    session: None,
                    opening: true,
                });
                self.open(url, frames, Some(req));
            }
            Command::StreamDtmf { digit } => {
                if let Some(s) = self.stream.as_mut() {
                    if let (Some(m), Some(session)) = (s.app.dtmf(digit), s.session.as_mut()) {
                        session.send(m, None);
                    }
                }
            }
            Command::StopStream { req, reason } => {
                let had = self.stop_stream(&reason, 0);
                if let Some(req) = req {
                    self.done(
                        req,
                        had.then_some(())
                            .ok_or_else(|| "the call has no stream".into()),
                    );
                }
            }
            Command::StopPlay { req } => {
                let result = self
                    .clear_playout()
                    .map(Some)
                    .ok_or_else(|| "the call has no stream playing".to_string());
                self.emit(Event::Done { req, result });
            }
            Command::SendDtmf {
                digits,
                duration_ms,
            } => self.rtp.send_dtmf(&digits, duration_ms),
            Command::StartRecord { req, path } => {
                if let Some(parent) = path.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let result = match StereoWavWriter::create(&path, 8000) {
                    Ok(writer) => {
                        self.stop_record();
                        self.recording = Some(Recording { writer, path });
                        Ok(())
                    }
                    Err(e) => Err(format!("{}: {e}", path.display())),
                };
                match (req, result) {
                    (Some(req), r) => self.done(req, r),
                    (None, Err(status)) => self.emit(Event::Error { status }),
                    (None, Ok(())) => {}
                }
            }
            Command::StopRecord { req } => {
                let had = self.stop_record();
                self.done(
                    req,
                    had.then_some(())
                        .ok_or_else(|| "the call is not being recorded".into()),
                );
            }
            Command::Tap(tx) => self.taps.push(tx),
            Command::LinkOut(l) => self.links_out.push(l),
            Command::LinkIn(l) => self.links_in.push(l),
            Command::UnlinkTo { peer } => self.links_out.retain(|l| l.peer != peer),
            Command::UnlinkFrom { peer } => self.links_in.retain(|l| l.peer != peer),
            Command::Stop => {}
        }
    }

    /// A handshake in its own task (up to 3 s), so the 20 ms clock never waits on an app; the
    /// result comes back through `opened`.
    fn open(&self, url: String, frames: Vec<String>, req: Option<u64>) {
        let tls = self.cfg.tls.clone();
        let counters = self.cfg.counters.clone();
        let back = self.opened.clone();
        tokio::spawn(async move {
            let r = ws::open(&url, tls, frames, Duration::from_secs(3), counters).await;
            if let Some(back) = back {
                let _ = back.send((r, req)).await;
            }
        });
    }

    /// A resumable stream whose socket failed: the next try (api.md §3.5 `resume_secs`).
    fn reconnect(&mut self) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        s.app.trying();
        s.opening = true;
        let frames = s.app.opening_frames(std::time::Instant::now());
        let url = s.app.cfg.url.clone();
        self.open(url, frames, None);
    }

    /// The reply to start_stream goes only once the app is really connected (api.md §3.5); a
    /// reconnect delivers what the app may have missed before live audio.
    fn stream_opened(&mut self, result: Result<Session, String>, req: Option<u64>) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        s.opening = false;
        let now = std::time::Instant::now();
        match (result, req) {
            (Ok(mut session), req) => {
                match s.app.connected(now) {
                    Some((gap_ms, replay)) => {
                        for m in replay {
                            session.send(m, None);
                        }
                        s.session = Some(session);
                        self.playout = Some(PlayoutQueue::with_output(
                            s.app.cfg.sample_rate,
                            self.rtp.codec().rate(),
                            PLAYOUT_MAX_MS,
                        ));
                        self.emit(Event::StreamResumed { gap_ms });
                    }
                    None => {
                        s.session = Some(session);
                        self.cfg
                            .counters
                            .streams_active
                            .fetch_add(1, Ordering::Relaxed);
                        self.emit(Event::StreamStarted);
                    }
                }
                if let Some(req) = req {
                    self.done(req, Ok(()));
                }
            }
            (Err(e), Some(req)) => {
                self.stream = None;
                self.playout = None;
                self.done(req, Err(e));
            }
            (Err(e), None) => self.stream_failed(e, 1006),
        }
    }

    /// The app's socket closed or failed (or a reconnect failed): the stream stops, or waits to
    /// be resumed with the caller's audio kept.
    fn stream_failed(&mut self, reason: String, code: u16) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        s.session = None;
        match s.app.closed(std::time::Instant::now(), reason, code) {
            AfterClose::Reconnecting => {
                // Audio queued for playing when the socket failed is dropped (api.md §3.5).
                self.playout = None;
            }
            AfterClose::Stopped { reason, code } => {
                self.end_stream(&reason, code);
            }
        }
    }

    /// Closes the stream (Twilio's `stop` first); `false` when there was none.
    fn stop_stream(&mut self, reason: &str, code: u16) -> bool {
        let Some(s) = self.stream.as_mut() else {
            return false;
        };
        if let Some(mut session) = s.session.take() {
            if let Some(stop) = s.app.stop() {
                session.send(stop, None);
            }
            session.close();
        }
        self.end_stream(reason, code);
        true
    }

    fn end_stream(&mut self, reason: &str, code: u16) {
        if self.stream.take().is_none() {
            return;
        }
        self.playout = None;
        self.cfg
            .counters
            .streams_active
            .fetch_sub(1, Ordering::Relaxed);
        self.emit(Event::StreamStopped {
            reason: reason.to_string(),
            code,
        });
    }

    /// Barge-in: drops the queued audio and tells the app what the caller heard of it (api.md
    /// §3.5 `cleared`; Twilio: a `mark` for each mark dropped). `None` without a playout.
    fn clear_playout(&mut self) -> Option<crate::stream::Cleared> {
        let cleared = self.playout.as_mut()?.clear();
        if let Some(s) = self.stream.as_mut() {
            let msgs = s.app.cleared(&cleared);
            if let Some(session) = s.session.as_mut() {
                for m in msgs {
                    session.send(m, None);
                }
            }
        }
        Some(cleared)
    }

    fn mark_reached(&mut self, name: String) {
        if let Some(s) = self.stream.as_mut() {
            let m = s.app.mark(&name);
            if let Some(session) = s.session.as_mut() {
                session.send(m, None);
            }
        }
        self.emit(Event::PlayMark { name });
    }

    fn stop_record(&mut self) -> bool {
        let Some(r) = self.recording.take() else {
            return false;
        };
        let path = r.path.clone();
        match r.writer.finish() {
            Ok(duration_ms) => self.emit(Event::RecordStopped { path, duration_ms }),
            Err(e) => self.emit(Event::Error {
                status: format!("recording {}: {e}", path.display()),
            }),
        }
        true
    }

    fn finish(&mut self, reason: &str) -> Report {
        self.stop_stream(reason, 0);
        self.stop_record();
        let report = self.rtp.finish();
        self.session_events();
        report
    }

    /// Key presses and the media timeout, as the RTP session found them.
    fn session_events(&mut self) {
        while let Some(e) = self.rtp.poll_event() {
            match e {
                SessionEvent::Dtmf(digit) => self.emit(Event::Dtmf {
                    digit,
                    source: "rfc4733",
                }),
                SessionEvent::MediaTimeout => self.emit(Event::MediaTimeout),
            }
        }
    }

    fn on_app(&mut self, m: FromApp) {
        match m {
            // Binary frames are audio in our protocol only (Twilio's audio comes as text).
            FromApp::Audio(bytes) => {
                if self.stream.as_ref().is_some_and(|s| s.app.takes_binary()) {
                    self.play(&bytes);
                }
            }
            FromApp::Clear => {
                self.clear_playout();
            }
            FromApp::Mark(name) => {
                if let Some(q) = self.playout.as_mut() {
                    q.push_mark(name);
                }
            }
            FromApp::Text(t) => match self.stream.as_ref().and_then(|s| s.app.from_app_text(&t)) {
                Some(FromApp::Audio(bytes)) => self.play(&bytes),
                Some(m) => self.on_app(m),
                None => {}
            },
            // The app went away: the call stays up (api.md §3.5), and a failed socket of a
            // resumable stream is reconnected.
            FromApp::Closed { reason, code } => self.stream_failed(reason, code),
        }
    }

    /// The app's audio (s16le at the stream's rate) onto the playout queue.
    fn play(&mut self, bytes: &[u8]) {
        let Some(q) = self.playout.as_mut() else {
            return;
        };
        if let Some(o) = q.push_pcm(bytes) {
            self.emit(Event::Error {
                status: format!(
                    "playout queue over {} s: dropped {} ms of the oldest audio",
                    PLAYOUT_MAX_MS / 1000,
                    o.dropped_ms
                ),
            });
        }
    }

    fn on_rtp(&mut self, buf: &[u8], from: SocketAddr) {
        let now = Instant::now();
        if rtp::is_rtcp(buf) {
            self.on_rtcp(buf, from);
            return;
        }
        let (foreign, failed) = (self.rtp.foreign_dropped, self.rtp.srtp_failed);
        let audio = self.rtp.handle_rtp(now.into_std(), from, buf);
        if self.rtp.foreign_dropped > foreign {
            self.cfg
                .counters
                .rtp_foreign_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.rtp.srtp_failed > failed {
            self.cfg
                .counters
                .srtp_auth_failed
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.cfg.counters.rtp_in.fetch_add(1, Ordering::Relaxed);
        self.session_events();
        let Some(crate::session::Audio {
            pcm,
            seq,
            timestamp,
            ssrc,
        }) = audio
        else {
            return;
        };
        let rate = self.rtp.codec().rate();
        if let Some(s) = self.stream.as_mut() {
            if let Some(m) = s.app.caller_frame(&pcm, rate) {
                if let Some(session) = s.session.as_mut() {
                    session.send(m, Some(now.into_std()));
                }
            }
        }
        let links = self.links_out.iter().any(|l| l.tap == Tap::Received);
        let timeline = self.recording.is_some() || !self.taps.is_empty();
        if !links && !timeline {
            return;
        }
        // Other legs, the recording and CPA take 8 kHz.
        let pcm = if rate == 16000 {
            let mut narrow = Vec::with_capacity(SAMPLES);
            self.wide.caller.process(&pcm, &mut narrow);
            narrow
        } else {
            pcm
        };
        if links && pcm.len() == SAMPLES {
            let mut frame = mix::Frame {
                pcm: [0; SAMPLES],
                arrived: now.into_std(),
            };
            frame.pcm.copy_from_slice(&pcm);
            self.push_links(Tap::Received, &frame);
        }
        if timeline {
            let arrival_ms = (now - self.started).as_millis() as u64;
            // Duplicates and late packets are the buffer's to refuse; nothing else to do then.
            let _ = self.jitter.push(arrival_ms, seq, timestamp, ssrc, pcm);
        }
    }

    fn on_rtcp(&mut self, buf: &[u8], from: SocketAddr) {
        self.rtp
            .handle_rtcp(std::time::Instant::now(), from, buf, now_ntp());
    }

    async fn send_rtcp(&mut self) {
        if let Some(t) = self.rtp.rtcp_report(std::time::Instant::now(), now_ntp()) {
            let _ = self.lease.rtcp.try_send_to(&t.bytes, t.to);
        }
    }

    /// Hands a frame to every link carrying `tap`; links whose destination is gone are dropped.
    fn push_links(&mut self, tap: Tap, frame: &mix::Frame) {
        self.links_out.retain(|l| l.tap != tap || l.push(frame));
    }

    /// This tick's frames from the links of `feed`, added into `frame`; returns the earliest
    /// arrival among them (for the bridge's added delay).
    fn pull_links(&mut self, feed: Feed, frame: &mut [i16; SAMPLES]) -> Option<std::time::Instant> {
        let mut earliest: Option<std::time::Instant> = None;
        self.links_in.retain_mut(|l| {
            if l.feed != feed {
                return true;
            }
            match l.pull() {
                Ok(Some(f)) => {
                    mix::add(frame, &f.pcm);
                    earliest = Some(earliest.map_or(f.arrived, |e| e.min(f.arrived)));
                    true
                }
                Ok(None) => true,
                Err(mix::SourceGone) => false,
            }
        });
        earliest
    }

    async fn tick(&mut self) {
        if self.rtp.destination().is_none() {
            return;
        }
        let wide = self.rtp.codec().rate() == 16000;
        let mut frame = vec![0i16; self.rtp.codec().frame_samples()];
        if self.rtp.is_held() {
            // Nothing goes out on hold (we answered recvonly); other legs' audio is let go so it
            // is not late when the call resumes, and the app's audio waits.
            let mut discard = [0i16; SAMPLES];
            self.pull_links(Feed::Main, &mut discard);
            self.pull_links(Feed::Inject, &mut discard);
            self.pull_caller_for_taps(&[0; SAMPLES]);
            self.rtp.tick(std::time::Instant::now(), &frame);
            self.session_events();
            return;
        }
        if let Some(q) = self.playout.as_mut() {
            let (marks, _) = q.next_frame(&mut frame);
            for name in marks {
                self.mark_reached(name);
            }
        }
        // Other legs' audio (8 kHz), mixed in at the call's rate.
        let mut main = [0i16; SAMPLES];
        let arrived = self.pull_links(Feed::Main, &mut main);
        if arrived.is_some() {
            add_at_rate(&mut frame, &main, wide.then_some(&mut self.wide.main));
        }
        if self.links_out.iter().any(|l| l.tap == Tap::Sent) {
            let sent = mix::Frame {
                pcm: to_8k(&frame, wide.then_some(&mut self.wide.sent)),
                arrived: Instant::now().into_std(),
            };
            self.push_links(Tap::Sent, &sent);
        }
        let mut inject = [0i16; SAMPLES];
        if self.pull_links(Feed::Inject, &mut inject).is_some() {
            add_at_rate(&mut frame, &inject, wide.then_some(&mut self.wide.inject));
        }
        if let Some(at) = arrived {
            self.cfg.counters.bridge_latency.record(at.elapsed());
        }
        if self.recording.is_some() || !self.taps.is_empty() {
            let played = to_8k(&frame, wide.then_some(&mut self.wide.played));
            self.pull_caller_for_taps(&played);
        }
        let packet = self.rtp.tick(std::time::Instant::now(), &frame);
        self.session_events();
        if let Some(t) = packet {
            if self.lease.rtp.try_send_to(&t.bytes, t.to).is_ok() {
                self.cfg.counters.rtp_out.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The caller's audio on our clock, for CPA, in-band DTMF and the recording (with `played`
    /// beside it).
    fn pull_caller_for_taps(&mut self, played: &[i16; SAMPLES]) {
        if self.recording.is_none() && self.taps.is_empty() {
            return;
        }
        let caller = match self.jitter.pull() {
            Pulled::Frame(f) | Pulled::Concealed(f) => f,
            Pulled::Empty => vec![0; SAMPLES],
        };
        // A consumer that finished (CPA done) is let go; a slow one misses a frame.
        self.taps
            .retain(|tap| !(tap.try_send(caller.clone()).is_err() && tap.is_closed()));
        self.record(&caller, played);
    }

    /// One 20 ms stereo frame: the caller left, what we played right.
    fn record(&mut self, caller: &[i16], played: &[i16]) {
        let Some(r) = self.recording.as_mut() else {
            return;
        };
        if let Err(e) = r.writer.write(caller, played) {
            let status = format!("recording {}: {e}", r.path.display());
            self.recording = None;
            self.emit(Event::Error { status });
        }
    }
}

/// Adds an 8 kHz frame of other legs' audio into `frame` (8 kHz, or 16 kHz through `up`).
fn add_at_rate(frame: &mut [i16], audio: &[i16; SAMPLES], up: Option<&mut Upsampler>) {
    match up {
        Some(up) => {
            let mut wide = Vec::with_capacity(2 * SAMPLES);
            up.process(audio, &mut wide);
            mix::add(frame, &wide);
        }
        None => mix::add(frame, audio),
    }
}

/// A frame at the call's rate as 8 kHz (through `down` when the call is wideband).
fn to_8k(frame: &[i16], down: Option<&mut Downsampler>) -> [i16; SAMPLES] {
    let mut out = [0i16; SAMPLES];
    match down {
        Some(down) => {
            let mut narrow = Vec::with_capacity(SAMPLES);
            down.process(frame, &mut narrow);
            for (o, s) in out.iter_mut().zip(narrow) {
                *o = s;
            }
        }
        None => {
            for (o, s) in out.iter_mut().zip(frame) {
                *o = *s;
            }
        }
    }
    out
}
