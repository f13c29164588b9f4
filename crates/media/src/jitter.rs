//! Adaptive jitter buffer for the caller's audio. The data structure (frames keyed by an
//! extended sequence number, with `Rejected` reasons, as in webrtc-rs `rtc-interceptor`) is kept
//! apart from the playout policy (`pull`, called by the leg's 20 ms clock) and from the depth
//! estimator (`DelayStats`, fed with arrival times the caller passes in).
//!
//! Policy in brief:
//! * Playback starts (and restarts after a stall) once `target_depth` frames are buffered.
//! * A frame missing while later ones are buffered is lost: it is concealed and skipped.
//! * A frame missing with nothing buffered is late (or the peer paused): it is concealed without
//!   skipping, which adds 20 ms of delay, so the buffer deepens exactly when the network needs it.
//!   After 3 such frames playback stalls (`Empty`) until the target depth is buffered again.
//! * Sustained depth above the target (a shrunk target, or a sender clock running fast) is
//!   trimmed by dropping one frame per second.
//! * A new SSRC or a sequence jump of more than 100 continues the numbering after what is
//!   buffered (api.md §7: not filtered by SSRC, never dropped for looking "late").

use std::collections::BTreeMap;

/// What `push` refused, so the caller can count it (RTCP, metrics).
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// That sequence number is already buffered.
    Duplicate,
    /// Its playout time has passed (already played, concealed or skipped).
    Late,
    /// The buffer holds `max_frames` already.
    Overflow,
}

/// One 20 ms step of playout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// The frame as received.
    Frame(Vec<i16>),
    /// A lost or late frame: the last one repeated, 6 dB quieter per consecutive loss, then
    /// silence.
    Concealed(Vec<i16>),
    /// Nothing to play: not started, or stalled waiting for the buffer to refill.
    Empty,
}

/// Nominal frame duration: the spec fixes `a=ptime:20` (api.md §7).
const FRAME_MS: i64 = 20;
/// Upper bound on the target depth (200 ms), whatever `max_frames` allows.
const MAX_TARGET: usize = 10;
/// A sequence step larger than this is a new stream, not loss or reordering (api.md §7).
const MAX_SEQ_JUMP: u16 = 100;
/// Consecutive concealed frames before the output turns to silence (loss) or stalls (underrun).
const MAX_CONCEALED: u32 = 3;
/// Pulls in a row with the depth above the target before one frame is dropped (1 s).
const EXCESS_PULLS: u32 = 50;
/// Packets whose transit delay the depth estimate looks at (2.56 s).
const WINDOW: usize = 128;
/// Packets in a row wanting less depth before the target shrinks by one frame (3 s).
const SHRINK_AFTER: u32 = 150;
/// Key of the first packet: room below it for packets reordered ahead of the first one.
const FIRST_KEY: u64 = 1 << 16;

pub struct JitterBuffer {
    frame_samples: usize,
    max_frames: usize,
    frames: BTreeMap<u64, Vec<i16>>,
    ssrc: Option<u32>,
    /// Highest sequence number of the current stream and its key.
    highest: Option<(u16, u64)>,
    /// Key of the next frame to play; `None` until playback first starts.
    next: Option<u64>,
    playing: bool,
    /// The last frame played, for concealment.
    last: Vec<i16>,
    lost_run: u32,
    target: usize,
    excess_pulls: u32,
    delay: DelayStats,
}

impl JitterBuffer {
    /// `frame_samples` is the samples in one 20 ms packet (160 at 8 kHz), which also gives the
    /// RTP clock rate; `max_frames` bounds memory.
    pub fn new(frame_samples: usize, max_frames: usize) -> Self {
        Self {
            frame_samples,
            max_frames,
            frames: BTreeMap::new(),
            ssrc: None,
            highest: None,
            next: None,
            playing: false,
            last: Vec::new(),
            lost_run: 0,
            target: 1,
            excess_pulls: 0,
            delay: DelayStats::new(frame_samples.saturating_mul(50).max(1)),
        }
    }

    /// arrival_ms: caller's monotonic ms. ssrc change or a seq jump > 100 restarts the buffer
    /// (api.md §7) instead of dropping audio.
    pub fn push(
        &mut self,
        arrival_ms: u64,
        seq: u16,
        timestamp: u32,
        ssrc: u32,
        pcm: Vec<i16>,
    ) -> Result<(), Rejected> {
        let step = self
            .highest
            .map(|(hs, hk)| (hk, seq.wrapping_sub(hs) as i16))
            .filter(|&(_, d)| self.ssrc == Some(ssrc) && d.unsigned_abs() <= MAX_SEQ_JUMP);
        let key = match step {
            Some((hk, d)) => {
                let key = hk.checked_add_signed(d as i64).ok_or(Rejected::Late)?;
                if d > 0 {
                    self.highest = Some((seq, key));
                }
                key
            }
            None => {
                // A new stream: number it right after everything buffered or played, so its
                // audio follows the old stream's without a gap and is never taken as late.
                let key = match (self.highest, self.next) {
                    (None, None) => FIRST_KEY,
                    (h, n) => h
                        .map_or(0, |(_, k)| k.saturating_add(1))
                        .max(n.unwrap_or(0)),
                };
                self.ssrc = Some(ssrc);
                self.highest = Some((seq, key));
                self.delay.restart();
                key
            }
        };

        if self.frames.contains_key(&key) {
            return Err(Rejected::Duplicate);
        }
        // Late packets count most for the estimate: they show the depth was too small.
        self.observe(arrival_ms, timestamp);
        if self.next.is_some_and(|n| key < n) {
            return Err(Rejected::Late);
        }
        if self.frames.len() >= self.max_frames {
            return Err(Rejected::Overflow);
        }
        self.frames.insert(key, pcm);
        Ok(())
    }

    fn observe(&mut self, arrival_ms: u64, timestamp: u32) {
        let needed = self.delay.add(arrival_ms, timestamp);
        let cap = MAX_TARGET.min(self.max_frames).max(1);
        let needed = needed.clamp(1, cap);
        if needed > self.target {
            // Grow at once: every late packet is an audible gap.
            self.target = needed;
            self.delay.calm = 0;
        } else if needed < self.target {
            // Shrink slowly: a jitter spike tends to come back.
            self.delay.calm += 1;
            if self.delay.calm >= SHRINK_AFTER {
                self.target -= 1;
                self.delay.calm = 0;
            }
        } else {
            self.delay.calm = 0;
        }
        self.target = self.target.min(cap);
    }

    /// Called every 20 ms by the playout clock. Adaptive target depth from measured jitter
    /// (start at 1 frame = 20 ms, grow to cover p95 inter-arrival jitter, shrink slowly, max 10
    /// frames). Loss concealment: repeat the last frame attenuated (−6 dB per consecutive lost
    /// frame, silence after 3), returned as Concealed.
    pub fn pull(&mut self) -> Pulled {
        if !self.playing {
            let Some(&first) = self.frames.keys().next() else {
                return Pulled::Empty;
            };
            if self.frames.len() < self.target {
                return Pulled::Empty;
            }
            self.playing = true;
            self.next = Some(first);
        }
        let Some(next) = self.next else {
            // Unreachable: playing implies a next key. Stall rather than panic.
            self.playing = false;
            return Pulled::Empty;
        };

        if let Some(pcm) = self.frames.remove(&next) {
            return self.play(next, pcm);
        }
        let Some(&first) = self.frames.keys().next() else {
            // Underrun: the frame is late, not known lost. Wait for it, concealing.
            if self.lost_run >= MAX_CONCEALED {
                self.playing = false;
                return Pulled::Empty;
            }
            return self.conceal();
        };
        if self.frames.len() > self.target {
            // Far enough behind that waiting out the rest of the hole only adds delay.
            if let Some(pcm) = self.frames.remove(&first) {
                return self.play(first, pcm);
            }
        }
        self.next = Some(next.saturating_add(1));
        self.conceal()
    }

    fn play(&mut self, key: u64, pcm: Vec<i16>) -> Pulled {
        self.next = Some(key.saturating_add(1));
        self.lost_run = 0;
        self.last.clone_from(&pcm);
        if self.frames.len() > self.target {
            self.excess_pulls += 1;
            if self.excess_pulls >= EXCESS_PULLS {
                // One 20 ms cut per second is less audible than ever-growing delay.
                self.excess_pulls = 0;
                if let Some((k, _)) = self.frames.pop_first() {
                    self.next = Some(k.saturating_add(1));
                }
            }
        } else {
            self.excess_pulls = 0;
        }
        Pulled::Frame(pcm)
    }

    fn conceal(&mut self) -> Pulled {
        self.lost_run = self.lost_run.saturating_add(1);
        let len = if self.last.is_empty() {
            self.frame_samples
        } else {
            self.last.len()
        };
        if self.lost_run > MAX_CONCEALED || self.last.is_empty() {
            return Pulled::Concealed(vec![0; len]);
        }
        // An arithmetic shift is exactly −6.02 dB per step.
        let shift = self.lost_run;
        Pulled::Concealed(self.last.iter().map(|&s| s >> shift).collect())
    }

    /// Frames buffered now.
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// Frames the buffer aims to hold, from the measured jitter.
    pub fn target_depth(&self) -> usize {
        self.target
    }
}

/// Transit-delay statistics over the last `WINDOW` packets, giving the depth that covers their
/// 95th-percentile delay above the quickest one. Using the window's minimum as the reference
/// makes the absolute clock offset irrelevant and follows slow sender clock drift.
struct DelayStats {
    clock_hz: i64,
    /// Newest RTP timestamp and its extension to i64 (timestamps wrap after 2³² samples).
    last_ts: Option<(u32, i64)>,
    /// Transit delay (arrival − media time) in ms, a ring of the last `len` packets.
    window: [i64; WINDOW],
    len: usize,
    pos: usize,
    /// Packets in a row that wanted a smaller target.
    calm: u32,
}

impl DelayStats {
    fn new(clock_hz: usize) -> Self {
        Self {
            clock_hz: i64::try_from(clock_hz).unwrap_or(i64::MAX),
            last_ts: None,
            window: [0; WINDOW],
            len: 0,
            pos: 0,
            calm: 0,
        }
    }

    /// A new stream has a new timestamp origin: old transit values mean nothing.
    fn restart(&mut self) {
        self.last_ts = None;
        self.len = 0;
        self.pos = 0;
    }

    /// Records one packet; returns the depth in frames its window asks for.
    fn add(&mut self, arrival_ms: u64, timestamp: u32) -> usize {
        let ext = match self.last_ts {
            None => 0,
            Some((ts, ext)) => ext.saturating_add(timestamp.wrapping_sub(ts) as i32 as i64),
        };
        if self.last_ts.is_none_or(|(_, last)| ext > last) {
            self.last_ts = Some((timestamp, ext));
        }
        let media_ms = ext.saturating_mul(1000) / self.clock_hz;
        let arrival = i64::try_from(arrival_ms).unwrap_or(i64::MAX);
        self.window[self.pos] = arrival.saturating_sub(media_ms);
        self.pos = (self.pos + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);

        let mut sorted = self.window;
        let values = &mut sorted[..self.len];
        let min = values.iter().copied().min().unwrap_or(0);
        let p95_index = (self.len * 95).div_ceil(100).saturating_sub(1);
        let (_, &mut p95, _) = values.select_nth_unstable(p95_index);
        let spread = p95.saturating_sub(min).max(0);
        // One frame to play from, plus enough to cover the spread.
        let frames = 1 + spread.saturating_add(FRAME_MS - 1) / FRAME_MS;
        usize::try_from(frames).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: u32 = 0x1234_5678;

    fn frame(v: i16) -> Vec<i16> {
        vec![v; 160]
    }

    /// Pushes `seq` as it would arrive on time at `t` ms (timestamps at 8 kHz from seq 0).
    fn push_at(jb: &mut JitterBuffer, t: u64, seq: u16) -> Result<(), Rejected> {
        jb.push(t, seq, seq as u32 * 160, SSRC, frame(seq as i16))
    }

    fn value(p: &Pulled) -> Option<i16> {
        match p {
            Pulled::Frame(f) => Some(f[0]),
            _ => None,
        }
    }

    #[test]
    fn in_order_plays_in_order() {
        let mut jb = JitterBuffer::new(160, 50);
        assert_eq!(jb.pull(), Pulled::Empty);
        for seq in 0..100u16 {
            push_at(&mut jb, seq as u64 * 20, seq).unwrap();
            assert_eq!(jb.pull(), Pulled::Frame(frame(seq as i16)));
        }
        assert_eq!(jb.target_depth(), 1);
        assert_eq!(jb.depth(), 0);
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        let mut jb = JitterBuffer::new(160, 50);
        // 2, 3 and 4 arrive in reverse order, all before playback reaches them.
        for (t, seq) in [(0, 0), (20, 1), (85, 4), (86, 3), (87, 2), (100, 5)] {
            push_at(&mut jb, t, seq).unwrap();
        }
        let out: Vec<_> = (0..6).map(|_| value(&jb.pull())).collect();
        assert_eq!(out, [0, 1, 2, 3, 4, 5].map(Some));
    }

    #[test]
    fn duplicates_and_late_packets_are_rejected() {
        let mut jb = JitterBuffer::new(160, 50);
        push_at(&mut jb, 0, 10).unwrap();
        push_at(&mut jb, 1, 11).unwrap();
        assert_eq!(push_at(&mut jb, 2, 11), Err(Rejected::Duplicate));
        assert_eq!(value(&jb.pull()), Some(10));
        assert_eq!(push_at(&mut jb, 21, 10), Err(Rejected::Late));
        assert_eq!(value(&jb.pull()), Some(11));
        assert_eq!(push_at(&mut jb, 41, 11), Err(Rejected::Late));
        assert_eq!(push_at(&mut jb, 42, 9), Err(Rejected::Late));
        push_at(&mut jb, 43, 12).unwrap();
        assert_eq!(value(&jb.pull()), Some(12));
    }

    #[test]
    fn overflow_is_rejected() {
        let mut jb = JitterBuffer::new(160, 4);
        for seq in 0..4 {
            push_at(&mut jb, seq as u64 * 20, seq).unwrap();
        }
        assert_eq!(push_at(&mut jb, 80, 4), Err(Rejected::Overflow));
        assert_eq!(jb.depth(), 4);
    }

    #[test]
    fn loss_is_concealed_then_silent() {
        let mut jb = JitterBuffer::new(160, 50);
        push_at(&mut jb, 0, 0).unwrap();
        push_at(&mut jb, 20, 1).unwrap();
        assert_eq!(value(&jb.pull()), Some(0));
        // Packets 2..=6 are lost; 7 and 8 arrive on time, after a pull that found nothing.
        assert_eq!(value(&jb.pull()), Some(1));
        let mut out = Vec::new();
        for t in [40, 60, 80, 100, 120, 140, 160] {
            let seq = (t / 20) as u16;
            if seq >= 7 {
                push_at(&mut jb, t, seq).unwrap();
            }
            out.push(jb.pull());
        }
        let c = |v: i16| Pulled::Concealed(frame(v));
        // Nothing is buffered, so the missing frames are waited for: three concealed (frame 1
        // is too quiet to show the fade, see below), then a stall (Empty) until 7 arrives; the
        // hole before it is skipped.
        assert_eq!(out[0], c(0));
        assert_eq!(out[3], Pulled::Empty);
        assert_eq!(value(&out[5]), Some(7));
        assert_eq!(value(&out[6]), Some(8));

        // The attenuation itself, with a loud frame and the later frames already buffered.
        let mut jb = JitterBuffer::new(160, 50);
        jb.push(0, 0, 0, SSRC, frame(8000)).unwrap();
        jb.push(100, 5, 800, SSRC, frame(5)).unwrap();
        jb.push(120, 6, 960, SSRC, frame(6)).unwrap();
        jb.target = 2;
        assert_eq!(jb.pull(), Pulled::Frame(frame(8000)));
        assert_eq!(jb.pull(), c(4000)); // −6 dB
        assert_eq!(jb.pull(), c(2000)); // −12 dB
        assert_eq!(jb.pull(), c(1000)); // −18 dB
        assert_eq!(jb.pull(), c(0)); // silence
        assert_eq!(jb.pull(), Pulled::Frame(frame(5)));
        assert_eq!(jb.pull(), Pulled::Frame(frame(6)));
    }

    #[test]
    fn a_late_packet_is_waited_for() {
        let mut jb = JitterBuffer::new(160, 50);
        push_at(&mut jb, 0, 0).unwrap();
        assert_eq!(value(&jb.pull()), Some(0));
        // 1 is 30 ms late: concealed once, then played, one frame later than planned.
        assert!(matches!(jb.pull(), Pulled::Concealed(_)));
        push_at(&mut jb, 50, 1).unwrap();
        push_at(&mut jb, 55, 2).unwrap();
        assert_eq!(value(&jb.pull()), Some(1));
        assert_eq!(value(&jb.pull()), Some(2));
    }

    #[test]
    fn ssrc_change_restarts_without_dropping_audio() {
        let mut jb = JitterBuffer::new(160, 50);
        for seq in 100..103u16 {
            jb.push(seq as u64 * 20, seq, seq as u32 * 160, 1, frame(seq as i16))
                .unwrap();
        }
        assert_eq!(value(&jb.pull()), Some(100));
        // The new stream's numbers are "behind" the old ones; it still plays, after them.
        for (i, seq) in (50..53u16).enumerate() {
            jb.push(
                2060 + 20 * i as u64,
                seq,
                999_999 + 160 * i as u32,
                2,
                frame(seq as i16),
            )
            .unwrap();
        }
        let out: Vec<_> = (0..5).map(|_| value(&jb.pull())).collect();
        assert_eq!(out, [101, 102, 50, 51, 52].map(Some));
        // A stray packet of the old stream is yet another restart, never a panic or a stall.
        assert_eq!(jb.push(2200, 103, 0, 1, frame(103)), Ok(()));
        assert_eq!(value(&jb.pull()), Some(103));
    }

    #[test]
    fn sequence_jump_restarts() {
        let mut jb = JitterBuffer::new(160, 50);
        push_at(&mut jb, 0, 10).unwrap();
        push_at(&mut jb, 20, 11).unwrap();
        assert_eq!(value(&jb.pull()), Some(10));
        // Backwards by more than 100 (547): a restarted sender, not a very old packet.
        push_at(&mut jb, 40, 65000).unwrap();
        push_at(&mut jb, 60, 65001).unwrap();
        // Forwards by more than 100.
        push_at(&mut jb, 80, 20000).unwrap();
        let out: Vec<_> = (0..4).map(|_| value(&jb.pull())).collect();
        assert_eq!(out, [11, 65000, 65001, 20000].map(|s| Some(s as i16)));
    }

    #[test]
    fn sequence_wrap_keeps_order() {
        let mut jb = JitterBuffer::new(160, 50);
        // 0 arrives before 65535.
        for (t, seq) in [(0, 65533u16), (20, 65534), (45, 0), (46, 65535), (80, 1)] {
            let ts = seq.wrapping_sub(65533) as u32 * 160 + 7;
            jb.push(t, seq, ts, SSRC, frame(seq as i16)).unwrap();
        }
        let out: Vec<_> = (0..5).map(|_| value(&jb.pull())).collect();
        assert_eq!(out, [65533u16, 65534, 65535, 0, 1].map(|s| Some(s as i16)));
    }

    /// Plays `secs` seconds: a packet every 20 ms delayed by `jitter(i)` ms, a pull every 20 ms.
    /// Returns (late packets, pulls that were not a real frame) after the first second.
    fn run(
        jb: &mut JitterBuffer,
        first_seq: u32,
        secs: u32,
        jitter: &mut dyn FnMut(u32) -> u64,
    ) -> (usize, usize) {
        let n = secs * 50;
        let mut arrivals: Vec<(u64, u32)> = (first_seq..first_seq + n)
            .map(|i| (i as u64 * 20 + jitter(i), i))
            .collect();
        arrivals.sort();
        let (mut late, mut gaps) = (0, 0);
        let mut a = arrivals.iter().peekable();
        for tick in first_seq..first_seq + n {
            let now = tick as u64 * 20 + 10;
            while let Some(&&(t, i)) = a.peek() {
                if t > now {
                    break;
                }
                a.next();
                let r = jb.push(t, i as u16, i * 160, SSRC, frame(i as i16));
                if tick > first_seq + 50 && r == Err(Rejected::Late) {
                    late += 1;
                }
            }
            if !matches!(jb.pull(), Pulled::Frame(_)) && tick > first_seq + 50 {
                gaps += 1;
            }
        }
        (late, gaps)
    }

    #[test]
    fn adapts_to_jitter_and_back() {
        let mut jb = JitterBuffer::new(160, 50);
        let mut x: u32 = 12345;
        let mut rand_jitter = |_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((x >> 16) % 70) as u64
        };
        // 10 s with 0–70 ms of jitter: 70 ms needs 1 + 4 frames.
        let (late, gaps) = run(&mut jb, 0, 10, &mut rand_jitter);
        assert!(
            (4..=6).contains(&jb.target_depth()),
            "target {}",
            jb.target_depth()
        );
        // Once adapted, very little is late (a few while the delay is being built up).
        assert!(late < 25, "late {late}");
        assert!(gaps < 40, "gaps {gaps}");

        // Then 20 s of a clean network: back to one frame, and the depth follows.
        let (late, gaps) = run(&mut jb, 500, 20, &mut |_| 0);
        assert_eq!(jb.target_depth(), 1);
        assert!(jb.depth() <= 2, "depth {}", jb.depth());
        assert_eq!((late, gaps), (0, 0));
    }

    #[test]
    fn a_fast_sender_clock_does_not_grow_the_delay() {
        // 1% fast: 101 packets per 100 pulls.
        let mut jb = JitterBuffer::new(160, 50);
        let mut seq = 0u32;
        for tick in 0..6000u64 {
            let now = tick * 20;
            while seq as u64 * 1980 / 100 <= now {
                let _ = jb.push(now, seq as u16, seq * 160, SSRC, frame(0));
                seq += 1;
            }
            jb.pull();
            assert!(jb.depth() <= 5, "depth {} at {tick}", jb.depth());
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut x: u64 = 99;
        let mut rnd = || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            x >> 33
        };
        for max_frames in [0, 1, 3, 64] {
            let mut jb = JitterBuffer::new(160, max_frames);
            for _ in 0..20_000 {
                let r = rnd();
                if r % 3 == 0 {
                    jb.pull();
                } else {
                    let len = (rnd() % 400) as usize;
                    let arrival = if r % 7 == 0 {
                        u64::MAX - rnd()
                    } else {
                        rnd() % 100_000
                    };
                    let _ = jb.push(
                        arrival,
                        rnd() as u16,
                        rnd() as u32,
                        (rnd() % 3) as u32,
                        vec![rnd() as i16; len],
                    );
                }
                assert!(jb.depth() <= max_frames);
                assert!((1..=10).contains(&jb.target_depth()));
            }
        }
        let mut jb = JitterBuffer::new(0, 5);
        jb.push(0, 1, 0, 0, vec![]).unwrap();
        assert_eq!(jb.pull(), Pulled::Frame(vec![]));
        assert_eq!(jb.pull(), Pulled::Concealed(vec![]));
    }
}
