//! Which pod owns which call, shared through JetStream KV. Requests reach the pods through one
//! queue group, so a `request_drop_call` may land on a pod that does not have the call; that pod
//! looks the owner up here and forwards the request to the owner's own subject.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How long a directory write is tried again while NATS is away.
const WRITE_RETRY_FOR: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub pod: String,
    pub tenant_id: String,
    pub live: bool,
}

#[derive(Clone)]
pub struct CallDirectory {
    kv: kv::Store,
    writes: mpsc::UnboundedSender<(String, Option<Entry>)>,
}

/// The subject a pod answers forwarded requests on (no queue group).
pub fn pod_subject(api_subject: &str, pod: &str) -> String {
    let safe: String = pod
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{api_subject}.pod.{safe}")
}

impl CallDirectory {
    pub async fn open(
        js: &jetstream::Context,
        prefix: &str,
        pod: &str,
    ) -> Result<CallDirectory, gateway::store::StoreError> {
        let kv = gateway::store::bucket(js, format!("{prefix}_calls")).await?;
        // A restarted pod has no calls: what its previous run left is stale.
        let mut keys = kv.keys().await?;
        let mut stale = Vec::new();
        while let Some(Ok(k)) = keys.next().await {
            if let Ok(Some(v)) = kv.get(&k).await {
                if serde_json::from_slice::<Entry>(&v).is_ok_and(|e| e.pod == pod) {
                    stale.push(k);
                }
            }
        }
        for k in stale {
            let _ = kv.delete(&k).await;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Option<Entry>)>();
        let writer = kv.clone();
        // One writer, so a call's "live" can never land after its "ended". A write that fails
        // (NATS away) is tried again until it lands, for up to WRITE_RETRY_FOR: a call that ended
        // during an outage must not stay "live" in the directory for ever.
        tokio::spawn(async move {
            while let Some((uuid, entry)) = rx.recv().await {
                let started = tokio::time::Instant::now();
                let mut wait = Duration::from_millis(250);
                loop {
                    let res: Result<(), String> = match &entry {
                        Some(e) => writer
                            .put(&uuid, serde_json::to_vec(e).unwrap_or_default().into())
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        None => writer.delete(&uuid).await.map_err(|e| e.to_string()),
                    };
                    let Err(e) = res else { break };
                    if started.elapsed() >= WRITE_RETRY_FOR {
                        tracing::warn!(call_uuid = %uuid, error = %e, "call directory write given up");
                        break;
                    }
                    tracing::debug!(call_uuid = %uuid, error = %e, "call directory write, trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        });
        Ok(CallDirectory { kv, writes: tx })
    }

    pub fn record(&self, uuid: &str, entry: Entry) {
        let _ = self.writes.send((uuid.to_string(), Some(entry)));
    }

    pub fn forget(&self, uuid: &str) {
        let _ = self.writes.send((uuid.to_string(), None));
    }

    pub async fn lookup(&self, uuid: &str) -> Option<Entry> {
        let v = tokio::time::timeout(Duration::from_secs(2), self.kv.get(uuid))
            .await
            .ok()?
            .ok()??;
        serde_json::from_slice(&v).ok()
    }

    /// Live calls of every pod, optionally of one tenant.
    pub async fn live(&self, tenant: Option<&str>) -> Vec<(String, Entry)> {
        let mut out = Vec::new();
        let Ok(mut keys) = self.kv.keys().await else {
            return out;
        };
        while let Some(Ok(k)) = keys.next().await {
            if let Some(e) = self.lookup(&k).await {
                if e.live && tenant.is_none_or(|t| t == e.tenant_id) {
                    out.push((k, e));
                }
            }
        }
        out
    }
}
