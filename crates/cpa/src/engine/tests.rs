//! Engine behaviour on synthesised signals: every tolerance edge of the tone rules, the
//! call-progress tones that must never be reported, and each knob of the AMD.

use super::*;
use crate::params::ToneSpec;

const RATE: f64 = 8000.0;

/// Deterministic noise, so failures reproduce.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// A quiet line: low noise (about -70 dBFS), as a call has between words.
fn silence(ms: u32) -> Vec<f64> {
    let mut rng = Lcg(ms as u64 + 17);
    (0..(ms as f64 * RATE / 1000.0) as usize)
        .map(|_| 17.0 * rng.next())
        .collect()
}

fn zeros(ms: u32) -> Vec<f64> {
    vec![0.0; (ms as f64 * RATE / 1000.0) as usize]
}

/// Sum of sinusoids `(freq, amplitude)`.
fn tones(ms: u32, parts: &[(f64, f64)]) -> Vec<f64> {
    (0..(ms as f64 * RATE / 1000.0) as usize)
        .map(|n| {
            let t = n as f64 / RATE;
            parts
                .iter()
                .map(|(f, a)| a * (2.0 * std::f64::consts::PI * f * t).sin())
                .sum()
        })
        .collect()
}

/// On/off cadence of a signal, `cycles` times.
fn cadence(cycles: usize, pattern: &[(u32, bool)], parts: &[(f64, f64)]) -> Vec<f64> {
    let mut v = Vec::new();
    for _ in 0..cycles {
        for &(ms, on) in pattern {
            v.extend(if on { tones(ms, parts) } else { silence(ms) });
        }
    }
    v
}

/// A voice-like signal: a glottal harmonic series under two formants with a syllable
/// envelope, which the VAD must take for speech and the tone detector must not.
fn speech(ms: u32, level: f64, seed: u64) -> Vec<f64> {
    let mut rng = Lcg(seed);
    let n = (ms as f64 * RATE / 1000.0) as usize;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / RATE;
            let f0 = 120.0 + 15.0 * (2.0 * std::f64::consts::PI * 1.3 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / RATE;
            let (f1, f2) = (
                600.0 + 200.0 * (2.0 * std::f64::consts::PI * 2.1 * t).sin(),
                1700.0 + 400.0 * (2.0 * std::f64::consts::PI * 1.7 * t).cos(),
            );
            let mut v = 0.0;
            let mut k = 1.0;
            while k * f0 < 3600.0 {
                let f = k * f0;
                let g = 1.0 / (1.0 + ((f - f1) / 250.0).powi(2))
                    + 0.5 / (1.0 + ((f - f2) / 300.0).powi(2));
                v += g * (k * phase).sin();
                k += 1.0;
            }
            // Syllables of 180 ms with 60 ms gaps, and a breath every 1.6 s, as speech has.
            let (s, p) = (t % 0.24, t % 1.6);
            let syl = if s < 0.18 && p < 1.35 {
                (std::f64::consts::PI * s / 0.18).sin().sqrt()
            } else {
                0.0
            };
            level * (0.35 * v * syl + 0.02 * rng.next())
        })
        .collect()
}

fn pcm(x: &[f64]) -> Vec<i16> {
    x.iter()
        .map(|v| v.round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

fn run_with(params: CpaParams, audio: &[f64]) -> Vec<Output> {
    let mut e = Engine::new(params);
    let mut out = Vec::new();
    for f in pcm(audio).chunks(160) {
        e.handle_frame(f);
        while let Some(o) = e.poll_output() {
            out.push(o);
        }
    }
    e.handle_hangup();
    while let Some(o) = e.poll_output() {
        out.push(o);
    }
    out
}

fn detections(out: &[Output]) -> Vec<&Detection> {
    out.iter()
        .filter_map(|o| match o {
            Output::Detection(d) => Some(d),
            _ => None,
        })
        .collect()
}

fn results(out: &[Output]) -> Vec<String> {
    detections(out).iter().map(|d| d.result.clone()).collect()
}

fn with_tones(spec: &[(&str, &str)]) -> CpaParams {
    CpaParams {
        tones: spec
            .iter()
            .map(|(l, s)| ToneSpec::parse(l, s).unwrap())
            .collect(),
        ..CpaParams::default()
    }
}

fn concat(parts: &[Vec<f64>]) -> Vec<f64> {
    parts.concat()
}

#[test]
fn configured_tone_at_the_tolerance_edges() {
    let p = || with_tones(&[("T", "1500 20"), ("BP", "1000 10")]);
    for (f, label, expect) in [
        (1517.0, "T", true),
        (1483.0, "T", true),
        (1524.0, "T", false),
        (1476.0, "T", false),
        (1008.0, "BP", true),
        (992.0, "BP", true),
        (1014.0, "BP", false),
        (986.0, "BP", false),
    ] {
        let audio = concat(&[silence(1000), tones(400, &[(f, 3000.0)]), silence(2000)]);
        let r = results(&run_with(p(), &audio));
        assert_eq!(r.contains(&label.to_string()), expect, "{f} Hz -> {r:?}");
    }
}

#[test]
fn tone_report_carries_onset_frequency_and_top_frequencies() {
    let audio = concat(&[
        silence(1230),
        tones(400, &[(1500.0, 3000.0)]),
        silence(1000),
    ]);
    let out = run_with(with_tones(&[("T", "1500 20")]), &audio);
    let d = detections(&out)
        .into_iter()
        .find(|d| d.result == "T")
        .unwrap();
    assert!(d.onset_ms.unwrap().abs_diff(1230) <= 10, "{d:?}");
    assert!((d.frequency_hz.unwrap() - 1500.0).abs() < 3.0, "{d:?}");
    assert_eq!(d.top_frequencies.len(), 3);
    assert!((d.top_frequencies[0] - 1500.0).abs() < 20.0, "{d:?}");
    let p = CpaParams {
        log_top_freq: 0,
        ..with_tones(&[("T", "1500 20")])
    };
    let out = run_with(p, &audio);
    assert!(detections(&out)
        .iter()
        .all(|d| d.top_frequencies.is_empty()));
}

#[test]
fn tone_shorter_than_the_minimum_or_impure_is_not_reported() {
    let p = || with_tones(&[("T", "1500 20")]);
    let short = concat(&[silence(1000), tones(70, &[(1500.0, 3000.0)]), silence(2000)]);
    assert!(!results(&run_with(p(), &short)).contains(&"T".to_string()));
    // Half the power in a second tone far away: not a pure tone.
    let dual = concat(&[
        silence(1000),
        tones(500, &[(1500.0, 3000.0), (700.0, 3000.0)]),
        silence(2000),
    ]);
    assert!(!results(&run_with(p(), &dual)).contains(&"T".to_string()));
    // Loud white noise around the tone: the tone must stand above it.
    let mut rng = Lcg(7);
    let noisy: Vec<f64> = concat(&[silence(1000), tones(500, &[(1500.0, 300.0)]), silence(2000)])
        .into_iter()
        .map(|v| v + 3000.0 * rng.next())
        .collect();
    assert!(!results(&run_with(p(), &noisy)).contains(&"T".to_string()));
}

#[test]
fn tone_in_moderate_noise_is_still_found() {
    let mut rng = Lcg(3);
    let audio: Vec<f64> = concat(&[
        silence(1000),
        tones(400, &[(1000.0, 2000.0)]),
        silence(2000),
    ])
    .into_iter()
    .map(|v| v + 300.0 * rng.next())
    .collect();
    assert!(
        results(&run_with(with_tones(&[("BP", "1000 10")]), &audio)).contains(&"BP".to_string())
    );
}

#[test]
fn fax_ced_and_cng_decide_fx() {
    let ced = concat(&[
        silence(400),
        tones(3000, &[(2100.0, 4000.0)]),
        silence(1000),
    ]);
    let out = run_with(CpaParams::default(), &ced);
    let d = detections(&out)[0];
    assert_eq!(d.result, "FX");
    assert!(d.onset_ms.unwrap().abs_diff(400) <= 10);
    assert!((d.frequency_hz.unwrap() - 2100.0).abs() < 3.0);
    let cng = concat(&[
        silence(700),
        cadence(2, &[(500, true), (3000, false)], &[(1100.0, 3000.0)]),
    ]);
    let r = results(&run_with(CpaParams::default(), &cng));
    assert_eq!(r[0], "FX", "{r:?}");
    assert!(!r.contains(&"BEEP".to_string()));
}

#[test]
fn beep_after_a_greeting_is_found_at_any_frequency() {
    for f in [425.0, 440.0, 600.0, 1000.0, 1400.0, 2000.0] {
        let audio = concat(&[
            silence(500),
            speech(2500, 3000.0, 1),
            silence(400),
            tones(300, &[(f, 4000.0)]),
            silence(2500),
        ]);
        let out = run_with(CpaParams::default(), &audio);
        let ds = detections(&out);
        let beep = ds
            .iter()
            .find(|d| d.result == "BEEP")
            .unwrap_or_else(|| panic!("{f}: {ds:?}"));
        let onset = 500 + 2500 + 400;
        assert!(
            beep.onset_ms.unwrap().abs_diff(onset) <= 20,
            "{f}: {beep:?}"
        );
        assert!(
            (beep.frequency_hz.unwrap() - f as f32).abs() < 3.0,
            "{f}: {beep:?}"
        );
        assert_eq!(ds[0].result, "AM", "{f}: {ds:?}");
    }
}

#[test]
fn detect_beep_false_suppresses_beep() {
    let audio = concat(&[
        silence(500),
        speech(2500, 3000.0, 1),
        silence(400),
        tones(300, &[(1000.0, 4000.0)]),
        silence(2000),
    ]);
    let p = CpaParams {
        detect_beep: false,
        ..CpaParams::default()
    };
    assert!(!results(&run_with(p, &audio)).contains(&"BEEP".to_string()));
}

/// Ringback, busy and dial tones of several countries (ITU-T E.180), and DTMF.
fn call_progress_signals() -> Vec<(&'static str, Vec<f64>)> {
    let a = 3000.0;
    // 400 Hz amplitude-modulated at 25 Hz, in the 0.4/0.2/0.4/2.0 s cadence.
    let mut rng = Lcg(5);
    let india: Vec<f64> = (0..3 * 3000 * 8)
        .map(|n| {
            let t = n as f64 / RATE;
            let c = t % 3.0;
            let on = c < 0.4 || (0.6..1.0).contains(&c);
            let tone = a
                * (0.6 + 0.4 * (2.0 * std::f64::consts::PI * 25.0 * t).sin())
                * (2.0 * std::f64::consts::PI * 400.0 * t).sin();
            if on {
                tone
            } else {
                17.0 * rng.next()
            }
        })
        .collect();
    let mut dtmf = Vec::new();
    for (lo, hi) in [
        (697.0, 1209.0),
        (770.0, 1336.0),
        (852.0, 1477.0),
        (941.0, 1633.0),
        (941.0, 1336.0),
    ] {
        dtmf.extend(tones(150, &[(lo, a), (hi, a)]));
        dtmf.extend(silence(100));
    }
    vec![
        (
            "US ringback",
            cadence(2, &[(2000, true), (4000, false)], &[(440.0, a), (480.0, a)]),
        ),
        (
            "EU ringback",
            cadence(2, &[(1000, true), (4000, false)], &[(425.0, a)]),
        ),
        (
            "UK ringback",
            cadence(
                3,
                &[(400, true), (200, false), (400, true), (2000, false)],
                &[(400.0, a), (450.0, a)],
            ),
        ),
        ("IN ringback", india),
        (
            "US busy",
            cadence(6, &[(500, true), (500, false)], &[(480.0, a), (620.0, a)]),
        ),
        (
            "EU busy",
            cadence(6, &[(500, true), (500, false)], &[(425.0, a)]),
        ),
        ("US dial", tones(6000, &[(350.0, a), (440.0, a)])),
        ("EU dial", tones(6000, &[(425.0, a)])),
        ("DTMF", dtmf),
    ]
}

#[test]
fn call_progress_tones_and_dtmf_are_never_a_tone_or_beep() {
    let p = || {
        with_tones(&[
            ("RB", "440 40"),
            ("EU", "425 10"),
            ("BP", "1000 10"),
            ("D", "941 20"),
        ])
    };
    for (name, sig) in call_progress_signals() {
        // Heard at answer, and (for what can follow a conversation) after speech.
        let mut cases = vec![concat(&[sig.clone(), silence(3000)])];
        if name.contains("busy") || name.contains("DTMF") || name.contains("dial") {
            cases.push(concat(&[
                silence(300),
                speech(1500, 3000.0, 2),
                silence(300),
                sig.clone(),
                silence(2000),
            ]));
        }
        for audio in cases {
            let r = results(&run_with(p(), &audio));
            for bad in ["RB", "EU", "BP", "D", "BEEP", "FX"] {
                assert!(!r.contains(&bad.to_string()), "{name}: {r:?}");
            }
        }
    }
}

#[test]
fn call_progress_tones_alone_are_not_speech() {
    for (name, sig) in call_progress_signals() {
        let r = results(&run_with(
            CpaParams::default(),
            &concat(&[sig, silence(3000)]),
        ));
        assert!(matches!(r[0].as_str(), "SIL" | "NS"), "{name}: {r:?}");
    }
}

#[test]
fn short_answer_then_silence_is_a_person() {
    let audio = concat(&[silence(600), speech(700, 3000.0, 4), silence(4000)]);
    let out = run_with(CpaParams::default(), &audio);
    let d = detections(&out)[0];
    assert_eq!(d.result, "LV");
    let end = 600 + 700;
    assert!(
        d.detection_ms > end && d.detection_ms <= end + 1000,
        "{d:?}"
    );
}

#[test]
fn long_greeting_is_a_machine_and_silence_is_sil() {
    let audio = concat(&[silence(300), speech(7000, 3000.0, 5), silence(1000)]);
    assert_eq!(results(&run_with(CpaParams::default(), &audio))[0], "AM");
    let out = run_with(CpaParams::default(), &silence(4000));
    let d = detections(&out)[0];
    assert_eq!(d.result, "SIL");
    assert!(d.detection_ms.abs_diff(750 + 1750) <= 20, "{d:?}");
    // A long initial_silence_ignore delays the decision by as much.
    let p = CpaParams {
        initial_silence_ignore_ms: 3000,
        ..CpaParams::default()
    };
    assert!(
        detections(&run_with(p, &silence(6000)))[0]
            .detection_ms
            .abs_diff(3000 + 1750)
            <= 20
    );
}

#[test]
fn line_noise_after_digital_silence_is_not_speech() {
    let mut rng = Lcg(11);
    let noise: Vec<f64> = (0..8 * 6000).map(|_| 400.0 * rng.next()).collect();
    let audio = concat(&[zeros(500), noise, zeros(1000)]);
    let r = results(&run_with(CpaParams::default(), &audio));
    assert!(matches!(r[0].as_str(), "SIL" | "NS"), "{r:?}");
    // And a fax right after that noise starts is still a fax.
    let mut rng = Lcg(12);
    let fax: Vec<f64> = concat(&[zeros(500), silence(300), tones(3000, &[(2100.0, 3000.0)])])
        .into_iter()
        .map(|v| v + 300.0 * rng.next())
        .collect();
    assert_eq!(results(&run_with(CpaParams::default(), &fax))[0], "FX");
}

#[test]
fn min_ambient_energy_floors_the_noise_estimate() {
    let quiet = concat(&[silence(600), speech(700, 300.0, 6), silence(3000)]);
    assert_eq!(results(&run_with(CpaParams::default(), &quiet))[0], "LV");
    let p = CpaParams {
        min_ambient_energy: 1000,
        ..CpaParams::default()
    };
    assert_eq!(results(&run_with(p, &quiet))[0], "SIL");
}

#[test]
fn sensitivity_sets_how_clear_speech_must_be() {
    // Speech a little above a white-noise line: clear enough for 5, not for 2.
    let mut rng = Lcg(21);
    let audio: Vec<f64> = concat(&[silence(1000), speech(700, 1100.0, 8), silence(3000)])
        .into_iter()
        .map(|v| v + 200.0 * rng.next())
        .collect();
    let first = |s: u8| {
        results(&run_with(
            CpaParams {
                sensitivity: s,
                ..CpaParams::default()
            },
            &audio,
        ))[0]
            .clone()
    };
    assert_eq!(first(5), "LV");
    assert_eq!(first(2), "SIL");
}

#[test]
fn break_events_stop_cpa() {
    let audio = concat(&[silence(600), speech(700, 3000.0, 4), silence(4000)]);
    let p = CpaParams {
        break_events: vec!["LV".into()],
        ..CpaParams::default()
    };
    let mut e = Engine::new(p);
    e.handle_frame(&pcm(&audio));
    assert!(e.is_done());
    assert!(matches!(e.poll_output(), Some(Output::Detection(d)) if d.result == "LV"));
    assert_eq!(
        e.poll_output(),
        Some(Output::Done {
            result: "LV".into(),
            reason: DoneReason::BreakEvent
        })
    );
    assert_eq!(e.poll_output(), None);
    e.handle_frame(&pcm(&audio));
    e.handle_hangup();
    assert_eq!(e.poll_output(), None);
}

#[test]
fn total_timeout_and_hangup_end_cpa() {
    let out = run_with(CpaParams::default(), &silence(16000));
    assert_eq!(
        out.last(),
        Some(&Output::Done {
            result: "SIL".into(),
            reason: DoneReason::TotalTimeout
        })
    );
    let out = run_with(CpaParams::default(), &silence(1000));
    assert_eq!(
        out,
        vec![Output::Done {
            result: "NS".into(),
            reason: DoneReason::Hangup
        }]
    );
}

#[test]
fn frame_size_does_not_change_the_result() {
    let audio = pcm(&concat(&[
        silence(500),
        speech(2500, 3000.0, 1),
        silence(400),
        tones(300, &[(800.0, 4000.0)]),
        silence(2500),
    ]));
    let reference = run_with(
        CpaParams::default(),
        &audio.iter().map(|&v| v as f64).collect::<Vec<_>>(),
    );
    let mut e = Engine::new(CpaParams::default());
    let mut out = Vec::new();
    let mut rest = &audio[..];
    let mut k = 0;
    while !rest.is_empty() {
        let n = [1usize, 0, 37, 160, 333, 7][k % 6].min(rest.len());
        e.handle_frame(&rest[..n]);
        rest = &rest[n..];
        k += 1;
        while let Some(o) = e.poll_output() {
            out.push(o);
        }
    }
    e.handle_hangup();
    while let Some(o) = e.poll_output() {
        out.push(o);
    }
    assert_eq!(out, reference);
}

#[test]
fn never_panics_on_extreme_input() {
    let mut rng = Lcg(9);
    let signals: Vec<Vec<i16>> = vec![
        vec![i16::MIN; 16000],
        vec![i16::MAX; 16000],
        (0..16000)
            .map(|i| if i % 2 == 0 { i16::MIN } else { i16::MAX })
            .collect(),
        (0..16000)
            .map(|i| {
                if (i / 20) % 2 == 0 {
                    i16::MIN
                } else {
                    i16::MAX
                }
            })
            .collect(),
        (0..80000).map(|_| (rng.next() * 32767.0) as i16).collect(),
        (0..16000)
            .map(|i| if i % 4000 == 0 { i16::MIN } else { 0 })
            .collect(),
    ];
    for s in signals {
        for p in [
            CpaParams::default(),
            CpaParams {
                min_ambient_energy: u32::MAX,
                sensitivity: 0,
                log_top_freq: 255,
                total_timeout_ms: 0,
                time_limit_ms: 0,
                initial_silence_ignore_ms: u32::MAX,
                ..with_tones(&[("A", "1000 1000"), ("B", "3950 0")])
            },
        ] {
            let mut e = Engine::new(p);
            e.handle_frame(&[]);
            e.handle_frame(&s);
            e.handle_hangup();
            while let Some(o) = e.poll_output() {
                if let Output::Detection(d) = o {
                    assert!(d.top_frequencies.len() <= 5);
                    assert!(d.frequency_hz.is_none_or(f32::is_finite));
                }
            }
            assert!(e.is_done());
        }
    }
}

/// Speech with no pause of 100 ms: `speech` phrases (1.35 s each) joined end to end.
fn unbroken_speech(ms: u32, level: f64, seed: u64) -> Vec<f64> {
    let mut v = Vec::new();
    let mut k = 0;
    while v.len() < (ms as f64 * RATE / 1000.0) as usize {
        v.extend(speech(1300, level, seed + k));
        k += 1;
    }
    v.truncate((ms as f64 * RATE / 1000.0) as usize);
    v
}

#[test]
fn long_read_out_greeting_is_a_machine_but_a_long_answer_in_phrases_is_a_person() {
    // 4 s of talk, shorter than the 5 s that makes any talk a greeting: phrases with
    // pauses are a person answering at length, a long unbroken run is read out.
    let phrases = concat(&[
        silence(500),
        speech(1300, 3000.0, 11),
        silence(300),
        speech(1200, 3000.0, 12),
        silence(250),
        speech(1000, 3000.0, 13),
        silence(4000),
    ]);
    let d = detections(&run_with(CpaParams::default(), &phrases))[0].clone();
    assert_eq!(d.result, "LV", "{d:?}");
    let read = concat(&[
        silence(500),
        unbroken_speech(2400, 3000.0, 21),
        silence(300),
        speech(1300, 3000.0, 22),
        silence(4000),
    ]);
    let d = detections(&run_with(CpaParams::default(), &read))[0].clone();
    assert_eq!(d.result, "AM", "{d:?}");
    // Decided once the utterance is long enough, not after a pause.
    assert!(d.detection_ms <= 500 + 2400 + 300 + 1300 + 100, "{d:?}");
    // A short utterance with a long run is still a person ("Hello, this is ...").
    let short = concat(&[
        silence(500),
        unbroken_speech(2400, 3000.0, 31),
        silence(4000),
    ]);
    assert_eq!(
        detections(&run_with(CpaParams::default(), &short))[0].result,
        "LV"
    );
    // The most permissive sensitivity must not join the phrases into one run.
    let p = CpaParams {
        sensitivity: 5,
        ..CpaParams::default()
    };
    assert_eq!(detections(&run_with(p, &phrases))[0].result, "LV");
}
