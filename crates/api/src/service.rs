//! The NATS API (api.md §1–§3): one subscription in the queue group `botstream`, one reply per
//! request within 5 s, and the handlers that check a request, gather what it needs (gateway,
//! ports, DNS, CPA configuration) and hand it to the call core. Also the admission of inbound
//! INVITEs, which the core hands here for the same reasons.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Map, Value};
use sip_core::msg::{NameAddr, Request, Uri};
use sip_core::transaction::response_to;
use sip_core::{sdp, Peer, TxId};

use crate::board::{self, Command, Destination, Dial, EventTarget, MediaInfo, MediaRequest};
use crate::cause::HangupCause;
use crate::error::{reply_json, ApiError, StatusCode};
use crate::request::{self, Request as ApiRequest};
use crate::shell::LegResources;
use crate::switch::Switch;

/// Every request is answered within this, whatever a handler is waiting for (api.md §1: 5 s on
/// the client side, so leave room for the trip back).
const REPLY_BUDGET: Duration = Duration::from_millis(4500);

/// Serves the API until the subscription ends (on drain, the caller unsubscribes). `direct` is
/// the pod's own subject, where other pods forward requests for this pod's calls; those are
/// never forwarded again.
pub async fn serve(sw: Arc<Switch>, mut sub: async_nats::Subscriber, direct: bool) {
    while let Some(msg) = sub.next().await {
        let sw = sw.clone();
        tokio::spawn(async move {
            let (name, reply) = handle_bytes(&sw, &msg.payload, !direct).await;
            let code = reply["status_code"].as_u64().unwrap_or(0) as u16;
            // Names of refused envelopes come from the client: one label for all of them keeps
            // the metric's cardinality bounded whatever is sent.
            let label = if matches!(code, 128 | 134 | 139) {
                "invalid"
            } else {
                name.as_str()
            };
            sw.metrics.count_request(label, code);
            if let Some(to) = msg.reply {
                let bytes = serde_json::to_vec(&reply).unwrap_or_default();
                if let Err(e) = sw.nats.publish(to, bytes.into()).await {
                    tracing::warn!(error = %e, request = %name, "reply not sent");
                }
            }
        });
    }
}

/// Parses, validates and runs one request; returns its name and reply. With `may_forward`, a
/// request for a call another pod owns is answered by that pod.
pub async fn handle_bytes(sw: &Arc<Switch>, bytes: &[u8], may_forward: bool) -> (String, Value) {
    let req = match request::parse_request(bytes) {
        Ok(r) => r,
        Err((name, e)) => return (name.clone(), reply_json(&name, Err(e))),
    };
    let name = req.name().to_string();
    if let (true, Some(uuid)) = (may_forward, call_uuid_of(&req)) {
        if !sw.calls.contains_key(uuid) {
            if let Some(reply) = forward(sw, uuid, &name, bytes).await {
                return (name, reply);
            }
        }
    }
    let result = match tokio::time::timeout(REPLY_BUDGET, handle(sw, req)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            timeout_code(&name),
            format!("{name} did not complete in time"),
        )),
    };
    if let Err(e) = &result {
        tracing::info!(request = %name, code = e.code.code(), status = %e.status, "request refused");
    }
    (name.clone(), reply_json(&name, result))
}

/// Hands a request to the pod that owns the call; `None` when no other pod has it.
async fn forward(sw: &Switch, uuid: &str, name: &str, bytes: &[u8]) -> Option<Value> {
    let entry = sw.directory.lookup(uuid).await?;
    if entry.pod == sw.cfg.pod_id {
        return None;
    }
    if !entry.live {
        let e = ApiError::new(StatusCode::CallEnded, format!("call {uuid} has ended"));
        return Some(reply_json(name, Err(e)));
    }
    let subject = crate::directory::pod_subject(&sw.cfg.api_subject, &entry.pod);
    let reply = tokio::time::timeout(
        Duration::from_millis(3500),
        sw.nats.request(subject, bytes.to_vec().into()),
    )
    .await;
    match reply {
        Ok(Ok(msg)) => serde_json::from_slice(&msg.payload).ok(),
        // The owner is gone (no responders) or silent: its calls went with it.
        _ => {
            let e = ApiError::new(
                StatusCode::CallEnded,
                format!("call {uuid} was on pod {} which does not answer", entry.pod),
            );
            Some(reply_json(name, Err(e)))
        }
    }
}

/// The code a request reports when it runs out of time: its own failure code of §6.
fn timeout_code(name: &str) -> StatusCode {
    match name {
        "request_set_cpa_params" => StatusCode::CpaStoreFailed,
        "request_make_call" => StatusCode::DialFailed,
        "request_set_channel_vars" => StatusCode::ChannelVarsFailed,
        "request_add_sip_gateway" => StatusCode::InvalidGatewayConfig,
        "request_delete_sip_gateway" | "request_delete_logical_gateway" => {
            StatusCode::DeleteGatewayFailed
        }
        "request_get_sip_gateway" => StatusCode::GetGatewayFailed,
        "request_stop_play" => StatusCode::StopPlayFailed,
        _ => StatusCode::InvalidRequest,
    }
}

type Reply = Result<Map<String, Value>, ApiError>;

fn ok() -> Reply {
    Ok(Map::new())
}

async fn handle(sw: &Arc<Switch>, req: ApiRequest) -> Reply {
    match req {
        ApiRequest::SetCpaParams(p) => {
            sw.cpa_configs
                .put(p)
                .await
                .map_err(|e| ApiError::new(StatusCode::CpaStoreFailed, e))?;
            ok()
        }
        ApiRequest::MakeCall(m) => make_call(sw, m).await,
        ApiRequest::DropCall(d) => {
            let cmd = Command::Drop {
                uuid: d.call_uuid.clone(),
                cause: d.cause,
            };
            to_call(sw, &d.call_uuid, cmd).await
        }
        ApiRequest::SetChannelVars(v) => {
            let cmd = Command::SetVars {
                uuid: v.call_uuid.clone(),
                vars: v.channel_vars,
            };
            to_call(sw, &v.call_uuid, cmd)
                .await
                .map_err(|e| match e.code {
                    StatusCode::NoSuchCall | StatusCode::CallEnded => e,
                    _ => ApiError::new(StatusCode::ChannelVarsFailed, e.status),
                })
        }
        ApiRequest::GetCall(g) => {
            let cmd = Command::GetCall {
                uuid: g.call_uuid.clone(),
            };
            to_call(sw, &g.call_uuid, cmd).await
        }
        ApiRequest::ListCalls(l) => {
            // Across all pods, from the shared directory.
            let calls: Vec<Value> = sw
                .directory
                .live(l.tenant_id.as_deref())
                .await
                .into_iter()
                .map(|(uuid, e)| json!({"call_uuid": uuid, "tenant_id": e.tenant_id, "dialer_pod_id": e.pod, "state": "live"}))
                .collect();
            let mut m = Map::new();
            m.insert("calls".into(), Value::Array(calls));
            Ok(m)
        }
        ApiRequest::AddSipGateway(a) => {
            let old = sw.store.get_gateway(&a.name).await.map_err(|e| {
                ApiError::new(
                    StatusCode::InvalidGatewayConfig,
                    format!("gateway store: {e}"),
                )
            })?;
            let merged = gateway::config::merge(old.as_ref(), &a.name, &a.params, &a.variables);
            gateway::GatewayConfig::from_stored(&merged).map_err(|e| {
                ApiError::new(
                    StatusCode::InvalidGatewayConfig,
                    format!("gateway '{}': {e}", a.name),
                )
            })?;
            sw.store.put_gateway(&merged).await.map_err(|e| {
                ApiError::new(
                    StatusCode::InvalidGatewayConfig,
                    format!("gateway store: {e}"),
                )
            })?;
            // Applied here too so the next request on this pod sees it even before the watch.
            sw.registry.apply_gateway(&merged);
            ok()
        }
        ApiRequest::GetSipGateway(g) => {
            let name = g.name.as_deref().filter(|n| !n.is_empty() && *n != "*");
            let views = sw.registry.get_gateways(name);
            if let (Some(n), true) = (name, views.is_empty()) {
                return Err(ApiError::new(
                    StatusCode::GetGatewayFailed,
                    format!("gateway '{n}' does not exist"),
                ));
            }
            let mut m = Map::new();
            m.insert(
                "gateways".into(),
                serde_json::to_value(views).unwrap_or(Value::Null),
            );
            Ok(m)
        }
        ApiRequest::DeleteSipGateway(d) => {
            if !sw.registry.has_gateway(&d.name) {
                return Err(ApiError::new(
                    StatusCode::DeleteGatewayFailed,
                    format!("gateway '{}' does not exist", d.name),
                ));
            }
            sw.store.delete_gateway(&d.name).await.map_err(|e| {
                ApiError::new(
                    StatusCode::DeleteGatewayFailed,
                    format!("gateway store: {e}"),
                )
            })?;
            sw.registry.remove_gateway(&d.name).await;
            ok()
        }
        ApiRequest::AddLogicalGateway(a) => {
            let lg = gateway::LogicalGateway {
                name: a.name.clone(),
                gateways: a
                    .gateways
                    .iter()
                    .map(|m| gateway::Member {
                        name: m.name.clone(),
                        weightage: m.weightage,
                        max_limit: m.max_limit,
                    })
                    .collect(),
            };
            sw.store.put_logical(&lg).await.map_err(|e| {
                ApiError::new(
                    StatusCode::InvalidGatewayConfig,
                    format!("gateway store: {e}"),
                )
            })?;
            sw.registry.apply_logical(lg);
            ok()
        }
        ApiRequest::GetLogicalGateway(g) => {
            let name = g.name.as_deref().filter(|n| !n.is_empty() && *n != "*");
            let list = sw.registry.get_logical(name);
            if let (Some(n), true) = (name, list.is_empty()) {
                return Err(ApiError::new(
                    StatusCode::GetGatewayFailed,
                    format!("logical gateway '{n}' does not exist"),
                ));
            }
            let mut m = Map::new();
            m.insert("logical_gateways".into(), Value::Array(list));
            Ok(m)
        }
        ApiRequest::DeleteLogicalGateway(d) => {
            if !sw.registry.has_logical(&d.name) {
                return Err(ApiError::new(
                    StatusCode::DeleteGatewayFailed,
                    format!("logical gateway '{}' does not exist", d.name),
                ));
            }
            sw.store.delete_logical(&d.name).await.map_err(|e| {
                ApiError::new(
                    StatusCode::DeleteGatewayFailed,
                    format!("gateway store: {e}"),
                )
            })?;
            sw.registry.remove_logical(&d.name);
            ok()
        }
        ApiRequest::StartStream(x) => {
            let uuid = x.call_uuid.clone();
            media_request(sw, &uuid, MediaRequest::StartStream(Box::new(x))).await
        }
        ApiRequest::StopStream(x) => {
            media_request(sw, &x.call_uuid, MediaRequest::StopStream).await
        }
        ApiRequest::StopPlay(x) => media_request(sw, &x.call_uuid, MediaRequest::StopPlay).await,
        ApiRequest::SendDtmf(x) => {
            media_request(
                sw,
                &x.call_uuid,
                MediaRequest::SendDtmf {
                    digits: x.digits,
                    duration_ms: x.duration_ms,
                },
            )
            .await
        }
        ApiRequest::StartRecord(x) => {
            let rel = x
                .path
                .clone()
                .unwrap_or_else(|| format!("recordings/{}.wav", x.call_uuid));
            let path = sw.data_dir.join(rel);
            media_request(sw, &x.call_uuid, MediaRequest::StartRecord { path }).await
        }
        ApiRequest::StopRecord(x) => {
            media_request(sw, &x.call_uuid, MediaRequest::StopRecord).await
        }
        ApiRequest::BridgeCall(b) => bridge_call(sw, b).await,
        ApiRequest::TransferCall(t) => {
            let destination = destination(sw, &t.destination)?;
            let cmd = Command::Transfer {
                uuid: t.call_uuid.clone(),
                destination,
            };
            to_call(sw, &t.call_uuid, cmd).await
        }
        ApiRequest::SnoopOnCall(s) => {
            if !sw.calls.contains_key(&s.listener_call_uuid) {
                return Err(sw.missing_call(&s.listener_call_uuid));
            }
            let cmd = Command::Snoop {
                target: s.target_call_uuid.clone(),
                listener: s.listener_call_uuid,
                mode: s.mode,
            };
            to_call(sw, &s.target_call_uuid, cmd).await
        }
    }
}

/// A request for a call of this pod, to the call core; 107/108 when the pod has no such call.
async fn to_call(sw: &Switch, uuid: &str, cmd: Command) -> Reply {
    if !sw.calls.contains_key(uuid) {
        return Err(sw.missing_call(uuid));
    }
    sw.board.request(cmd, None).await
}

/// Hands a media request to the call and waits for its answer (the stream handshake included).
async fn media_request(sw: &Switch, uuid: &str, request: MediaRequest) -> Reply {
    let cmd = Command::Media {
        uuid: uuid.to_string(),
        request,
    };
    to_call(sw, uuid, cmd).await
}

fn call_uuid_of(r: &ApiRequest) -> Option<&str> {
    Some(match r {
        ApiRequest::DropCall(x) => &x.call_uuid,
        ApiRequest::SetChannelVars(x) => &x.call_uuid,
        ApiRequest::GetCall(x) => &x.call_uuid,
        ApiRequest::StartStream(x) => &x.call_uuid,
        ApiRequest::StopStream(x) => &x.call_uuid,
        ApiRequest::StopPlay(x) => &x.call_uuid,
        ApiRequest::BridgeCall(x) => &x.call_uuid,
        ApiRequest::TransferCall(x) => &x.call_uuid,
        ApiRequest::SnoopOnCall(x) => &x.target_call_uuid,
        ApiRequest::SendDtmf(x) => &x.call_uuid,
        ApiRequest::StartRecord(x) => &x.call_uuid,
        ApiRequest::StopRecord(x) => &x.call_uuid,
        _ => return None,
    })
}

/// `request_transfer_call`'s destination (api.md §3.9): a dial-plan name, a SIP URI, or a number.
/// Whatever enters the REFER's Refer-To is checked here, so nothing can break out of it.
fn destination(sw: &Switch, d: &str) -> Result<Destination, ApiError> {
    if let Some(uri) = sw.cfg.dialplan.get(d) {
        return Ok(Destination::Uri(uri.clone()));
    }
    let lower = d.to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        let ok = !d.contains(['<', '>', '"']) && Uri::parse(d).is_some();
        return if ok {
            Ok(Destination::Uri(d.to_string()))
        } else {
            Err(ApiError::schema(format!(
                "destination '{d}' is not a valid SIP URI"
            )))
        };
    }
    if !d.is_empty() && d.chars().all(|c| c.is_ascii_digit() || "+*#".contains(c)) {
        return Ok(Destination::Number(d.to_string()));
    }
    Err(ApiError::schema(format!(
        "destination '{d}' is not a dial-plan name, a sip: URI or a number"
    )))
}

/// What could end a URI's user part, start its parameters or headers, or leave a quoted name.
const FORBIDDEN_IN_NUMBERS: &str = "<>\";@:,?&=%\\";

/// Numbers land inside SIP URIs and From: anything that could break out of one is refused
/// (135) before it reaches a request.
fn check_numbers(fields: &[(&str, &str)]) -> Result<(), ApiError> {
    for (field, value) in fields {
        if value.is_empty()
            || value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || FORBIDDEN_IN_NUMBERS.contains(c))
        {
            return Err(ApiError::schema(format!(
                "{field} contains characters not allowed in a SIP URI"
            )));
        }
    }
    Ok(())
}

/// operator.md `[[tenants]]` (see `quota::admit`): the reservation holds the tenant's place
/// until the call is counted as started.
fn check_tenant(sw: &Switch, tenant: &str) -> Result<Option<crate::quota::Reservation>, ApiError> {
    crate::quota::admit(
        &sw.cfg.tenants,
        sw.cfg.tenants_enforce,
        &sw.tenant_counts,
        tenant,
        std::time::SystemTime::now(),
    )
}

/// What an outbound leg needs before it can dial: a gateway chosen and counted, ports, the next
/// hop resolved.
struct Prepared {
    gateway: Arc<gateway::GatewayConfig>,
    up: bool,
    peer: Option<Peer>,
    media: MediaInfo,
    resources: LegResources,
}

async fn prepare(sw: &Switch, gateway_name: &str) -> Result<Prepared, ApiError> {
    let selected = sw.registry.select(gateway_name).map_err(|e| match e {
        gateway::SelectError::Unknown(s) => ApiError::new(StatusCode::DialFailed, s),
        gateway::SelectError::AllBusy(s) => ApiError::new(StatusCode::Throttled, s),
    })?;
    let lease = sw
        .ports
        .allocate()
        .ok_or_else(|| ApiError::new(StatusCode::CannotAddCall, "no free RTP port"))?;
    let peer = match selected.up {
        true => gateway::agent::resolve(selected.config.next_hop()).await,
        false => None,
    };
    let leg = sw.board.new_leg();
    let media = MediaInfo {
        port: lease.port,
        session_id: rand::random::<u32>() as u64,
    };
    Ok(Prepared {
        gateway: selected.config,
        up: selected.up,
        peer,
        media,
        resources: LegResources {
            leg,
            lease,
            slot: Some(selected.slot),
        },
    })
}

async fn make_call(sw: &Arc<Switch>, m: request::MakeCall) -> Reply {
    if sw.is_draining() {
        return Err(ApiError::new(
            StatusCode::CannotAddCall,
            "the switch is shutting down",
        ));
    }
    check_numbers(&[("to_number", &m.to_number), ("from_number", &m.from_number)])?;
    // Held until the board has started the call (it is counted as live by then).
    let _place = check_tenant(sw, &m.tenant_id)?;
    let cpa = match &m.cpa_config {
        Some(c) => Some(sw.cpa_configs.get(c).await.ok_or_else(|| {
            ApiError::new(
                StatusCode::UnknownCpaConfig,
                format!("cpa_config '{c}' does not exist"),
            )
        })?),
        None => None,
    };
    let p = prepare(sw, &m.gateway).await?;
    let uuid = uuid::Uuid::new_v4().to_string();
    tracing::info!(call_uuid = %uuid, gateway = %m.gateway, "make_call");
    let dial = Dial {
        leg: p.resources.leg,
        uuid,
        target: EventTarget {
            subject: m.event_subject,
            tenant_id: m.tenant_id,
            call_params: m.call_params,
        },
        to_number: m.to_number,
        from_number: m.from_number,
        gateway: p.gateway,
        gateway_up: p.up,
        peer: p.peer,
        dial_timeout: Duration::from_secs(m.dial_timeout as u64),
        max_call: m.max_call_secs.map(|s| Duration::from_secs(s as u64)),
        vars: m.channel_vars,
        record: m.record,
        cpa,
        media: p.media,
    };
    let cmd = Command::Dial {
        dial: Box::new(dial),
        bridge: None,
    };
    sw.board.request(cmd, Some(p.resources)).await
}

/// `request_bridge_call` (api.md §3.8): the agent leg, through a SIP or logical gateway, with its
/// events on the call's subject.
async fn bridge_call(sw: &Arc<Switch>, b: request::BridgeCall) -> Reply {
    if !sw.calls.contains_key(&b.call_uuid) {
        return Err(sw.missing_call(&b.call_uuid));
    }
    if sw.is_draining() {
        return Err(ApiError::new(
            StatusCode::CannotAddCall,
            "the switch is shutting down",
        ));
    }
    check_numbers(&[("to_number", &b.to_number), ("from_number", &b.from_number)])?;
    let p = prepare(sw, &b.gateway).await?;
    let uuid = uuid::Uuid::new_v4().to_string();
    tracing::info!(call_uuid = %uuid, bridged_call_uuid = %b.call_uuid, gateway = %b.gateway, "bridge_call");
    let dial = Dial {
        leg: p.resources.leg,
        uuid,
        // The board gives the agent leg the call's subject, tenant and call_params.
        target: EventTarget {
            subject: String::new(),
            tenant_id: String::new(),
            call_params: None,
        },
        to_number: b.to_number,
        from_number: b.from_number,
        gateway: p.gateway,
        gateway_up: p.up,
        peer: p.peer,
        dial_timeout: Duration::from_secs(b.dial_timeout as u64),
        max_call: None,
        vars: b.channel_vars,
        record: false,
        cpa: None,
        media: p.media,
    };
    let cmd = Command::Dial {
        dial: Box::new(dial),
        bridge: Some(board::Bridge {
            call_uuid: b.call_uuid,
            stop_stream: b.stop_stream,
        }),
    };
    sw.board.request(cmd, Some(p.resources)).await
}

fn reject(sw: &Switch, tx: TxId, req: &Request, code: u16, cause: Option<HangupCause>) {
    let mut r = response_to(req, code, Some(&sip_core::dialog::new_tag()));
    r.headers.push("Server", sw.local.user_agent.clone());
    if let Some(c) = cause {
        r.headers
            .push("Reason", crate::cause::reason_header_value(c));
    }
    sw.stack.respond(tx, r);
}

/// An INVITE from outside, handed over by the call core: ACL, shutdown, extensions, codec, ports,
/// route. Refused here with the right response, or returned for the core to answer.
pub fn admit_inbound(
    sw: &Arc<Switch>,
    tx: TxId,
    req: Request,
    source: Peer,
) -> Option<(board::Inbound, LegResources)> {
    let from_trunk = sw.registry.gateway_for_source(source.addr.ip());
    let allowed = sw
        .cfg
        .inbound_acl
        .iter()
        .any(|c| c.contains(source.addr.ip()))
        || from_trunk.is_some();
    if !allowed {
        tracing::warn!(from = %source.addr, "inbound INVITE refused by the ACL");
        reject(
            sw,
            tx,
            &req,
            403,
            HangupCause::from_name("INCOMING_CALL_BARRED"),
        );
        return None;
    }
    if sw.is_draining() {
        reject(sw, tx, &req, 503, Some(HangupCause::SYSTEM_SHUTDOWN));
        return None;
    }
    // RFC 3261 §8.2.2.3: of the extensions a caller may require, we support RFC 4028 timers.
    let unsupported: Vec<&str> = req
        .headers
        .get_all("Require")
        .into_iter()
        .filter(|e| !e.trim().eq_ignore_ascii_case("timer"))
        .collect();
    if !unsupported.is_empty() {
        let mut r = response_to(&req, 420, Some(&sip_core::dialog::new_tag()));
        r.headers.push("Unsupported", unsupported.join(", "));
        sw.stack.respond(tx, r);
        return None;
    }
    let Some(uri) = Uri::parse(&req.uri).filter(|u| u.scheme == "sip" || u.scheme == "sips") else {
        reject(sw, tx, &req, 416, None);
        return None;
    };
    let remote = sdp::parse(&req.body);
    let Some(remote) = remote.filter(|r| !r.codecs.is_empty()) else {
        // No offer we can answer (no SDP, or no G.711): 488 (RFC 3264 §6).
        reject(
            sw,
            tx,
            &req,
            488,
            HangupCause::from_name("INCOMPATIBLE_DESTINATION"),
        );
        return None;
    };
    let to_number = req
        .headers
        .get("To")
        .and_then(NameAddr::parse)
        .and_then(|n| Uri::parse(&n.uri))
        .and_then(|u| u.user)
        .or(uri.user.clone())
        .unwrap_or_default();
    let from_number = req
        .headers
        .get("From")
        .and_then(NameAddr::parse)
        .and_then(|n| Uri::parse(&n.uri))
        .and_then(|u| u.user)
        .unwrap_or_default();
    let route = sw.inbound_route(&to_number);
    if check_tenant(sw, &route.tenant_id).is_err() {
        reject(
            sw,
            tx,
            &req,
            503,
            HangupCause::from_name("NORMAL_CIRCUIT_CONGESTION"),
        );
        return None;
    }
    let Some(lease) = sw.ports.allocate() else {
        reject(
            sw,
            tx,
            &req,
            503,
            HangupCause::from_name("RESOURCE_UNAVAILABLE"),
        );
        return None;
    };
    let uuid = uuid::Uuid::new_v4().to_string();
    let slot = from_trunk
        .as_ref()
        .map(|g| sw.registry.inbound_slot(&g.name));
    tracing::info!(call_uuid = %uuid, from = %from_number, to = %to_number, "inbound call");
    let leg = sw.board.new_leg();
    let media = MediaInfo {
        port: lease.port,
        session_id: rand::random::<u32>() as u64,
    };
    let inbound = board::Inbound {
        leg,
        uuid,
        tx,
        invite: req,
        source,
        from_number,
        to_number,
        target: EventTarget {
            subject: route.event_subject,
            tenant_id: route.tenant_id,
            call_params: route.call_params,
        },
        remote,
        media,
        gateway: from_trunk,
    };
    Some((inbound, LegResources { leg, lease, slot }))
}

/// SIGTERM (operator.md): refuse new calls, wait up to `drain` for calls to end, then end the
/// rest with SYSTEM_SHUTDOWN. Bounded by `drain` + 5 s whatever NATS is doing.
pub async fn drain(sw: &Arc<Switch>, drain: Duration) {
    sw.draining.store(true, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + drain;
    while !sw.calls.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    end_calls(sw).await;
}

/// Ends every call now (BYE or CANCEL with Reason SYSTEM_SHUTDOWN, 503 to new INVITEs) and waits
/// up to 5 s for them to be gone.
pub async fn end_calls(sw: &Arc<Switch>) {
    sw.draining.store(true, Ordering::Relaxed);
    sw.board.send(Command::Shutdown);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !sw.calls.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_that_could_break_out_of_a_uri_are_refused() {
        for ok in ["+15551234567", "2001", "*67#", "agent.queue-1"] {
            assert!(check_numbers(&[("to_number", ok)]).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1 2",
            "1\r\nVia: x",
            "1@evil.example",
            "1;transport=tcp",
            "1>",
            "\"1",
            "1?X=y",
            "1:5060",
            "1,2",
            "1%0d",
            "1\\",
        ] {
            let e = check_numbers(&[("from_number", bad)]).expect_err(bad);
            assert_eq!(e.code.code(), 135, "{bad}");
        }
    }
}
