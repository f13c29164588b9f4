//! Status codes of the control API (api.md §6) and the reply envelope (api.md §2).

use serde_json::{Map, Value};
use std::fmt;

/// The numeric values are the wire contract with existing voice-AI apps: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum StatusCode {
    Ok = 0,
    UnknownCpaConfig = 100,
    CpaInitFailed = 101,
    StreamInitFailed = 102,
    NoSuchCall = 107,
    CallEnded = 108,
    QuotaExpired = 110,
    TenantUnknown = 111,
    QuotaExhausted = 112,
    QuotaOther = 113,
    DialFailed = 114,
    Throttled = 115,
    StopPlayFailed = 127,
    InvalidRequest = 128,
    CpaStoreFailed = 129,
    MissingField = 130,
    CannotAddCall = 131,
    MalformedJson = 134,
    SchemaViolation = 135,
    UnknownRequest = 139,
    ChannelVarsFailed = 140,
    InvalidGatewayConfig = 141,
    DeleteGatewayFailed = 142,
    GetGatewayFailed = 143,
    AlreadyStreaming = 144,
}

impl StatusCode {
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// An error reply: `status` is shown to the app's developer, so it must name the offending field
/// or object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: StatusCode,
    pub status: String,
}

impl ApiError {
    pub fn new(code: StatusCode, status: impl Into<String>) -> Self {
        ApiError {
            code,
            status: status.into(),
        }
    }

    /// 130 with the wording the original used, e.g. `"to_number is required"`.
    pub fn missing(field: &str) -> Self {
        Self::new(StatusCode::MissingField, format!("{field} is required"))
    }

    /// 135.
    pub fn schema(status: impl Into<String>) -> Self {
        Self::new(StatusCode::SchemaViolation, status)
    }

    /// 128.
    pub fn invalid(status: impl Into<String>) -> Self {
        Self::new(StatusCode::InvalidRequest, status)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.status, self.code.code())
    }
}

impl std::error::Error for ApiError {}

/// Builds the reply to one request. The three envelope fields are written last so that an extra
/// field of the same name can never hide the real outcome from the app.
pub fn reply_json(request_name: &str, result: Result<Map<String, Value>, ApiError>) -> Value {
    let (mut reply, status, code) = match result {
        Ok(extra) => (extra, "OK".to_string(), StatusCode::Ok),
        Err(e) => (Map::new(), e.status, e.code),
    };
    reply.insert("request_name".into(), Value::from(request_name));
    reply.insert("status".into(), Value::from(status));
    reply.insert("status_code".into(), Value::from(code.code()));
    Value::Object(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_match_the_contract() {
        let all = [
            (StatusCode::Ok, 0),
            (StatusCode::UnknownCpaConfig, 100),
            (StatusCode::CpaInitFailed, 101),
            (StatusCode::StreamInitFailed, 102),
            (StatusCode::NoSuchCall, 107),
            (StatusCode::CallEnded, 108),
            (StatusCode::QuotaExpired, 110),
            (StatusCode::TenantUnknown, 111),
            (StatusCode::QuotaExhausted, 112),
            (StatusCode::QuotaOther, 113),
            (StatusCode::DialFailed, 114),
            (StatusCode::Throttled, 115),
            (StatusCode::StopPlayFailed, 127),
            (StatusCode::InvalidRequest, 128),
            (StatusCode::CpaStoreFailed, 129),
            (StatusCode::MissingField, 130),
            (StatusCode::CannotAddCall, 131),
            (StatusCode::MalformedJson, 134),
            (StatusCode::SchemaViolation, 135),
            (StatusCode::UnknownRequest, 139),
            (StatusCode::ChannelVarsFailed, 140),
            (StatusCode::InvalidGatewayConfig, 141),
            (StatusCode::DeleteGatewayFailed, 142),
            (StatusCode::GetGatewayFailed, 143),
            (StatusCode::AlreadyStreaming, 144),
        ];
        for (c, n) in all {
            assert_eq!(c.code(), n, "{c:?}");
        }
    }

    #[test]
    fn ok_reply_has_envelope_and_extras() {
        let mut extra = Map::new();
        extra.insert(
            "call_uuid".into(),
            json!("71fe427d-b3ef-4b0e-8ec5-2270f0dfe41c"),
        );
        extra.insert("status_code".into(), json!(999));
        let v = reply_json("request_make_call", Ok(extra));
        assert_eq!(
            v,
            json!({
                "request_name": "request_make_call",
                "status": "OK",
                "status_code": 0,
                "call_uuid": "71fe427d-b3ef-4b0e-8ec5-2270f0dfe41c"
            })
        );
    }

    #[test]
    fn error_reply_carries_code_and_message() {
        let v = reply_json("unknown", Err(ApiError::missing("to_number")));
        assert_eq!(
            v,
            json!({"request_name": "unknown", "status": "to_number is required", "status_code": 130})
        );
    }
}
