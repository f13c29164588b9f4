//! Tenant quotas (operator.md `[[tenants]]`, api.md §6 codes 110–113), counted across pods.
//!
//! Each pod counts its own live calls per tenant exactly, and publishes the counts to the KV
//! bucket `<prefix>_tenant_calls` (key `<tenant>.<pod>`), again every [`REFRESH`] while they are
//! not zero; every pod watches the bucket. A tenant's count is this pod's calls (and the requests
//! it is admitting right now) plus the other pods' counts heard within [`STALE`] (a pod that died
//! stops refreshing and its calls stop counting). A call admitted on one pod is seen by the others
//! within milliseconds; two admitted at the same instant on two pods can each pass, so a limit can
//! be exceeded by one call per pod for that instant.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{ApiError, StatusCode};

/// How often a pod republishes its non-zero counts.
pub const REFRESH: Duration = Duration::from_secs(10);
/// A count not heard again within this is ignored.
pub const STALE: Duration = Duration::from_secs(35);

/// One `[[tenants]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantQuota {
    pub max_concurrent_calls: u32,
    /// From this moment on the tenant's requests get 110 (quota expired).
    pub expires: Option<SystemTime>,
    /// A suspended tenant's requests get 113.
    pub suspended: bool,
}

#[derive(Default)]
struct Local {
    live: u32,
    /// Requests admitted and not yet a call.
    pending: u32,
}

/// Other pods' counts: tenant → pod → (count, when heard).
type Remote = HashMap<String, HashMap<String, (u32, Instant)>>;

struct Inner {
    pod: String,
    local: Mutex<HashMap<String, Local>>,
    remote: Mutex<Remote>,
    changed: mpsc::UnboundedSender<String>,
}

/// The live calls of every tenant, here and on the other pods.
#[derive(Clone)]
pub struct TenantCounts {
    inner: Arc<Inner>,
}

/// A place held for a call being set up; given back when dropped (the call, once started, is
/// counted as live by then).
pub struct Reservation {
    inner: Arc<Inner>,
    tenant: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut local = self.inner.local.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = local.get_mut(&self.tenant) {
            l.pending = l.pending.saturating_sub(1);
            if l.live == 0 && l.pending == 0 {
                local.remove(&self.tenant);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TenantCounts {
    /// Counts of this pod only (no NATS): for tests, and until [`TenantCounts::open`].
    pub fn local(pod: &str) -> (TenantCounts, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let counts = TenantCounts {
            inner: Arc::new(Inner {
                pod: pod.to_string(),
                local: Mutex::default(),
                remote: Mutex::default(),
                changed: tx,
            }),
        };
        (counts, rx)
    }

    /// Counts shared through `<prefix>_tenant_calls`: publishes this pod's, watches the others'.
    pub async fn open(
        js: &jetstream::Context,
        prefix: &str,
        pod: &str,
    ) -> Result<TenantCounts, gateway::store::StoreError> {
        let (counts, changed) = Self::local(pod);
        let kv = gateway::store::bucket(js, format!("{prefix}_tenant_calls")).await?;
        let own = format!(".{}", gateway::store::encode_key(pod));
        // A restarted pod has no calls: what its previous run published is stale.
        let mut keys = kv.keys().await?;
        while let Some(Ok(k)) = keys.next().await {
            if k.ends_with(&own) {
                let _ = kv.delete(&k).await;
            }
        }
        let mut watch = kv.watch_with_history(">").await?;
        let c = counts.clone();
        tokio::spawn(async move {
            while let Some(Ok(e)) = watch.next().await {
                let Some((tenant, pod)) = e.key.rsplit_once('.') else {
                    continue;
                };
                let (Some(tenant), Some(pod)) = (
                    gateway::store::decode_key(tenant),
                    gateway::store::decode_key(pod),
                ) else {
                    continue;
                };
                let n = match e.operation {
                    kv::Operation::Put => std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    _ => 0,
                };
                c.heard(&tenant, &pod, n, Instant::now());
            }
            tracing::warn!("tenant count watch ended");
        });
        tokio::spawn(publish(counts.clone(), kv, changed));
        Ok(counts)
    }

    /// Another pod's count for a tenant.
    pub fn heard(&self, tenant: &str, pod: &str, n: u32, at: Instant) {
        if pod == self.inner.pod {
            return;
        }
        let mut remote = lock(&self.inner.remote);
        let pods = remote.entry(tenant.to_string()).or_default();
        if n == 0 {
            pods.remove(pod);
            if pods.is_empty() {
                remote.remove(tenant);
            }
        } else {
            pods.insert(pod.to_string(), (n, at));
        }
    }

    pub fn started(&self, tenant: &str) {
        lock(&self.inner.local)
            .entry(tenant.to_string())
            .or_default()
            .live += 1;
        let _ = self.inner.changed.send(tenant.to_string());
    }

    pub fn ended(&self, tenant: &str) {
        let mut local = lock(&self.inner.local);
        if let Some(l) = local.get_mut(tenant) {
            l.live = l.live.saturating_sub(1);
            if l.live == 0 && l.pending == 0 {
                local.remove(tenant);
            }
        }
        drop(local);
        let _ = self.inner.changed.send(tenant.to_string());
    }

    /// This pod's live calls of a tenant.
    pub fn live_here(&self, tenant: &str) -> u32 {
        lock(&self.inner.local).get(tenant).map_or(0, |l| l.live)
    }

    fn remote_total(&self, tenant: &str, now: Instant) -> u32 {
        lock(&self.inner.remote).get(tenant).map_or(0, |pods| {
            pods.values()
                .filter(|(_, at)| now.saturating_duration_since(*at) < STALE)
                .map(|(n, _)| *n)
                .sum()
        })
    }

    /// The tenant's calls on every pod, with the ones being admitted here.
    pub fn total(&self, tenant: &str) -> u32 {
        let here = lock(&self.inner.local)
            .get(tenant)
            .map_or(0, |l| l.live + l.pending);
        here + self.remote_total(tenant, Instant::now())
    }

    /// Holds a place for a new call of `tenant` if it is below `limit`; otherwise the count.
    pub fn reserve(&self, tenant: &str, limit: u32) -> Result<Reservation, u32> {
        let remote = self.remote_total(tenant, Instant::now());
        let mut local = lock(&self.inner.local);
        let l = local.entry(tenant.to_string()).or_default();
        let total = l.live + l.pending + remote;
        if total >= limit {
            if l.live == 0 && l.pending == 0 {
                local.remove(tenant);
            }
            return Err(total);
        }
        l.pending += 1;
        Ok(Reservation {
            inner: self.inner.clone(),
            tenant: tenant.to_string(),
        })
    }

    fn snapshot(&self) -> Vec<(String, u32)> {
        lock(&self.inner.local)
            .iter()
            .map(|(t, l)| (t.clone(), l.live))
            .collect()
    }
}

/// Publishes this pod's counts: at once when they change, again every [`REFRESH`] while not zero;
/// a write that fails (NATS away) is tried again at the next turn.
async fn publish(
    counts: TenantCounts,
    kv: kv::Store,
    mut changed: mpsc::UnboundedReceiver<String>,
) {
    let pod = gateway::store::encode_key(&counts.inner.pod);
    let mut dirty: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            t = changed.recv() => match t {
                Some(t) => { dirty.insert(t); }
                None => return,
            },
            _ = tick.tick() => {
                dirty.extend(counts.snapshot().into_iter().filter(|(_, n)| *n > 0).map(|(t, _)| t));
            }
        }
        while let Ok(t) = changed.try_recv() {
            dirty.insert(t);
        }
        let mut failed = HashSet::new();
        for tenant in dirty.drain() {
            let n = counts.live_here(&tenant);
            let key = format!("{}.{pod}", gateway::store::encode_key(&tenant));
            if let Err(e) = kv.put(&key, n.to_string().into()).await {
                tracing::debug!(%tenant, error = %e, "publishing a tenant's call count");
                failed.insert(tenant);
            }
        }
        dirty = failed;
    }
}

/// operator.md `[[tenants]]` for one request: 111 for a tenant not listed, 110 once its quota has
/// expired, 113 while it is suspended, 112 at its limit of concurrent calls (on all pods).
/// `Ok(None)` when tenants are not enforced.
pub fn admit(
    tenants: &HashMap<String, TenantQuota>,
    enforce: bool,
    counts: &TenantCounts,
    tenant: &str,
    now: SystemTime,
) -> Result<Option<Reservation>, ApiError> {
    if !enforce {
        return Ok(None);
    }
    let Some(q) = tenants.get(tenant) else {
        return Err(ApiError::new(
            StatusCode::TenantUnknown,
            format!("tenant '{tenant}' is not configured"),
        ));
    };
    if q.expires.is_some_and(|at| now >= at) {
        return Err(ApiError::new(
            StatusCode::QuotaExpired,
            format!("tenant '{tenant}': its quota has expired"),
        ));
    }
    if q.suspended {
        return Err(ApiError::new(
            StatusCode::QuotaOther,
            format!("tenant '{tenant}' is suspended"),
        ));
    }
    counts
        .reserve(tenant, q.max_concurrent_calls)
        .map(Some)
        .map_err(|n| {
            ApiError::new(
                StatusCode::QuotaExhausted,
                format!(
                    "tenant '{tenant}' is at its limit of {} concurrent calls ({n} on all pods)",
                    q.max_concurrent_calls
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants() -> HashMap<String, TenantQuota> {
        let q = |n, expires, suspended| TenantQuota {
            max_concurrent_calls: n,
            expires,
            suspended,
        };
        HashMap::from([
            ("t1".to_string(), q(2, None, false)),
            (
                "old".to_string(),
                q(
                    5,
                    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000)),
                    false,
                ),
            ),
            ("frozen".to_string(), q(5, None, true)),
        ])
    }

    fn code(r: Result<Option<Reservation>, ApiError>) -> u16 {
        match r {
            Ok(_) => 0,
            Err(e) => e.code.code(),
        }
    }

    #[test]
    fn every_tenant_code() {
        let (c, _rx) = TenantCounts::local("a");
        let t = tenants();
        let now = SystemTime::now();
        assert_eq!(code(admit(&t, false, &c, "anyone", now)), 0);
        assert_eq!(code(admit(&t, true, &c, "stranger", now)), 111);
        assert_eq!(code(admit(&t, true, &c, "old", now)), 110);
        let before = SystemTime::UNIX_EPOCH + Duration::from_secs(999);
        assert_eq!(code(admit(&t, true, &c, "old", before)), 0);
        assert_eq!(code(admit(&t, true, &c, "frozen", now)), 113);
        // Two places: held by requests being admitted, then by calls.
        let r1 = admit(&t, true, &c, "t1", now).unwrap();
        let r2 = admit(&t, true, &c, "t1", now).unwrap();
        assert_eq!(code(admit(&t, true, &c, "t1", now)), 112);
        c.started("t1");
        drop(r1);
        drop(r2);
        assert_eq!(c.total("t1"), 1);
        // Another pod's call counts, until it goes stale.
        let at = Instant::now();
        c.heard("t1", "b", 1, at);
        c.heard("t1", "a", 7, at); // our own echo is ignored
        assert_eq!(c.total("t1"), 2);
        assert_eq!(code(admit(&t, true, &c, "t1", now)), 112);
        c.heard("t1", "b", 1, at - STALE);
        assert_eq!(c.total("t1"), 1);
        c.heard("t1", "b", 0, at);
        c.ended("t1");
        assert_eq!(c.total("t1"), 0);
        assert!(
            lock(&c.inner.local).is_empty(),
            "nothing kept for idle tenants"
        );
    }
}
