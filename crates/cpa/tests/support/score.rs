//! Corpus scoring shared by `tests/corpus.rs` and `examples/score.rs` (included by path),
//! following the scoring rules of the corpus README.

#![allow(dead_code)] // each includer reads a different part

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cpa::{CpaParams, Engine, Output, ToneSpec};

pub const CLASSES: [&str; 5] = ["LV", "AM", "FX", "SIL", "NS"];

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/cpa-corpus")
}

pub fn scoring_params() -> CpaParams {
    CpaParams {
        tones: vec![
            ToneSpec::parse("FX", "2100 20").unwrap(),
            ToneSpec::parse("CNG", "1100 38").unwrap(),
            ToneSpec::parse("BP", "1000 10").unwrap(),
        ],
        ..CpaParams::default()
    }
}

#[derive(serde::Deserialize, Clone)]
pub struct Label {
    pub file: String,
    pub label: String,
    pub speech_end_s: Option<f64>,
    pub beep_hz: Option<f64>,
    pub beep_onset_s: Option<f64>,
    pub tone: Option<String>,
}

pub struct ClipResult {
    pub label: Label,
    pub decision: Option<(String, u64)>,
    pub beep: Option<(u64, f32)>,
    /// Tone or BEEP results that are not a fax tone.
    pub tone_results: Vec<String>,
    pub all: Vec<String>,
    pub segments: Vec<(u64, u64)>,
    pub audio_s: f64,
    pub cpu: Duration,
}

pub fn run_clip(dir: &Path, label: &Label) -> Result<ClipResult, String> {
    run_clip_variant(dir, label, 1.0, 0)
}

/// Runs a clip scaled by `gain` and after `lead_ms` of digital silence (as when media
/// starts before the far end sends sound), with the label times moved to match.
pub fn run_clip_variant(
    dir: &Path,
    label: &Label,
    gain: f32,
    lead_ms: u32,
) -> Result<ClipResult, String> {
    let bytes = std::fs::read(dir.join(&label.file)).map_err(|e| format!("{}: {e}", label.file))?;
    let (rate, pcm) = cpa::wav::read_wav_mono16(&bytes)?;
    if rate != 8000 {
        return Err(format!("{}: {rate} Hz", label.file));
    }
    let mut label = label.clone();
    let shift = lead_ms as f64 / 1000.0;
    label.speech_end_s = label.speech_end_s.map(|s| s + shift);
    label.beep_onset_s = label.beep_onset_s.map(|s| s + shift);
    let label = &label;
    let pcm: Vec<i16> = std::iter::repeat_n(0, lead_ms as usize * 8)
        .chain(
            pcm.iter()
                .map(|&v| (v as f32 * gain).clamp(-32768.0, 32767.0) as i16),
        )
        .collect();
    Ok(run_samples(label, &pcm))
}

/// Runs audio already prepared (a variant of a clip) against its label.
pub fn run_samples(label: &Label, pcm: &[i16]) -> ClipResult {
    let start = Instant::now();
    let mut engine = Engine::new(scoring_params());
    let mut outs = Vec::new();
    for frame in pcm.chunks(160) {
        engine.handle_frame(frame);
        while let Some(o) = engine.poll_output() {
            outs.push(o);
        }
    }
    engine.handle_hangup();
    while let Some(o) = engine.poll_output() {
        outs.push(o);
    }
    let cpu = start.elapsed();
    let mut decision = None;
    let mut beep = None;
    let mut tone_results = Vec::new();
    let mut all = Vec::new();
    for o in &outs {
        if let Output::Detection(d) = o {
            all.push(format!(
                "{}@{}{}{}",
                d.result,
                d.detection_ms,
                d.onset_ms.map(|o| format!("(on {o})")).unwrap_or_default(),
                d.frequency_hz
                    .map(|f| format!("({f} Hz)"))
                    .unwrap_or_default()
            ));
            if decision.is_none() && CLASSES.contains(&d.result.as_str()) {
                decision = Some((d.result.clone(), d.detection_ms));
            }
            if d.result == "BEEP" && beep.is_none() {
                beep = Some((d.onset_ms.unwrap_or(0), d.frequency_hz.unwrap_or(0.0)));
            }
            if !CLASSES.contains(&d.result.as_str()) && d.result != "CNG" {
                tone_results.push(d.result.clone());
            }
        }
    }
    ClipResult {
        label: label.clone(),
        decision,
        beep,
        tone_results,
        all,
        segments: engine.debug_segments().to_vec(),
        audio_s: pcm.len() as f64 / 8000.0,
        cpu,
    }
}

pub struct Score {
    pub n: usize,
    pub correct: usize,
    /// rows: true class, columns: decided class, last column "none".
    pub matrix: Vec<Vec<usize>>,
    pub people: usize,
    pub people_as_machine: usize,
    pub lv_latency_ms: Vec<Option<f64>>,
    pub beeps: usize,
    pub beep_hits: usize,
    pub beep_onset_err_ms: Vec<f64>,
    pub false_tone_clips: usize,
    pub no_tone_clips: usize,
    pub cpu_ratio: f64,
}

impl Score {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.n.max(1) as f64
    }
    pub fn human_to_machine(&self) -> f64 {
        self.people_as_machine as f64 / self.people.max(1) as f64
    }
    pub fn beep_hit_rate(&self) -> f64 {
        self.beep_hits as f64 / self.beeps.max(1) as f64
    }
    /// Percentile of LV latency; undecided people count as infinitely late.
    pub fn lv_latency_pct(&self, pct: f64) -> f64 {
        let mut v: Vec<f64> = self
            .lv_latency_ms
            .iter()
            .map(|x| x.unwrap_or(f64::INFINITY))
            .collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return 0.0;
        }
        let i = ((pct / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }
    pub fn beep_onset_err_pct(&self, pct: f64) -> f64 {
        let mut v = self.beep_onset_err_ms.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return 0.0;
        }
        v[(((pct / 100.0) * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("# CPA corpus score\n\n");
        s.push_str("Default parameters, tones `{\"FX\":\"2100 20\",\"CNG\":\"1100 38\",\"BP\":\"1000 10\"}`.\n\n");
        s.push_str(&format!(
            "- clips: {}\n- first-decision accuracy: {:.1} % ({}/{})\n",
            self.n,
            100.0 * self.accuracy(),
            self.correct,
            self.n
        ));
        s.push_str(&format!(
            "- people called machines or fax: {:.1} % ({}/{})\n",
            100.0 * self.human_to_machine(),
            self.people_as_machine,
            self.people
        ));
        s.push_str(&format!(
            "- LV decision after speech end: p50 {:.0} ms, p95 {:.0} ms, undecided {}\n",
            self.lv_latency_pct(50.0),
            self.lv_latency_pct(95.0),
            self.lv_latency_ms.iter().filter(|x| x.is_none()).count()
        ));
        s.push_str(&format!(
            "- beeps found: {:.1} % ({}/{}), onset error p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms\n",
            100.0 * self.beep_hit_rate(),
            self.beep_hits,
            self.beeps,
            self.beep_onset_err_pct(50.0),
            self.beep_onset_err_pct(95.0),
            self.beep_onset_err_pct(100.0)
        ));
        s.push_str(&format!(
            "- clips without tone or beep that got one: {}/{}\n",
            self.false_tone_clips, self.no_tone_clips
        ));
        s.push_str(&format!(
            "- CPU: {:.5} of real time ({:.3} % of a core per call)\n\n",
            self.cpu_ratio,
            100.0 * self.cpu_ratio
        ));
        s.push_str(
            "| true \\ decided | LV | AM | FX | SIL | NS | none |\n|---|---|---|---|---|---|---|\n",
        );
        for (i, c) in CLASSES.iter().enumerate() {
            if self.matrix[i].iter().sum::<usize>() == 0 {
                continue;
            }
            s.push_str(&format!("| {c} |"));
            for v in &self.matrix[i] {
                s.push_str(&format!(" {v} |"));
            }
            s.push('\n');
        }
        s
    }
}

pub fn load_labels(dir: &Path) -> Result<Vec<Label>, String> {
    let text = std::fs::read_to_string(dir.join("labels.json")).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

pub fn score(results: &[ClipResult]) -> Score {
    let mut sc = Score {
        n: results.len(),
        correct: 0,
        matrix: vec![vec![0; CLASSES.len() + 1]; CLASSES.len()],
        people: 0,
        people_as_machine: 0,
        lv_latency_ms: Vec::new(),
        beeps: 0,
        beep_hits: 0,
        beep_onset_err_ms: Vec::new(),
        false_tone_clips: 0,
        no_tone_clips: 0,
        cpu_ratio: 0.0,
    };
    let (mut cpu, mut audio) = (0.0, 0.0);
    for r in results {
        let truth = CLASSES
            .iter()
            .position(|c| *c == r.label.label)
            .unwrap_or(4);
        let got = r.decision.as_ref().map(|d| d.0.as_str());
        let col = got
            .and_then(|g| CLASSES.iter().position(|c| *c == g))
            .unwrap_or(CLASSES.len());
        sc.matrix[truth][col] += 1;
        if got == Some(r.label.label.as_str()) {
            sc.correct += 1;
        }
        if r.label.label == "LV" {
            sc.people += 1;
            if matches!(got, Some("AM") | Some("FX")) {
                sc.people_as_machine += 1;
            }
            let lat = match (&r.decision, r.label.speech_end_s) {
                (Some((d, ms)), Some(end)) if d == "LV" => Some(*ms as f64 - end * 1000.0),
                _ => None,
            };
            sc.lv_latency_ms.push(lat);
        }
        if let Some(onset) = r.label.beep_onset_s {
            sc.beeps += 1;
            if let Some((on, _)) = r.beep {
                let err = (on as f64 - onset * 1000.0).abs();
                sc.beep_onset_err_ms.push(err);
                if err <= 250.0 {
                    sc.beep_hits += 1;
                }
            }
        } else if r.label.tone.is_none() {
            sc.no_tone_clips += 1;
            if !r.tone_results.is_empty() {
                sc.false_tone_clips += 1;
            }
        }
        cpu += r.cpu.as_secs_f64();
        audio += r.audio_s;
    }
    sc.cpu_ratio = cpu / audio.max(1e-9);
    sc
}
