//! `botstream analyze --cpa '<json>' FILE.wav` (operator.md "Offline analysis"): the live
//! switch's CPA engine over a recording, printing each event envelope as the switch would
//! publish it. This is how AMD is tuned and scored on recorded calls.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

/// Runs the analysis; `Err` is a message for a bad input (exit 2).
pub fn run(cpa_json: &str, file: &Path, out: &mut impl Write) -> Result<(), String> {
    let fields: Value =
        serde_json::from_str(cpa_json).map_err(|e| format!("--cpa is not JSON: {e}"))?;
    if !fields.is_object() {
        return Err("--cpa must be a JSON object of request_set_cpa_params fields".into());
    }
    let params: cpa::CpaParams =
        serde_json::from_value(fields.clone()).map_err(|e| format!("--cpa: {e}"))?;
    params.validate().map_err(|e| format!("--cpa: {e}"))?;
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (rate, samples) =
        cpa::wav::read_wav_mono16(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    if rate != 8000 {
        return Err(format!(
            "{}: {rate} Hz; analysis needs 8 kHz mono 16-bit",
            file.display()
        ));
    }
    let tenant = fields
        .get("tenant_id")
        .and_then(Value::as_str)
        .unwrap_or("offline")
        .to_string();
    let mut engine = cpa::Engine::new(params);
    let mut emit = |o: cpa::Output| -> Result<(), String> {
        let (name, data) = api::cpa_run::output_fields(o);
        let mut d = data;
        d.insert(
            "call_uuid".into(),
            json!("00000000-0000-0000-0000-000000000000"),
        );
        d.insert("tenant_id".into(), json!(tenant));
        d.insert("timestamp".into(), json!(api::events::timestamp()));
        let line = json!({"event_name": format!("botstream::{name}"), "event_data": d});
        match writeln!(out, "{line}") {
            // A reader that stopped early (`| head`) is not bad input.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r.map_err(|e| format!("writing output: {e}")),
        }
    };
    for frame in samples.chunks(160) {
        engine.handle_frame(frame);
        while let Some(o) = engine.poll_output() {
            emit(o)?;
        }
        if engine.is_done() {
            return Ok(());
        }
    }
    // The recording ended before CPA did: as the switch does when the call hangs up.
    engine.handle_hangup();
    while let Some(o) = engine.poll_output() {
        emit(o)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(samples: &[i16]) -> Vec<u8> {
        let mut v = cpa::wav::pcm16_header(1, (samples.len() * 2) as u32).to_vec();
        for s in samples {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }

    #[test]
    fn silence_is_sil_then_done() {
        let dir = std::env::temp_dir().join(format!("bs-analyze-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("sil.wav");
        std::fs::write(&f, wav(&vec![0i16; 8000 * 4])).unwrap();
        let mut out = Vec::new();
        run(r#"{"total_timeout": 10000}"#, &f, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["event_name"], "botstream::cpa_detection");
        assert_eq!(lines[0]["event_data"]["result"], "SIL");
        let last = lines.last().unwrap();
        assert_eq!(last["event_name"], "botstream::cpa_done");
        assert_eq!(last["event_data"]["reason"], "hangup");
    }

    #[test]
    fn bad_input_is_refused_with_a_message() {
        let f = std::env::temp_dir().join("bs-analyze-missing.wav");
        let mut out = Vec::new();
        assert!(run("{", &f, &mut out).unwrap_err().contains("JSON"));
        assert!(run(r#"{"sensitivity": 9}"#, &f, &mut out)
            .unwrap_err()
            .contains("sensitivity"));
        assert!(run("{}", &f, &mut out).is_err());
    }
}
