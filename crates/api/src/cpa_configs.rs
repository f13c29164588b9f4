//! Named CPA configurations (`request_set_cpa_params`), kept in JetStream KV so a configuration
//! stored through one pod is there for a `make_call` that lands on another.

use async_nats::jetstream::{self, kv};
use dashmap::DashMap;

use crate::request::SetCpaParams;

pub struct CpaConfigs {
    kv: kv::Store,
    /// Last value seen per name; used when the store cannot be reached.
    cache: DashMap<String, SetCpaParams>,
}

impl CpaConfigs {
    pub async fn open(
        js: &jetstream::Context,
        prefix: &str,
    ) -> Result<CpaConfigs, gateway::store::StoreError> {
        let kv = gateway::store::bucket(js, format!("{prefix}_cpa_configs")).await?;
        Ok(CpaConfigs {
            kv,
            cache: DashMap::new(),
        })
    }

    /// Stores (or replaces) a configuration; the error text goes into a 129.
    pub async fn put(&self, p: SetCpaParams) -> Result<(), String> {
        let bytes = serde_json::to_vec(&p).map_err(|e| e.to_string())?;
        self.kv
            .put(gateway::store::encode_key(&p.va_config_name), bytes.into())
            .await
            .map_err(|e| format!("could not store the CPA configuration: {e}"))?;
        self.cache.insert(p.va_config_name.clone(), p);
        Ok(())
    }

    /// The current configuration of that name, from the store (another pod may have replaced it).
    pub async fn get(&self, name: &str) -> Option<SetCpaParams> {
        match self.kv.get(gateway::store::encode_key(name)).await {
            Ok(Some(bytes)) => {
                let p: SetCpaParams = serde_json::from_slice(&bytes).ok()?;
                self.cache.insert(name.to_string(), p.clone());
                Some(p)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "CPA configuration store unreachable; using the last copy seen");
                self.cache.get(name).map(|p| p.clone())
            }
        }
    }
}
