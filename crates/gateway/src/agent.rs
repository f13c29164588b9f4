//! What a gateway does on its own: OPTIONS pings that mark it UP or DOWN, and registration with
//! refresh before expiry. One task per gateway per pod; each pod registers its own Contact.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sip_core::auth::{self, Credentials};
use sip_core::dialog::{new_branch, new_tag, Local};
use sip_core::io::{ClientEvent, SipStack};
use sip_core::{Peer, Request, Response};
use tokio::sync::watch;

use crate::config::{GatewayConfig, Target};
use crate::registry::{GatewayState, RegState};

/// Resolves a target to a socket address (DNS names included). `None` if it does not resolve.
pub async fn resolve(t: &Target) -> Option<Peer> {
    let host = t.host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((host, t.port)).await.ok()?.next()?;
    Some(Peer {
        transport: t.transport,
        addr,
    })
}

/// Sends a non-INVITE request and waits for its final response, answering digest challenges
/// (RFC 3261 §22): chained ones (a 407 and a 401, either order) are all answered on the next
/// request, a stale nonce is answered again, a second challenge for the same realm is a refusal.
/// A challenge is answered only for the gateway's `realm` when it names one, and otherwise only
/// when it comes from `peer`, where the request went. `build` makes the request for a CSeq.
pub async fn request_with_auth(
    stack: &SipStack,
    peer: Peer,
    creds: Option<(&str, &str)>,
    realm: Option<&str>,
    wait: Duration,
    mut build: impl FnMut(u32) -> Request,
    cseq: &mut u32,
) -> Option<Response> {
    let mut auth = auth::Authenticator::default();
    // Bounded: a server that keeps challenging with new realms cannot keep us asking forever.
    for _ in 0..4 {
        *cseq += 1;
        let mut req = build(*cseq);
        if let Some((user, pass)) = creds {
            let cred = Credentials {
                username: user,
                password: pass,
            };
            auth.authorize(&mut req, &cred, &new_tag());
        }
        let (_, mut rx) = stack.request(req, peer).await;
        let (resp, source) = tokio::time::timeout(wait, async {
            while let Some(ev) = rx.recv().await {
                match ev {
                    ClientEvent::Response { response, source } if response.code >= 200 => {
                        return Some((*response, source))
                    }
                    ClientEvent::Response { .. } => continue,
                    ClientEvent::Timeout => return None,
                }
            }
            None
        })
        .await
        .ok()
        .flatten()?;
        if resp.code != 401 && resp.code != 407 {
            return Some(resp);
        }
        let trusted = realm.is_some() || source.addr.ip() == peer.addr.ip();
        if creds.is_none() || !trusted {
            return Some(resp);
        }
        if let Err(e) = auth.challenged(&resp, realm) {
            tracing::warn!(to = %peer.addr, error = %e, "challenge not answered");
            return Some(resp);
        }
    }
    None
}

pub struct Agent {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    pub fn spawn(
        stack: SipStack,
        local: Local,
        cfg: Arc<GatewayConfig>,
        state: Arc<GatewayState>,
    ) -> Agent {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(stack, local, cfg, state, stop_rx));
        Agent { stop, task }
    }

    /// Stops pings and refreshes; with `unregister`, first sends REGISTER Expires: 0 (§3.13).
    pub async fn stop(self, unregister: bool) {
        let _ = self.stop.send(unregister);
        // The task answers the stop itself so the unregister uses its Call-ID and CSeq.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

async fn run(
    stack: SipStack,
    local: Local,
    cfg: Arc<GatewayConfig>,
    state: Arc<GatewayState>,
    mut stop: watch::Receiver<bool>,
) {
    let reg_call_id = format!("{}@{}", new_tag(), local.host);
    let reg_tag = new_tag();
    let mut reg_cseq = 0u32;
    let mut next_register = if cfg.register {
        Some(tokio::time::Instant::now())
    } else {
        None
    };
    let mut next_ping = cfg.ping.map(|_| tokio::time::Instant::now());
    let (mut ok_in_row, mut fail_in_row) = (0u32, 0u32);
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    loop {
        let wake = next_register.unwrap_or(far).min(next_ping.unwrap_or(far));
        tokio::select! {
            changed = stop.changed() => {
                let unregister = changed.is_ok() && *stop.borrow();
                if unregister && cfg.register && state.reg_state() == RegState::Reged {
                    register(&stack, &local, &cfg, &state, &reg_call_id, &reg_tag, &mut reg_cseq, 0).await;
                }
                return;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = tokio::time::Instant::now();
        if next_register.is_some_and(|t| t <= now) {
            let granted = register(
                &stack,
                &local,
                &cfg,
                &state,
                &reg_call_id,
                &reg_tag,
                &mut reg_cseq,
                cfg.expire_seconds,
            )
            .await;
            let after = match granted {
                // Refresh well before expiry: a registrar that loses us drops inbound calls.
                Some(secs) => Duration::from_secs_f64((secs as f64 * 0.85).max(1.0)),
                None => Duration::from_secs(cfg.retry_seconds as u64),
            };
            next_register = Some(now + after);
        }
        if let (Some(t), Some(interval)) = (next_ping, cfg.ping) {
            if t <= now {
                next_ping = Some(now + Duration::from_secs(interval as u64));
                let wait = Duration::from_secs(2).min(Duration::from_secs(interval as u64));
                let alive = ping(&stack, &local, &cfg, wait).await;
                if alive {
                    ok_in_row += 1;
                    fail_in_row = 0;
                    if ok_in_row >= cfg.ping_min && !state.up.load(Ordering::Relaxed) {
                        tracing::info!(gateway = %cfg.name, "gateway UP");
                        state.up.store(true, Ordering::Relaxed);
                    }
                } else {
                    fail_in_row += 1;
                    ok_in_row = 0;
                    if fail_in_row >= cfg.ping_max && state.up.load(Ordering::Relaxed) {
                        tracing::warn!(gateway = %cfg.name, "gateway DOWN: OPTIONS ping not answered");
                        state.up.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

fn user_of(cfg: &GatewayConfig) -> String {
    cfg.from_user
        .clone()
        .or_else(|| cfg.username.clone())
        .unwrap_or_else(|| "botstream".into())
}

async fn ping(stack: &SipStack, local: &Local, cfg: &GatewayConfig, wait: Duration) -> bool {
    let Some(peer) = resolve(cfg.next_hop()).await else {
        return false;
    };
    let uri = format!("sip:{}", cfg.domain());
    let call_id = format!("{}@{}", new_tag(), local.host);
    let from_domain = cfg
        .from_domain
        .clone()
        .unwrap_or_else(|| local.host.clone());
    let tag = new_tag();
    let mut cseq = 0;
    let resp = request_with_auth(
        stack,
        peer,
        None,
        None,
        wait,
        |seq| {
            let mut r = Request::new("OPTIONS", &uri);
            r.headers
                .push("Via", local.via(peer.transport, &new_branch()));
            r.headers.push("Max-Forwards", "70");
            r.headers.push(
                "From",
                format!("<sip:{}@{from_domain}>;tag={tag}", user_of(cfg)),
            );
            r.headers.push("To", format!("<{uri}>"));
            r.headers.push("Call-ID", call_id.clone());
            r.headers.push("CSeq", format!("{seq} OPTIONS"));
            r.headers.push("User-Agent", local.user_agent.clone());
            r
        },
        &mut cseq,
    )
    .await;
    // Any answer but "unavailable" shows the gateway is there (a 404 or 405 to OPTIONS is common).
    resp.is_some_and(|r| r.code != 503 && r.code != 408)
}

/// One REGISTER exchange; returns the granted expiry on success.
#[allow(clippy::too_many_arguments)]
async fn register(
    stack: &SipStack,
    local: &Local,
    cfg: &GatewayConfig,
    state: &GatewayState,
    call_id: &str,
    tag: &str,
    cseq: &mut u32,
    expires: u32,
) -> Option<u32> {
    let target = cfg.register_proxy.as_ref().unwrap_or(cfg.next_hop());
    let Some(peer) = resolve(target).await else {
        state.set_reg_state(RegState::Failed);
        return None;
    };
    state.set_reg_state(if expires == 0 {
        RegState::Unreged
    } else {
        RegState::Trying
    });
    let domain = cfg.realm.clone().unwrap_or_else(|| cfg.proxy.host.clone());
    let uri = format!("sip:{domain}");
    let user = cfg.username.clone().unwrap_or_default();
    let contact_user = cfg.extension.clone().unwrap_or_else(|| user.clone());
    let mut contact = local.contact(&contact_user, peer.transport);
    if let Some(p) = &cfg.contact_params {
        contact = format!(
            "{};{}>",
            contact.trim_end_matches('>'),
            p.trim_start_matches(';')
        );
    }
    let creds = cfg.password.as_deref().map(|p| (user.as_str(), p));
    let resp = request_with_auth(
        stack,
        peer,
        creds,
        cfg.realm.as_deref(),
        Duration::from_secs(40),
        |seq| {
            let mut r = Request::new("REGISTER", &uri);
            r.headers
                .push("Via", local.via(peer.transport, &new_branch()));
            r.headers.push("Max-Forwards", "70");
            r.headers
                .push("From", format!("<sip:{user}@{domain}>;tag={tag}"));
            r.headers.push("To", format!("<sip:{user}@{domain}>"));
            r.headers.push("Call-ID", call_id.to_string());
            r.headers.push("CSeq", format!("{seq} REGISTER"));
            r.headers.push("Contact", contact.clone());
            r.headers.push("Expires", expires.to_string());
            r.headers.push("User-Agent", local.user_agent.clone());
            r
        },
        cseq,
    )
    .await;
    match resp {
        Some(r) if (200..300).contains(&r.code) => {
            if expires == 0 {
                state.set_reg_state(RegState::Unreged);
                return Some(0);
            }
            state.set_reg_state(RegState::Reged);
            // The registrar may grant less than we asked (Contact expires param or Expires).
            let granted = r
                .headers
                .get_all("Contact")
                .iter()
                .filter_map(|c| sip_core::msg::NameAddr::parse(c))
                .find_map(|n| n.params.get("expires").and_then(|e| e.parse().ok()))
                .or_else(|| r.headers.get("Expires").and_then(|e| e.trim().parse().ok()))
                .unwrap_or(expires);
            tracing::info!(gateway = %cfg.name, granted, "registered");
            Some(granted.max(1))
        }
        other => {
            tracing::warn!(gateway = %cfg.name, code = other.as_ref().map(|r| r.code), "registration failed");
            state.set_reg_state(RegState::Failed);
            None
        }
    }
}
