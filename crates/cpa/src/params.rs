//! CPA configuration as stored by `request_set_cpa_params` (api.md §3.1).

use serde::{Deserialize, Deserializer};

/// The knobs of one CPA run; field meanings and defaults follow api.md §3.1.
///
/// Deserialises from the request's own JSON shape (`initial_silence_ignore`, `time_limit`,
/// `total_timeout` in ms, `tones` as an object, `break_events` as a comma list), with
/// defaults for missing fields; call [`CpaParams::validate`] for the §3.1 ranges.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CpaParams {
    /// Lowest noise floor, as an RMS sample amplitude: quieter sound is never voice.
    pub min_ambient_energy: u32,
    /// No AMD decision before this (ms from answer), and tones starting in it (the ringback
    /// heard at answer) do not make an `NS`. Voice in it still counts, since people
    /// often speak at once.
    #[serde(rename = "initial_silence_ignore")]
    pub initial_silence_ignore_ms: u32,
    /// AMD decision window: with no speech by `initial_silence_ignore + time_limit` the
    /// result is `SIL` (or `NS` if tones filled the line); speech running on past
    /// `2 × time_limit + 1500` ms without a turn-taking pause is `AM`.
    #[serde(rename = "time_limit")]
    pub time_limit_ms: u32,
    /// Voice detection threshold, 2 (needs clear speech) to 5 (takes quiet speech).
    pub sensitivity: u8,
    #[serde(deserialize_with = "tones_from_map")]
    pub tones: Vec<ToneSpec>,
    /// How many of the strongest frequencies each detection reports (0-5).
    pub log_top_freq: u8,
    /// Results that end CPA with `Done { BreakEvent }` once reported.
    #[serde(deserialize_with = "comma_list")]
    pub break_events: Vec<String>,
    /// Whole CPA duration (ms from answer).
    #[serde(rename = "total_timeout")]
    pub total_timeout_ms: u32,
    /// Report `BEEP` for the voicemail beep.
    pub detect_beep: bool,
}

impl Default for CpaParams {
    fn default() -> Self {
        CpaParams {
            min_ambient_energy: 1,
            initial_silence_ignore_ms: 750,
            time_limit_ms: 1750,
            sensitivity: 4,
            tones: Vec::new(),
            log_top_freq: 3,
            break_events: Vec::new(),
            total_timeout_ms: 15000,
            detect_beep: true,
        }
    }
}

impl CpaParams {
    /// Checks the ranges of api.md §3.1; the engine itself clamps, so this is for
    /// rejecting a request, not for safety.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_ambient_energy < 1 {
            return Err("min_ambient_energy must be >= 1".into());
        }
        if self.initial_silence_ignore_ms > 5000 {
            return Err("initial_silence_ignore must be 0-5000 ms".into());
        }
        if !(1750..=2250).contains(&self.time_limit_ms) {
            return Err("time_limit must be 1750-2250 ms".into());
        }
        if !(2..=5).contains(&self.sensitivity) {
            return Err("sensitivity must be 2-5".into());
        }
        if self.log_top_freq > 5 {
            return Err("log_top_freq must be 0-5".into());
        }
        if self.total_timeout_ms < 10000 {
            return Err("total_timeout must be >= 10000 ms".into());
        }
        Ok(())
    }
}

/// One configured tone: `label` is reported for a pure tone within `freq_hz ± tol_hz`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToneSpec {
    pub label: String,
    pub freq_hz: f32,
    pub tol_hz: f32,
}

impl ToneSpec {
    /// Parses the api.md form `"FREQ_HZ TOLERANCE_HZ"`, e.g. `"2100 20"`.
    pub fn parse(label: &str, spec: &str) -> Result<ToneSpec, String> {
        let mut it = spec.split_whitespace();
        let (Some(f), Some(t), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!(
                "tone {label}: expected \"FREQ_HZ TOLERANCE_HZ\", got {spec:?}"
            ));
        };
        let freq_hz: f32 = f
            .parse()
            .map_err(|_| format!("tone {label}: bad frequency {f:?}"))?;
        let tol_hz: f32 = t
            .parse()
            .map_err(|_| format!("tone {label}: bad tolerance {t:?}"))?;
        if label.is_empty() {
            return Err("tone label must not be empty".into());
        }
        if !(freq_hz.is_finite() && (50.0..=3950.0).contains(&freq_hz)) {
            return Err(format!(
                "tone {label}: frequency {freq_hz} Hz outside 50-3950 Hz"
            ));
        }
        if !(tol_hz.is_finite() && (0.0..=1000.0).contains(&tol_hz)) {
            return Err(format!(
                "tone {label}: tolerance {tol_hz} Hz outside 0-1000 Hz"
            ));
        }
        Ok(ToneSpec {
            label: label.to_string(),
            freq_hz,
            tol_hz,
        })
    }
}

fn tones_from_map<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ToneSpec>, D::Error> {
    let map = Option::<std::collections::BTreeMap<String, String>>::deserialize(d)?;
    map.unwrap_or_default()
        .iter()
        .map(|(label, spec)| ToneSpec::parse(label, spec).map_err(serde::de::Error::custom))
        .collect()
}

fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.unwrap_or_default()
        .split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tone_specs() {
        let t = ToneSpec::parse("FX", "2100 20").unwrap();
        assert_eq!(
            (t.label.as_str(), t.freq_hz, t.tol_hz),
            ("FX", 2100.0, 20.0)
        );
        assert!(ToneSpec::parse("X", "2100").is_err());
        assert!(ToneSpec::parse("X", "2100 20 5").is_err());
        assert!(ToneSpec::parse("X", "abc 20").is_err());
        assert!(ToneSpec::parse("X", "NaN 20").is_err());
        assert!(ToneSpec::parse("", "1000 10").is_err());
    }

    #[test]
    fn deserialises_the_request_shape_with_defaults() {
        let p: CpaParams = serde_json::from_str(
            r#"{"time_limit":2000,"tones":{"FX":"2100 20","BP":"1000 10"},"break_events":"AM, LV"}"#,
        )
        .unwrap();
        assert_eq!(p.time_limit_ms, 2000);
        assert_eq!(p.initial_silence_ignore_ms, 750);
        assert_eq!(p.tones.len(), 2);
        assert_eq!(p.break_events, vec!["AM", "LV"]);
        assert!(p.validate().is_ok());
        assert_eq!(
            serde_json::from_str::<CpaParams>("{}").unwrap(),
            CpaParams::default()
        );
        assert!(serde_json::from_str::<CpaParams>(r#"{"tones":{"X":"1"}}"#).is_err());
        let bad = CpaParams {
            sensitivity: 9,
            ..CpaParams::default()
        };
        assert!(bad.validate().is_err());
    }
}
