//! Audio from the app to the caller (api.md §3.5 "App → switch", §3.7 stop_play): the app sends
//! PCM in frames of any size and as fast as it likes; the call leg takes exactly one 20 ms frame
//! per RTP packet. Marks ride along at sample positions so the app hears back when the caller
//! has actually been played everything before them.
//!
//! The queue holds audio at the call's rate (8 kHz for G.711, 16 kHz for a wideband codec), so
//! a 16 kHz app on a wideband call is played without being band-limited to G.711. Positions are
//! absolute sample counts at that rate since the queue was created (u64: no wrap in any call),
//! so marks never need adjusting when audio is played, dropped or cleared.

use std::collections::VecDeque;

use crate::resample::{Downsampler, Upsampler};
/// Bytes converted per step of `push_pcm`, so a huge frame from the app never needs a scratch
/// buffer of its own size (the queue bound is then applied step by step).
const CHUNK_BYTES: usize = 8192;
/// Pending marks are bounded like the audio: an app sending marks without audio must not grow
/// memory forever. Beyond this the oldest mark is fired early (reported by the next frame); beyond
/// twice this (marks faster than frames are played) the oldest is forgotten.
const MAX_MARKS: usize = 4096;
/// Longest mark name kept (bytes): longer ones are cut at a character boundary where they are
/// parsed (`ws::parse_control`, the Twilio parser) and again here. An app has no reason to name
/// a mark with more; one that sends 4 MiB names must not make the switch hold them.
pub const MAX_MARK_NAME: usize = 256;
/// Bytes of mark names pending at once; beyond it the oldest are forgotten like the marks
/// beyond twice [`MAX_MARKS`].
const MAX_MARK_BYTES: usize = 64 * 1024;
/// Queue capacity kept once drained: 0.5 s; anything larger is released.
const SHRINK_ABOVE_MS: usize = 500;

/// From the app's rate to the queue's.
enum Convert {
    None,
    Down(Downsampler),
    Up(Upsampler),
}

/// Audio dropped from the front of the queue because the app sent more than `max_ms` ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    pub dropped_ms: u32,
}

pub struct PlayoutQueue {
    /// Samples at the output rate not yet played.
    queue: VecDeque<i16>,
    max_samples: usize,
    /// Samples per ms and per 20 ms frame at the output rate.
    per_ms: usize,
    frame: usize,
    convert: Convert,
    /// The first byte of a sample split across two frames from the app.
    odd_byte: Option<u8>,
    /// Absolute position of `queue[0]`.
    played: u64,
    /// (absolute position, name), in push order, hence in position order.
    marks: VecDeque<(u64, String)>,
    /// Bytes of the names in `marks`.
    mark_bytes: usize,
    /// Marks that must fire at the next frame whatever the position (pushed out by the bound).
    forced: usize,
    /// Samples of the app's audio played to the caller, and that count at the last point the
    /// app knows of (the start, the last mark reached, the last clear): what `cleared` reports.
    heard: u64,
    heard_at_ref: u64,
    scratch_in: Vec<i16>,
    scratch_out: Vec<i16>,
}

impl PlayoutQueue {
    /// input_rate: 8000 or 16000 (the stream's sample_rate); max_ms: queue bound (60_000). Plays
    /// at 8 kHz.
    pub fn new(input_rate: u32, max_ms: u32) -> Self {
        Self::with_output(input_rate, 8000, max_ms)
    }

    /// Plays at `output_rate` (8000, or 16000 on a wideband call). Any rate other than 16000 is
    /// taken as 8000.
    pub fn with_output(input_rate: u32, output_rate: u32, max_ms: u32) -> Self {
        let wide = |r: u32| r == 16000;
        let per_ms = if wide(output_rate) { 16 } else { 8 };
        Self {
            queue: VecDeque::new(),
            max_samples: (max_ms as usize).saturating_mul(per_ms),
            per_ms,
            frame: per_ms * 20,
            convert: match (wide(input_rate), wide(output_rate)) {
                (true, false) => Convert::Down(Downsampler::new()),
                (false, true) => Convert::Up(Upsampler::new()),
                _ => Convert::None,
            },
            odd_byte: None,
            played: 0,
            marks: VecDeque::new(),
            mark_bytes: 0,
            forced: 0,
            heard: 0,
            heard_at_ref: 0,
            scratch_in: Vec::new(),
            scratch_out: Vec::new(),
        }
    }

    /// Binary frame of any size from the app: s16le bytes at input_rate (an odd trailing byte is
    /// kept for the next frame). Resampled to 8 kHz. Beyond max_ms the OLDEST audio is dropped and
    /// reported (memory never grows without bound).
    pub fn push_pcm(&mut self, bytes: &[u8]) -> Option<Overflow> {
        let mut rest = bytes;
        self.scratch_in.clear();
        if let Some(lo) = self.odd_byte {
            let (&hi, tail) = rest.split_first()?;
            self.odd_byte = None;
            rest = tail;
            self.scratch_in.push(i16::from_le_bytes([lo, hi]));
        }

        let mut dropped = 0usize;
        loop {
            let take = rest.len().min(CHUNK_BYTES) & !1;
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            self.scratch_in.extend(
                chunk
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]])),
            );
            dropped += self.enqueue();
            self.scratch_in.clear();
            if rest.len() < 2 {
                break;
            }
        }
        if let [b] = rest {
            self.odd_byte = Some(*b);
        }
        (dropped > 0).then(|| Overflow {
            dropped_ms: u32::try_from(dropped.div_ceil(self.per_ms)).unwrap_or(u32::MAX),
        })
    }

    /// Moves `scratch_in` (at the input rate) onto the queue; returns the samples dropped to
    /// keep the bound.
    fn enqueue(&mut self) -> usize {
        match &mut self.convert {
            Convert::Down(down) => {
                self.scratch_out.clear();
                down.process(&self.scratch_in, &mut self.scratch_out);
                self.queue.extend(&self.scratch_out);
            }
            Convert::Up(up) => {
                self.scratch_out.clear();
                up.process(&self.scratch_in, &mut self.scratch_out);
                self.queue.extend(&self.scratch_out);
            }
            Convert::None => self.queue.extend(&self.scratch_in),
        }
        let excess = self.queue.len().saturating_sub(self.max_samples);
        if excess > 0 {
            self.queue.drain(..excess);
            self.played += excess as u64;
        }
        excess
    }

    /// A mark: reported by next_frame when playback reaches it.
    pub fn push_mark(&mut self, name: String) {
        let name = bound_mark_name(name);
        while !self.marks.is_empty()
            && (self.marks.len() >= 2 * MAX_MARKS || self.mark_bytes + name.len() > MAX_MARK_BYTES)
        {
            if let Some((_, old)) = self.marks.pop_front() {
                self.mark_bytes -= old.len();
            }
            self.forced = self.forced.saturating_sub(1);
        }
        if self.marks.len() >= MAX_MARKS {
            self.forced = (self.forced + 1).min(self.marks.len());
        }
        self.mark_bytes += name.len();
        self.marks.push_back((self.end(), name));
    }

    /// Barge-in (api.md §3.5 `cleared`): drops all queued audio and the marks not yet reached,
    /// and says how much the caller heard since the last mark reached (or the start, or the last
    /// clear) and how much was dropped.
    pub fn clear(&mut self) -> crate::stream::Cleared {
        let dropped = self.queue.len() as u64;
        self.played = self.end();
        self.queue.clear();
        // A half sample belongs to the audio being dropped; the filter history does not matter
        // (the cut is a discontinuity anyway).
        self.odd_byte = None;
        self.forced = 0;
        let played_ms = (self.heard - self.heard_at_ref) / self.per_ms as u64;
        self.heard_at_ref = self.heard;
        crate::stream::Cleared {
            played_ms,
            dropped_ms: dropped / self.per_ms as u64,
            marks: {
                self.mark_bytes = 0;
                self.marks.drain(..).map(|(_, name)| name).collect()
            },
        }
    }

    /// Fills `out` (20 ms at the output rate: 160 or 320 samples) for the next RTP packet:
    /// queued audio, zero-padded (silence) when the queue runs dry. Returns the marks reached
    /// during (or at the start of) this frame, in order, and whether any real audio was played.
    pub fn next_frame(&mut self, out: &mut [i16]) -> (Vec<String>, bool) {
        let n = self.queue.len().min(out.len());
        for (o, s) in out.iter_mut().zip(self.queue.drain(..n)) {
            *o = s;
        }
        out[n..].fill(0);
        self.played += n as u64;
        self.heard += n as u64;
        // A burst (TTS, or frames bunched by a busy machine) leaves a large allocation behind;
        // once it has played out, give it back rather than hold it for the rest of the call.
        if self.queue.len() < self.frame && self.queue.capacity() > SHRINK_ABOVE_MS * self.per_ms {
            self.queue.shrink_to(4 * self.frame);
        }

        let mut reached = Vec::new();
        while let Some((pos, _)) = self.marks.front() {
            if *pos > self.played && self.forced == 0 {
                break;
            }
            self.forced = self.forced.saturating_sub(1);
            if let Some((pos, name)) = self.marks.pop_front() {
                self.mark_bytes -= name.len();
                // Counted from the mark: what played of this frame after it.
                let after = self.played.saturating_sub(pos).min(n as u64);
                self.heard_at_ref = self.heard - after;
                reached.push(name);
            }
        }
        (reached, n > 0)
    }

    pub fn queued_ms(&self) -> u32 {
        u32::try_from(self.queue.len() / self.per_ms).unwrap_or(u32::MAX)
    }

    /// The rate it plays at.
    pub fn output_rate(&self) -> u32 {
        self.per_ms as u32 * 1000
    }

    /// Absolute position just after the last queued sample.
    fn end(&self) -> u64 {
        self.played + self.queue.len() as u64
    }
}

/// A mark name cut to [`MAX_MARK_NAME`] bytes, at a character boundary.
pub fn bound_mark_name(mut name: String) -> String {
    if name.len() > MAX_MARK_NAME {
        let mut end = MAX_MARK_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resample::tests::{goertzel, tone};

    fn bytes_of(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn ramp(len: usize) -> Vec<i16> {
        (0..len).map(|i| (i % 30000) as i16 + 1).collect()
    }

    #[test]
    fn a_played_out_burst_gives_its_memory_back() {
        let mut q = PlayoutQueue::new(8000, 60_000);
        q.push_pcm(&bytes_of(&ramp(8000 * 10)));
        assert!(q.queue.capacity() >= 80_000);
        let mut out = [0i16; 160];
        while q.next_frame(&mut out).1 {}
        assert!(
            q.queue.capacity() <= SHRINK_ABOVE_MS * 8,
            "{}",
            q.queue.capacity()
        );
        // Steady real-time play keeps its small allocation (no shrink/grow churn).
        q.push_pcm(&bytes_of(&ramp(320)));
        let cap = q.queue.capacity();
        for _ in 0..100 {
            q.push_pcm(&bytes_of(&ramp(160)));
            q.next_frame(&mut out);
        }
        assert_eq!(q.queue.capacity(), cap);
    }

    /// Plays `frames` frames, concatenating the audio.
    fn drain(q: &mut PlayoutQueue, frames: usize) -> (Vec<i16>, Vec<(usize, Vec<String>)>) {
        let mut audio = Vec::new();
        let mut marks = Vec::new();
        let mut out = [1i16; 160];
        for i in 0..frames {
            let (m, _) = q.next_frame(&mut out);
            if !m.is_empty() {
                marks.push((i + 1, m));
            }
            audio.extend_from_slice(&out);
        }
        (audio, marks)
    }

    #[test]
    fn any_frame_size_plays_contiguously() {
        let samples = ramp(8000 + 3000);
        let bytes = bytes_of(&samples);
        let mut q = PlayoutQueue::new(8000, 60_000);
        let mut rest = &bytes[..];
        for size in [1, 3, 321, 16000].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at(size.min(rest.len()));
            assert_eq!(q.push_pcm(a), None);
            rest = b;
        }
        assert_eq!(q.queued_ms(), 11000 / 8);
        let (audio, _) = drain(&mut q, samples.len().div_ceil(160));
        assert_eq!(&audio[..samples.len()], &samples[..]);
        assert!(audio[samples.len()..].iter().all(|&s| s == 0));
    }

    #[test]
    fn silence_when_empty() {
        let mut q = PlayoutQueue::new(8000, 60_000);
        let mut out = [7i16; 160];
        assert_eq!(q.next_frame(&mut out), (vec![], false));
        assert_eq!(out, [0; 160]);

        q.push_pcm(&bytes_of(&[5; 100]));
        assert_eq!(q.next_frame(&mut out), (vec![], true));
        assert!(out[..100].iter().all(|&s| s == 5) && out[100..].iter().all(|&s| s == 0));
        assert!(!q.next_frame(&mut out).1);
    }

    #[test]
    fn a_clear_says_what_was_heard_since_the_last_mark_and_what_was_dropped() {
        let mut q = PlayoutQueue::new(8000, 60_000);
        let mut out = [0i16; 160];
        // 1 s of audio, a mark, then 2 s more.
        q.push_pcm(&bytes_of(&ramp(8000)));
        q.push_mark("intro".into());
        q.push_pcm(&bytes_of(&ramp(16000)));
        // 1.5 s plays: the mark is reached after 1 s, 0.5 s more is heard.
        for _ in 0..75 {
            q.next_frame(&mut out);
        }
        let c = q.clear();
        assert_eq!(c.played_ms, 500);
        assert_eq!(c.dropped_ms, 1500);
        assert!(c.marks.is_empty());
        // Counted again from the clear; silence between is not audio heard.
        for _ in 0..10 {
            q.next_frame(&mut out);
        }
        q.push_pcm(&bytes_of(&ramp(800)));
        q.push_mark("late".into());
        q.push_pcm(&bytes_of(&ramp(800)));
        q.next_frame(&mut out);
        let c = q.clear();
        assert_eq!((c.played_ms, c.dropped_ms), (20, 180));
        assert_eq!(c.marks, ["late"]);
        // A mark reached mid-frame counts from where it sits.
        q.push_pcm(&bytes_of(&ramp(80)));
        q.push_mark("m".into());
        q.push_pcm(&bytes_of(&ramp(800)));
        assert_eq!(q.next_frame(&mut out).0, ["m"]);
        assert_eq!(q.clear().played_ms, 10);
    }

    #[test]
    fn clear_drops_everything_at_once() {
        let mut q = PlayoutQueue::new(8000, 60_000);
        q.push_pcm(&bytes_of(&ramp(8000)));
        q.push_mark("a".into());
        q.push_pcm(&bytes_of(&ramp(800)));
        q.push_mark("b".into());
        q.push_pcm(&[9]); // half a sample
        assert_eq!(q.clear().marks, ["a", "b"]);
        assert_eq!(q.queued_ms(), 0);
        let mut out = [1i16; 160];
        assert_eq!(q.next_frame(&mut out), (vec![], false));
        assert_eq!(out, [0; 160]);

        // New audio plays again, from a clean sample boundary.
        q.push_pcm(&bytes_of(&[300, 301]));
        q.push_mark("c".into());
        assert_eq!(q.next_frame(&mut out), (vec!["c".to_string()], true));
        assert_eq!(&out[..3], &[300, 301, 0]);
    }

    #[test]
    fn marks_fire_at_the_right_frame() {
        let mut q = PlayoutQueue::new(8000, 60_000);
        q.push_mark("start".into());
        q.push_pcm(&bytes_of(&ramp(400))); // 50 ms
        q.push_mark("after-50ms".into());
        q.push_pcm(&bytes_of(&ramp(400)));
        q.push_mark("after-100ms".into());
        q.push_mark("same-place".into());
        let (_, marks) = drain(&mut q, 8);
        assert_eq!(
            marks,
            [
                (1, vec!["start".to_string()]),
                (3, vec!["after-50ms".to_string()]),
                (5, vec!["after-100ms".to_string(), "same-place".to_string()]),
            ]
        );
        // A mark on an empty queue is reached at once.
        q.push_mark("idle".into());
        assert_eq!(
            q.next_frame(&mut [0; 160]),
            (vec!["idle".to_string()], false)
        );
    }

    #[test]
    fn sixteen_khz_input_is_halved() {
        let mut q = PlayoutQueue::new(16000, 60_000);
        let input = tone(1000.0, 16000.0, 8000.0, 3201);
        for c in bytes_of(&input).chunks(321) {
            q.push_pcm(c);
        }
        assert_eq!(q.queue.len(), 3201 / 2);
        let (audio, _) = drain(&mut q, 10);
        let p_in = goertzel(&input[200..3200], 1000.0, 16000.0);
        let p_out = goertzel(&audio[100..1600], 1000.0, 8000.0);
        assert!((10.0 * (p_out / p_in).log10()).abs() < 1.0);
    }

    #[test]
    fn a_seventy_second_burst_keeps_the_last_sixty() {
        let mut q = PlayoutQueue::new(8000, 60_000);
        q.push_mark("early".into());
        let samples = ramp(70 * 8000);
        let overflow = q.push_pcm(&bytes_of(&samples));
        assert_eq!(overflow, Some(Overflow { dropped_ms: 10_000 }));
        assert_eq!(q.queued_ms(), 60_000);
        let mut out = [0i16; 160];
        let (marks, played) = q.next_frame(&mut out);
        // The mark's audio was dropped, so it has been passed.
        assert_eq!((marks, played), (vec!["early".to_string()], true));
        assert_eq!(&out[..], &samples[10 * 8000..10 * 8000 + 160]);

        assert_eq!(
            q.push_pcm(&bytes_of(&[1; 161])),
            Some(Overflow { dropped_ms: 1 })
        );
    }

    #[test]
    fn queued_ms_never_exceeds_the_bound() {
        let mut q = PlayoutQueue::new(16000, 1000);
        let mut out = [0i16; 160];
        for i in 0..500usize {
            q.push_pcm(&vec![0x11; (i * 37) % 5000 + 1]);
            assert!(q.queued_ms() <= 1000);
            assert!(q.queue.len() <= 8000);
            if i % 3 == 0 {
                q.next_frame(&mut out);
            }
        }
    }

    #[test]
    fn marks_are_bounded() {
        let mut q = PlayoutQueue::new(8000, 60_000);
        q.push_pcm(&bytes_of(&ramp(1600)));
        for i in 0..MAX_MARKS + 10 {
            q.push_mark(i.to_string());
        }
        assert_eq!(q.marks.len(), MAX_MARKS + 10);
        let (marks, _) = q.next_frame(&mut [0; 160]);
        assert_eq!(marks.len(), 10);
        assert_eq!(marks[0], "0");
        assert_eq!(q.clear().marks.len(), MAX_MARKS);

        q.push_pcm(&bytes_of(&ramp(1600)));
        for i in 0..3 * MAX_MARKS {
            q.push_mark(i.to_string());
        }
        assert_eq!(q.marks.len(), 2 * MAX_MARKS);
        let (marks, _) = q.next_frame(&mut [0; 160]);
        // All that were pushed out of the first MAX_MARKS fire; none are left behind forever.
        assert_eq!(marks.len(), MAX_MARKS);
        assert_eq!(q.clear().marks.len(), MAX_MARKS);
    }

    #[test]
    fn zero_bound_and_empty_input_do_not_panic() {
        let mut q = PlayoutQueue::new(44100, 0);
        assert_eq!(q.push_pcm(&[]), None);
        assert_eq!(q.push_pcm(&[1, 2, 3]), Some(Overflow { dropped_ms: 1 }));
        assert_eq!(q.push_pcm(&[]), None);
        assert_eq!(q.next_frame(&mut [0; 160]), (vec![], false));
    }

    #[test]
    fn a_wideband_call_plays_16_khz_audio_as_it_came() {
        let mut q = PlayoutQueue::with_output(16000, 16000, 60_000);
        q.push_pcm(&bytes_of(&ramp(640)));
        let mut out = [0i16; 320];
        assert_eq!(q.next_frame(&mut out), (vec![], true));
        assert_eq!(&out[..5], &ramp(5)[..], "sample for sample");
        assert_eq!(q.queued_ms(), 20);
        // 8 kHz from the app on a wideband call is upsampled: twice the samples.
        let mut q = PlayoutQueue::with_output(8000, 16000, 60_000);
        q.push_pcm(&bytes_of(&tone(1000.0, 8000.0, 8000.0, 8000)));
        assert_eq!(q.queued_ms(), 1000);
        let c = q.clear();
        assert_eq!(c.dropped_ms, 1000);
    }

    #[test]
    fn mark_names_are_bounded_one_by_one_and_together() {
        let long = "é".repeat(1000);
        let cut = bound_mark_name(long);
        assert!(cut.len() <= MAX_MARK_NAME && cut.len() >= MAX_MARK_NAME - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        let mut q = PlayoutQueue::new(8000, 60_000);
        q.push_pcm(&vec![0u8; 16_000]);
        for i in 0..1000 {
            q.push_mark(format!("{i}-{}", "x".repeat(300)));
        }
        assert!(q.mark_bytes <= MAX_MARK_BYTES);
        assert_eq!(
            q.mark_bytes,
            q.marks.iter().map(|(_, n)| n.len()).sum::<usize>()
        );
        // The newest are kept, the oldest forgotten.
        assert!(q.marks.back().unwrap().1.starts_with("999-"));
        let c = q.clear();
        assert_eq!(c.marks.len(), MAX_MARK_BYTES / MAX_MARK_NAME);
        assert_eq!(q.mark_bytes, 0);
    }
}
