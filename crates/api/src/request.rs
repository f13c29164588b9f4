//! Parsing and validation of API requests (api.md §2, §3).
//!
//! Everything an app can get wrong is caught here, with the status code the contract gives it, so
//! that the handlers only ever see well-typed requests with their defaults applied.

use crate::cause::HangupCause;
use crate::error::{ApiError, StatusCode};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One validated request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    SetCpaParams(SetCpaParams),
    MakeCall(MakeCall),
    DropCall(DropCall),
    SetChannelVars(SetChannelVars),
    StartStream(StartStream),
    StopStream(StopStream),
    StopPlay(StopPlay),
    BridgeCall(BridgeCall),
    TransferCall(TransferCall),
    SnoopOnCall(SnoopOnCall),
    AddSipGateway(AddSipGateway),
    GetSipGateway(GetSipGateway),
    DeleteSipGateway(DeleteSipGateway),
    AddLogicalGateway(AddLogicalGateway),
    GetLogicalGateway(GetLogicalGateway),
    DeleteLogicalGateway(DeleteLogicalGateway),
    SendDtmf(SendDtmf),
    StartRecord(StartRecord),
    StopRecord(StopRecord),
    GetCall(GetCall),
    ListCalls(ListCalls),
}

impl Request {
    /// The `event_name` of this request, echoed as the reply's `request_name`.
    pub fn name(&self) -> &'static str {
        match self {
            Request::SetCpaParams(_) => "request_set_cpa_params",
            Request::MakeCall(_) => "request_make_call",
            Request::DropCall(_) => "request_drop_call",
            Request::SetChannelVars(_) => "request_set_channel_vars",
            Request::StartStream(_) => "request_start_stream",
            Request::StopStream(_) => "request_stop_stream",
            Request::StopPlay(_) => "request_stop_play",
            Request::BridgeCall(_) => "request_bridge_call",
            Request::TransferCall(_) => "request_transfer_call",
            Request::SnoopOnCall(_) => "request_snoop_on_call",
            Request::AddSipGateway(_) => "request_add_sip_gateway",
            Request::GetSipGateway(_) => "request_get_sip_gateway",
            Request::DeleteSipGateway(_) => "request_delete_sip_gateway",
            Request::AddLogicalGateway(_) => "request_add_logical_gateway",
            Request::GetLogicalGateway(_) => "request_get_logical_gateway",
            Request::DeleteLogicalGateway(_) => "request_delete_logical_gateway",
            Request::SendDtmf(_) => "request_send_dtmf",
            Request::StartRecord(_) => "request_start_record",
            Request::StopRecord(_) => "request_stop_record",
            Request::GetCall(_) => "request_get_call",
            Request::ListCalls(_) => "request_list_calls",
        }
    }
}

/// §3.1
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SetCpaParams {
    pub va_config_name: String,
    pub tenant_id: String,
    /// Always `"amd"`: the only analysis the contract knows.
    pub analysis: String,
    pub min_ambient_energy: u32,
    pub initial_silence_ignore: u32,
    pub time_limit: u32,
    pub sensitivity: u32,
    /// `(label, frequency_hz, tolerance_hz)` per entry of `tones`, sorted by label.
    pub tones: Vec<(String, f32, f32)>,
    pub log_top_freq: u32,
    pub log_voice: bool,
    /// Empty when absent.
    pub break_events: Vec<String>,
    pub total_timeout: u32,
    pub event_subject: Option<String>,
    pub detect_beep: bool,
}

/// §3.2
#[derive(Debug, Clone, PartialEq)]
pub struct MakeCall {
    pub gateway: String,
    pub tenant_id: String,
    pub to_number: String,
    pub from_number: String,
    pub event_subject: String,
    pub cpa_config: Option<String>,
    pub dial_timeout: u32,
    pub call_params: Option<Map<String, Value>>,
    pub channel_vars: BTreeMap<String, String>,
    pub max_call_secs: Option<u32>,
    pub record: bool,
}

/// §3.3
#[derive(Debug, Clone, PartialEq)]
pub struct DropCall {
    pub call_uuid: String,
    pub cause: HangupCause,
}

/// §3.4
#[derive(Debug, Clone, PartialEq)]
pub struct SetChannelVars {
    pub call_uuid: String,
    pub channel_vars: BTreeMap<String, String>,
}

/// §3.5
#[derive(Debug, Clone, PartialEq)]
pub struct StartStream {
    pub call_uuid: String,
    /// `wss://host:port[/path]`, built from `websocket_host` and `websocket_port`.
    pub url: String,
    /// The host alone (for TLS SNI), IPv6 literals keep their brackets.
    pub host: String,
    pub port: u16,
    pub sample_rate: u32,
    pub metadata: Option<Map<String, Value>>,
    /// `botstream` (default) or `twilio` (Twilio Media Streams).
    pub protocol: media::stream::Protocol,
    /// 0 (off) to 30: how long to reconnect a failed socket, keeping the caller's audio.
    pub resume_secs: u32,
}

/// §3.6
#[derive(Debug, Clone, PartialEq)]
pub struct StopStream {
    pub call_uuid: String,
}

/// §3.7
#[derive(Debug, Clone, PartialEq)]
pub struct StopPlay {
    pub call_uuid: String,
}

/// §3.8
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeCall {
    pub call_uuid: String,
    pub gateway: String,
    pub to_number: String,
    pub from_number: String,
    pub stop_stream: bool,
    pub dial_timeout: u32,
    pub channel_vars: BTreeMap<String, String>,
}

/// §3.9
#[derive(Debug, Clone, PartialEq)]
pub struct TransferCall {
    pub call_uuid: String,
    pub destination: String,
}

/// §3.10
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnoopMode {
    Listen,
    Whisper,
    Barge,
}

/// §3.10
#[derive(Debug, Clone, PartialEq)]
pub struct SnoopOnCall {
    pub target_call_uuid: String,
    pub listener_call_uuid: String,
    pub mode: SnoopMode,
}

/// §3.11. Empty-string params are kept: on update they mean "remove this param".
#[derive(Debug, Clone, PartialEq)]
pub struct AddSipGateway {
    pub name: String,
    pub params: BTreeMap<String, String>,
    pub variables: BTreeMap<String, String>,
}

/// §3.12. `name: None` means every gateway (`""` or `"*"` on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct GetSipGateway {
    pub name: Option<String>,
}

/// §3.13
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteSipGateway {
    pub name: String,
}

/// One member of a logical gateway (§3.14).
#[derive(Debug, Clone, PartialEq)]
pub struct LogicalMember {
    pub name: String,
    pub weightage: u32,
    pub max_limit: Option<u32>,
}

/// §3.14
#[derive(Debug, Clone, PartialEq)]
pub struct AddLogicalGateway {
    pub name: String,
    pub gateways: Vec<LogicalMember>,
}

/// §3.14. `name: None` means every logical gateway (absent, `""` or `"*"` on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct GetLogicalGateway {
    pub name: Option<String>,
}

/// §3.15
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteLogicalGateway {
    pub name: String,
}

/// §3.16
#[derive(Debug, Clone, PartialEq)]
pub struct SendDtmf {
    pub call_uuid: String,
    pub digits: String,
    pub duration_ms: u32,
}

/// §3.16. `path` is relative to the data dir, checked not to climb out of it.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRecord {
    pub call_uuid: String,
    pub path: Option<String>,
}

/// §3.16
#[derive(Debug, Clone, PartialEq)]
pub struct StopRecord {
    pub call_uuid: String,
}

/// §3.16
#[derive(Debug, Clone, PartialEq)]
pub struct GetCall {
    pub call_uuid: String,
}

/// §3.16
#[derive(Debug, Clone, PartialEq)]
pub struct ListCalls {
    pub tenant_id: Option<String>,
}

/// Parses one NATS request payload. On error, the first element is the `request_name` for the
/// reply: the `event_name` if it could be read as a string, else `"unknown"`.
pub fn parse_request(bytes: &[u8]) -> Result<Request, (String, ApiError)> {
    let unknown = |e: ApiError| ("unknown".to_string(), e);
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        unknown(ApiError::new(
            StatusCode::MalformedJson,
            format!("malformed JSON: {e}"),
        ))
    })?;
    let Value::Object(root) = value else {
        return Err(unknown(ApiError::new(
            StatusCode::MalformedJson,
            "the request must be a JSON object",
        )));
    };
    let name = match root.get("event_name") {
        None | Some(Value::Null) => {
            return Err(unknown(ApiError::invalid("event_name is required")))
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(unknown(ApiError::invalid("event_name must be a string"))),
    };
    let fail = |e: ApiError| (name.clone(), e);
    if !name.starts_with("request_") {
        return Err(fail(ApiError::invalid(
            "event_name must start with request_",
        )));
    }
    let data = match root.get("event_data") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => return Err(fail(ApiError::invalid("event_data is required"))),
        Some(_) => return Err(fail(ApiError::invalid("event_data must be an object"))),
    };
    parse_event(&name, &Fields(data)).map_err(fail)
}

fn parse_event(name: &str, f: &Fields) -> Result<Request, ApiError> {
    Ok(match name {
        "request_set_cpa_params" => Request::SetCpaParams(set_cpa_params(f)?),
        "request_make_call" => Request::MakeCall(make_call(f)?),
        "request_drop_call" => {
            f.require(&["call_uuid"])?;
            let cause = match f.opt_string("cause")? {
                None => HangupCause::NORMAL_CLEARING,
                Some(n) => HangupCause::from_name(&n).ok_or_else(|| {
                    ApiError::schema(format!("cause '{n}' is not a known hangup cause"))
                })?,
            };
            Request::DropCall(DropCall {
                call_uuid: f.uuid("call_uuid")?,
                cause,
            })
        }
        "request_set_channel_vars" => {
            f.require(&["call_uuid", "channel_vars"])?;
            Request::SetChannelVars(SetChannelVars {
                call_uuid: f.uuid("call_uuid")?,
                channel_vars: f.vars("channel_vars")?,
            })
        }
        "request_start_stream" => Request::StartStream(start_stream(f)?),
        "request_stop_stream" => Request::StopStream(StopStream {
            call_uuid: f.only_uuid()?,
        }),
        "request_stop_play" => Request::StopPlay(StopPlay {
            call_uuid: f.only_uuid()?,
        }),
        "request_bridge_call" => {
            f.require(&[
                "call_uuid",
                "gateway",
                "to_number",
                "from_number",
                "stop_stream",
            ])?;
            Request::BridgeCall(BridgeCall {
                call_uuid: f.uuid("call_uuid")?,
                gateway: f.string("gateway")?,
                to_number: f.string("to_number")?,
                from_number: f.string("from_number")?,
                stop_stream: f.bool("stop_stream", false)?,
                dial_timeout: f.u32("dial_timeout", 5, u32::MAX)?.unwrap_or(30),
                channel_vars: f.vars("channel_vars")?,
            })
        }
        "request_transfer_call" => {
            f.require(&["call_uuid", "destination"])?;
            Request::TransferCall(TransferCall {
                call_uuid: f.uuid("call_uuid")?,
                destination: f.string("destination")?,
            })
        }
        "request_snoop_on_call" => Request::SnoopOnCall(snoop_on_call(f)?),
        "request_add_sip_gateway" => Request::AddSipGateway(add_sip_gateway(f)?),
        "request_get_sip_gateway" => {
            f.require(&["name"])?;
            Request::GetSipGateway(GetSipGateway {
                name: f.name_or_all("name")?,
            })
        }
        "request_delete_sip_gateway" => {
            f.require(&["name"])?;
            Request::DeleteSipGateway(DeleteSipGateway {
                name: f.string("name")?,
            })
        }
        "request_add_logical_gateway" => Request::AddLogicalGateway(add_logical_gateway(f)?),
        "request_get_logical_gateway" => Request::GetLogicalGateway(GetLogicalGateway {
            name: f.name_or_all("name")?,
        }),
        "request_delete_logical_gateway" => {
            f.require(&["name"])?;
            Request::DeleteLogicalGateway(DeleteLogicalGateway {
                name: f.string("name")?,
            })
        }
        "request_send_dtmf" => {
            f.require(&["call_uuid", "digits"])?;
            let call_uuid = f.uuid("call_uuid")?;
            let digits = f.string("digits")?;
            if !digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b"*#ABCD".contains(&b))
            {
                return Err(ApiError::schema("digits must match ^[0-9*#A-D]+$"));
            }
            Request::SendDtmf(SendDtmf {
                call_uuid,
                digits,
                duration_ms: f.u32("duration_ms", 40, 5000)?.unwrap_or(100),
            })
        }
        "request_start_record" => {
            f.require(&["call_uuid"])?;
            let call_uuid = f.uuid("call_uuid")?;
            let path = f.opt_string("path")?;
            if let Some(p) = &path {
                check_relative_path(p)?;
            }
            Request::StartRecord(StartRecord { call_uuid, path })
        }
        "request_stop_record" => Request::StopRecord(StopRecord {
            call_uuid: f.only_uuid()?,
        }),
        "request_get_call" => Request::GetCall(GetCall {
            call_uuid: f.only_uuid()?,
        }),
        "request_list_calls" => Request::ListCalls(ListCalls {
            tenant_id: f.opt_string("tenant_id")?,
        }),
        _ => {
            return Err(ApiError::new(
                StatusCode::UnknownRequest,
                format!("unknown request {name}"),
            ))
        }
    })
}

fn set_cpa_params(f: &Fields) -> Result<SetCpaParams, ApiError> {
    f.require(&["va_config_name", "tenant_id", "analysis"])?;
    let va_config_name = f.string("va_config_name")?;
    let tenant_id = f.string("tenant_id")?;
    let analysis = f.string("analysis")?;
    if analysis != "amd" {
        return Err(ApiError::schema("analysis must be \"amd\""));
    }
    let tones = match f.object("tones")? {
        None => Vec::new(),
        Some(m) => parse_tones(m)?,
    };
    let break_events = f
        .opt_string("break_events")?
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(SetCpaParams {
        va_config_name,
        tenant_id,
        analysis,
        min_ambient_energy: f.u32("min_ambient_energy", 1, u32::MAX)?.unwrap_or(1),
        initial_silence_ignore: f.u32("initial_silence_ignore", 0, 5000)?.unwrap_or(750),
        time_limit: f.u32("time_limit", 1750, 2250)?.unwrap_or(1750),
        sensitivity: f.u32("sensitivity", 2, 5)?.unwrap_or(4),
        tones,
        log_top_freq: f.u32("log_top_freq", 0, 5)?.unwrap_or(3),
        log_voice: f.bool("log_voice", true)?,
        break_events,
        total_timeout: f.u32("total_timeout", 10000, u32::MAX)?.unwrap_or(15000),
        event_subject: f
            .opt_string("event_subject")?
            .map(|s| check_subject("event_subject", s))
            .transpose()?,
        detect_beep: f.bool("detect_beep", true)?,
    })
}

fn parse_tones(m: &Map<String, Value>) -> Result<Vec<(String, f32, f32)>, ApiError> {
    let mut tones = Vec::with_capacity(m.len());
    for (label, v) in m {
        let field = format!("tones.{label}");
        let bad = || {
            ApiError::schema(format!(
                "{field} must be a string \"FREQ_HZ TOLERANCE_HZ\" of two positive numbers"
            ))
        };
        if label.trim().is_empty() {
            return Err(ApiError::schema("tones labels must not be empty"));
        }
        check_text(&field, label)?;
        let Some(spec) = v.as_str() else {
            return Err(bad());
        };
        let nums: Vec<f32> = spec
            .split_whitespace()
            .map(|n| n.parse::<f32>().ok().filter(|x| x.is_finite() && *x > 0.0))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let [freq, tol] = nums[..] else {
            return Err(bad());
        };
        tones.push((label.clone(), freq, tol));
    }
    Ok(tones)
}

fn make_call(f: &Fields) -> Result<MakeCall, ApiError> {
    f.require(&[
        "gateway",
        "tenant_id",
        "to_number",
        "from_number",
        "event_subject",
    ])?;
    Ok(MakeCall {
        gateway: f.string("gateway")?,
        tenant_id: f.string("tenant_id")?,
        to_number: f.string("to_number")?,
        from_number: f.string("from_number")?,
        event_subject: check_subject("event_subject", f.string("event_subject")?)?,
        cpa_config: f.opt_string("cpa_config")?,
        dial_timeout: f.u32("dial_timeout", 5, u32::MAX)?.unwrap_or(30),
        call_params: f.object("call_params")?.cloned(),
        channel_vars: f.vars("channel_vars")?,
        max_call_secs: f.u32("max_call_secs", 1, u32::MAX)?,
        record: f.bool("record", false)?,
    })
}

fn start_stream(f: &Fields) -> Result<StartStream, ApiError> {
    f.require(&["call_uuid", "websocket_host", "websocket_port"])?;
    let call_uuid = f.uuid("call_uuid")?;
    let host_field = f.string("websocket_host")?;
    let port = f
        .u32("websocket_port", 1, u16::MAX as u32)?
        .expect("required") as u16;
    let sample_rate = match f.get("sample_rate") {
        None => 8000,
        Some(v) => match v.as_u64() {
            Some(r @ (8000 | 16000)) => r as u32,
            _ => return Err(ApiError::schema("sample_rate must be 8000 or 16000")),
        },
    };
    let (host, path) = split_ws_host(&host_field)?;
    let protocol = match f.opt_string("protocol")?.as_deref() {
        None | Some("botstream") => media::stream::Protocol::Botstream,
        Some("twilio") => media::stream::Protocol::Twilio,
        Some(p) => {
            return Err(ApiError::schema(format!(
                "protocol must be botstream or twilio, not '{p}'"
            )))
        }
    };
    if protocol == media::stream::Protocol::Twilio && sample_rate != 8000 {
        return Err(ApiError::schema(
            "sample_rate must be 8000 with the twilio protocol",
        ));
    }
    Ok(StartStream {
        call_uuid,
        url: format!("wss://{host}:{port}{path}"),
        host,
        port,
        sample_rate,
        metadata: f.object("metadata")?.cloned(),
        protocol,
        resume_secs: f.u32("resume_secs", 0, 30)?.unwrap_or(0),
    })
}

/// Splits `wss://host/path`, `host/path` or `host` into host and path. The port has its own field,
/// so a `:port` here is refused rather than guessed about.
fn split_ws_host(s: &str) -> Result<(String, String), ApiError> {
    let form = || {
        ApiError::schema(
            "websocket_host must be wss://host[/path] or a bare host; the port goes in websocket_port",
        )
    };
    let s = s.trim();
    let rest = match s.find("://") {
        Some(i) => {
            let scheme = &s[..i];
            if !scheme.eq_ignore_ascii_case("wss") {
                return Err(ApiError::schema(format!(
                    "websocket_host must use wss:// (got {scheme}://)"
                )));
            }
            &s[i + 3..]
        }
        None => s,
    };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(cut);
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    // RFC 6455 forbids fragments in WebSocket URIs.
    if !host_ok || path.contains(['#', ' ']) {
        return Err(form());
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok((host.to_string(), path))
}

fn snoop_on_call(f: &Fields) -> Result<SnoopOnCall, ApiError> {
    f.require(&["target_call_uuid", "listener_call_uuid"])?;
    let target_call_uuid = f.uuid("target_call_uuid")?;
    let listener_call_uuid = f.uuid("listener_call_uuid")?;
    let mode = match f.opt_string("mode")?.as_deref() {
        None | Some("listen") => SnoopMode::Listen,
        Some("whisper") => SnoopMode::Whisper,
        Some("barge") => SnoopMode::Barge,
        Some(_) => return Err(ApiError::schema("mode must be listen, whisper or barge")),
    };
    if target_call_uuid == listener_call_uuid {
        return Err(ApiError::schema(
            "listener_call_uuid must differ from target_call_uuid",
        ));
    }
    Ok(SnoopOnCall {
        target_call_uuid,
        listener_call_uuid,
        mode,
    })
}

fn add_sip_gateway(f: &Fields) -> Result<AddSipGateway, ApiError> {
    f.require(&["name", "params"])?;
    let name = f.string("name")?;
    if name == "*" {
        return Err(ApiError::schema(
            "name '*' is reserved (it means all gateways)",
        ));
    }
    let mut params = BTreeMap::new();
    for (k, v) in f.object("params")?.expect("required") {
        let field = format!("params.{k}");
        let Value::String(s) = v else {
            return Err(ApiError::schema(format!("{field} must be a string")));
        };
        check_text(&field, k)?;
        check_text(&field, s)?;
        params.insert(k.clone(), s.clone());
    }
    Ok(AddSipGateway {
        name,
        params,
        variables: f.vars("variables")?,
    })
}

fn add_logical_gateway(f: &Fields) -> Result<AddLogicalGateway, ApiError> {
    f.require(&["name", "gateways"])?;
    let name = f.string("name")?;
    if name == "*" {
        return Err(ApiError::schema(
            "name '*' is reserved (it means all gateways)",
        ));
    }
    let shape =
        || ApiError::schema("gateways must be a non-empty array of {name, weightage, max_limit}");
    let Some(Value::Array(items)) = f.get("gateways") else {
        return Err(shape());
    };
    if items.is_empty() {
        return Err(shape());
    }
    let mut members_fields = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(ApiError::schema(format!("gateways[{i}] must be an object")));
        };
        members_fields.push(Fields(m));
    }
    // All presence checks before any type check, as at the top level (130 before 135).
    for (i, m) in members_fields.iter().enumerate() {
        for key in ["name", "weightage"] {
            if m.get(key).is_none() {
                return Err(ApiError::missing(&format!("gateways[{i}].{key}")));
            }
        }
    }
    let mut gateways: Vec<LogicalMember> = Vec::with_capacity(items.len());
    for (i, m) in members_fields.iter().enumerate() {
        let member = LogicalMember {
            name: m.string_as("name", &format!("gateways[{i}].name"))?,
            weightage: m
                .u32_as(
                    "weightage",
                    &format!("gateways[{i}].weightage"),
                    0,
                    u32::MAX,
                )?
                .expect("checked present"),
            max_limit: m.u32_as(
                "max_limit",
                &format!("gateways[{i}].max_limit"),
                1,
                u32::MAX,
            )?,
        };
        if gateways.iter().any(|g| g.name == member.name) {
            return Err(ApiError::schema(format!(
                "gateways[{i}].name '{}' is listed twice",
                member.name
            )));
        }
        gateways.push(member);
    }
    Ok(AddLogicalGateway { name, gateways })
}

fn check_relative_path(p: &str) -> Result<(), ApiError> {
    let climbs = p.split(['/', '\\']).any(|c| c == "..");
    if p.starts_with(['/', '\\']) || p.contains(':') || climbs {
        return Err(ApiError::schema(
            "path must be a relative path under the data dir",
        ));
    }
    Ok(())
}

/// Strings end up in SIP headers, URIs and log lines: a CR/LF would let an app inject headers.
fn check_text(field: &str, s: &str) -> Result<(), ApiError> {
    if s.chars().any(char::is_control) {
        return Err(ApiError::schema(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Longest event subject accepted (NATS has no limit of its own worth relying on).
pub const MAX_SUBJECT_LEN: usize = 256;

/// An `event_subject`: a NATS subject an app may be sent events on. Events are published as the
/// switch, so a subject must not reach what the switch's own connection may touch: JetStream's
/// API and the KV buckets (`$JS.…`, `$KV.…`, any `$` token: the server's system subjects), request
/// replies (`_INBOX.…`), and no wildcard (it cannot be published to). Tokens are non-empty and
/// have no blanks.
fn check_subject(field: &str, s: String) -> Result<String, ApiError> {
    let bad = |why: &str| Err(ApiError::schema(format!("{field} '{s}' {why}")));
    if s.len() > MAX_SUBJECT_LEN {
        return Err(ApiError::schema(format!(
            "{field} is longer than {MAX_SUBJECT_LEN} bytes"
        )));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain blanks or control characters");
    }
    if s.split('.').any(str::is_empty) {
        return bad("is not a NATS subject (an empty token)");
    }
    if s.contains(['*', '>']) {
        return bad("must not contain wildcards");
    }
    let first = s.split('.').next().unwrap_or_default();
    if first.starts_with('$') {
        return bad("is reserved for the NATS server and JetStream");
    }
    if first.to_ascii_uppercase().starts_with("_INBOX") {
        return bad("is reserved for replies");
    }
    Ok(s)
}

// RFC 3261 `token`: what may follow `sip_h_` to become a header name.
/// Headers a `sip_h_*` channel variable may not set: the dialog, transaction and framing are the
/// switch's (RFC 3261 §8.1.1, §12).
const PROTECTED_HEADERS: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Route",
    "Record-Route",
    "Content-Length",
    "Content-Type",
    "Authorization",
    "Proxy-Authorization",
    "Session-Expires",
    "Min-SE",
    "Refer-To",
    "i",
    "f",
    "t",
    "v",
    "m",
    "l",
    "c",
    "x",
    "r",
];

fn is_sip_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// The `event_data` object. JSON null counts as absent everywhere, because many client libraries
/// serialise unset optional fields as null.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn require(&self, keys: &[&str]) -> Result<(), ApiError> {
        match keys.iter().find(|k| self.get(k).is_none()) {
            Some(k) => Err(ApiError::missing(k)),
            None => Ok(()),
        }
    }

    fn only_uuid(&self) -> Result<String, ApiError> {
        self.require(&["call_uuid"])?;
        self.uuid("call_uuid")
    }

    /// A required, non-empty string.
    fn string(&self, key: &str) -> Result<String, ApiError> {
        self.string_as(key, key)
    }

    fn string_as(&self, key: &str, field: &str) -> Result<String, ApiError> {
        match self.get(key) {
            None => Err(ApiError::missing(field)),
            Some(Value::String(s)) if !s.is_empty() => {
                check_text(field, s)?;
                Ok(s.clone())
            }
            Some(Value::String(_)) => Err(ApiError::schema(format!("{field} must not be empty"))),
            Some(_) => Err(ApiError::schema(format!("{field} must be a string"))),
        }
    }

    /// An optional string; `""` counts as absent, as apps often send it for "not set".
    fn opt_string(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    /// A gateway name where `""` and `"*"` (or absence) select all gateways.
    fn name_or_all(&self, key: &str) -> Result<Option<String>, ApiError> {
        Ok(self.opt_string(key)?.filter(|n| n != "*"))
    }

    fn uuid(&self, key: &str) -> Result<String, ApiError> {
        let s = match self.get(key) {
            None => return Err(ApiError::missing(key)),
            Some(Value::String(s)) => s,
            Some(_) => return Err(ApiError::schema(format!("{key} must be a string"))),
        };
        if !is_lower_uuid(s) {
            return Err(ApiError::schema(format!(
                "{key} must match ^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$"
            )));
        }
        Ok(s.clone())
    }

    fn u32(&self, key: &str, min: u32, max: u32) -> Result<Option<u32>, ApiError> {
        self.u32_as(key, key, min, max)
    }

    /// JSON integers only: `5.0` and `"5"` are schema violations, as in the original's schema.
    fn u32_as(&self, key: &str, field: &str, min: u32, max: u32) -> Result<Option<u32>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(n) if n >= min as u64 && n <= max as u64 => Ok(Some(n as u32)),
            _ if max == u32::MAX => Err(ApiError::schema(format!(
                "{field} must be an integer >= {min}"
            ))),
            _ => Err(ApiError::schema(format!(
                "{field} must be an integer between {min} and {max}"
            ))),
        }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::schema(format!("{key} must be a boolean"))),
        }
    }

    fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(ApiError::schema(format!("{key} must be an object"))),
        }
    }

    /// Channel variables: scalars are kept as the strings FreeSWITCH would have seen.
    /// `channel_vars` (api.md §3.2, §3.4): `sip_h_X-Foo` adds a header, so its name must be a
    /// token and not one the dialog depends on (a replaced Call-ID, tag or CSeq would break or
    /// hijack the call's own dialog).
    fn vars(&self, key: &str) -> Result<BTreeMap<String, String>, ApiError> {
        let mut out = BTreeMap::new();
        let Some(m) = self.object(key)? else {
            return Ok(out);
        };
        for (k, v) in m {
            let field = format!("{key}.{k}");
            let s = match v {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(ApiError::schema(format!(
                        "{field} must be a string, number or boolean"
                    )))
                }
            };
            if k.is_empty() {
                return Err(ApiError::schema(format!("{key} names must not be empty")));
            }
            if let Some(h) = k.strip_prefix("sip_h_") {
                if !is_sip_token(h) {
                    return Err(ApiError::schema(format!(
                        "{field}: '{h}' is not a valid SIP header name"
                    )));
                }
                if PROTECTED_HEADERS.iter().any(|p| p.eq_ignore_ascii_case(h)) {
                    return Err(ApiError::schema(format!(
                        "{field}: {h} is the switch's to write, not a custom header"
                    )));
                }
            }
            check_text(&field, k)?;
            check_text(&field, &s)?;
            out.insert(k.clone(), s);
        }
        Ok(out)
    }
}

fn is_lower_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UUID: &str = "8288ef17-3ab9-4745-b6b5-699dcdf4d7cf";

    fn parse(v: Value) -> Result<Request, (String, ApiError)> {
        parse_request(v.to_string().as_bytes())
    }

    fn req(name: &str, data: Value) -> Result<Request, (String, ApiError)> {
        parse(json!({"event_name": name, "event_data": data}))
    }

    #[track_caller]
    fn err(r: Result<Request, (String, ApiError)>) -> (String, StatusCode, String) {
        let (n, e) = r.expect_err("expected an error");
        (n, e.code, e.status)
    }

    #[track_caller]
    fn code(r: Result<Request, (String, ApiError)>) -> u16 {
        err(r).1.code()
    }

    fn make_call_data() -> Value {
        json!({
            "gateway": "chime-1",
            "tenant_id": "acme",
            "to_number": "+918989898989",
            "from_number": "+91999999999",
            "event_subject": "botstream.result"
        })
    }

    fn with(mut base: Value, key: &str, v: Value) -> Value {
        base[key] = v;
        base
    }

    // ---- envelope, in the order of api.md §2 ----

    #[test]
    fn malformed_json_is_134() {
        for bad in [
            &b"{"[..],
            b"",
            b"not json",
            b"{\"event_name\": }",
            b"\xff\xfe",
        ] {
            let (n, c, _) = err(parse_request(bad));
            assert_eq!((n.as_str(), c), ("unknown", StatusCode::MalformedJson));
        }
    }

    #[test]
    fn non_object_is_134() {
        for v in [
            json!([1, 2]),
            json!("request_make_call"),
            json!(5),
            json!(null),
        ] {
            let (n, c, _) = err(parse(v));
            assert_eq!((n.as_str(), c), ("unknown", StatusCode::MalformedJson));
        }
    }

    #[test]
    fn missing_event_name_is_128() {
        let (n, c, s) = err(parse(json!({"event_data": {}})));
        assert_eq!((n.as_str(), c), ("unknown", StatusCode::InvalidRequest));
        assert!(s.contains("event_name"));
        let (n, c, _) = err(parse(json!({"event_name": 7, "event_data": {}})));
        assert_eq!((n.as_str(), c), ("unknown", StatusCode::InvalidRequest));
    }

    #[test]
    fn event_name_without_request_prefix_is_128() {
        let (n, c, s) = err(parse(json!({"event_name": "make_call", "event_data": {}})));
        assert_eq!((n.as_str(), c), ("make_call", StatusCode::InvalidRequest));
        assert!(s.contains("request_"));
    }

    #[test]
    fn event_data_not_object_is_128() {
        for data in [json!([]), json!("x"), json!(null)] {
            let (n, c, s) = err(req("request_make_call", data));
            assert_eq!(
                (n.as_str(), c),
                ("request_make_call", StatusCode::InvalidRequest)
            );
            assert!(s.contains("event_data"));
        }
        // 128 beats 139: the envelope is checked first.
        assert_eq!(code(req("request_nope", json!(1))), 128);
        let (_, c, _) = err(parse(json!({"event_name": "request_get_call"})));
        assert_eq!(c, StatusCode::InvalidRequest);
    }

    #[test]
    fn unknown_request_is_139() {
        let (n, c, s) = err(req("request_fly_to_moon", json!({})));
        assert_eq!(
            (n.as_str(), c),
            ("request_fly_to_moon", StatusCode::UnknownRequest)
        );
        assert!(s.contains("request_fly_to_moon"));
        assert_eq!(code(req("request_", json!({}))), 139);
        assert_eq!(code(req("request_MAKE_CALL", make_call_data())), 139);
    }

    #[test]
    fn missing_field_is_130() {
        let mut d = make_call_data();
        d.as_object_mut().unwrap().remove("to_number");
        let (n, c, s) = err(req("request_make_call", d));
        assert_eq!(
            (n.as_str(), c),
            ("request_make_call", StatusCode::MissingField)
        );
        assert_eq!(s, "to_number is required");
        // null is missing
        let d = with(make_call_data(), "to_number", Value::Null);
        assert_eq!(err(req("request_make_call", d)).2, "to_number is required");
        // 130 beats 135 even when the bad field comes first
        let mut d = with(make_call_data(), "gateway", json!(5));
        d.as_object_mut().unwrap().remove("event_subject");
        assert_eq!(
            err(req("request_make_call", d)).2,
            "event_subject is required"
        );
        assert_eq!(
            err(req("request_stop_play", json!({}))).2,
            "call_uuid is required"
        );
    }

    #[test]
    fn wrong_type_is_135() {
        let (_, c, s) = err(req(
            "request_make_call",
            with(make_call_data(), "to_number", json!(918989)),
        ));
        assert_eq!(c, StatusCode::SchemaViolation);
        assert_eq!(s, "to_number must be a string");
        for v in [json!(5.0), json!("5"), json!(true), json!(-5)] {
            let d = with(make_call_data(), "dial_timeout", v);
            assert_eq!(
                err(req("request_make_call", d)).2,
                "dial_timeout must be an integer >= 5"
            );
        }
        let d = with(make_call_data(), "call_params", json!([1]));
        assert_eq!(
            err(req("request_make_call", d)).2,
            "call_params must be an object"
        );
        let d = with(make_call_data(), "record", json!("yes"));
        assert_eq!(
            err(req("request_make_call", d)).2,
            "record must be a boolean"
        );
        assert_eq!(
            err(req("request_stop_play", json!({"call_uuid": 5}))).1,
            StatusCode::SchemaViolation
        );
    }

    #[test]
    fn out_of_range_is_135() {
        let d = with(make_call_data(), "dial_timeout", json!(4));
        assert_eq!(
            err(req("request_make_call", d)).2,
            "dial_timeout must be an integer >= 5"
        );
        let d = with(make_call_data(), "max_call_secs", json!(0));
        assert_eq!(code(req("request_make_call", d)), 135);
        let d = with(make_call_data(), "dial_timeout", json!(1u64 << 40));
        assert_eq!(code(req("request_make_call", d)), 135);
        let cpa = json!({"va_config_name": "c", "tenant_id": "t", "analysis": "amd"});
        for (k, bad) in [
            ("min_ambient_energy", 0),
            ("initial_silence_ignore", 5001),
            ("time_limit", 1749),
            ("time_limit", 2251),
            ("sensitivity", 1),
            ("sensitivity", 6),
            ("log_top_freq", 6),
            ("total_timeout", 9999),
        ] {
            let (_, c, s) = err(req(
                "request_set_cpa_params",
                with(cpa.clone(), k, json!(bad)),
            ));
            assert_eq!(c, StatusCode::SchemaViolation, "{k}={bad}");
            assert!(s.starts_with(k), "{s}");
        }
        let (_, _, s) = err(req(
            "request_set_cpa_params",
            with(cpa.clone(), "time_limit", json!(3000)),
        ));
        assert_eq!(s, "time_limit must be an integer between 1750 and 2250");
        for (k, ok) in [
            ("initial_silence_ignore", 0),
            ("time_limit", 2250),
            ("log_top_freq", 0),
        ] {
            assert!(req("request_set_cpa_params", with(cpa.clone(), k, json!(ok))).is_ok());
        }
        let d = json!({"call_uuid": UUID, "digits": "1", "duration_ms": 39});
        assert_eq!(
            err(req("request_send_dtmf", d)).2,
            "duration_ms must be an integer between 40 and 5000"
        );
    }

    #[test]
    fn pattern_mismatch_is_135() {
        for bad in [
            "8288EF17-3AB9-4745-B6B5-699DCDF4D7CF",
            "8288ef17-3ab9-4745-b6b5-699dcdf4d7c",
            "8288ef17-3ab9-4745-b6b5-699dcdf4d7cf0",
            "8288ef173ab94745b6b5699dcdf4d7cf",
            "8288ef17_3ab9-4745-b6b5-699dcdf4d7cf",
            "g288ef17-3ab9-4745-b6b5-699dcdf4d7cf",
            "",
        ] {
            let (_, c, s) = err(req("request_drop_call", json!({"call_uuid": bad})));
            assert_eq!(c, StatusCode::SchemaViolation, "{bad}");
            assert!(s.starts_with("call_uuid must match"), "{s}");
        }
        for bad in ["12a", "1 2", "", "E", "12#*d"] {
            let d = json!({"call_uuid": UUID, "digits": bad});
            assert_eq!(code(req("request_send_dtmf", d)), 135, "{bad}");
        }
        let d = json!({"call_uuid": UUID, "cause": "NOT_A_CAUSE"});
        assert_eq!(
            err(req("request_drop_call", d)).2,
            "cause 'NOT_A_CAUSE' is not a known hangup cause"
        );
    }

    #[test]
    fn empty_required_string_is_135() {
        let d = with(make_call_data(), "to_number", json!(""));
        assert_eq!(
            err(req("request_make_call", d)).2,
            "to_number must not be empty"
        );
        assert_eq!(
            code(req("request_delete_sip_gateway", json!({"name": ""}))),
            135
        );
        assert_eq!(
            code(req(
                "request_transfer_call",
                json!({"call_uuid": UUID, "destination": ""})
            )),
            135
        );
    }

    #[test]
    fn control_characters_are_135() {
        let d = with(make_call_data(), "to_number", json!("100\r\nX-Evil: 1"));
        assert_eq!(code(req("request_make_call", d)), 135);
        let d = with(
            make_call_data(),
            "channel_vars",
            json!({"sip_h_X-A": "a\nb"}),
        );
        assert_eq!(code(req("request_make_call", d)), 135);
        let d = with(make_call_data(), "channel_vars", json!({"sip_h_X A:": "a"}));
        assert_eq!(code(req("request_make_call", d)), 135);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let d = with(make_call_data(), "flux_capacitor", json!({"x": [1]}));
        assert!(req("request_make_call", d).is_ok());
        let r = parse(
            json!({"event_name": "request_get_call", "event_data": {"call_uuid": UUID}, "extra": 1}),
        );
        assert!(r.is_ok());
    }

    // ---- defaults ----

    #[test]
    fn make_call_defaults() {
        let Request::MakeCall(m) = req("request_make_call", make_call_data()).unwrap() else {
            panic!()
        };
        assert_eq!(m.dial_timeout, 30);
        assert_eq!(m.cpa_config, None);
        assert_eq!(m.call_params, None);
        assert!(m.channel_vars.is_empty());
        assert_eq!(m.max_call_secs, None);
        assert!(!m.record);
        // Null and "" for an optional string mean "not set".
        let d = with(
            with(make_call_data(), "cpa_config", json!("")),
            "dial_timeout",
            Value::Null,
        );
        let Request::MakeCall(m) = req("request_make_call", d).unwrap() else {
            panic!()
        };
        assert_eq!((m.cpa_config, m.dial_timeout), (None, 30));
    }

    #[test]
    fn cpa_defaults() {
        let r = req(
            "request_set_cpa_params",
            json!({"va_config_name": "my-cpa-1", "tenant_id": "acme", "analysis": "amd"}),
        );
        let Request::SetCpaParams(c) = r.unwrap() else {
            panic!()
        };
        assert_eq!(
            c,
            SetCpaParams {
                va_config_name: "my-cpa-1".into(),
                tenant_id: "acme".into(),
                analysis: "amd".into(),
                min_ambient_energy: 1,
                initial_silence_ignore: 750,
                time_limit: 1750,
                sensitivity: 4,
                tones: vec![],
                log_top_freq: 3,
                log_voice: true,
                break_events: vec![],
                total_timeout: 15000,
                event_subject: None,
                detect_beep: true,
            }
        );
        let d = json!({"va_config_name": "x", "tenant_id": "acme"});
        assert_eq!(
            err(req("request_set_cpa_params", d)).2,
            "analysis is required"
        );
        let d = json!({"va_config_name": "x", "tenant_id": "acme", "analysis": "vad"});
        assert_eq!(code(req("request_set_cpa_params", d)), 135);
    }

    #[test]
    fn cpa_tones_and_break_events() {
        let base = json!({"va_config_name": "x", "tenant_id": "acme", "analysis": "amd"});
        let d = with(
            with(
                base.clone(),
                "tones",
                json!({"FX": "2100 20", "BP": " 1000.5\t10 "}),
            ),
            "break_events",
            json!(" AM, LV ,,FX,"),
        );
        let Request::SetCpaParams(c) = req("request_set_cpa_params", d).unwrap() else {
            panic!()
        };
        assert_eq!(
            c.tones,
            vec![("BP".into(), 1000.5, 10.0), ("FX".into(), 2100.0, 20.0)]
        );
        assert_eq!(c.break_events, vec!["AM", "LV", "FX"]);
        for bad in [
            json!({"FX": 2100}),
            json!({"FX": "2100"}),
            json!({"FX": "2100 20 5"}),
            json!({"FX": "2100 -20"}),
            json!({"FX": "0 20"}),
            json!({"FX": "abc 20"}),
            json!({"FX": "NaN 20"}),
            json!({"": "2100 20"}),
            json!("FX 2100 20"),
        ] {
            let (_, c, s) = err(req(
                "request_set_cpa_params",
                with(base.clone(), "tones", bad.clone()),
            ));
            assert_eq!(c, StatusCode::SchemaViolation, "{bad}");
            assert!(s.starts_with("tones"), "{s}");
        }
    }

    #[test]
    fn drop_call_cause() {
        let Request::DropCall(d) = req("request_drop_call", json!({"call_uuid": UUID})).unwrap()
        else {
            panic!()
        };
        assert_eq!(d.cause, HangupCause::NORMAL_CLEARING);
        let r = req(
            "request_drop_call",
            json!({"call_uuid": UUID, "cause": "USER_BUSY"}),
        );
        let Request::DropCall(d) = r.unwrap() else {
            panic!()
        };
        assert_eq!(d.cause.name(), "USER_BUSY");
        assert_eq!(
            code(req(
                "request_drop_call",
                json!({"call_uuid": UUID, "cause": 17})
            )),
            135
        );
    }

    #[test]
    fn start_stream_hosts() {
        let ok = |host: &str| {
            let d = json!({"call_uuid": UUID, "websocket_host": host, "websocket_port": 8000});
            match req("request_start_stream", d) {
                Ok(Request::StartStream(s)) => s,
                other => panic!("{host}: {other:?}"),
            }
        };
        let s = ok("wss://voiceai.com");
        assert_eq!(
            (s.url.as_str(), s.host.as_str(), s.port),
            ("wss://voiceai.com:8000", "voiceai.com", 8000)
        );
        assert_eq!((s.sample_rate, s.metadata), (8000, None));
        assert_eq!(ok("voiceai.com").url, "wss://voiceai.com:8000");
        assert_eq!(
            ok("WSS://voiceai.com/bot/v1").url,
            "wss://voiceai.com:8000/bot/v1"
        );
        assert_eq!(ok("voiceai.com/a?b=c").url, "wss://voiceai.com:8000/a?b=c");
        assert_eq!(ok("voiceai.com?b=c").url, "wss://voiceai.com:8000/?b=c");
        assert_eq!(ok("10.0.0.1").url, "wss://10.0.0.1:8000");
        assert_eq!(ok("[::1]/x").url, "wss://[::1]:8000/x");
        for bad in [
            "ws://voiceai.com",
            "http://voiceai.com",
            "voiceai.com:9000",
            "wss://voiceai.com:9000/x",
            "wss://",
            "wss:///path",
            "user@voiceai.com",
            "voiceai.com/a#frag",
            "voi ce.com",
            "[::1",
        ] {
            let d = json!({"call_uuid": UUID, "websocket_host": bad, "websocket_port": 8000});
            let (_, c, s) = err(req("request_start_stream", d));
            assert_eq!(c, StatusCode::SchemaViolation, "{bad}");
            assert!(s.starts_with("websocket_host"), "{s}");
        }
        for (port, good) in [
            (json!(1), true),
            (json!(65535), true),
            (json!(0), false),
            (json!(65536), false),
            (json!("443"), false),
        ] {
            let d = json!({"call_uuid": UUID, "websocket_host": "h", "websocket_port": port});
            assert_eq!(req("request_start_stream", d).is_ok(), good, "{port}");
        }
        let base = json!({"call_uuid": UUID, "websocket_host": "h", "websocket_port": 443});
        let d = with(
            with(base.clone(), "sample_rate", json!(16000)),
            "metadata",
            json!({"a": 1}),
        );
        let Request::StartStream(s) = req("request_start_stream", d).unwrap() else {
            panic!()
        };
        assert_eq!(
            (s.sample_rate, s.metadata.unwrap()["a"].clone()),
            (16000, json!(1))
        );
        for sr in [json!(44100), json!(8000.0), json!("8000")] {
            let d = with(base.clone(), "sample_rate", sr);
            assert_eq!(
                err(req("request_start_stream", d)).2,
                "sample_rate must be 8000 or 16000"
            );
        }
        assert_eq!(
            code(req(
                "request_start_stream",
                with(base, "metadata", json!("m"))
            )),
            135
        );
    }

    #[test]
    fn channel_vars_are_stringified() {
        let d = with(
            make_call_data(),
            "channel_vars",
            json!({"a": "x", "b": 5, "c": 1.5, "d": true, "e": null}),
        );
        let Request::MakeCall(m) = req("request_make_call", d).unwrap() else {
            panic!()
        };
        let got: Vec<(&str, &str)> = m
            .channel_vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, [("a", "x"), ("b", "5"), ("c", "1.5"), ("d", "true")]);
        for bad in [json!({"a": {}}), json!({"a": [1]}), json!(["a"])] {
            let d = with(make_call_data(), "channel_vars", bad);
            assert_eq!(code(req("request_make_call", d)), 135);
        }
        assert_eq!(
            err(req("request_set_channel_vars", json!({"call_uuid": UUID}))).2,
            "channel_vars is required"
        );
    }

    #[test]
    fn sip_gateway_rules() {
        let d = json!({"name": "gw", "params": {"proxy": "1.2.3.4", "expire-seconds": 60}});
        assert_eq!(
            err(req("request_add_sip_gateway", d)).2,
            "params.expire-seconds must be a string"
        );
        assert_eq!(
            code(req(
                "request_add_sip_gateway",
                json!({"name": "gw", "params": "x"})
            )),
            135
        );
        assert_eq!(
            code(req(
                "request_add_sip_gateway",
                json!({"name": "", "params": {}})
            )),
            135
        );
        assert_eq!(
            code(req(
                "request_add_sip_gateway",
                json!({"name": "*", "params": {}})
            )),
            135
        );
        assert_eq!(
            code(req("request_add_sip_gateway", json!({"name": "gw"}))),
            130
        );
        for (name, want) in [
            (json!(""), None),
            (json!("*"), None),
            (json!("gw1"), Some("gw1".to_string())),
        ] {
            let r = req("request_get_sip_gateway", json!({"name": name}));
            assert_eq!(
                r.unwrap(),
                Request::GetSipGateway(GetSipGateway { name: want })
            );
        }
        assert_eq!(code(req("request_get_sip_gateway", json!({}))), 130);
        assert_eq!(
            req("request_get_logical_gateway", json!({})).unwrap(),
            Request::GetLogicalGateway(GetLogicalGateway { name: None })
        );
    }

    #[test]
    fn logical_gateway_rules() {
        let r = |gws: Value| {
            req(
                "request_add_logical_gateway",
                json!({"name": "lg", "gateways": gws}),
            )
        };
        assert_eq!(code(r(json!([]))), 135);
        assert_eq!(code(r(json!({"name": "a"}))), 135);
        assert_eq!(code(r(json!(["a"]))), 135);
        assert_eq!(
            err(r(json!([{"name": "a", "weightage": 1}, {"name": "b"}]))).2,
            "gateways[1].weightage is required"
        );
        // 130 for a later member beats 135 for an earlier one
        assert_eq!(
            code(r(json!([{"name": "a", "weightage": -1}, {"weightage": 1}]))),
            130
        );
        assert_eq!(
            err(r(json!([{"name": "a", "weightage": -1}]))).2,
            "gateways[0].weightage must be an integer >= 0"
        );
        assert_eq!(
            code(r(json!([{"name": "a", "weightage": 1, "max_limit": 0}]))),
            135
        );
        assert_eq!(
            code(r(
                json!([{"name": "a", "weightage": 1}, {"name": "a", "weightage": 2}])
            )),
            135
        );
        let Request::AddLogicalGateway(g) = r(json!([{"name": "a", "weightage": 0}])).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            g.gateways,
            vec![LogicalMember {
                name: "a".into(),
                weightage: 0,
                max_limit: None
            }]
        );
    }

    #[test]
    fn extension_requests() {
        let Request::SendDtmf(d) = req(
            "request_send_dtmf",
            json!({"call_uuid": UUID, "digits": "0123456789*#ABCD"}),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(d.duration_ms, 100);
        let Request::SnoopOnCall(s) = req(
            "request_snoop_on_call",
            json!({"target_call_uuid": UUID, "listener_call_uuid": "538ec253-af8e-4f35-af00-a9430130665e"}),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(s.mode, SnoopMode::Listen);
        let snoop = |mode: &str| {
            req(
                "request_snoop_on_call",
                json!({"target_call_uuid": UUID, "listener_call_uuid": "538ec253-af8e-4f35-af00-a9430130665e", "mode": mode}),
            )
        };
        assert!(matches!(
            snoop("barge"),
            Ok(Request::SnoopOnCall(SnoopOnCall {
                mode: SnoopMode::Barge,
                ..
            }))
        ));
        assert!(matches!(
            snoop("whisper"),
            Ok(Request::SnoopOnCall(SnoopOnCall {
                mode: SnoopMode::Whisper,
                ..
            }))
        ));
        assert_eq!(code(snoop("spy")), 135);
        assert_eq!(
            code(req(
                "request_snoop_on_call",
                json!({"target_call_uuid": UUID, "listener_call_uuid": UUID})
            )),
            135
        );
        let rec = |p: Value| {
            req(
                "request_start_record",
                json!({"call_uuid": UUID, "path": p}),
            )
        };
        assert_eq!(
            rec(json!("calls/a.wav")).unwrap(),
            Request::StartRecord(StartRecord {
                call_uuid: UUID.into(),
                path: Some("calls/a.wav".into())
            })
        );
        for bad in ["/etc/passwd", "../x.wav", "a/../../x", "C:\\x", "a\\..\\b"] {
            assert_eq!(code(rec(json!(bad))), 135, "{bad}");
        }
        assert!(matches!(
            req("request_stop_record", json!({"call_uuid": UUID})),
            Ok(Request::StopRecord(_))
        ));
        assert!(matches!(
            req("request_get_call", json!({"call_uuid": UUID})),
            Ok(Request::GetCall(_))
        ));
        assert_eq!(
            req("request_list_calls", json!({})).unwrap(),
            Request::ListCalls(ListCalls { tenant_id: None })
        );
        assert_eq!(
            req("request_list_calls", json!({"tenant_id": "acme"})).unwrap(),
            Request::ListCalls(ListCalls {
                tenant_id: Some("acme".into())
            })
        );
    }

    #[test]
    fn names_round_trip() {
        let cases = [
            ("request_stop_stream", json!({"call_uuid": UUID})),
            ("request_stop_play", json!({"call_uuid": UUID})),
            ("request_delete_sip_gateway", json!({"name": "gw"})),
            ("request_delete_logical_gateway", json!({"name": "lg"})),
            ("request_get_logical_gateway", json!({"name": "lg"})),
            (
                "request_transfer_call",
                json!({"call_uuid": UUID, "destination": "sip:100@x"}),
            ),
        ];
        for (name, data) in cases {
            assert_eq!(req(name, data).unwrap().name(), name);
        }
    }

    // ---- the examples of the original reference (seeds/000), as an existing app sends them ----

    #[test]
    fn seed_examples_parse() {
        let seeds = [
            json!({"event_name": "request_set_cpa_params", "event_data": {
                "va_config_name": "my-cpa-1", "tenant_id": "acme", "analysis": "amd",
                "min_ambient_energy": 1, "initial_silence_ignore": 2000, "time_limit": 2250,
                "sensitivity": 4, "tones": {"FX": "2100 20", "BP": "1000 10"}, "log_top_freq": 0,
                "log_voice": false, "break_events": "AM,LV,FX", "total_timeout": 10000}}),
            json!({"event_name": "request_make_call", "event_data": {
                "gateway": "chime-1", "tenant_id": "acme", "to_number": "+918989898989",
                "from_number": "+91999999999", "event_subject": "botstream.result",
                "cpa_config": "my-cpa-1", "dial_timeout": 40, "call_params": {"client_id": "1234"},
                "channel_vars": {"park_after_bridge": "true", "sip_h_X-company": "acme"}}}),
            json!({"event_name": "request_drop_call", "event_data": {"call_uuid": UUID}}),
            json!({"event_name": "request_set_channel_vars", "event_data": {"call_uuid": UUID,
                "channel_vars": {"park_after_bridge": "true", "sip_h_X-company": "acme"}}}),
            json!({"event_name": "request_start_stream", "event_data": {"call_uuid": UUID,
                "websocket_host": "wss://voiceai.com", "websocket_port": 8000}}),
            json!({"event_name": "request_stop_stream", "event_data": {"call_uuid": UUID}}),
            json!({"event_name": "request_stop_play", "event_data": {"call_uuid": UUID}}),
            json!({"event_name": "request_bridge_call", "event_data": {"call_uuid": UUID,
                "gateway": "10001", "to_number": "+9189898989", "from_number": "+91999999999",
                "stop_stream": true, "dial_timeout": 40,
                "channel_vars": {"park_after_bridge": "true", "sip_h_X-company": "acme"}}}),
            json!({"event_name": "request_transfer_call", "event_data": {"call_uuid": UUID,
                "destination": "538ec253-af8e-4f35-af00-a9430130665e"}}),
            json!({"event_name": "request_snoop_on_call", "event_data": {"target_call_uuid": UUID,
                "listener_call_uuid": "538ec253-af8e-4f35-af00-a9430130665e"}}),
            json!({"event_name": "request_add_sip_gateway", "event_data": {
                "name": "gty1",
                "params": {"username": "acme_cust", "password": "djhfund", "realm": "172.16.17.12",
                    "proxy": "172.16.17.12;transport=udp", "from-user": "+14343220993",
                    "from-domain": "172.16.7.2", "register-transport": "udp", "register": "false",
                    "auth-calls": "false", "caller-id-in-from": "true"},
                "variables": {"rtp_secure_media": "false", "sip_h_X-Name": "lab_system"}}}),
            json!({"event_name": "request_get_sip_gateway", "event_data": {"name": "customer"}}),
            json!({"event_name": "request_delete_sip_gateway", "event_data": {"name": "customer"}}),
            json!({"event_name": "request_add_logical_gateway", "event_data": {
                "name": "logical_gty1", "gateways": [
                    {"name": "gateway_A", "weightage": 10, "max_limit": 100},
                    {"name": "gateway_B", "weightage": 20},
                    {"name": "gateway_C", "weightage": 10, "max_limit": 200}]}}),
            json!({"event_name": "request_delete_logical_gateway", "event_data": {"name": "customer"}}),
        ];
        for s in seeds {
            let name = s["event_name"].as_str().unwrap().to_string();
            let r = parse(s).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(r.name(), name);
        }
    }

    #[test]
    fn custom_headers_cannot_rewrite_the_dialog() {
        for name in [
            "Call-ID",
            "call-id",
            "i",
            "From",
            "CSeq",
            "Via",
            "Content-Length",
        ] {
            let r = parse(
                json!({"event_name": "request_set_channel_vars", "event_data": {
                "call_uuid": "8c0d8a1e-6a3b-4c3e-9a55-0d3f1d2a7b91",
                "channel_vars": {format!("sip_h_{name}"): "x"}}}),
            );
            assert_eq!(r.unwrap_err().1.code.code(), 135, "{name}");
        }
        let r = parse(
            json!({"event_name": "request_set_channel_vars", "event_data": {
            "call_uuid": "8c0d8a1e-6a3b-4c3e-9a55-0d3f1d2a7b91",
            "channel_vars": {"sip_h_X-Call-ID": "x"}}}),
        );
        assert!(r.is_ok());
    }

    #[test]
    fn seed_values_are_kept() {
        let r = parse(json!({"event_name": "request_make_call", "event_data": {
            "gateway": "chime-1", "tenant_id": "acme", "to_number": "+918989898989",
            "from_number": "+91999999999", "event_subject": "botstream.result",
            "cpa_config": "my-cpa-1", "dial_timeout": 40, "call_params": {"client_id": "1234"},
            "channel_vars": {"park_after_bridge": "true", "sip_h_X-company": "acme"}}}));
        let Request::MakeCall(m) = r.unwrap() else {
            panic!()
        };
        assert_eq!(m.gateway, "chime-1");
        assert_eq!(m.cpa_config.as_deref(), Some("my-cpa-1"));
        assert_eq!(m.dial_timeout, 40);
        assert_eq!(m.call_params.unwrap()["client_id"], json!("1234"));
        assert_eq!(m.channel_vars["sip_h_X-company"], "acme");
        let r = parse(
            json!({"event_name": "request_add_sip_gateway", "event_data": {
            "name": "gty1", "params": {"proxy": "172.16.17.12;transport=udp", "password": ""}}}),
        );
        let Request::AddSipGateway(g) = r.unwrap() else {
            panic!()
        };
        assert_eq!(
            g.params["password"], "",
            "empty params are kept: they mean remove"
        );
        assert!(g.variables.is_empty());
        let r = parse(
            json!({"event_name": "request_bridge_call", "event_data": {"call_uuid": UUID,
            "gateway": "10001", "to_number": "+9189898989", "from_number": "+91999999999",
            "stop_stream": false}}),
        );
        let Request::BridgeCall(b) = r.unwrap() else {
            panic!()
        };
        assert_eq!((b.stop_stream, b.dial_timeout), (false, 30));
        let r = parse(
            json!({"event_name": "request_bridge_call", "event_data": {"call_uuid": UUID,
            "gateway": "10001", "to_number": "+9189898989", "from_number": "+91999999999",
            "stop_stream": "true"}}),
        );
        assert_eq!(err(r).2, "stop_stream must be a boolean");
    }

    #[test]
    fn event_subjects_cannot_reach_jetstream_or_replies() {
        for bad in [
            "$JS.API.STREAM.DELETE.KV_botstream_gateways",
            "$KV.botstream_gateways.x",
            "$SYS.REQ.SERVER.PING",
            "$G",
            "_INBOX.abc.def",
            "_inbox.x",
            "app.*",
            "app.>",
            ">",
            "app..events",
            ".app",
            "app.",
            "app events",
            "app\tevents",
        ] {
            let d = with(make_call_data(), "event_subject", json!(bad));
            let (_, code, status) = err(req("request_make_call", d));
            assert_eq!(code, StatusCode::SchemaViolation, "{bad}: {status}");
            assert!(status.contains("event_subject"), "{status}");
            let cpa = json!({"va_config_name": "c", "tenant_id": "t", "analysis": "amd", "event_subject": bad});
            let (_, code, _) = err(req("request_set_cpa_params", cpa));
            assert_eq!(code, StatusCode::SchemaViolation, "cpa {bad}");
        }
        let long = "a".repeat(MAX_SUBJECT_LEN + 1);
        let d = with(make_call_data(), "event_subject", json!(long));
        assert_eq!(
            err(req("request_make_call", d)).1,
            StatusCode::SchemaViolation
        );
        for good in ["app.events", "botstream.result", "tenant-1.calls_x.$x", "a"] {
            let d = with(make_call_data(), "event_subject", json!(good));
            assert!(req("request_make_call", d).is_ok(), "{good}");
        }
    }
}
