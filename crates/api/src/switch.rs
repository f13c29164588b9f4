//! The switch's shared context: what every request handler and call task needs, in one place.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::{Map, Value};
use sip_core::dialog::Local;
use sip_core::io::SipStack;

use crate::cause::HangupCause;
use crate::error::ApiError;

/// An inbound route (operator.md `[[inbound.routes]]`).
#[derive(Debug, Clone)]
pub struct InboundRoute {
    pub to_prefix: String,
    pub tenant_id: String,
    pub event_subject: String,
    pub call_params: Option<Map<String, Value>>,
}

/// A CIDR block of `sip.inbound_acl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpAddr,
    pub bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (ip, bits) = match s.split_once('/') {
            Some((ip, b)) => (ip, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("'{s}' is not an address or CIDR"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("bad prefix length in '{s}'"))?,
            None => max,
        };
        Ok(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 source is the IPv4 peer it stands for.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.bits)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.bits)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SwitchConfig {
    pub pod_id: String,
    /// The request subject; forwarded requests go to `<api_subject>.pod.<pod_id>`.
    pub api_subject: String,
    pub public_ip: IpAddr,
    pub inbound_acl: Vec<Cidr>,
    pub inbound_routes: Vec<InboundRoute>,
    pub inbound_subject: String,
    pub inbound_tenant: String,
    pub dialplan: BTreeMap<String, String>,
    /// `[[tenants]]` quotas, enforced when `tenants_enforce` is set.
    pub tenants: HashMap<String, crate::quota::TenantQuota>,
    pub tenants_enforce: bool,
    pub media_timeout: Duration,
}

/// A live call of this pod, as request handlers see it (the call itself lives in the board).
pub struct CallHandle {
    pub tenant_id: String,
}

/// Prometheus counters (operator.md "Health and metrics").
#[derive(Default)]
pub struct Metrics {
    pub calls_active: AtomicI64,
    pub calls_total: Mutex<BTreeMap<(String, String), u64>>,
    pub api_requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Events that could not be handed to NATS (queue full while NATS was away or slow).
    pub events_dropped: AtomicU64,
    /// Steps of the call core abandoned to a panic (a bug; each is logged).
    pub core_panics: AtomicU64,
}

impl Metrics {
    pub fn count_request(&self, name: &str, code: u16) {
        let mut m = self.api_requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((name.to_string(), code)).or_default() += 1;
    }
    pub fn count_call_end(&self, direction: &str, cause: &str) {
        let mut m = self.calls_total.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((direction.to_string(), cause.to_string()))
            .or_default() += 1;
    }
}

/// How long ended calls are remembered for 108 (api.md §2: at least 10 minutes).
const ENDED_MEMORY: Duration = Duration::from_secs(15 * 60);

pub struct Switch {
    pub cfg: SwitchConfig,
    pub nats: async_nats::Client,
    pub stack: SipStack,
    pub local: Local,
    pub registry: gateway::Registry,
    pub store: gateway::Store,
    pub directory: crate::directory::CallDirectory,
    pub ports: media::PortPool,
    pub media: media::leg::MediaConfig,
    pub data_dir: std::path::PathBuf,
    pub calls: DashMap<String, CallHandle>,
    ended: Mutex<HashMap<String, Instant>>,
    pub cpa_configs: crate::cpa_configs::CpaConfigs,
    pub draining: AtomicBool,
    pub metrics: Metrics,
    /// The call core: every call request goes through it.
    pub board: crate::shell::BoardHandle,
    /// Live calls per tenant, on this pod and the others (quotas).
    pub tenant_counts: crate::quota::TenantCounts,
}

impl Switch {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: SwitchConfig,
        nats: async_nats::Client,
        stack: SipStack,
        local: Local,
        registry: gateway::Registry,
        store: gateway::Store,
        directory: crate::directory::CallDirectory,
        cpa_configs: crate::cpa_configs::CpaConfigs,
        ports: media::PortPool,
        media: media::leg::MediaConfig,
        data_dir: std::path::PathBuf,
        board: crate::shell::BoardHandle,
        tenant_counts: crate::quota::TenantCounts,
    ) -> Arc<Switch> {
        Arc::new(Switch {
            cfg,
            nats,
            stack,
            local,
            registry,
            store,
            directory,
            ports,
            media,
            data_dir,
            calls: DashMap::new(),
            ended: Mutex::new(HashMap::new()),
            cpa_configs,
            draining: AtomicBool::new(false),
            metrics: Metrics::default(),
            board,
            tenant_counts,
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Called once per call when the board hands it back.
    pub fn call_ended(&self, uuid: &str, direction: &str, cause: HangupCause) {
        let tenant_id = self.calls.remove(uuid).map(|(_, h)| h.tenant_id);
        if let Some(t) = &tenant_id {
            self.tenant_counts.ended(t);
        }
        let tenant_id = tenant_id.unwrap_or_default();
        self.metrics.calls_active.fetch_sub(1, Ordering::Relaxed);
        self.metrics.count_call_end(direction, cause.name());
        self.directory.record(
            uuid,
            crate::directory::Entry {
                pod: self.cfg.pod_id.clone(),
                tenant_id,
                live: false,
            },
        );
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        ended.retain(|u, at| {
            let keep = now.duration_since(*at) < ENDED_MEMORY;
            if !keep {
                self.directory.forget(u);
            }
            keep
        });
        ended.insert(uuid.to_string(), now);
    }

    pub fn call_started(&self, uuid: &str, tenant_id: &str) {
        self.directory.record(
            uuid,
            crate::directory::Entry {
                pod: self.cfg.pod_id.clone(),
                tenant_id: tenant_id.to_string(),
                live: true,
            },
        );
        let previous = self.calls.insert(
            uuid.to_string(),
            CallHandle {
                tenant_id: tenant_id.to_string(),
            },
        );
        if let Some(p) = previous {
            self.tenant_counts.ended(&p.tenant_id);
        } else {
            self.metrics.calls_active.fetch_add(1, Ordering::Relaxed);
        }
        self.tenant_counts.started(tenant_id);
    }

    /// 107 for a uuid never seen, 108 for one that ended.
    pub fn missing_call(&self, uuid: &str) -> ApiError {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if ended.contains_key(uuid) {
            ApiError::new(
                crate::error::StatusCode::CallEnded,
                format!("call {uuid} has ended"),
            )
        } else {
            ApiError::new(
                crate::error::StatusCode::NoSuchCall,
                format!("no call with call_uuid {uuid}"),
            )
        }
    }

    /// The inbound route for a called number: the longest matching `to_prefix`.
    pub fn inbound_route(&self, to: &str) -> InboundRoute {
        self.cfg
            .inbound_routes
            .iter()
            .filter(|r| to.starts_with(&r.to_prefix))
            .max_by_key(|r| r.to_prefix.len())
            .cloned()
            .unwrap_or_else(|| InboundRoute {
                to_prefix: String::new(),
                tenant_id: self.cfg.inbound_tenant.clone(),
                event_subject: self.cfg.inbound_subject.clone(),
                call_params: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(c.contains("127.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
    }
}
