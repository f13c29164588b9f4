//! Live call progress analysis (api.md §3.1, §4): from answer, the caller's audio (tapped from
//! the media leg) runs through the CPA engine; detections and the final result are published to
//! the configuration's event subject, or the call's.

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::events::fields;
use crate::request::SetCpaParams;

/// The engine's parameters from a stored configuration.
pub fn engine_params(p: &SetCpaParams) -> cpa::CpaParams {
    cpa::CpaParams {
        min_ambient_energy: p.min_ambient_energy,
        initial_silence_ignore_ms: p.initial_silence_ignore,
        time_limit_ms: p.time_limit,
        sensitivity: p.sensitivity.min(u8::MAX as u32) as u8,
        tones: p
            .tones
            .iter()
            .map(|(label, freq_hz, tol_hz)| cpa::ToneSpec {
                label: label.clone(),
                freq_hz: *freq_hz,
                tol_hz: *tol_hz,
            })
            .collect(),
        log_top_freq: p.log_top_freq.min(5) as u8,
        break_events: p.break_events.clone(),
        total_timeout_ms: p.total_timeout,
        detect_beep: p.detect_beep,
    }
}

/// The cpa_detection / cpa_done fields of §4 (the offline analyser prints the same).
pub fn output_fields(o: cpa::Output) -> (&'static str, Map<String, Value>) {
    match o {
        cpa::Output::Detection(d) => {
            let mut m = fields([
                ("result", Value::from(d.result)),
                ("detection_ms", Value::from(d.detection_ms)),
                ("top_frequencies", Value::from(d.top_frequencies)),
            ]);
            if let Some(on) = d.onset_ms {
                m.insert("onset_ms".into(), Value::from(on));
            }
            if let Some(f) = d.frequency_hz {
                m.insert("frequency_hz".into(), Value::from(f));
            }
            ("cpa_detection", m)
        }
        cpa::Output::Done { result, reason } => (
            "cpa_done",
            fields([
                ("result", Value::from(result)),
                ("reason", Value::from(reason.as_str())),
            ]),
        ),
    }
}

/// A mono 8 kHz WAV of what was analysed (`log_voice`), readable by `botstream analyze`.
struct VoiceLog {
    file: std::io::BufWriter<std::fs::File>,
    samples: u32,
}

impl VoiceLog {
    fn create(path: &PathBuf) -> std::io::Result<VoiceLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        file.write_all(&cpa::wav::pcm16_header(1, 0))?;
        Ok(VoiceLog { file, samples: 0 })
    }
    fn write(&mut self, pcm: &[i16]) -> std::io::Result<()> {
        for s in pcm {
            self.file.write_all(&s.to_le_bytes())?;
        }
        self.samples = self.samples.saturating_add(pcm.len() as u32);
        Ok(())
    }
    fn finish(mut self) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.file
            .write_all(&cpa::wav::pcm16_header(1, self.samples.saturating_mul(2)))?;
        self.file.flush()
    }
}

/// Runs until the engine is done or the call ends (the tap closes), handing every result to
/// `emit` (the call core publishes them), `cpa_done` last. The engine is pure and cheap (well
/// under 1 % of a core per call), so it runs on this task.
pub async fn run(
    config: SetCpaParams,
    mut audio: mpsc::Receiver<Vec<i16>>,
    log_path: Option<PathBuf>,
    mut emit: impl FnMut(cpa::Output),
) {
    let mut engine = cpa::Engine::new(engine_params(&config));
    let mut log = log_path.as_ref().and_then(|p| match VoiceLog::create(p) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "CPA voice log not written");
            None
        }
    });
    loop {
        let frame = audio.recv().await;
        match &frame {
            Some(pcm) => {
                engine.handle_frame(pcm);
                if let Some(l) = log.as_mut() {
                    if l.write(pcm).is_err() {
                        log = None;
                    }
                }
            }
            None => engine.handle_hangup(),
        }
        while let Some(o) = engine.poll_output() {
            emit(o);
        }
        if engine.is_done() || frame.is_none() {
            break;
        }
    }
    if let Some(l) = log {
        let _ = l.finish();
    }
}

/// In-band DTMF (calls whose far end offered no telephone-event): the Q.24 detector over the
/// caller's audio, each key press handed to `emit` (reported with source `inband`).
pub async fn inband_dtmf(mut audio: mpsc::Receiver<Vec<i16>>, mut emit: impl FnMut(char)) {
    let mut detector = cpa::dtmf::DtmfDetector::new();
    while let Some(pcm) = audio.recv().await {
        detector.handle_frame(&pcm);
        while let Some((digit, _)) = detector.poll_digit() {
            emit(digit);
        }
    }
}
