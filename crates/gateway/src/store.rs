//! Gateways and logical gateways in JetStream KV (operator.md "Shared state"): every pod writes
//! there and applies what it watches, so a change made through any pod reaches all of them, and
//! a restarted pod finds its trunks again.

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::config::StoredGateway;
use crate::registry::{LogicalGateway, Registry};

#[derive(Clone)]
pub struct Store {
    gateways: kv::Store,
    logical: kv::Store,
    calls: kv::Store,
}

pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// KV keys allow `[-/_=.a-zA-Z0-9]`; gateway names allow anything printable, so everything else
/// (and `=` itself) is written `=XX`.
pub fn encode_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("=00");
    }
    out
}

pub fn decode_key(key: &str) -> Option<String> {
    let b = key.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            let hex = key.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v != 0 || b.len() != 3 {
                out.push(v);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Opens a bucket, creating it if missing. The stream is created by hand with the KV layout
/// (ADR-8) because the client's `create_key_value` first reads account fields (reserved memory
/// and storage) that nats-server 2.9, Debian's, does not send.
pub async fn bucket(js: &jetstream::Context, name: String) -> Result<kv::Store, StoreError> {
    if let Ok(s) = js.get_key_value(&name).await {
        return Ok(s);
    }
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        storage: jetstream::stream::StorageType::File,
        num_replicas: 1,
        duplicate_window: std::time::Duration::from_secs(120),
        ..Default::default()
    };
    // Another pod may create it at the same moment; either way it exists afterwards.
    if let Err(e) = js.create_stream(config).await {
        tracing::debug!(bucket = %name, error = %e, "creating KV stream");
    }
    Ok(js.get_key_value(&name).await?)
}

impl Store {
    pub async fn open(js: &jetstream::Context, prefix: &str) -> Result<Store, StoreError> {
        Ok(Store {
            gateways: bucket(js, format!("{prefix}_gateways")).await?,
            logical: bucket(js, format!("{prefix}_logical_gateways")).await?,
            calls: bucket(js, format!("{prefix}_gateway_calls")).await?,
        })
    }

    pub async fn get_gateway(&self, name: &str) -> Result<Option<StoredGateway>, StoreError> {
        match self.gateways.get(encode_key(name)).await? {
            Some(b) => Ok(serde_json::from_slice(&b).ok()),
            None => Ok(None),
        }
    }

    pub async fn put_gateway(&self, g: &StoredGateway) -> Result<(), StoreError> {
        self.gateways
            .put(encode_key(&g.name), serde_json::to_vec(g)?.into())
            .await?;
        Ok(())
    }

    pub async fn delete_gateway(&self, name: &str) -> Result<(), StoreError> {
        self.gateways.delete(encode_key(name)).await?;
        Ok(())
    }

    pub async fn put_logical(&self, g: &LogicalGateway) -> Result<(), StoreError> {
        self.logical
            .put(encode_key(&g.name), serde_json::to_vec(g)?.into())
            .await?;
        Ok(())
    }

    pub async fn delete_logical(&self, name: &str) -> Result<(), StoreError> {
        self.logical.delete(encode_key(name)).await?;
        Ok(())
    }

    /// Loads everything into `registry`, then keeps it in step with the store and publishes this
    /// pod's call counts. Returns once the initial load is applied, so a pod only reports ready
    /// with its gateways in place.
    pub async fn sync(
        &self,
        registry: Registry,
        mut counts: mpsc::UnboundedReceiver<(String, u32)>,
    ) -> Result<(), StoreError> {
        let pod_key = encode_key(registry.pod());
        // A restarted pod starts with no calls; forget what its previous run published.
        let mut keys = self.calls.keys().await?;
        while let Some(Ok(k)) = keys.next().await {
            if k.ends_with(&format!(".{pod_key}")) {
                let _ = self.calls.delete(&k).await;
            }
        }
        for (bucket, is_logical) in [(&self.gateways, false), (&self.logical, true)] {
            let mut keys = bucket.keys().await?;
            while let Some(Ok(k)) = keys.next().await {
                if let Ok(Some(v)) = bucket.get(k).await {
                    apply(&registry, is_logical, kv::Operation::Put, "", &v).await;
                }
            }
        }
        for (bucket, is_logical) in [(self.gateways.clone(), false), (self.logical.clone(), true)] {
            let mut watch = bucket.watch_with_history(">").await?;
            let reg = registry.clone();
            tokio::spawn(async move {
                while let Some(entry) = watch.next().await {
                    match entry {
                        Ok(e) => apply(&reg, is_logical, e.operation, &e.key, &e.value).await,
                        Err(err) => tracing::warn!(error = %err, "gateway store watch"),
                    }
                }
                tracing::warn!("gateway store watch ended");
            });
        }
        let mut watch = self.calls.watch_with_history(">").await?;
        let reg = registry.clone();
        tokio::spawn(async move {
            while let Some(Ok(e)) = watch.next().await {
                let Some((gw, pod)) = e.key.rsplit_once('.') else {
                    continue;
                };
                let (Some(gw), Some(pod)) = (decode_key(gw), decode_key(pod)) else {
                    continue;
                };
                let n = match e.operation {
                    kv::Operation::Put => std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    _ => 0,
                };
                reg.apply_remote_count(&gw, &pod, n);
            }
        });
        let calls = self.calls.clone();
        tokio::spawn(async move {
            while let Some((gw, n)) = counts.recv().await {
                // Coalesce a burst: only the latest count per gateway matters.
                let mut latest = std::collections::HashMap::from([(gw, n)]);
                while let Ok((g, n)) = counts.try_recv() {
                    latest.insert(g, n);
                }
                for (gw, n) in latest {
                    let key = format!("{}.{}", encode_key(&gw), pod_key);
                    if let Err(e) = calls.put(key, n.to_string().into()).await {
                        tracing::warn!(error = %e, "publishing call count");
                    }
                }
            }
        });
        Ok(())
    }
}

async fn apply(reg: &Registry, is_logical: bool, op: kv::Operation, key: &str, value: &[u8]) {
    match op {
        kv::Operation::Put => {
            if is_logical {
                match serde_json::from_slice::<LogicalGateway>(value) {
                    Ok(l) => reg.apply_logical(l),
                    Err(e) => tracing::warn!(error = %e, "bad stored logical gateway"),
                }
            } else {
                match serde_json::from_slice::<StoredGateway>(value) {
                    Ok(g) => reg.apply_gateway(&g),
                    Err(e) => tracing::warn!(error = %e, "bad stored gateway"),
                }
            }
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            let Some(name) = decode_key(key) else { return };
            if is_logical {
                reg.remove_logical(&name);
            } else {
                reg.remove_gateway(&name).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for name in ["gw1", "carrier.one", "a b/c=d", "ünï", ""] {
            let k = encode_key(name);
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
                "{k}"
            );
            assert_eq!(decode_key(&k).as_deref(), Some(name));
        }
    }
}
