//! Call events (api.md §4): the timestamp every event carries, the hangup's fields. The call
//! core builds the events; the shell stamps and publishes them.

use serde_json::{Map, Value};

use crate::cause::HangupCause;

/// RFC 3339 UTC with microseconds, as the original switch wrote it.
pub fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// How a call ended, for the hangup event (§4, §5).
#[derive(Debug, Clone)]
pub struct Hangup {
    pub cause: HangupCause,
    pub sip_code: Option<u16>,
    pub sip_reason: Option<String>,
    pub disposition: &'static str,
}

impl Hangup {
    pub fn fields(&self, duration_ms: u64, billsec: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("event_data".into(), Value::from(self.cause.name()));
        m.insert("hangup_cause".into(), Value::from(self.cause.name()));
        m.insert("q850_code".into(), Value::from(self.cause.q850()));
        m.insert(
            "sip_code".into(),
            self.sip_code.map(Value::from).unwrap_or(Value::Null),
        );
        m.insert(
            "sip_reason".into(),
            self.sip_reason
                .clone()
                .map(Value::from)
                .unwrap_or(Value::Null),
        );
        m.insert("disposition".into(), Value::from(self.disposition));
        m.insert("cause_class".into(), Value::from(self.cause.class()));
        m.insert("duration_ms".into(), Value::from(duration_ms));
        m.insert("billsec".into(), Value::from(billsec));
        m
    }
}

/// Builds a JSON object from pairs, for event fields.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_has_microseconds() {
        let t = timestamp();
        assert_eq!(t.len(), "2022-04-24T12:01:54.889974Z".len(), "{t}");
        assert!(t.ends_with('Z'));
    }

    #[test]
    fn hangup_fields_follow_the_tables() {
        let h = Hangup {
            cause: crate::cause::from_sip_status(486),
            sip_code: Some(486),
            sip_reason: Some("Busy Here".into()),
            disposition: "recv_refuse",
        };
        let f = h.fields(1500, 0);
        assert_eq!(f["hangup_cause"], "USER_BUSY");
        assert_eq!(f["event_data"], "USER_BUSY");
        assert_eq!(f["q850_code"], 17);
        assert_eq!(f["cause_class"], "BUSY");
    }
}
