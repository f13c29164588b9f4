//! In-band DTMF detection with the ITU-T Q.24 limits: frequency deviation up to ±1.5 %
//! accepted and beyond ±3.5 % rejected, twist of +4 dB (high group louder) to −8 dB, at
//! least 40 ms of tone and 40 ms of pause per digit.

use std::collections::VecDeque;

const FS: f32 = 8000.0;
const WIN: usize = 160;
/// 5 ms hops give the 40 ms on/off limits a resolution of a few ms.
const HOP: usize = 40;
const LOW: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const HIGH: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// Halfway between Q.24's must-accept and must-reject deviations.
const MAX_DEV: f32 = 0.025;
/// Consecutive valid windows for a digit. A window still passes when the tone fills about
/// three quarters of it, so a tone of D ms gives about (D - 20 + 10) / 5 + 1 valid windows:
/// 7 at 40 ms, 5 at 30 ms, 3 at 20 ms.
const ON_WINDOWS: u32 = 6;
/// Consecutive invalid windows that end a digit: a pause of G ms gives about (G + 10) / 5 - 1,
/// so 40 ms ends it and a 10 ms drop-out does not.
const OFF_WINDOWS: u32 = 7;

/// Detects DTMF digits in 8 kHz audio fed in frames of any length.
pub struct DtmfDetector {
    window: Vec<f32>,
    buf: VecDeque<f32>,
    since_hop: usize,
    t: u64,
    cand: Option<(char, u32, u64)>,
    down: Option<char>,
    invalid: u32,
    out: VecDeque<(char, u64)>,
}

impl Default for DtmfDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl DtmfDetector {
    pub fn new() -> DtmfDetector {
        let window = (0..WIN)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * (i as f32 + 0.5) / WIN as f32).cos())
            .collect();
        DtmfDetector {
            window,
            buf: VecDeque::from(vec![0.0; WIN]),
            since_hop: 0,
            t: 0,
            cand: None,
            down: None,
            invalid: OFF_WINDOWS,
            out: VecDeque::new(),
        }
    }

    pub fn handle_frame(&mut self, pcm: &[i16]) {
        for &s in pcm {
            self.buf.pop_front();
            self.buf.push_back(s as f32);
            self.t += 1;
            self.since_hop += 1;
            if self.since_hop == HOP {
                self.since_hop = 0;
                let d = self.classify();
                self.step(d);
            }
        }
    }

    /// The next digit and its onset in ms from the first sample fed.
    pub fn poll_digit(&mut self) -> Option<(char, u64)> {
        self.out.pop_front()
    }

    fn step(&mut self, d: Option<char>) {
        let win_start = self.t.saturating_sub(WIN as u64);
        match d {
            Some(c) => {
                self.invalid = 0;
                match &mut self.cand {
                    Some((cc, n, _)) if *cc == c => *n += 1,
                    _ => self.cand = Some((c, 1, win_start)),
                }
                let (c, n, onset) = self.cand.unwrap();
                if n >= ON_WINDOWS && self.down != Some(c) {
                    self.down = Some(c);
                    self.out.push_back((c, onset / 8));
                }
            }
            None => {
                self.cand = None;
                self.invalid = self.invalid.saturating_add(1);
                if self.invalid >= OFF_WINDOWS {
                    self.down = None;
                }
            }
        }
    }

    /// Power of a sinusoid at `f` in the current window, scaled to mean signal power.
    fn power_at(&self, f: f32, mean: f32) -> f32 {
        let w = 2.0 * std::f32::consts::PI * f / FS;
        let (cw, sw) = (w.cos(), w.sin());
        let (mut c, mut s) = (1.0f32, 0.0f32);
        let (mut i, mut q) = (0.0f32, 0.0f32);
        for (x, win) in self.buf.iter().zip(&self.window) {
            let v = (x - mean) * win;
            i += v * c;
            q += v * s;
            let nc = c * cw - s * sw;
            s = s * cw + c * sw;
            c = nc;
        }
        // A Hann window sums to N/2, so a sinusoid of amplitude A gives |X| = A·N/4.
        let a = 4.0 * (i * i + q * q).sqrt() / WIN as f32;
        a * a / 2.0
    }

    /// Finds the true frequency near `nominal` by a fine search and a parabolic fit.
    fn refine(&self, nominal: f32, mean: f32) -> (f32, f32) {
        const STEPS: i32 = 10;
        const STEP: f32 = 0.005;
        let pts: Vec<(f32, f32)> = (-STEPS..=STEPS)
            .map(|i| {
                let f = nominal * (1.0 + i as f32 * STEP);
                (f, self.power_at(f, mean))
            })
            .collect();
        let best = (0..pts.len())
            .max_by(|&a, &b| pts[a].1.total_cmp(&pts[b].1))
            .unwrap_or(0);
        if best == 0 || best + 1 == pts.len() {
            return pts[best];
        }
        let (a, b, c) = (pts[best - 1].1, pts[best].1, pts[best + 1].1);
        let den = a - 2.0 * b + c;
        let d = if den.abs() > 1e-12 {
            (0.5 * (a - c) / den).clamp(-0.5, 0.5)
        } else {
            0.0
        };
        (
            nominal * (1.0 + (best as i32 - STEPS) as f32 * STEP + d * STEP),
            b,
        )
    }

    fn classify(&self) -> Option<char> {
        let mean = self.buf.iter().sum::<f32>() / WIN as f32;
        let wsum2: f32 = self.window.iter().map(|w| w * w).sum();
        let total: f32 = self
            .buf
            .iter()
            .zip(&self.window)
            .map(|(x, w)| ((x - mean) * w).powi(2))
            .sum::<f32>()
            / wsum2;
        // About -45 dBm0: quieter than anything a phone sends as DTMF.
        if total.is_nan() || total <= 50.0 {
            return None;
        }
        let strongest = |group: &[f32; 4]| {
            (0..4)
                .map(|i| (i, self.power_at(group[i], mean)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((0, 0.0))
        };
        let (r, pl0) = strongest(&LOW);
        let (c, ph0) = strongest(&HIGH);
        // Cheap gate before the fine search: off-nominal tones still show at about half
        // power in the nominal bins, speech and noise far less.
        if pl0 + ph0 < 0.3 * total {
            return None;
        }
        let (fl, pl) = self.refine(LOW[r], mean);
        let (fh, ph) = self.refine(HIGH[c], mean);
        if (fl / LOW[r] - 1.0).abs() > MAX_DEV || (fh / HIGH[c] - 1.0).abs() > MAX_DEV {
            return None;
        }
        let twist_db = 10.0 * (ph / pl.max(1e-9)).log10();
        // Q.24's limits plus half a dB, so a signal exactly at the limit is not lost to
        // measurement error.
        if !(-8.5..=4.5).contains(&twist_db) {
            return None;
        }
        // The two tones must carry nearly all the power: speech and music do not.
        if pl + ph < 0.8 * total {
            return None;
        }
        Some(KEYS[r][c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: f64 = 6000.0;

    fn gen(ms: u32, lo: f64, hi: f64, a_lo: f64, a_hi: f64) -> Vec<i16> {
        (0..(ms * 8) as usize)
            .map(|n| {
                let t = n as f64 / 8000.0;
                let v = a_lo * (2.0 * std::f64::consts::PI * lo * t).sin()
                    + a_hi * (2.0 * std::f64::consts::PI * hi * t + 0.7).sin();
                v.round() as i16
            })
            .collect()
    }

    fn quiet(ms: u32) -> Vec<i16> {
        vec![0; (ms * 8) as usize]
    }

    fn detect(parts: &[Vec<i16>]) -> Vec<(char, u64)> {
        let mut d = DtmfDetector::new();
        let mut out = Vec::new();
        for p in parts {
            // Odd frame sizes on purpose: the detector buffers.
            for f in p.chunks(77) {
                d.handle_frame(f);
            }
        }
        d.handle_frame(&quiet(200));
        while let Some(x) = d.poll_digit() {
            out.push(x);
        }
        out
    }

    fn digits(parts: &[Vec<i16>]) -> String {
        detect(parts).iter().map(|x| x.0).collect()
    }

    #[test]
    fn all_sixteen_keys_with_onset() {
        for (r, row) in KEYS.iter().enumerate() {
            for (c, &key) in row.iter().enumerate() {
                let got = detect(&[quiet(300), gen(80, LOW[r] as f64, HIGH[c] as f64, A, A)]);
                assert_eq!(got.len(), 1, "{key}: {got:?}");
                assert_eq!(got[0].0, key);
                assert!(got[0].1.abs_diff(300) <= 10, "{key}: {got:?}");
            }
        }
    }

    #[test]
    fn frequency_deviation_limits() {
        for (dev, accept) in [
            (0.015, true),
            (-0.015, true),
            (0.035, false),
            (-0.035, false),
        ] {
            // Both tones off by the same relative amount, and each group alone.
            for (dl, dh) in [(dev, dev), (dev, 0.0), (0.0, dev)] {
                let s = gen(80, 770.0 * (1.0 + dl), 1336.0 * (1.0 + dh), A, A);
                let got = digits(&[quiet(100), s]);
                assert_eq!(got == "5", accept, "dev {dl}/{dh}: {got:?}");
            }
        }
    }

    #[test]
    fn twist_limits() {
        let db = |x: f64| 10f64.powf(x / 20.0);
        // Positive twist: the high group louder.
        for (twist, accept) in [
            (4.0, true),
            (-8.0, true),
            (0.0, true),
            (6.0, false),
            (-10.0, false),
        ] {
            let s = gen(80, 852.0, 1477.0, 4000.0, 4000.0 * db(twist));
            assert_eq!(digits(&[quiet(100), s]) == "9", accept, "twist {twist} dB");
        }
    }

    #[test]
    fn forty_ms_on_and_off() {
        let key = || gen(40, 941.0, 1336.0, A, A);
        assert_eq!(digits(&[quiet(100), key()]), "0");
        assert_eq!(digits(&[quiet(100), gen(25, 941.0, 1336.0, A, A)]), "");
        assert_eq!(digits(&[quiet(100), gen(20, 941.0, 1336.0, A, A)]), "");
        // A 40 ms pause separates two presses; a 10 ms drop-out does not.
        assert_eq!(
            digits(&[
                quiet(100),
                gen(60, 941.0, 1336.0, A, A),
                quiet(40),
                gen(60, 941.0, 1336.0, A, A)
            ]),
            "00"
        );
        assert_eq!(
            digits(&[
                quiet(100),
                gen(60, 941.0, 1336.0, A, A),
                quiet(10),
                gen(60, 941.0, 1336.0, A, A)
            ]),
            "0"
        );
        assert_eq!(
            digits(&[quiet(100), key(), quiet(40), gen(40, 697.0, 1209.0, A, A)]),
            "01"
        );
    }

    #[test]
    fn single_tones_speechlike_and_extreme_input_are_not_digits() {
        let single: Vec<i16> = gen(300, 1000.0, 1000.0, A / 2.0, A / 2.0);
        assert_eq!(digits(&[single]), "");
        // A dual tone with a third strong component is not DTMF.
        let mut triple = gen(200, 770.0, 1336.0, A, A);
        for (n, v) in triple.iter_mut().enumerate() {
            *v = v.saturating_add(
                (A * (2.0 * std::f64::consts::PI * 2200.0 * n as f64 / 8000.0).sin()) as i16,
            );
        }
        assert_eq!(digits(&[triple]), "");
        assert_eq!(digits(&[vec![i16::MIN; 8000], vec![i16::MAX; 8000]]), "");
        let mut d = DtmfDetector::default();
        d.handle_frame(&[]);
        d.handle_frame(
            &(0..8000)
                .map(|i| if i % 2 == 0 { i16::MIN } else { i16::MAX })
                .collect::<Vec<_>>(),
        );
        assert_eq!(d.poll_digit(), None);
    }
}
