//! Stress check beyond the corpus: each speech clip again with extra white noise or babble
//! (six other clips' talkers, looped) at a given level below its active speech, and the
//! whole corpus at every sensitivity and at the longest `time_limit`. The figure to watch
//! is people called machines, which must stay at what the plain corpus gives.
//!
//! `cargo run --release -p cpa --example robust` (`V=1` lists the wrong clips)

#[path = "../tests/support/score.rs"]
mod score;

use cpa::{Engine, Output};

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

#[derive(serde::Deserialize)]
struct Times {
    file: String,
    speech_start_s: Option<f64>,
    speech_end_s: Option<f64>,
}

struct Clip {
    label: score::Label,
    pcm: Vec<f64>,
    /// Active speech level (RMS of the louder half of the 20 ms blocks of the utterance).
    level: f64,
    /// The utterance normalised to unit level, as a babble source.
    speech: Vec<f64>,
}

fn load() -> Vec<Clip> {
    let dir = score::corpus_dir();
    let labels = score::load_labels(&dir).expect("corpus");
    let times: Vec<Times> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("labels.json")).unwrap()).unwrap();
    labels
        .into_iter()
        .zip(times)
        .map(|(label, t)| {
            assert_eq!(label.file, t.file);
            let bytes = std::fs::read(dir.join(&label.file)).unwrap();
            let (_, pcm) = cpa::wav::read_wav_mono16(&bytes).unwrap();
            let pcm: Vec<f64> = pcm.iter().map(|&x| x as f64).collect();
            let (level, speech) = match (t.speech_start_s, t.speech_end_s) {
                (Some(a), Some(b)) => {
                    let s = &pcm[(a * 8000.0) as usize..((b * 8000.0) as usize).min(pcm.len())];
                    let mut p: Vec<f64> = s
                        .chunks(160)
                        .map(|c| c.iter().map(|x| x * x).sum::<f64>() / c.len() as f64)
                        .collect();
                    p.sort_by(f64::total_cmp);
                    let top = &p[p.len() / 2..];
                    let level = (top.iter().sum::<f64>() / top.len() as f64).sqrt();
                    (level, s.iter().map(|x| x / level.max(1.0)).collect())
                }
                _ => (0.0, Vec::new()),
            };
            Clip {
                label,
                pcm,
                level,
                speech,
            }
        })
        .collect()
}

fn main() {
    let clips = load();
    let verbose = std::env::var("V").is_ok();
    let pool: Vec<&Vec<f64>> = clips
        .iter()
        .filter(|c| !c.speech.is_empty())
        .map(|c| &c.speech)
        .collect();
    // The corpus "6 dB" clips sit about 11-19 dB below active speech by this measure.
    for (kind, snr) in [
        ("white", 24.0),
        ("white", 18.0),
        ("babble", 24.0),
        ("babble", 18.0),
        ("babble", 14.0),
    ] {
        let mut results = Vec::new();
        let mut rng = Lcg(7);
        for (ci, c) in clips.iter().enumerate() {
            if c.level == 0.0 {
                continue;
            }
            let nrms = c.level / 10f64.powf(snr / 20.0);
            let noise: Vec<f64> = if kind == "white" {
                (0..c.pcm.len())
                    .map(|_| rng.next() * 3f64.sqrt() * nrms)
                    .collect()
            } else {
                let mut v = vec![0.0; c.pcm.len()];
                for k in 0..6 {
                    let src = pool[(ci * 7 + k * 13 + 3) % pool.len()];
                    let off = ((rng.next() + 1.0) * 4000.0) as usize;
                    for (i, x) in v.iter_mut().enumerate() {
                        *x += src[(i + off) % src.len()];
                    }
                }
                let r = (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
                v.iter().map(|x| x / r * nrms).collect()
            };
            let mixed: Vec<i16> = c
                .pcm
                .iter()
                .zip(&noise)
                .map(|(a, b)| (a + b).clamp(-32768.0, 32767.0) as i16)
                .collect();
            let r = score::run_samples(&c.label, &mixed);
            let got = r.decision.as_ref().map(|d| d.0.as_str()).unwrap_or("-");
            if verbose && got != c.label.label {
                println!(
                    "  {kind} {snr} dB: {} {} -> {got}",
                    c.label.file, c.label.label
                );
            }
            results.push(r);
        }
        let sc = score::score(&results);
        println!(
            "{kind} {snr} dB below speech: {:.1} % ({}/{}), people called machines {}/{}, LV p95 {:.0} ms, people undecided {}",
            100.0 * sc.accuracy(),
            sc.correct,
            sc.n,
            sc.people_as_machine,
            sc.people,
            sc.lv_latency_pct(95.0),
            sc.lv_latency_ms.iter().filter(|x| x.is_none()).count()
        );
    }
    for sensitivity in 2..=5u8 {
        for time_limit_ms in [1750u32, 2250] {
            let (mut ok, mut people_am) = (0, 0);
            for c in &clips {
                let params = cpa::CpaParams {
                    sensitivity,
                    time_limit_ms,
                    ..score::scoring_params()
                };
                let mut e = Engine::new(params);
                let mut decision = None;
                let pcm: Vec<i16> = c.pcm.iter().map(|&x| x as i16).collect();
                for f in pcm.chunks(160) {
                    e.handle_frame(f);
                    while let Some(o) = e.poll_output() {
                        if let Output::Detection(d) = o {
                            if decision.is_none() && score::CLASSES.contains(&d.result.as_str()) {
                                decision = Some(d.result);
                            }
                        }
                    }
                }
                let got = decision.as_deref().unwrap_or("-");
                ok += (got == c.label.label) as usize;
                people_am += (c.label.label == "LV" && matches!(got, "AM" | "FX")) as usize;
                if verbose && got != c.label.label {
                    println!(
                        "  sensitivity {sensitivity}, time_limit {time_limit_ms}: {} {} -> {got}",
                        c.label.file, c.label.label
                    );
                }
            }
            println!(
                "sensitivity {sensitivity}, time_limit {time_limit_ms}: {ok}/{}, people called machines {people_am}",
                clips.len()
            );
        }
    }
}
