//! The pod's view of every gateway: configuration (from the shared store), live state (pings,
//! registration, calls) and the choice of a gateway for a new call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use serde::{Deserialize, Serialize};
use sip_core::dialog::Local;
use sip_core::io::SipStack;
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::config::{GatewayConfig, StoredGateway};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegState {
    Noreg,
    Trying,
    Register,
    Reged,
    Failed,
    Unreged,
}

impl RegState {
    pub fn as_str(self) -> &'static str {
        match self {
            RegState::Noreg => "NOREG",
            RegState::Trying => "TRYING",
            RegState::Register => "REGISTER",
            RegState::Reged => "REGED",
            RegState::Failed => "FAILED",
            RegState::Unreged => "UNREGED",
        }
    }
    fn from_u8(v: u8) -> RegState {
        [
            RegState::Noreg,
            RegState::Trying,
            RegState::Register,
            RegState::Reged,
            RegState::Failed,
            RegState::Unreged,
        ]
        .get(v as usize)
        .copied()
        .unwrap_or(RegState::Noreg)
    }
}

#[derive(Debug)]
pub struct GatewayState {
    reg: AtomicU8,
    /// From OPTIONS pings; a gateway without `ping` is always UP.
    pub up: AtomicBool,
    /// What its proxy's host name resolved to last (an IP literal needs none): inbound calls
    /// from these addresses pass the ACL.
    addrs: Mutex<Vec<std::net::IpAddr>>,
}

impl GatewayState {
    fn new() -> Self {
        GatewayState {
            reg: AtomicU8::new(RegState::Noreg as u8),
            up: AtomicBool::new(true),
            addrs: Mutex::new(Vec::new()),
        }
    }
    pub fn reg_state(&self) -> RegState {
        RegState::from_u8(self.reg.load(Ordering::Relaxed))
    }
    pub fn set_reg_state(&self, s: RegState) {
        self.reg.store(s as u8, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub weightage: u32,
    #[serde(default)]
    pub max_limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalGateway {
    pub name: String,
    pub gateways: Vec<Member>,
}

struct Entry {
    config: Arc<GatewayConfig>,
    state: Arc<GatewayState>,
    agent: Option<Agent>,
}

/// Concurrent calls per SIP gateway: this pod's own, and every other pod's as last published.
#[derive(Default)]
struct Counts {
    local: HashMap<String, (u32, u32)>, // (in, out)
    remote: HashMap<String, HashMap<String, u32>>,
}

impl Counts {
    fn total(&self, gw: &str, pod: &str) -> u32 {
        let own = self.local.get(gw).map(|(i, o)| i + o).unwrap_or(0);
        let others: u32 = self
            .remote
            .get(gw)
            .map(|m| {
                m.iter()
                    .filter(|(p, _)| p.as_str() != pod)
                    .map(|(_, n)| *n)
                    .sum()
            })
            .unwrap_or(0);
        own + others
    }
}

/// A selected gateway for one call.
pub struct Selected {
    pub config: Arc<GatewayConfig>,
    pub up: bool,
    pub slot: CallSlot,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SelectError {
    /// api.md 114: no such gateway (the status names it).
    Unknown(String),
    /// api.md 115: every member at its max_limit.
    AllBusy(String),
}

/// Counts one call on a gateway for as long as it lives.
pub struct CallSlot {
    gw: String,
    outbound: bool,
    reg: Arc<Inner>,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        let total = {
            let mut c = self.reg.counts.lock().unwrap_or_else(|e| e.into_inner());
            let e = c.local.entry(self.gw.clone()).or_default();
            if self.outbound {
                e.1 = e.1.saturating_sub(1);
            } else {
                e.0 = e.0.saturating_sub(1);
            }
            e.0 + e.1
        };
        let _ = self.reg.count_updates.send((self.gw.clone(), total));
    }
}

struct Inner {
    pod: String,
    stack: SipStack,
    local: Local,
    sip: Mutex<HashMap<String, Entry>>,
    logical: Mutex<HashMap<String, LogicalGateway>>,
    counts: Mutex<Counts>,
    /// Our per-gateway totals, for the store to publish to the other pods.
    count_updates: mpsc::UnboundedSender<(String, u32)>,
    /// Wakes the resolver when a gateway is added or changed.
    resolve_now: tokio::sync::Notify,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// One row of `request_get_sip_gateway`.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayView {
    pub name: String,
    pub params: BTreeMap<String, String>,
    pub variables: BTreeMap<String, String>,
    pub state: &'static str,
    pub status: &'static str,
    pub calls_in: u32,
    pub calls_out: u32,
}

impl Registry {
    pub fn new(
        pod: String,
        stack: SipStack,
        local: Local,
    ) -> (Registry, mpsc::UnboundedReceiver<(String, u32)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            pod,
            stack,
            local,
            sip: Mutex::new(HashMap::new()),
            logical: Mutex::new(HashMap::new()),
            counts: Mutex::new(Counts::default()),
            count_updates: tx,
            resolve_now: tokio::sync::Notify::new(),
        };
        (
            Registry {
                inner: Arc::new(inner),
            },
            rx,
        )
    }

    pub fn pod(&self) -> &str {
        &self.inner.pod
    }

    fn sip(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.sip.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn logical(&self) -> std::sync::MutexGuard<'_, HashMap<String, LogicalGateway>> {
        self.inner.logical.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a stored gateway (from this pod's request or another pod's, via the store watch).
    /// An unchanged configuration keeps its running agent and registration.
    pub fn apply_gateway(&self, stored: &StoredGateway) {
        let cfg = match GatewayConfig::from_stored(stored) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::warn!(gateway = %stored.name, error = %e, "ignoring invalid stored gateway");
                return;
            }
        };
        let old = {
            let mut sip = self.sip();
            if sip.get(&cfg.name).is_some_and(|e| *e.config == *cfg) {
                return;
            }
            let state = Arc::new(GatewayState::new());
            let agent = (cfg.register || cfg.ping.is_some()).then(|| {
                Agent::spawn(
                    self.inner.stack.clone(),
                    self.inner.local.clone(),
                    cfg.clone(),
                    state.clone(),
                )
            });
            sip.insert(
                cfg.name.clone(),
                Entry {
                    config: cfg.clone(),
                    state,
                    agent,
                },
            )
        };
        self.inner.resolve_now.notify_one();
        if let Some(Entry {
            agent: Some(a),
            state,
            ..
        }) = old
        {
            let was_registered = state.reg_state() == RegState::Reged;
            tokio::spawn(a.stop(was_registered));
        }
    }

    /// Removes a gateway, unregistering it first if it was registered.
    pub async fn remove_gateway(&self, name: &str) -> bool {
        let old = self.sip().remove(name);
        match old {
            Some(Entry { agent, .. }) => {
                if let Some(a) = agent {
                    a.stop(true).await;
                }
                true
            }
            None => false,
        }
    }

    pub fn apply_logical(&self, lg: LogicalGateway) {
        self.logical().insert(lg.name.clone(), lg);
    }

    pub fn remove_logical(&self, name: &str) -> bool {
        self.logical().remove(name).is_some()
    }

    pub fn has_gateway(&self, name: &str) -> bool {
        self.sip().contains_key(name)
    }

    pub fn has_logical(&self, name: &str) -> bool {
        self.logical().contains_key(name)
    }

    /// Another pod's published count for a gateway.
    pub fn apply_remote_count(&self, gw: &str, pod: &str, n: u32) {
        let mut c = self.inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        let m = c.remote.entry(gw.to_string()).or_default();
        if n == 0 {
            m.remove(pod);
        } else {
            m.insert(pod.to_string(), n);
        }
    }

    pub fn get_gateways(&self, name: Option<&str>) -> Vec<GatewayView> {
        let sip = self.sip();
        let counts = self.inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<GatewayView> = sip
            .values()
            .filter(|e| name.is_none_or(|n| n == e.config.name))
            .map(|e| {
                let (ci, co) = counts.local.get(&e.config.name).copied().unwrap_or((0, 0));
                GatewayView {
                    name: e.config.name.clone(),
                    params: e.config.public_params(),
                    variables: e.config.variables.clone(),
                    state: e.state.reg_state().as_str(),
                    status: if e.state.up.load(Ordering::Relaxed) {
                        "UP"
                    } else {
                        "DOWN"
                    },
                    calls_in: ci,
                    calls_out: co,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// `request_get_logical_gateway`: members with their live, cluster-wide call counts.
    pub fn get_logical(&self, name: Option<&str>) -> Vec<serde_json::Value> {
        let logical = self.logical();
        let counts = self.inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, serde_json::Value)> = logical
            .values()
            .filter(|l| name.is_none_or(|n| n == l.name))
            .map(|l| {
                let members: Vec<serde_json::Value> = l
                    .gateways
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "name": m.name, "weightage": m.weightage, "max_limit": m.max_limit,
                            "calls": counts.total(&m.name, &self.inner.pod),
                        })
                    })
                    .collect();
                (
                    l.name.clone(),
                    serde_json::json!({"name": l.name, "gateways": members}),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// Gateway statuses for /metrics.
    pub fn statuses(&self) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = self
            .sip()
            .values()
            .map(|e| (e.config.name.clone(), e.state.up.load(Ordering::Relaxed)))
            .collect();
        v.sort();
        v
    }

    /// The gateway whose proxy is at `ip` (inbound calls from trunks pass the ACL by this): an
    /// IP literal, or what a host name last resolved to.
    pub fn gateway_for_source(&self, ip: std::net::IpAddr) -> Option<Arc<GatewayConfig>> {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.sip()
            .values()
            .find(|e| {
                literal(&e.config.proxy.host) == Some(ip)
                    || e.state
                        .addrs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(&ip)
            })
            .map(|e| e.config.clone())
    }

    /// Resolves the gateways whose proxy is a host name, now, whenever one is added or changed,
    /// and every `every` (DNS changes: a trunk moved to new addresses is admitted at its new
    /// ones and no longer at its old ones).
    pub fn spawn_resolver(&self, every: std::time::Duration) {
        let reg = self.clone();
        tokio::spawn(async move {
            loop {
                let names: Vec<(crate::config::Target, Arc<GatewayState>)> = reg
                    .sip()
                    .values()
                    .filter(|e| literal(&e.config.proxy.host).is_none())
                    .map(|e| (e.config.proxy.clone(), e.state.clone()))
                    .collect();
                for (target, state) in names {
                    let host = target.host.clone();
                    let lookup = tokio::net::lookup_host((host.clone(), target.port));
                    let found: Option<Vec<std::net::IpAddr>> =
                        match tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await
                        {
                            Ok(Ok(addrs)) => Some(addrs.map(|a| a.ip()).collect()),
                            _ => None,
                        };
                    // A failed lookup keeps what the name last resolved to.
                    if let Some(found) = found {
                        *state.addrs.lock().unwrap_or_else(|p| p.into_inner()) = found;
                    } else {
                        tracing::debug!(host, "gateway proxy did not resolve");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = reg.inner.resolve_now.notified() => {}
                }
            }
        });
    }

    fn slot(&self, counts: &mut Counts, gw: &str, outbound: bool) -> CallSlot {
        let e = counts.local.entry(gw.to_string()).or_default();
        if outbound {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
        let total = e.0 + e.1;
        let _ = self.inner.count_updates.send((gw.to_string(), total));
        CallSlot {
            gw: gw.to_string(),
            outbound,
            reg: self.inner.clone(),
        }
    }

    /// Counts an inbound call on the gateway it came from.
    pub fn inbound_slot(&self, gw: &str) -> CallSlot {
        let mut counts = self.inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        self.slot(&mut counts, gw, false)
    }

    /// api.md §3.2: a logical gateway name first, else a SIP gateway name.
    pub fn select(&self, name: &str) -> Result<Selected, SelectError> {
        let logical = self.logical().get(name).cloned();
        let sip = self.sip();
        let mut counts = self.inner.counts.lock().unwrap_or_else(|e| e.into_inner());
        let chosen = match logical {
            None => sip
                .get(name)
                .ok_or_else(|| SelectError::Unknown(format!("gateway '{name}' does not exist")))?,
            Some(lg) => {
                let existing: Vec<(&Member, &Entry)> = lg
                    .gateways
                    .iter()
                    .filter_map(|m| sip.get(&m.name).map(|e| (m, e)))
                    .collect();
                if existing.is_empty() {
                    return Err(SelectError::Unknown(format!(
                        "logical gateway '{name}' has no existing SIP gateway"
                    )));
                }
                let free: Vec<(&Member, &Entry)> = existing
                    .into_iter()
                    .filter(|(m, _)| {
                        m.max_limit
                            .is_none_or(|l| counts.total(&m.name, &self.inner.pod) < l)
                    })
                    .collect();
                if free.is_empty() {
                    return Err(SelectError::AllBusy(format!(
                        "every gateway of logical gateway '{name}' is at its max_limit"
                    )));
                }
                // DOWN members are passed over while an UP one is free.
                let up: Vec<(&Member, &Entry)> = free
                    .iter()
                    .copied()
                    .filter(|(_, e)| e.state.up.load(Ordering::Relaxed))
                    .collect();
                let pool = if up.is_empty() { free } else { up };
                let weights: Vec<u32> = pool.iter().map(|(m, _)| m.weightage).collect();
                pool[pick_weighted(&weights, &mut rand::thread_rng())].1
            }
        };
        let config = chosen.config.clone();
        let up = chosen.state.up.load(Ordering::Relaxed);
        let slot = self.slot(&mut counts, &config.name, true);
        Ok(Selected { config, up, slot })
    }
}

/// Weighted random choice of an index; members of weight 0 are chosen only when every weight
/// is 0. `weights` must not be empty.
fn pick_weighted(weights: &[u32], rng: &mut impl Rng) -> usize {
    let total: u64 = weights.iter().map(|w| *w as u64).sum();
    if total == 0 {
        return rng.gen_range(0..weights.len());
    }
    let mut x = rng.gen_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w as u64 {
            return i;
        }
        x -= *w as u64;
    }
    weights.len() - 1
}

/// A host written as an IP literal (IPv6 in brackets or not).
fn literal(host: &str) -> Option<std::net::IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn weighted_choice_follows_weights() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut hits = [0u32; 3];
        for _ in 0..10_000 {
            hits[pick_weighted(&[1, 3, 0], &mut rng)] += 1;
        }
        assert_eq!(
            hits[2], 0,
            "weight 0 is never chosen beside a positive weight"
        );
        let ratio = hits[1] as f64 / hits[0] as f64;
        assert!((2.7..3.3).contains(&ratio), "{hits:?}");
        assert!(pick_weighted(&[0, 0], &mut rng) < 2);
    }
}
