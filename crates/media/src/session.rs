//! One leg's RTP and RTCP as a plain state machine (no socket, no clock): what arrives is handed
//! in with the time and the address it came from, what to send is asked for, packet by packet.
//! The media task around it owns the sockets, the 20 ms clock, the app's stream, the recording
//! and the links to other legs.
//!
//! Source learning (after rtpengine's "learn, then lock"): RTP is symmetric (api.md §7), so audio
//! goes where the peer's packets really come from — but only the first source within the
//! learning window after the SDP said where to send (preferring the SDP address itself) is
//! learnt. Packets from anywhere else are dropped and counted: nobody who merely reaches the
//! port can redirect the caller's audio or speak into the call. A new offer (re-INVITE) learns
//! again; a new SSRC from the learnt address is the same peer restarting its stream.
//!
//! SRTP (RFC 3711, keyed by SDES) is a transform inside: packets are authenticated before their
//! source can be learnt, and whatever fails (a bad tag, a replay, a wrong key, a truncated
//! packet) is dropped and counted, never played.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dtmf::{self, Rfc4733Receiver};
use crate::rtcp::{self, ReceiverStats, ReportBlock, RtcpPacket};
use crate::rtp::{self, RtpHeader, SeqExtender};

use crate::codec::Coders;
pub use crate::codec::{AudioCodec, SAMPLES};
use crate::srtp::Srtp;
pub use crate::srtp::{SrtpKeys, SrtpSuite};

/// How long after the SDP a source may still be learnt.
const LEARN_WINDOW: Duration = Duration::from_secs(3);

/// Where and how to send, from the SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub addr: SocketAddr,
    pub codec: AudioCodec,
    /// The payload type the codec has in this call (Opus's is dynamic).
    pub payload_type: u8,
    /// telephone-event's payload type and clock (8000, or 48000 beside Opus).
    pub telephone_event: Option<(u8, u32)>,
    /// SRTP, when the call is secure.
    pub srtp: Option<SrtpKeys>,
}

/// A packet to send: RTP to the peer, or RTCP to its RTCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub rtcp: bool,
    pub bytes: Vec<u8>,
}

/// Caller audio from one RTP packet, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    pub pcm: Vec<i16>,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A key press in RFC 4733 events.
    Dtmf(char),
    /// No RTP for the media timeout on a call that is not held.
    MediaTimeout,
}

/// What `call_quality` reports (api.md §4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub packets_received: u64,
    pub packets_expected: u64,
    pub packets_lost: u64,
    pub jitter_ms: f64,
    pub rtt_ms: Option<f64>,
}

/// A digit being sent: its RTP timestamp and the telephone-event packets still to go.
type DigitInFlight = (u32, VecDeque<(bool, [u8; 4])>);

pub struct RtpSession {
    media_timeout: Duration,
    started: Instant,
    remote: Option<Remote>,
    /// The source learnt from the peer's packets; `None` while learning.
    learnt: Option<SocketAddr>,
    learn_until: Option<Instant>,
    /// Packets refused because they came from somewhere else than the learnt source.
    pub foreign_dropped: u64,
    /// SRTP or SRTCP packets that failed authentication (or were replays, or too short).
    pub srtp_failed: u64,
    srtp: Option<Srtp>,
    coders: Coders,
    held: bool,
    // Sending.
    ssrc: u32,
    seq: u16,
    ts: u32,
    sent_packets: u32,
    sent_octets: u32,
    dtmf_queue: VecDeque<(char, u32)>,
    dtmf_active: Option<DigitInFlight>,
    dtmf_gap: u32,
    // Receiving.
    stats: ReceiverStats,
    fwd_seq: SeqExtender,
    fwd_ssrc: Option<u32>,
    last_fwd: Option<u64>,
    dtmf_rx: Rfc4733Receiver,
    last_rtp: Option<Instant>,
    timed_out: bool,
    rtt_ms: Option<f64>,
    last_sr: Option<(u32, Instant)>,
    events: VecDeque<SessionEvent>,
}

impl RtpSession {
    /// `ssrc`, `seq`, `ts`: the random starting values of what we send (RFC 3550 §5.1).
    pub fn new(now: Instant, media_timeout: Duration, ssrc: u32, seq: u16, ts: u32) -> Self {
        RtpSession {
            media_timeout,
            started: now,
            remote: None,
            learnt: None,
            learn_until: None,
            foreign_dropped: 0,
            srtp_failed: 0,
            srtp: None,
            coders: Coders::default(),
            held: false,
            ssrc,
            seq,
            ts,
            sent_packets: 0,
            sent_octets: 0,
            dtmf_queue: VecDeque::new(),
            dtmf_active: None,
            dtmf_gap: 0,
            stats: ReceiverStats::default(),
            fwd_seq: SeqExtender::default(),
            fwd_ssrc: None,
            last_fwd: None,
            dtmf_rx: Rfc4733Receiver::new(),
            last_rtp: None,
            timed_out: false,
            rtt_ms: None,
            last_sr: None,
            events: VecDeque::new(),
        }
    }

    /// What the SDP said (an answer, or a re-INVITE's offer): send there until a source is learnt,
    /// and learn again (a re-INVITE may move the peer).
    pub fn set_remote(&mut self, now: Instant, remote: Remote) {
        // New keys (a re-INVITE may re-key) make new contexts; the same keys keep them, with
        // their rollover counters and replay windows.
        match &remote.srtp {
            None => self.srtp = None,
            Some(k) if self.srtp.as_ref().is_some_and(|s| s.keys == *k) => {}
            Some(k) => self.srtp = Srtp::new(k.clone()),
        }
        self.coders.prepare(remote.codec);
        self.remote = Some(remote);
        self.learnt = None;
        self.learn_until = Some(now + LEARN_WINDOW);
        self.last_rtp.get_or_insert(now);
    }

    /// The peer holds the call: nothing is sent, and its silence is no media timeout.
    pub fn set_held(&mut self, now: Instant, held: bool) {
        self.held = held;
        if !held {
            // The media timeout counts from the resume, not from the last packet before hold.
            self.last_rtp = Some(now);
        }
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Where RTP goes: the learnt source, else the SDP address.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.learnt.or(self.remote.as_ref().map(|r| r.addr))
    }

    pub fn send_dtmf(&mut self, digits: &str, duration_ms: u32) {
        for d in digits.chars() {
            self.dtmf_queue.push_back((d, duration_ms));
        }
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// The SDP address while the learning window is open (it may still replace a stray source).
    fn learning_sdp(&self, now: Instant, from: SocketAddr) -> bool {
        self.learn_until.is_some_and(|until| now <= until)
            && self.remote.as_ref().is_some_and(|r| r.addr == from)
    }

    /// Whether a packet from `from` is the peer's (learning it if the window is open).
    fn accept_source(&mut self, now: Instant, from: SocketAddr) -> bool {
        if self.learnt == Some(from) {
            return true;
        }
        let sdp = self.remote.as_ref().map(|r| r.addr);
        let learning = self.learn_until.is_some_and(|until| now <= until);
        if self.remote.is_none() {
            // Before any SDP (early packets) audio is taken but nothing is learnt.
            return true;
        }
        match self.learnt {
            // The SDP address wins over a source learnt first during the window (a stray packet
            // must not steal the call before the real peer speaks).
            Some(_) if learning && Some(from) == sdp => {
                self.learnt = Some(from);
                true
            }
            Some(_) => false,
            None if learning => {
                self.learnt = Some(from);
                true
            }
            None => {
                Some(from) == sdp && {
                    self.learnt = Some(from);
                    true
                }
            }
        }
    }

    /// An RTP packet from `from`: the caller's audio to forward, if it carries any. Key presses
    /// come out of [`Self::poll_event`].
    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, buf: &[u8]) -> Option<Audio> {
        rtp::parse(buf)?;
        if self.learnt.is_some_and(|l| l != from) && !self.learning_sdp(now, from) {
            self.foreign_dropped += 1;
            return None;
        }
        // Authenticated before anything is learnt from it.
        let plain;
        let buf = match self.srtp.as_mut() {
            Some(s) => match s.inbound.decrypt_rtp(buf) {
                Ok(p) => {
                    plain = p;
                    &plain[..]
                }
                Err(_) => {
                    self.srtp_failed += 1;
                    return None;
                }
            },
            None => buf,
        };
        if !self.accept_source(now, from) {
            self.foreign_dropped += 1;
            return None;
        }
        let (h, payload) = rtp::parse(buf)?;
        self.last_rtp = Some(now);
        let te = self
            .remote
            .as_ref()
            .and_then(|r| r.telephone_event)
            .map(|(pt, _)| pt);
        if Some(h.payload_type) == te {
            if let Some((digit, _)) = self.dtmf_rx.handle_packet(h.timestamp, payload) {
                self.events.push_back(SessionEvent::Dtmf(digit));
            }
            while let Some((digit, _)) = self.dtmf_rx.poll_digit() {
                self.events.push_back(SessionEvent::Dtmf(digit));
            }
            return None;
        }
        let negotiated = self.remote.as_ref().map(|r| (r.payload_type, r.codec));
        let codec = match (h.payload_type, negotiated) {
            (pt, Some((ours, codec))) if pt == ours => codec,
            // G.711 is understood whatever was negotiated (api.md §7: no filtering).
            (0, _) => AudioCodec::Pcmu,
            (8, _) => AudioCodec::Pcma,
            _ => return None, // comfort noise and anything unknown
        };
        // Audio only: telephone-events share one timestamp and would read as jitter.
        let clock = u64::from(codec.clock());
        let arrival =
            (now.duration_since(self.started).as_micros() as u64 * clock / 1_000_000) as u32;
        self.stats.update(h.ssrc, h.seq, h.timestamp, arrival);
        // Duplicates and packets older than one already forwarded are dropped; a new SSRC or
        // a jump starts over instead of silencing the caller (api.md §7).
        if self.fwd_ssrc != Some(h.ssrc) {
            self.fwd_ssrc = Some(h.ssrc);
            self.fwd_seq.reset();
            self.last_fwd = None;
        }
        let ext = self.fwd_seq.extend(h.seq);
        if let Some(last) = self.last_fwd {
            if ext <= last && last - ext < 1000 {
                return None;
            }
        }
        self.last_fwd = Some(ext);
        let pcm = self.coders.decode(codec, payload)?;
        Some(Audio {
            pcm,
            seq: h.seq,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
        })
    }

    /// An RTCP packet: the peer's sender reports (for our receiver reports) and its report on
    /// us (round-trip time). `ntp`: the wall clock now, in NTP format.
    pub fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, buf: &[u8], ntp: u64) {
        // RTCP comes from the peer's RTCP port: same host as the learnt source.
        if let Some(src) = self.learnt {
            if src.ip() != from.ip() {
                self.foreign_dropped += 1;
                return;
            }
        }
        let plain;
        let buf = match self.srtp.as_mut() {
            Some(s) => match s.inbound.decrypt_rtcp(buf) {
                Ok(p) => {
                    plain = p;
                    &plain[..]
                }
                Err(_) => {
                    self.srtp_failed += 1;
                    return;
                }
            },
            None => buf,
        };
        for p in rtcp::parse(buf) {
            let (reports, sr) = match p {
                RtcpPacket::SenderReport { ntp, reports, .. } => (reports, Some(ntp)),
                RtcpPacket::ReceiverReport { reports, .. } => (reports, None),
                _ => continue,
            };
            if let Some(sr_ntp) = sr {
                self.last_sr = Some((rtcp::ntp_middle32(sr_ntp), now));
            }
            for b in reports.iter().filter(|b| b.ssrc == self.ssrc) {
                if let Some(rtt) = rtcp::rtt_ms(ntp, b.lsr, b.dlsr) {
                    self.rtt_ms = Some(rtt);
                }
            }
        }
    }

    /// The codec in force (what [`Self::tick`] wants frames of).
    pub fn codec(&self) -> AudioCodec {
        self.remote
            .as_ref()
            .map(|r| r.codec)
            .unwrap_or(AudioCodec::Pcmu)
    }

    /// The 20 ms tick: `frame` (what the caller should hear, at the codec's rate) as an RTP
    /// packet — or a key press being sent, which takes its place. Nothing while held or before
    /// the SDP.
    pub fn tick(&mut self, now: Instant, frame: &[i16]) -> Option<Transmit> {
        let to = self.destination()?;
        if !self.held
            && !self.timed_out
            && self
                .last_rtp
                .is_some_and(|t| now.duration_since(t) > self.media_timeout)
        {
            self.timed_out = true;
            self.events.push_back(SessionEvent::MediaTimeout);
        }
        if self.held {
            return None;
        }
        let codec = self.codec();
        let mut packet = Vec::with_capacity(12 + SAMPLES);
        if let Some((pt, (marker, payload))) = self.next_dtmf_packet() {
            let h = RtpHeader {
                payload_type: pt,
                marker,
                seq: self.seq,
                timestamp: self
                    .dtmf_active
                    .as_ref()
                    .map(|(ts, _)| *ts)
                    .unwrap_or(self.ts),
                ssrc: self.ssrc,
            };
            rtp::write(&h, &payload, &mut packet);
        } else {
            let payload = self.coders.encode(codec, frame)?;
            let h = RtpHeader {
                payload_type: self.remote.as_ref().map_or(0, |r| r.payload_type),
                marker: false,
                seq: self.seq,
                timestamp: self.ts,
                ssrc: self.ssrc,
            };
            rtp::write(&h, &payload, &mut packet);
        }
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(codec.clock() / 50);
        self.sent_packets = self.sent_packets.wrapping_add(1);
        self.sent_octets = self.sent_octets.wrapping_add((packet.len() - 12) as u32);
        let bytes = match self.srtp.as_mut() {
            Some(s) => s.outbound.encrypt_rtp(&packet).ok()?.to_vec(),
            None => packet,
        };
        Some(Transmit {
            to,
            rtcp: false,
            bytes,
        })
    }

    /// Our sender or receiver report (RFC 3550 §6.4), to the peer's RTCP port (RTP + 1).
    pub fn rtcp_report(&mut self, now: Instant, ntp: u64) -> Option<Transmit> {
        let rtp_to = self.destination()?;
        let to = SocketAddr::new(rtp_to.ip(), rtp_to.port().wrapping_add(1));
        let mut blocks = Vec::new();
        if let Some(src) = self.stats.ssrc() {
            let (fraction_lost, cumulative_lost) = self.stats.take_interval();
            let (lsr, dlsr) = match self.last_sr {
                Some((lsr, at)) => (lsr, (now.duration_since(at).as_secs_f64() * 65536.0) as u32),
                None => (0, 0),
            };
            blocks.push(ReportBlock {
                ssrc: src,
                fraction_lost,
                cumulative_lost,
                ext_max_seq: self.stats.ext_max_seq(),
                jitter: self.stats.jitter(),
                lsr,
                dlsr,
            });
        }
        let mut out = Vec::with_capacity(128);
        if self.sent_packets > 0 {
            rtcp::write_sr(
                self.ssrc,
                ntp,
                self.ts,
                self.sent_packets,
                self.sent_octets,
                &blocks,
                "botstream",
                &mut out,
            );
        } else {
            rtcp::write_rr(self.ssrc, &blocks, "botstream", &mut out);
        }
        let bytes = match self.srtp.as_mut() {
            Some(s) => s.outbound.encrypt_rtcp(&out).ok()?.to_vec(),
            None => out,
        };
        Some(Transmit {
            to,
            rtcp: true,
            bytes,
        })
    }

    /// The last key presses a packet finished, and the statistics of `call_quality`.
    pub fn finish(&mut self) -> Report {
        // One packet can finish two presses; the second waits in the receiver.
        while let Some((digit, _)) = self.dtmf_rx.flush() {
            self.events.push_back(SessionEvent::Dtmf(digit));
        }
        Report {
            packets_received: self.stats.packets_received(),
            packets_expected: self.stats.packets_expected(),
            packets_lost: self.stats.packets_lost(),
            // The statistics count in RTP clock units; jitter_ms assumes 8000.
            jitter_ms: self.stats.jitter_ms() * 8000.0 / f64::from(self.codec().clock()),
            rtt_ms: self.rtt_ms,
        }
    }

    /// The next telephone-event packet, if a digit is being sent (RFC 4733 §2.5): all packets
    /// of one digit share the timestamp of its first.
    fn next_dtmf_packet(&mut self) -> Option<(u8, (bool, [u8; 4]))> {
        let (pt, clock) = self.remote.as_ref().and_then(|r| r.telephone_event)?;
        if self.dtmf_active.as_ref().is_some_and(|(_, q)| q.is_empty()) {
            self.dtmf_active = None;
            // A pause between digits, so receivers see separate presses.
            self.dtmf_gap = 3;
        }
        if self.dtmf_active.is_none() {
            if self.dtmf_gap > 0 {
                self.dtmf_gap -= 1;
                return None;
            }
            let (digit, duration) = self.dtmf_queue.pop_front()?;
            let mut packets = dtmf::encode_digit(digit, duration, 10)?;
            // Durations count in the event's clock: 8000 as encoded, else scaled.
            if clock != 8000 {
                for (_, p) in &mut packets {
                    let d = u32::from(u16::from_be_bytes([p[2], p[3]])) * clock / 8000;
                    let d = u16::try_from(d).unwrap_or(u16::MAX).to_be_bytes();
                    (p[2], p[3]) = (d[0], d[1]);
                }
            }
            self.dtmf_active = Some((self.ts, packets.into()));
        }
        let (_, q) = self.dtmf_active.as_mut()?;
        q.pop_front().map(|p| (pt, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "10.0.0.1:6000";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn packet(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = Vec::new();
        let h = RtpHeader {
            payload_type: 0,
            marker: false,
            seq,
            timestamp: seq as u32 * 160,
            ssrc,
        };
        rtp::write(&h, &[0xffu8; 160], &mut p);
        p
    }

    fn session(t0: Instant) -> RtpSession {
        let mut s = RtpSession::new(t0, Duration::from_secs(60), 1, 100, 1000);
        s.set_remote(
            t0,
            Remote {
                addr: addr(SDP),
                codec: AudioCodec::Pcmu,
                payload_type: 0,
                telephone_event: Some((101, 8000)),
                srtp: None,
            },
        );
        s
    }

    #[test]
    fn sends_to_the_sdp_address_then_to_the_learnt_source() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let f = [0i16; SAMPLES];
        assert_eq!(s.tick(t0, &f).unwrap().to, addr(SDP));
        // Behind a NAT the peer's packets come from elsewhere: learnt, and answered there.
        assert!(s
            .handle_rtp(t0, addr("192.0.2.7:40000"), &packet(1, 9))
            .is_some());
        assert_eq!(s.tick(t0, &f).unwrap().to, addr("192.0.2.7:40000"));
    }

    #[test]
    fn once_learnt_other_sources_are_dropped_and_counted() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert!(s.handle_rtp(t0, addr(SDP), &packet(1, 9)).is_some());
        let later = t0 + Duration::from_secs(10);
        // An attacker who reaches the port: not heard, and the audio is not redirected.
        assert!(s
            .handle_rtp(later, addr("203.0.113.5:1234"), &packet(2, 9))
            .is_none());
        assert!(s
            .handle_rtp(later, addr("203.0.113.5:1234"), &packet(3, 77))
            .is_none());
        assert_eq!(s.foreign_dropped, 2);
        assert_eq!(s.tick(later, &[0; SAMPLES]).unwrap().to, addr(SDP));
        // The peer restarting its stream (new SSRC) from the same address is still heard.
        assert!(s.handle_rtp(later, addr(SDP), &packet(500, 10)).is_some());
        // A re-INVITE that moves the peer learns again.
        s.set_remote(
            later,
            Remote {
                addr: addr("10.0.0.9:7000"),
                codec: AudioCodec::Pcmu,
                payload_type: 0,
                telephone_event: Some((101, 8000)),
                srtp: None,
            },
        );
        assert!(s
            .handle_rtp(later, addr("10.0.0.9:7000"), &packet(600, 10))
            .is_some());
        assert!(s.handle_rtp(later, addr(SDP), &packet(601, 10)).is_none());
    }

    #[test]
    fn the_sdp_address_wins_during_the_window() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert!(s
            .handle_rtp(t0, addr("203.0.113.5:1234"), &packet(1, 5))
            .is_some());
        assert!(s.handle_rtp(t0, addr(SDP), &packet(1, 9)).is_some());
        assert_eq!(s.destination(), Some(addr(SDP)));
        assert!(s
            .handle_rtp(
                t0 + Duration::from_secs(5),
                addr("203.0.113.5:1234"),
                &packet(2, 5)
            )
            .is_none());
    }

    #[test]
    fn after_the_window_only_the_sdp_address_may_be_learnt() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let late = t0 + Duration::from_secs(4);
        assert!(s
            .handle_rtp(late, addr("203.0.113.5:1234"), &packet(1, 5))
            .is_none());
        assert!(s.handle_rtp(late, addr(SDP), &packet(1, 9)).is_some());
    }

    #[test]
    fn silence_times_out_unless_held() {
        let t0 = Instant::now();
        let mut s = RtpSession::new(t0, Duration::from_secs(2), 1, 1, 1);
        s.set_remote(
            t0,
            Remote {
                addr: addr(SDP),
                codec: AudioCodec::Pcma,
                payload_type: 8,
                telephone_event: None,
                srtp: None,
            },
        );
        s.set_held(t0, true);
        assert!(
            s.tick(t0 + Duration::from_secs(5), &[0; SAMPLES]).is_none(),
            "nothing sent"
        );
        assert_eq!(s.poll_event(), None);
        s.set_held(t0 + Duration::from_secs(5), false);
        assert!(s.tick(t0 + Duration::from_secs(6), &[0; SAMPLES]).is_some());
        assert_eq!(s.poll_event(), None, "counted from the resume");
        s.tick(t0 + Duration::from_secs(8), &[0; SAMPLES]);
        assert_eq!(s.poll_event(), Some(SessionEvent::MediaTimeout));
    }

    #[test]
    fn a_key_press_replaces_audio_packets_with_telephone_events() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.send_dtmf("5", 60);
        let pts: Vec<u8> = (0..12)
            .filter_map(|_| s.tick(t0, &[0; SAMPLES]))
            .map(|t| rtp::parse(&t.bytes).unwrap().0.payload_type)
            .collect();
        assert!(pts.iter().filter(|p| **p == 101).count() >= 3, "{pts:?}");
        assert_eq!(*pts.last().unwrap(), 0, "then audio again");
    }

    fn keys(suite: SrtpSuite, local: u8, remote: u8) -> SrtpKeys {
        SrtpKeys {
            suite,
            local: [local; 30],
            remote: [remote; 30],
        }
    }

    fn secure(t0: Instant, k: SrtpKeys) -> RtpSession {
        let mut s = RtpSession::new(t0, Duration::from_secs(60), 7, 65530, 1000);
        s.set_remote(
            t0,
            Remote {
                addr: addr(SDP),
                codec: AudioCodec::Pcmu,
                payload_type: 0,
                telephone_event: Some((101, 8000)),
                srtp: Some(k),
            },
        );
        s
    }

    #[test]
    fn srtp_both_ways_across_a_sequence_wrap_and_bad_packets_are_dropped() {
        for suite in [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
        ] {
            let t0 = Instant::now();
            // Two ends with mirrored keys: what one protects the other authenticates.
            let mut a = secure(t0, keys(suite, 1, 2));
            let mut b = secure(t0, keys(suite, 2, 1));
            let mut frame = [0i16; SAMPLES];
            frame[0] = 1234;
            // a starts at seq 65530: its tenth packet has wrapped (the rollover counter counts).
            for i in 0..10 {
                let t = a.tick(t0, &frame).unwrap();
                assert_ne!(&t.bytes[12..172], &[0u8; 160][..], "encrypted");
                let got = b
                    .handle_rtp(t0, addr(SDP), &t.bytes)
                    .expect("authenticated");
                assert_eq!(
                    got.pcm[0],
                    crate::g711::ulaw_decode(crate::g711::ulaw_encode(1234)),
                    "{i}"
                );
                if i == 5 {
                    // A replay of the same packet is refused.
                    assert!(b.handle_rtp(t0, addr(SDP), &t.bytes).is_none());
                    // A flipped bit fails authentication; a truncated packet too.
                    let mut bad = t.bytes.clone();
                    bad[20] ^= 1;
                    assert!(b.handle_rtp(t0, addr(SDP), &bad).is_none());
                    assert!(b.handle_rtp(t0, addr(SDP), &t.bytes[..14]).is_none());
                }
            }
            assert_eq!(b.srtp_failed, 3);
            // Plain RTP on a secure call is not played either.
            assert!(b.handle_rtp(t0, addr(SDP), &packet(9, 9)).is_none());
            assert_eq!(b.srtp_failed, 4);
            // SRTCP both ways.
            let r = a.rtcp_report(t0, 0x1234_5678_9abc_def0).unwrap();
            b.handle_rtcp(t0, addr(SDP), &r.bytes, 0);
            assert_eq!(b.srtp_failed, 4, "the SRTCP report authenticated");
        }
    }

    #[test]
    fn a_wrong_key_is_never_heard_and_never_learnt() {
        let t0 = Instant::now();
        let mut a = secure(t0, keys(SrtpSuite::AesCm128HmacSha1_80, 1, 2));
        let mut b = secure(t0, keys(SrtpSuite::AesCm128HmacSha1_80, 2, 9));
        let t = a.tick(t0, &[0; SAMPLES]).unwrap();
        assert!(b
            .handle_rtp(t0, addr("203.0.113.9:5000"), &t.bytes)
            .is_none());
        assert_eq!(b.destination(), Some(addr(SDP)), "nothing learnt from it");
    }

    #[test]
    fn g722_carries_16_khz_audio_both_ways() {
        let t0 = Instant::now();
        let g722 = |s: &mut RtpSession| {
            s.set_remote(
                t0,
                Remote {
                    addr: addr(SDP),
                    codec: AudioCodec::G722,
                    payload_type: 9,
                    telephone_event: Some((101, 8000)),
                    srtp: None,
                },
            )
        };
        let (mut a, mut b) = (session(t0), session(t0));
        g722(&mut a);
        g722(&mut b);
        // A 5 kHz tone: above what 8 kHz audio can carry.
        let tone: Vec<i16> = (0..320 * 25)
            .map(|i| {
                (8000.0 * (2.0 * std::f64::consts::PI * 5000.0 * i as f64 / 16000.0).sin()) as i16
            })
            .collect();
        let mut got = Vec::new();
        let mut ts = Vec::new();
        for frame in tone.chunks(320) {
            let t = a.tick(t0, frame).unwrap();
            let (h, payload) = rtp::parse(&t.bytes).unwrap();
            assert_eq!((h.payload_type, payload.len()), (9, 160));
            ts.push(h.timestamp);
            got.extend(b.handle_rtp(t0, addr(SDP), &t.bytes).unwrap().pcm);
        }
        assert_eq!(ts[1].wrapping_sub(ts[0]), 160, "an 8000 clock (RFC 3551)");
        assert_eq!(got.len(), tone.len());
        let tail = &got[3200..];
        let power = |f: f64| {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, &x) in tail.iter().enumerate() {
                let w = 2.0 * std::f64::consts::PI * f * i as f64 / 16000.0;
                re += x as f64 * w.cos();
                im += x as f64 * w.sin();
            }
            (re * re + im * im).sqrt() / tail.len() as f64
        };
        assert!(
            power(5000.0) > 1000.0,
            "the 5 kHz tone came through: {}",
            power(5000.0)
        );
        assert!(power(5000.0) > 20.0 * power(3000.0));
    }

    #[test]
    fn opus_carries_16_khz_audio_on_a_48_khz_clock_and_its_own_dtmf_rate() {
        let t0 = Instant::now();
        let opus = |s: &mut RtpSession| {
            s.set_remote(
                t0,
                Remote {
                    addr: addr(SDP),
                    codec: AudioCodec::Opus,
                    payload_type: 96,
                    telephone_event: Some((97, 48000)),
                    srtp: None,
                },
            )
        };
        let (mut a, mut b) = (session(t0), session(t0));
        opus(&mut a);
        opus(&mut b);
        let tone: Vec<i16> = (0..320 * 50)
            .map(|i| {
                (8000.0 * (2.0 * std::f64::consts::PI * 5000.0 * i as f64 / 16000.0).sin()) as i16
            })
            .collect();
        let mut got = Vec::new();
        let mut ts = Vec::new();
        for frame in tone.chunks(320) {
            let t = a.tick(t0, frame).unwrap();
            let (h, payload) = rtp::parse(&t.bytes).unwrap();
            assert_eq!(h.payload_type, 96);
            assert!(payload.len() < 160, "compressed: {}", payload.len());
            ts.push(h.timestamp);
            got.extend(b.handle_rtp(t0, addr(SDP), &t.bytes).unwrap().pcm);
        }
        assert_eq!(ts[1].wrapping_sub(ts[0]), 960, "a 48000 clock (RFC 7587)");
        assert_eq!(got.len(), tone.len());
        let tail = &got[8000..];
        let goertzel = |f: f64| {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, &x) in tail.iter().enumerate() {
                let w = 2.0 * std::f64::consts::PI * f * i as f64 / 16000.0;
                re += x as f64 * w.cos();
                im += x as f64 * w.sin();
            }
            (re * re + im * im).sqrt() / tail.len() as f64
        };
        assert!(
            goertzel(5000.0) > 1000.0,
            "5 kHz came through: {}",
            goertzel(5000.0)
        );
        assert!(goertzel(5000.0) > 20.0 * goertzel(3000.0));

        // A key press on telephone-event/48000: durations in 48 kHz units, and it is heard.
        a.send_dtmf("7", 60);
        let mut durations = Vec::new();
        for _ in 0..10 {
            let t = a.tick(t0, &tone[..320]).unwrap();
            let (h, payload) = rtp::parse(&t.bytes).unwrap();
            if h.payload_type == 97 {
                durations.push(u16::from_be_bytes([payload[2], payload[3]]));
            }
            b.handle_rtp(t0, addr(SDP), &t.bytes);
        }
        assert_eq!(durations[..3], [960, 1920, 2880]);
        let _ = b.finish();
        let mut digits = Vec::new();
        while let Some(e) = b.poll_event() {
            if let SessionEvent::Dtmf(d) = e {
                digits.push(d);
            }
        }
        assert_eq!(digits, ['7']);
    }
}
