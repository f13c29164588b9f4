//! The NATS API (api.md §1–§3): one subscription in the queue group `botstream`, one reply per
//! request within 5 s, and the handlers that turn requests into call tasks and gateway changes.
//! Also the SIP front door: requests that belong to no call.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Map, Value};
use sip_core::io::ServerEvent;
use sip_core::msg::{NameAddr, Request, Uri};
use sip_core::sdp;
use sip_core::transaction::response_to;
use sip_core::{Peer, TxId};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::call::{self, InboundCall, MediaRequest, MediaSession, OutboundCall};
use crate::cause::HangupCause;
use crate::error::{reply_json, ApiError, StatusCode};
use crate::events::EventSink;
use crate::request::{self, Request as ApiRequest};
use crate::switch::{CallCommand, CallHandle, Switch};

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
            let (done, rx) = oneshot::channel();
            send_to_call(
                sw,
                &d.call_uuid,
                CallCommand::Drop {
                    cause: d.cause,
                    done,
                },
            )?;
            rx.await
                .unwrap_or_else(|_| Err(ended_meanwhile(&d.call_uuid)))?;
            ok()
        }
        ApiRequest::SetChannelVars(v) => {
            let (done, rx) = oneshot::channel();
            send_to_call(
                sw,
                &v.call_uuid,
                CallCommand::SetVars {
                    vars: v.channel_vars,
                    done,
                },
            )?;
            rx.await.unwrap_or_else(|_| {
                Err(ApiError::new(
                    StatusCode::ChannelVarsFailed,
                    "the call ended",
                ))
            })?;
            ok()
        }
        ApiRequest::GetCall(g) => {
            let (done, rx) = oneshot::channel();
            send_to_call(sw, &g.call_uuid, CallCommand::Info { done })?;
            let info = rx.await.map_err(|_| ended_meanwhile(&g.call_uuid))?;
            let mut m = Map::new();
            m.insert("call".into(), info);
            Ok(m)
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
        other => {
            // The call must exist before "not implemented" is the answer an app can act on.
            let uuid = call_uuid_of(&other);
            if let Some(u) = uuid {
                if !sw.calls.contains_key(u) {
                    return Err(sw.missing_call(u));
                }
            }
            Err(ApiError::new(
                StatusCode::UnknownRequest,
                format!("{} is not implemented yet", other.name()),
            ))
        }
    }
}

/// Hands a media request to the call and waits for its answer (the stream handshake included).
async fn media_request(sw: &Switch, uuid: &str, request: MediaRequest) -> Reply {
    let (done, rx) = oneshot::channel();
    send_to_call(sw, uuid, CallCommand::Media { request, done })?;
    rx.await.unwrap_or_else(|_| Err(ended_meanwhile(uuid)))
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

/// The call was there but its task ended before acting: it is ending or has ended (108), even if
/// it is not yet listed among the ended calls.
fn ended_meanwhile(uuid: &str) -> ApiError {
    ApiError::new(StatusCode::CallEnded, format!("call {uuid} has ended"))
}

fn send_to_call(sw: &Switch, uuid: &str, cmd: CallCommand) -> Result<(), ApiError> {
    match sw.calls.get(uuid) {
        Some(h) => h.commands.send(cmd).map_err(|_| ended_meanwhile(uuid)),
        None => Err(sw.missing_call(uuid)),
    }
}

/// operator.md `[[tenants]]`: 111 for an unknown tenant, 112 at its limit.
fn check_tenant(sw: &Switch, tenant: &str) -> Result<(), ApiError> {
    if !sw.cfg.tenants_enforce {
        return Ok(());
    }
    let Some(limit) = sw.cfg.tenants.get(tenant) else {
        return Err(ApiError::new(
            StatusCode::TenantUnknown,
            format!("tenant '{tenant}' is not configured"),
        ));
    };
    if sw.tenant_calls(tenant) >= *limit as usize {
        return Err(ApiError::new(
            StatusCode::QuotaExhausted,
            format!("tenant '{tenant}' is at its limit of {limit} concurrent calls"),
        ));
    }
    Ok(())
}

async fn make_call(sw: &Arc<Switch>, m: request::MakeCall) -> Reply {
    if sw.is_draining() {
        return Err(ApiError::new(
            StatusCode::CannotAddCall,
            "the switch is shutting down",
        ));
    }
    for (field, value) in [("to_number", &m.to_number), ("from_number", &m.from_number)] {
        // These land inside SIP URIs; anything that could break out of one is refused here.
        if value
            .chars()
            .any(|c| c.is_whitespace() || "<>\";@:,?&=".contains(c))
        {
            return Err(ApiError::schema(format!(
                "{field} contains characters not allowed in a SIP URI"
            )));
        }
    }
    check_tenant(sw, &m.tenant_id)?;
    let cpa = match &m.cpa_config {
        Some(c) => Some(sw.cpa_configs.get(c).await.ok_or_else(|| {
            ApiError::new(
                StatusCode::UnknownCpaConfig,
                format!("cpa_config '{c}' does not exist"),
            )
        })?),
        None => None,
    };
    let selected = sw.registry.select(&m.gateway).map_err(|e| match e {
        gateway::SelectError::Unknown(s) => ApiError::new(StatusCode::DialFailed, s),
        gateway::SelectError::AllBusy(s) => ApiError::new(StatusCode::Throttled, s),
    })?;
    let lease = sw
        .ports
        .allocate()
        .ok_or_else(|| ApiError::new(StatusCode::CannotAddCall, "no free RTP port"))?;
    let uuid = uuid::Uuid::new_v4().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    sw.call_started(
        &uuid,
        CallHandle {
            tenant_id: m.tenant_id.clone(),
            commands: tx,
        },
    );
    let events = EventSink {
        nats: sw.nats.clone(),
        subject: m.event_subject.clone(),
        call_uuid: uuid.clone(),
        tenant_id: m.tenant_id.clone(),
        call_params: m.call_params.clone(),
    };
    let call = OutboundCall {
        sw: sw.clone(),
        uuid: uuid.clone(),
        to_number: m.to_number,
        from_number: m.from_number,
        dial_timeout: Duration::from_secs(m.dial_timeout as u64),
        max_call_secs: m.max_call_secs,
        vars: m.channel_vars,
        gateway: selected.config,
        gateway_up: selected.up,
        slot: selected.slot,
        media: MediaSession::new(lease, sw.media.clone()),
        record: m.record,
        cpa,
        events,
    };
    tracing::info!(call_uuid = %uuid, gateway = %m.gateway, "make_call");
    // Every log line of the call task carries its call_uuid (operator.md "Logs").
    tokio::spawn(
        call.run(rx)
            .instrument(tracing::info_span!("call", call_uuid = %uuid)),
    );
    let mut reply = Map::new();
    reply.insert("call_uuid".into(), Value::from(uuid));
    reply.insert("dialer_pod_id".into(), Value::from(sw.cfg.pod_id.clone()));
    Ok(reply)
}

/// Requests outside any call: new INVITEs, OPTIONS, strays.
pub async fn front_door(sw: Arc<Switch>, mut incoming: mpsc::UnboundedReceiver<ServerEvent>) {
    while let Some(ev) = incoming.recv().await {
        if let ServerEvent::Request {
            tx: Some(tx),
            request,
            source,
        } = ev
        {
            out_of_dialog(&sw, tx, *request, source);
        }
    }
}

fn reject(sw: &Switch, tx: TxId, req: &Request, code: u16, cause: Option<HangupCause>) {
    let mut r = response_to(req, code, Some(&sip_core::dialog::new_tag()));
    r.headers.push("Server", sw.local.user_agent.clone());
    if let Some(c) = cause {
        r.headers.push("Reason", call::reason(c));
    }
    if code == 405 {
        r.headers.push("Allow", call::ALLOW);
    }
    sw.stack.respond(tx, r);
}

fn out_of_dialog(sw: &Arc<Switch>, tx: TxId, req: Request, source: Peer) {
    let to_tagged = req
        .headers
        .get("To")
        .and_then(NameAddr::parse)
        .is_some_and(|n| n.tag().is_some());
    match req.method.as_str() {
        "OPTIONS" => {
            let mut r = response_to(&req, 200, Some(&sip_core::dialog::new_tag()));
            r.headers.push("Allow", call::ALLOW);
            r.headers.push("Accept", "application/sdp");
            r.headers.push("Server", sw.local.user_agent.clone());
            sw.stack.respond(tx, r);
        }
        "INVITE" if !to_tagged => inbound_invite(sw, tx, req, source),
        // In-dialog requests for a dialog we do not have (RFC 3261 §12.2.2).
        "INVITE" | "BYE" | "UPDATE" | "INFO" | "REFER" | "NOTIFY" | "PRACK" => {
            reject(sw, tx, &req, 481, None)
        }
        "REGISTER" | "SUBSCRIBE" | "MESSAGE" | "PUBLISH" => reject(sw, tx, &req, 405, None),
        _ => reject(sw, tx, &req, 501, None),
    }
}

/// An INVITE from outside: ACL, shutdown, extensions, codec, ports, route — then a call task.
fn inbound_invite(sw: &Arc<Switch>, tx: TxId, req: Request, source: Peer) {
    let allowed = sw
        .cfg
        .inbound_acl
        .iter()
        .any(|c| c.contains(source.addr.ip()))
        || sw.registry.gateway_for_source(source.addr.ip()).is_some();
    if !allowed {
        tracing::warn!(from = %source.addr, "inbound INVITE refused by the ACL");
        return reject(
            sw,
            tx,
            &req,
            403,
            HangupCause::from_name("INCOMING_CALL_BARRED"),
        );
    }
    if sw.is_draining() {
        return reject(sw, tx, &req, 503, Some(HangupCause::SYSTEM_SHUTDOWN));
    }
    // RFC 3261 §8.2.2.3: we support no extensions a caller could require.
    if let Some(req_ext) = req.headers.get("Require") {
        let mut r = response_to(&req, 420, Some(&sip_core::dialog::new_tag()));
        r.headers.push("Unsupported", req_ext.to_string());
        return sw.stack.respond(tx, r);
    }
    let Some(uri) = Uri::parse(&req.uri).filter(|u| u.scheme == "sip" || u.scheme == "sips") else {
        return reject(sw, tx, &req, 416, None);
    };
    let remote = sdp::parse(&req.body);
    let Some(remote) = remote.filter(|r| !r.codecs.is_empty()) else {
        // No offer we can answer (no SDP, or no G.711): 488 (RFC 3264 §6).
        return reject(
            sw,
            tx,
            &req,
            488,
            HangupCause::from_name("INCOMPATIBLE_DESTINATION"),
        );
    };
    let Some(lease) = sw.ports.allocate() else {
        return reject(
            sw,
            tx,
            &req,
            503,
            HangupCause::from_name("RESOURCE_UNAVAILABLE"),
        );
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
        return reject(
            sw,
            tx,
            &req,
            503,
            HangupCause::from_name("NORMAL_CIRCUIT_CONGESTION"),
        );
    }
    let mut media = MediaSession::new(lease, sw.media.clone());
    let Some((answer_sdp, codec)) =
        sdp::answer(&remote, media.session_id, sw.cfg.public_ip, media.port)
    else {
        return reject(
            sw,
            tx,
            &req,
            488,
            HangupCause::from_name("INCOMPATIBLE_DESTINATION"),
        );
    };
    media.codec = Some(codec);
    media.remote = Some(remote);
    let uuid = uuid::Uuid::new_v4().to_string();
    let call_id = req.call_id().unwrap_or_default().to_string();
    // Registered now so the caller's ACK, BYE or CANCEL find the call.
    let dialog_events = sw.stack.register_call(&call_id);
    let mut trying = response_to(&req, 100, None);
    trying.headers.push("Server", sw.local.user_agent.clone());
    sw.stack.respond(tx, trying);
    let slot = sw
        .registry
        .gateway_for_source(source.addr.ip())
        .map(|g| sw.registry.inbound_slot(&g.name));
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    sw.call_started(
        &uuid,
        CallHandle {
            tenant_id: route.tenant_id.clone(),
            commands: cmd_tx,
        },
    );
    tracing::info!(call_uuid = %uuid, from = %from_number, to = %to_number, "inbound call");
    let call = InboundCall {
        sw: sw.clone(),
        uuid: uuid.clone(),
        tx,
        invite: req,
        source,
        from_number,
        to_number,
        media,
        answer_sdp,
        events: EventSink {
            nats: sw.nats.clone(),
            subject: route.event_subject,
            call_uuid: uuid,
            tenant_id: route.tenant_id,
            call_params: route.call_params,
        },
        slot,
        vars: Default::default(),
    };
    let span = tracing::info_span!("call", call_uuid = %call.uuid);
    tokio::spawn(call.run(cmd_rx, dialog_events).instrument(span));
}

/// SIGTERM (operator.md): leave the queue group, refuse new calls, wait up to `drain` for calls to
/// end, then end the rest with SYSTEM_SHUTDOWN.
pub async fn drain(sw: &Arc<Switch>, drain: Duration) {
    sw.draining.store(true, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + drain;
    while !sw.calls.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for c in sw.calls.iter() {
        let _ = c.commands.send(CallCommand::Shutdown);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !sw.calls.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
