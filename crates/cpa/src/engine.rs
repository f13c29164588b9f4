//! The CPA state machine: 20 ms blocks in, detections out.
//!
//! Each block goes through three stages: spectral features (one 256-point FFT), a pure-tone
//! tracker (fax, configured tones, BEEP) and a voice-activity segmenter feeding the AMD
//! rules. Time is the count of samples fed, so the engine is deterministic and a test can
//! push a whole call through it in microseconds.

use std::collections::VecDeque;

use crate::fft::Fft;
use crate::params::{CpaParams, ToneSpec};

const FS: f32 = 8000.0;
/// One analysis hop: the 20 ms RTP frame of G.711.
const HOP: usize = 160;
const NFFT: usize = 256;
const BIN_HZ: f32 = FS / NFFT as f32;
/// Enough history to look back for a tone's onset.
const HIST: usize = 1024;
/// VAD sub-bands: 16 bands of 6 bins from 250 Hz up to 3250 Hz.
const BAND0: usize = 8;
const BAND_W: usize = 6;
const NBANDS: usize = 16;

/// Why CPA stopped (the `reason` of `cpa_done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneReason {
    BreakEvent,
    TotalTimeout,
    Hangup,
}

impl DoneReason {
    /// The `reason` string of the `cpa_done` event.
    pub fn as_str(self) -> &'static str {
        match self {
            DoneReason::BreakEvent => "break_event",
            DoneReason::TotalTimeout => "total_timeout",
            DoneReason::Hangup => "hangup",
        }
    }
}

/// One `cpa_detection`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Detection {
    /// `LV`, `AM`, `NS`, `SIL`, `FX`, `BEEP` or a configured tone label.
    pub result: String,
    /// Ms from answer to the moment of the decision.
    pub detection_ms: u64,
    /// Ms from answer to the start of the tone (tone, fax and BEEP results only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onset_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_hz: Option<f32>,
    pub top_frequencies: Vec<f32>,
}

/// What the engine tells its shell.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum Output {
    Detection(Detection),
    /// `cpa_done`: `result` is the last result reported, or `NS`.
    Done {
        result: String,
        reason: DoneReason,
    },
}

/// AMD results, as opposed to tone results that may follow the decision.
fn is_decision(result: &str) -> bool {
    matches!(result, "LV" | "AM" | "NS" | "SIL" | "FX")
}

/// Single frequencies used by ringback, busy and dial tones around the world (ITU-T E.180).
/// A lone pure tone here is only a beep in context: after a greeting and not repeating.
fn is_call_progress_freq(f: f32) -> bool {
    (380.0..=500.0).contains(&f)
}

struct ToneRun {
    onset: u64,
    last_end: u64,
    freq_sum: f32,
    blocks: u32,
    min_pow: f32,
    max_pow: f32,
    misses: u32,
    voice_before: bool,
    reported_labels: Vec<usize>,
    fax_checked: bool,
    amd_checked: bool,
}

impl ToneRun {
    fn freq(&self) -> f32 {
        self.freq_sum / self.blocks.max(1) as f32
    }
    fn dur_ms(&self) -> u64 {
        (self.last_end.saturating_sub(self.onset)) / 8
    }
}

/// A finished call-progress-frequency tone waiting to see whether it repeats (cadence).
struct PendingBeep {
    onset: u64,
    end: u64,
    freq: f32,
}

/// The call progress analyser for one call leg.
pub struct Engine {
    p: CpaParams,
    fft: Fft,
    window: Vec<f32>,
    pending: Vec<i16>,
    hist: VecDeque<f32>,
    /// Samples consumed by complete hops.
    t: u64,
    out: VecDeque<Output>,
    done: bool,
    decided: bool,
    last_result: Option<String>,

    re: Vec<f32>,
    im: Vec<f32>,
    pow: Vec<f32>,
    /// Per-band noise floor (power), tracked from below.
    floor: [f32; NBANDS],
    prev_bands: [f32; NBANDS],
    floor_init: bool,
    /// Recent band powers: the floor may not stay below their minimum, so it catches up
    /// with noise that starts after digital silence within `FLOOR_WIN` blocks.
    band_hist: VecDeque<[f32; NBANDS]>,
    total_hist: VecDeque<f32>,
    /// Time-domain noise power, for purity of tones in noise.
    tfloor: f32,
    /// Mean noise power over the VAD bands: babble sits well above its own minimum.
    noise_mean: f32,
    acc_spec: Vec<f32>,

    run: Option<ToneRun>,
    pending_beep: Option<PendingBeep>,
    /// A call-progress frequency seen repeating: never a beep on this call.
    cadence_freq: Option<f32>,
    fax_reported: bool,
    tone_energy_ms: u64,

    // AMD
    voice_hist: u32,
    in_speech: bool,
    seg_start: u64,
    last_voice: u64,
    first_voice: Option<u64>,
    voiced_ms: u64,
    seg_confirmed: bool,
    seg_peak: f32,
    seg_blocks: u32,
    /// Loudest block of confirmed speech (band power).
    utt_peak: f32,
    last_snr: f32,
    last_level: f32,
    last_speech: u64,
    /// Unbroken speech (no pause of 100 ms) at the default voice threshold whatever the
    /// sensitivity, so a permissive setting cannot join phrases into one run.
    run_start: u64,
    run_last: u64,
    run_open: bool,
    /// Longest such run within confirmed speech (ms).
    max_run_ms: u64,
    segments: Vec<(u64, u64)>,
}

// Tuning constants; each is a time in ms or a ratio, chosen on the development corpus and
// kept round so they describe behaviour rather than fit noise.
/// Silence after a short utterance that means "a person waiting for a reply".
const LV_PAUSE_MS: u64 = 850;
/// Window power (rms 0.7) below which a block is digital silence: zeros, not line noise.
const DIGITAL_SILENCE_POW: f32 = 0.5;
/// Blocks (3 s) over which the noise floor must have been reached at least once.
const FLOOR_WIN: usize = 150;
/// Level above the mean noise (dB) at which a block may be voice (sensitivity 4).
const VAD_DB: f32 = 4.5;
/// A voice segment must rise this far above the mean noise (dB) to count as speech
/// (sensitivity 4): babble and noise bursts cross the VAD threshold but rarely this.
const CONFIRM_DB: f32 = 12.0;
/// Less confirmed speech than this is not an answer.
const MIN_UTTERANCE_MS: u64 = 200;
/// Speech before a tone that makes it a greeting's beep rather than a fax or a line tone.
const MIN_GREETING_MS: u64 = 300;
/// Minimum pure-tone duration for BEEP and configured tones.
const MIN_TONE_MS: u64 = 100;
/// Fax tones are long; a shorter pure tone at 1100/2100 Hz is not enough.
const MIN_FAX_MS: u64 = 300;
const MAX_BEEP_MS: u64 = 3000;
/// Wait after a call-progress-frequency tone to see it is not a cadence.
const CP_GUARD_MS: u64 = 700;
/// Confirmed speech spanning this long (ms, first to last voiced block) is a long answer
/// or a greeting, which the turn-taking pause alone cannot tell apart.
const LONG_UTTERANCE_MS: u64 = 3500;
/// Unbroken speech this long (no 100 ms pause) inside a long utterance is read out: a
/// greeting. People answering at length pause between phrases sooner: at most about
/// 1.5 s on the development corpus, against 1.8 s and more for the greetings this catches.
/// Chosen with half the corpus held out (`CPA_SCORE_SUBSET` of the score example).
const MACHINE_RUN_MS: u64 = 1750;

impl Engine {
    /// A fresh analyser; feed it audio from the moment of answer.
    pub fn new(params: CpaParams) -> Engine {
        let window = (0..NFFT)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / NFFT as f32).cos())
            .collect();
        Engine {
            p: params,
            fft: Fft::new(NFFT),
            window,
            pending: Vec::with_capacity(HOP),
            hist: VecDeque::from(vec![0.0; HIST]),
            t: 0,
            out: VecDeque::new(),
            done: false,
            decided: false,
            last_result: None,
            re: vec![0.0; NFFT],
            im: vec![0.0; NFFT],
            pow: vec![0.0; NFFT / 2 + 1],
            floor: [0.0; NBANDS],
            prev_bands: [0.0; NBANDS],
            floor_init: false,
            band_hist: VecDeque::with_capacity(FLOOR_WIN + 1),
            total_hist: VecDeque::with_capacity(FLOOR_WIN + 1),
            tfloor: 0.0,
            noise_mean: 0.0,
            acc_spec: vec![0.0; NFFT / 2 + 1],
            run: None,
            pending_beep: None,
            cadence_freq: None,
            fax_reported: false,
            tone_energy_ms: 0,
            voice_hist: 0,
            in_speech: false,
            seg_start: 0,
            last_voice: 0,
            first_voice: None,
            voiced_ms: 0,
            seg_confirmed: false,
            seg_peak: 0.0,
            seg_blocks: 0,
            utt_peak: 0.0,
            last_snr: 0.0,
            last_level: 0.0,
            last_speech: 0,
            run_start: 0,
            run_last: 0,
            run_open: false,
            max_run_ms: 0,
            segments: Vec::new(),
        }
    }

    /// Feeds audio from the answered leg (8 kHz, any length; 160 samples is one RTP frame).
    pub fn handle_frame(&mut self, pcm: &[i16]) {
        let mut rest = pcm;
        while !rest.is_empty() && !self.done {
            let take = (HOP - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == HOP {
                let block = std::mem::take(&mut self.pending);
                self.process_block(&block);
                self.pending = block;
                self.pending.clear();
            }
        }
    }

    /// The call ended: flush what is known and finish with `Done { Hangup }`.
    pub fn handle_hangup(&mut self) {
        if self.done {
            return;
        }
        self.finish_run();
        if let Some(pb) = self.pending_beep.take() {
            self.report_beep(pb.onset, pb.freq, true);
        }
        if !self.done {
            self.finish(DoneReason::Hangup);
        }
    }

    /// The next detection or the final `Done`; drain to `None` after each `handle_*`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// True once `Done` has been queued; later input is ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    #[doc(hidden)]
    /// Voice segments (start, end) in samples, for the scoring tool's diagnostics.
    pub fn debug_segments(&self) -> &[(u64, u64)] {
        &self.segments
    }

    /// How far `sensitivity` lowers the voice thresholds from the default (4): 1.5 dB a step.
    fn sensitivity_db(&self) -> f32 {
        (self.p.sensitivity.clamp(2, 5) as f32 - 4.0) * 1.5
    }

    fn confirm_db(&self) -> f32 {
        CONFIRM_DB - self.sensitivity_db()
    }

    /// Confirmed speech so far, including a segment still in progress.
    fn speech_ms(&self) -> u64 {
        let cur = if self.in_speech && self.seg_confirmed {
            (self.last_voice - self.seg_start) / 8
        } else {
            0
        };
        self.voiced_ms + cur
    }

    fn now_ms(&self) -> u64 {
        self.t / 8
    }

    fn finish(&mut self, reason: DoneReason) {
        let result = self.last_result.clone().unwrap_or_else(|| "NS".into());
        self.out.push_back(Output::Done { result, reason });
        self.done = true;
    }

    fn report(&mut self, result: &str, onset: Option<u64>, freq: Option<f32>, top: Vec<f32>) {
        if self.done {
            return;
        }
        if is_decision(result) {
            if self.decided {
                return;
            }
            self.decided = true;
        }
        self.out.push_back(Output::Detection(Detection {
            result: result.to_string(),
            detection_ms: self.now_ms(),
            onset_ms: onset.map(|s| s / 8),
            frequency_hz: freq.map(|f| (f * 10.0).round() / 10.0),
            top_frequencies: top,
        }));
        self.last_result = Some(result.to_string());
        if self.p.break_events.iter().any(|b| b == result) {
            self.finish(DoneReason::BreakEvent);
        }
    }

    /// The `log_top_freq` strongest spectral peaks, of the speech heard so far (`speech`)
    /// or of the current block (for tones).
    fn top_freqs(&self, speech: bool) -> Vec<f32> {
        let spec = if speech { &self.acc_spec } else { &self.pow };
        let n = self.p.log_top_freq.min(5) as usize;
        if n == 0 {
            return Vec::new();
        }
        let lo = (100.0 / BIN_HZ) as usize;
        let hi = (3800.0 / BIN_HZ) as usize;
        let mut peaks: Vec<(f32, f32)> = (lo.max(1)..hi.min(spec.len() - 1))
            .filter(|&k| spec[k] > 0.0 && spec[k] >= spec[k - 1] && spec[k] > spec[k + 1])
            .map(|k| (spec[k], interp_freq(spec, k)))
            .collect();
        peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
        peaks.iter().take(n).map(|p| p.1.round()).collect()
    }

    fn process_block(&mut self, block: &[i16]) {
        for &s in block {
            self.hist.pop_front();
            self.hist.push_back(s as f32);
        }
        self.t += HOP as u64;

        // Spectrum of the last 32 ms.
        let base = HIST - NFFT;
        let mean = self.hist.range(base..).sum::<f32>() / NFFT as f32;
        for i in 0..NFFT {
            self.re[i] = (self.hist[base + i] - mean) * self.window[i];
            self.im[i] = 0.0;
        }
        self.fft.forward(&mut self.re, &mut self.im);
        for k in 0..=NFFT / 2 {
            self.pow[k] = self.re[k] * self.re[k] + self.im[k] * self.im[k];
        }

        // Digital silence (no media yet, or the far end's silence suppression) says nothing
        // about the line noise, so it must not drag the noise estimates to zero: noise that
        // resumes after it would pass for speech.
        let win_pow = self
            .hist
            .range(HIST - NFFT..)
            .map(|x| (x - mean) * (x - mean))
            .sum::<f32>()
            / NFFT as f32;
        let digital_silence = win_pow < DIGITAL_SILENCE_POW;
        let tone = if digital_silence {
            None
        } else {
            self.tone_block(mean)
        };
        self.track_tone(tone);
        if self.done {
            return;
        }

        let voice = if digital_silence {
            self.last_snr = f32::NEG_INFINITY;
            self.prev_bands = [0.0; NBANDS];
            None
        } else {
            self.vad(tone.is_some())
        };
        self.amd(voice, tone.is_some());
        if self.done {
            return;
        }

        if let Some(pb) = &self.pending_beep {
            if self.t >= pb.end + CP_GUARD_MS * 8 {
                let pb = self.pending_beep.take().unwrap();
                self.report_beep(pb.onset, pb.freq, true);
            }
        }
        if self.now_ms() >= self.p.total_timeout_ms as u64 && !self.done {
            self.finish(DoneReason::TotalTimeout);
        }
    }

    /// Is this block one pure sinusoid? Returns its frequency and power.
    fn tone_block(&mut self, mean: f32) -> Option<(f32, f32)> {
        let base = HIST - NFFT;
        let total: f32 = self
            .hist
            .range(base..)
            .map(|x| (x - mean) * (x - mean))
            .sum::<f32>()
            / NFFT as f32;
        let lo = (300.0 / BIN_HZ) as usize;
        let hi = (3500.0 / BIN_HZ) as usize;
        let mut k = lo;
        for i in lo..=hi {
            if self.pow[i] > self.pow[k] {
                k = i;
            }
        }
        let f = interp_freq(&self.pow, k);
        let c = sine_power(self.hist.range(base..), f, mean);
        // Noise is subtracted so a loud tone in loud noise still counts as pure, but the
        // tone must stand clearly above that noise.
        let noise = self.tfloor;
        let purity = c / (total - noise).max(c).max(1e-9);
        let tonal = purity > 0.8 && c > 2.0 * noise && c > 4.0 && {
            // A second narrow peak means a dual tone (DTMF, dial, busy, UK ringback).
            let peak = self.pow[k];
            let mut second = 0.0f32;
            for i in lo..=hi {
                if i + 3 < k || i > k + 3 {
                    let p = self.pow[i];
                    if p > second && p >= self.pow[i - 1] && p >= self.pow[i + 1] {
                        second = p;
                    }
                }
            }
            second < peak * 0.01
        };
        // The time-domain floor follows non-tonal blocks from below, like the band floors.
        if !tonal {
            self.total_hist.push_back(total);
            if self.total_hist.len() > FLOOR_WIN {
                self.total_hist.pop_front();
            }
            // Starting from zero is safe: the recent minimum lifts it after FLOOR_WIN.
            if total < self.tfloor {
                self.tfloor = 0.7 * self.tfloor + 0.3 * total;
            } else {
                self.tfloor *= 1.0115;
            }
            // Only a full window's minimum says something about the noise.
            if self.total_hist.len() == FLOOR_WIN {
                let recent_min = self
                    .total_hist
                    .iter()
                    .copied()
                    .fold(f32::INFINITY, f32::min);
                self.tfloor = self.tfloor.max(recent_min);
            }
        }
        tonal.then_some((f, c))
    }

    fn track_tone(&mut self, tone: Option<(f32, f32)>) {
        let now = self.t;
        if let Some(run) = &mut self.run {
            match tone {
                Some((f, c)) if (f - run.freq()).abs() <= (run.freq() * 0.015).max(10.0) => {
                    run.freq_sum += f;
                    run.blocks += 1;
                    run.min_pow = run.min_pow.min(c);
                    run.max_pow = run.max_pow.max(c);
                    run.last_end = now;
                    run.misses = 0;
                }
                _ => {
                    run.misses += 1;
                    // One lost block is forgiven: fax answer tones reverse phase every 450 ms.
                    if run.misses > 1 || tone.is_some() {
                        self.finish_run();
                    }
                }
            }
        }
        if self.run.is_none() {
            if let Some((f, c)) = tone {
                let onset = self.find_onset(f);
                if let Some(pb) = &self.pending_beep {
                    // The same frequency again soon after: a cadence, not a beep.
                    if (pb.freq - f).abs() < 15.0 {
                        self.cadence_freq = Some(pb.freq);
                        self.pending_beep = None;
                    }
                }
                self.run = Some(ToneRun {
                    onset,
                    last_end: now,
                    freq_sum: f,
                    blocks: 1,
                    min_pow: c,
                    max_pow: c,
                    misses: 0,
                    voice_before: self.speech_ms() >= MIN_GREETING_MS,
                    reported_labels: Vec::new(),
                    fax_checked: false,
                    amd_checked: false,
                });
            }
        }
        self.check_run();
    }

    /// Walks back through the history in 5 ms steps to where the tone's level began.
    fn find_onset(&self, f: f32) -> u64 {
        const SUB: usize = 40;
        let n_sub = HIST / SUB;
        let mags: Vec<f32> = (0..n_sub)
            .map(|i| {
                let start = HIST - (i + 1) * SUB;
                sine_power(self.hist.range(start..start + SUB), f, 0.0)
            })
            .collect();
        let steady = (mags[0] + mags[1]) / 2.0;
        let mut i = 1;
        while i + 1 < n_sub && mags[i + 1] >= 0.35 * steady {
            i += 1;
        }
        self.t.saturating_sub(((i + 1) * SUB) as u64)
    }

    fn check_run(&mut self) {
        let Some(run) = &mut self.run else { return };
        let dur = run.dur_ms();
        let f = run.freq();
        let steady = run.max_pow <= run.min_pow * 4.0;
        if !steady || dur < MIN_TONE_MS {
            return;
        }
        let onset = run.onset;
        let voice_before = run.voice_before;
        // A pure tone right after speech is the beep that ends a greeting: a machine. At a
        // call-progress frequency that waits until the tone proved not to be a cadence.
        let amd_now = !run.amd_checked && voice_before && !is_call_progress_freq(f);
        if amd_now {
            run.amd_checked = true;
        }
        let fax_tone = (f - 2100.0).abs() <= 25.0 || (f - 1100.0).abs() <= 38.0;
        let fax_now = !run.fax_checked && !voice_before && fax_tone && dur >= MIN_FAX_MS;
        if fax_now {
            run.fax_checked = true;
        }
        // Labels at call-progress frequencies wait, like the beep, until the tone has
        // shown it is not a ringback or busy cadence (see `finish_run`).
        let labels: Vec<usize> = if is_call_progress_freq(f) {
            Vec::new()
        } else {
            label_matches(&self.p.tones, f)
                .filter(|i| !run.reported_labels.contains(i))
                .collect()
        };
        run.reported_labels.extend(&labels);
        let top = self.top_freqs(false);
        if amd_now && !self.decided {
            self.report("AM", None, None, self.top_freqs(true));
        }
        if fax_now && !self.fax_reported {
            self.fax_reported = true;
            self.report("FX", Some(onset), Some(f), top.clone());
        }
        for i in labels {
            let label = self.p.tones[i].label.clone();
            // A label spelled like a built-in result must not repeat it.
            if label == "FX" && self.fax_reported && fax_tone {
                continue;
            }
            self.report(&label, Some(onset), Some(f), top.clone());
        }
    }

    fn finish_run(&mut self) {
        let Some(run) = self.run.take() else { return };
        let dur = run.dur_ms();
        let f = run.freq();
        let steady = run.max_pow <= run.min_pow * 4.0;
        // Tones before the end of initial_silence_ignore are the ringback heard at answer.
        if run.onset / 8 >= self.p.initial_silence_ignore_ms as u64 {
            self.tone_energy_ms += dur;
        }
        if !steady || !(MIN_TONE_MS..=MAX_BEEP_MS).contains(&dur) {
            return;
        }
        let fax_tone = (f - 2100.0).abs() <= 25.0 || (f - 1100.0).abs() <= 38.0;
        if fax_tone && !run.voice_before {
            return;
        }
        if is_call_progress_freq(f) {
            let cadence = self.cadence_freq.is_some_and(|c| (c - f).abs() < 15.0);
            if run.voice_before && !cadence {
                self.pending_beep = Some(PendingBeep {
                    onset: run.onset,
                    end: run.last_end,
                    freq: f,
                });
            }
            return;
        }
        self.report_beep(run.onset, f, false);
    }

    /// Reports the beep that ended a greeting, and for a call-progress frequency (held back
    /// until it proved not to be a cadence) the labels it matches.
    fn report_beep(&mut self, onset: u64, f: f32, with_labels: bool) {
        let top = self.top_freqs(false);
        if with_labels {
            if !self.decided {
                self.report("AM", None, None, self.top_freqs(true));
            }
            let labels: Vec<usize> = label_matches(&self.p.tones, f).collect();
            for i in labels {
                let label = self.p.tones[i].label.clone();
                self.report(&label, Some(onset), Some(f), top.clone());
            }
        }
        if self.p.detect_beep && (390.0..=2150.0).contains(&f) {
            self.report("BEEP", Some(onset), Some(f), top);
        }
    }

    /// Spectral voice activity: energy above the adaptive floor in several bands at once,
    /// which a tone or a noise burst confined to one band cannot fake. Returns the block's
    /// level above the mean noise (dB) when it is voice.
    fn vad(&mut self, tonal: bool) -> Option<f32> {
        // min_ambient_energy is an RMS sample amplitude; this is the band power that white
        // noise of that amplitude gives through the Hann-windowed FFT.
        let min_floor = {
            let a = self.p.min_ambient_energy.max(1) as f32;
            a * a * NFFT as f32 * 0.375 * BAND_W as f32
        };
        let mut bands = [0.0f32; NBANDS];
        for (j, b) in bands.iter_mut().enumerate() {
            let k0 = BAND0 + j * BAND_W;
            *b = self.pow[k0..k0 + BAND_W].iter().sum();
        }
        if !self.floor_init {
            self.floor = bands;
            self.prev_bands = bands;
            self.floor_init = true;
        }
        let mut active = 0;
        let mut sig = 0.0;
        let mut noise = 0.0;
        let mut avg = [0.0f32; NBANDS];
        for j in 0..NBANDS {
            // Two-block average: steadier than one block in noise, and unlike a recursive
            // smoother it forgets a loud sound (a ringback tail) at once.
            avg[j] = 0.5 * (self.prev_bands[j] + bands[j]);
            let fl = self.floor[j].max(min_floor);
            if avg[j] > 5.0 * fl {
                active += 1;
            }
            sig += avg[j];
            noise += fl;
        }
        self.prev_bands = bands;
        if self.noise_mean <= 0.0 {
            self.noise_mean = sig;
        }
        // The mean may not drift far above the floor, or speech at the very start of the
        // call would teach it that speech is noise.
        self.noise_mean = self.noise_mean.min(8.0 * noise).max(noise);
        let snr_db = 10.0 * (sig / self.noise_mean.max(1e-9)).log10();
        let thr = VAD_DB - self.sensitivity_db();
        if snr_db < thr + 3.0 {
            self.noise_mean += 0.05 * (sig - self.noise_mean);
        }
        let narrow = self.narrow_share();
        // The current block must carry the energy itself, not inherit it from the average.
        let cur: f32 = bands.iter().sum();
        let cur_loud = cur > self.noise_mean * 10f32.powf((thr - 3.0) / 10.0);
        let voice = !tonal && active >= 3 && snr_db > thr && cur_loud && narrow < 0.96;
        // The floor falls fast and rises slowly (about 2.5 dB/s, 0.9 dB/s under speech),
        // so it sits in the gaps between words.
        self.band_hist.push_back(avg);
        if self.band_hist.len() > FLOOR_WIN {
            self.band_hist.pop_front();
        }
        for (j, (fl, &a)) in self.floor.iter_mut().zip(&avg).enumerate() {
            if a < *fl {
                *fl = 0.7 * *fl + 0.3 * a;
            } else {
                *fl *= if voice { 1.004 } else { 1.0115 };
            }
            if self.band_hist.len() == FLOOR_WIN {
                let recent_min = self
                    .band_hist
                    .iter()
                    .map(|b| b[j])
                    .fold(f32::INFINITY, f32::min);
                *fl = fl.max(recent_min);
            }
            *fl = fl.max(1e-6);
        }
        if voice {
            for (a, p) in self.acc_spec.iter_mut().zip(&self.pow) {
                *a += p;
            }
        }
        self.last_snr = snr_db;
        self.last_level = sig;
        voice.then_some(snr_db)
    }

    /// Share of the power in the two strongest narrow peaks: ringback and other
    /// call-progress tones live there, speech spreads over many harmonics.
    fn narrow_share(&self) -> f32 {
        let lo = BAND0;
        let hi = BAND0 + NBANDS * BAND_W;
        let mut k1 = lo;
        for k in lo..hi {
            if self.pow[k] > self.pow[k1] {
                k1 = k;
            }
        }
        let mut k2: Option<usize> = None;
        for k in lo..hi {
            let local_max = self.pow[k] >= self.pow[k - 1] && self.pow[k] >= self.pow[k + 1];
            if local_max && k.abs_diff(k1) >= 3 && k2.is_none_or(|k2| self.pow[k] > self.pow[k2]) {
                k2 = Some(k);
            }
        }
        let near = |k: usize| k.abs_diff(k1) <= 2 || k2.is_some_and(|k2| k.abs_diff(k2) <= 2);
        let all: f32 = self.pow[lo - 2..hi + 2].iter().sum();
        let peaks: f32 = (lo - 2..hi + 2)
            .filter(|&k| near(k))
            .map(|k| self.pow[k])
            .sum();
        peaks / all.max(1e-9)
    }

    /// The AMD rules over voice segments.
    fn amd(&mut self, voice: Option<f32>, tonal: bool) {
        let now = self.t;
        self.voice_hist = (self.voice_hist << 1) | voice.is_some() as u32;
        // Speech starts with 2 of 3 voiced blocks and ends 100 ms after the last one.
        if !self.in_speech && (self.voice_hist & 0b111).count_ones() >= 2 {
            self.in_speech = true;
            self.seg_confirmed = false;
            self.seg_peak = 0.0;
            self.seg_blocks = 0;
            let back = if self.voice_hist & 0b100 != 0 { 3 } else { 2 };
            self.seg_start = now.saturating_sub(back * HOP as u64);
        }
        if let Some(snr) = voice {
            self.last_voice = now;
            if self.in_speech {
                self.seg_peak = self.seg_peak.max(snr);
                self.seg_blocks += 1;
                // A segment is speech once it has a clearly loud part: babble and noise
                // bursts cross the VAD threshold but rarely rise this far above the mean.
                // It must also last: the clicks where a tone burst starts or stops are loud
                // and broadband, but only for a block or two.
                if !self.seg_confirmed && self.seg_peak >= self.confirm_db() && self.seg_blocks >= 4
                {
                    self.seg_confirmed = true;
                    if self.first_voice.is_none() {
                        self.first_voice = Some(self.seg_start);
                    }
                }
                if snr > VAD_DB {
                    if !self.run_open || now - self.run_last > 5 * HOP as u64 {
                        self.run_start = now - HOP as u64;
                    }
                    self.run_open = true;
                    self.run_last = now;
                }
                if self.seg_confirmed {
                    if self.run_open && self.run_start >= self.seg_start {
                        self.max_run_ms = self.max_run_ms.max((self.run_last - self.run_start) / 8);
                    }
                    self.last_speech = now;
                    self.utt_peak = self.utt_peak.max(self.last_level);
                }
            }
        }
        if self.in_speech && now.saturating_sub(self.last_voice) >= 5 * HOP as u64 {
            self.in_speech = false;
            if self.seg_confirmed {
                // Kept for diagnostics only; a bound keeps a long call's memory flat.
                if self.segments.len() < 256 {
                    self.segments.push((self.seg_start, self.last_voice));
                }
                self.voiced_ms += (self.last_voice - self.seg_start) / 8;
            }
        }
        if self.decided {
            return;
        }
        let ms = self.now_ms();
        let ignore = self.p.initial_silence_ignore_ms as u64;
        let window = self.p.time_limit_ms as u64;
        match self.first_voice {
            None => {
                if ms >= ignore + window {
                    let r = if self.tone_energy_ms > 500 || self.run.is_some() {
                        "NS"
                    } else {
                        "SIL"
                    };
                    self.report(r, None, None, self.top_freqs(true));
                }
            }
            Some(fv) => {
                if ms < ignore {
                    return;
                }
                let span = (now - fv) / 8;
                // An unconfirmed segment may still turn out to be speech: wait for it.
                let speaking = self.in_speech;
                // Only a quiet block ends the wait: a tone or a burst may be starting.
                let quiet = self.last_snr < 3.0;
                let silence = (now - self.last_speech) / 8;
                // A greeting that goes on well past the decision window is recorded.
                let am_span = 2 * window + 1500;
                // A long utterance with a long unbroken run in it is read out, not answered.
                let utterance = (self.last_speech.saturating_sub(fv)) / 8;
                let read_out = utterance >= LONG_UTTERANCE_MS && self.max_run_ms >= MACHINE_RUN_MS;
                if (speaking && self.seg_confirmed && span >= am_span) || read_out {
                    self.report("AM", None, None, self.top_freqs(true));
                } else if !speaking
                    && quiet
                    && !tonal
                    && self.run.is_none()
                    && self.pending_beep.is_none()
                    && self.voiced_ms >= MIN_UTTERANCE_MS
                    && silence >= LV_PAUSE_MS
                {
                    // Check the answer again against the noise as now known: noise at the
                    // very start of a call can pass for speech until its level is learnt.
                    if self.utt_peak < self.noise_mean * 10f32.powf(self.confirm_db() / 10.0) {
                        self.first_voice = None;
                        self.voiced_ms = 0;
                        self.utt_peak = 0.0;
                        self.max_run_ms = 0;
                        self.segments.clear();
                        return;
                    }
                    self.report("LV", None, None, self.top_freqs(true));
                }
            }
        }
    }
}

/// Indexes of the configured tones whose band holds `f`.
fn label_matches(tones: &[ToneSpec], f: f32) -> impl Iterator<Item = usize> + '_ {
    tones
        .iter()
        .enumerate()
        .filter(move |(_, t)| (f - t.freq_hz).abs() <= t.tol_hz)
        .map(|(i, _)| i)
}

/// Frequency of spectral peak `k`, refined by a parabola through the log powers.
fn interp_freq(p: &[f32], k: usize) -> f32 {
    if k == 0 || k + 1 >= p.len() {
        return k as f32 * BIN_HZ;
    }
    let (a, b, c) = (
        p[k - 1].max(1e-12).ln(),
        p[k].max(1e-12).ln(),
        p[k + 1].max(1e-12).ln(),
    );
    let den = a - 2.0 * b + c;
    let d = if den.abs() > 1e-12 {
        (0.5 * (a - c) / den).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    (k as f32 + d) * BIN_HZ
}

/// Power of the best-fitting sinusoid at `f` over `xs` (rectangular window).
fn sine_power<'a>(xs: impl ExactSizeIterator<Item = &'a f32>, f: f32, mean: f32) -> f32 {
    let n = xs.len() as f32;
    let w = 2.0 * std::f32::consts::PI * f / FS;
    let (mut i, mut q) = (0.0f32, 0.0f32);
    let (mut c, mut s) = (1.0f32, 0.0f32);
    let (cw, sw) = (w.cos(), w.sin());
    for x in xs {
        let v = x - mean;
        i += v * c;
        q += v * s;
        let nc = c * cw - s * sw;
        s = s * cw + c * sw;
        c = nc;
    }
    2.0 * (i * i + q * q) / (n * n)
}

#[cfg(test)]
mod tests;
