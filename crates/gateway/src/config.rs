//! A SIP gateway (trunk) as configured by `request_add_sip_gateway` (api.md §3.11), with the
//! FreeSWITCH parameter names carriers' runbooks already use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sip_core::Transport;

/// `host[:port][;transport=udp|tcp|tls]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        let s = s
            .strip_prefix("sip:")
            .or_else(|| s.strip_prefix("sips:"))
            .unwrap_or(s);
        let (hostport, params) = match s.split_once(';') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        let mut transport = Transport::Udp;
        if let Some(p) = params {
            for kv in p.split(';') {
                if let Some(("transport", v)) =
                    kv.split_once('=').map(|(k, v)| (k.trim(), v.trim()))
                {
                    transport = Transport::from_name(v)
                        .ok_or_else(|| format!("unknown transport '{v}'"))?;
                }
            }
        }
        let (host, port) = sip_core::msg::split_host_port(hostport)
            .ok_or_else(|| format!("cannot parse '{hostport}' as host[:port]"))?;
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
        if !valid_host {
            return Err(format!("invalid host '{host}'"));
        }
        let default_port = if transport == Transport::Tls {
            5061
        } else {
            5060
        };
        let port = port.unwrap_or(default_port);
        if port == 0 {
            return Err("port 0 is not allowed".into());
        }
        Ok(Target {
            host,
            port,
            transport,
        })
    }

    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What the gateway's params say, decoded once when it is added. Its `Debug` masks the password
/// (operator.md: passwords never appear in logs), here and in `params`.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub name: String,
    pub params: BTreeMap<String, String>,
    pub variables: BTreeMap<String, String>,
    pub proxy: Target,
    pub outbound_proxy: Option<Target>,
    pub register_proxy: Option<Target>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub realm: Option<String>,
    pub from_user: Option<String>,
    pub from_domain: Option<String>,
    pub register: bool,
    pub expire_seconds: u32,
    pub retry_seconds: u32,
    pub ping: Option<u32>,
    pub ping_max: u32,
    pub ping_min: u32,
    pub caller_id_in_from: bool,
    pub extension: Option<String>,
    pub contact_params: Option<String>,
}

/// The stored form (KV value): the request as given, so the stored record is the source of truth
/// and decoding rules can improve without a migration. `Debug` masks the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGateway {
    pub name: String,
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

fn masked(params: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    params
        .iter()
        .map(|(k, v)| {
            let v = if k == "password" { "***" } else { v.as_str() };
            (k.as_str(), v)
        })
        .collect()
}

impl std::fmt::Debug for StoredGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredGateway")
            .field("name", &self.name)
            .field("params", &masked(&self.params))
            .field("variables", &self.variables)
            .finish()
    }
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("name", &self.name)
            .field("params", &masked(&self.params))
            .field("variables", &self.variables)
            .field("proxy", &self.proxy)
            .field("outbound_proxy", &self.outbound_proxy)
            .field("register_proxy", &self.register_proxy)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("realm", &self.realm)
            .field("from_user", &self.from_user)
            .field("from_domain", &self.from_domain)
            .field("register", &self.register)
            .field("expire_seconds", &self.expire_seconds)
            .field("retry_seconds", &self.retry_seconds)
            .field("ping", &self.ping)
            .field("ping_max", &self.ping_max)
            .field("ping_min", &self.ping_min)
            .field("caller_id_in_from", &self.caller_id_in_from)
            .field("extension", &self.extension)
            .field("contact_params", &self.contact_params)
            .finish()
    }
}

fn boolean(params: &BTreeMap<String, String>, key: &str, default: bool) -> Result<bool, String> {
    match params.get(key).map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v == "true" || v == "yes" || v == "1" => Ok(true),
        Some(v) if v == "false" || v == "no" || v == "0" => Ok(false),
        Some(v) => Err(format!("{key} must be \"true\" or \"false\", not '{v}'")),
    }
}

fn number(
    params: &BTreeMap<String, String>,
    key: &str,
    min: u32,
    default: Option<u32>,
) -> Result<Option<u32>, String> {
    match params.get(key) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if n >= min => Ok(Some(n)),
            _ => Err(format!("{key} must be an integer >= {min}, not '{v}'")),
        },
    }
}

impl GatewayConfig {
    pub fn from_stored(g: &StoredGateway) -> Result<GatewayConfig, String> {
        let p = &g.params;
        let text = |k: &str| {
            p.get(k)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let proxy_text = text("proxy")
            .or_else(|| text("realm"))
            .ok_or_else(|| format!("gateway '{}' needs a proxy (or realm)", g.name))?;
        let proxy = Target::parse(&proxy_text).map_err(|e| format!("proxy: {e}"))?;
        let outbound_proxy = text("outbound-proxy")
            .map(|s| Target::parse(&s).map_err(|e| format!("outbound-proxy: {e}")))
            .transpose()?;
        let mut register_proxy = text("register-proxy")
            .map(|s| Target::parse(&s).map_err(|e| format!("register-proxy: {e}")))
            .transpose()?;
        if let Some(t) = text("register-transport") {
            let tp = Transport::from_name(&t)
                .ok_or_else(|| format!("register-transport: unknown transport '{t}'"))?;
            let base = register_proxy.clone().unwrap_or_else(|| proxy.clone());
            register_proxy = Some(Target {
                transport: tp,
                ..base
            });
        }
        let register = boolean(p, "register", false)?;
        let username = text("username");
        let password = p.get("password").cloned().filter(|s| !s.is_empty());
        if register && (username.is_none() || password.is_none()) {
            return Err("register=true needs username and password".into());
        }
        for key in ["username", "from-user", "extension", "realm", "from-domain"] {
            if let Some(v) = p.get(key) {
                if v.chars()
                    .any(|c| c.is_control() || c == '<' || c == '>' || c == '"' || c == ' ')
                {
                    return Err(format!(
                        "{key} contains characters not allowed in a SIP URI"
                    ));
                }
            }
        }
        Ok(GatewayConfig {
            name: g.name.clone(),
            params: g.params.clone(),
            variables: g.variables.clone(),
            proxy,
            outbound_proxy,
            register_proxy,
            username,
            password,
            realm: text("realm"),
            from_user: text("from-user"),
            from_domain: text("from-domain"),
            register,
            expire_seconds: number(p, "expire-seconds", 1, Some(3600))?.unwrap_or(3600),
            retry_seconds: number(p, "retry-seconds", 1, Some(30))?.unwrap_or(30),
            ping: number(p, "ping", 1, None)?,
            ping_max: number(p, "ping-max", 1, Some(1))?.unwrap_or(1),
            ping_min: number(p, "ping-min", 1, Some(1))?.unwrap_or(1),
            caller_id_in_from: boolean(p, "caller-id-in-from", true)?,
            extension: text("extension"),
            contact_params: text("contact-params"),
        })
    }

    /// Where requests are physically sent: the outbound proxy if set, else the proxy.
    pub fn next_hop(&self) -> &Target {
        self.outbound_proxy.as_ref().unwrap_or(&self.proxy)
    }

    /// The domain of Request-URIs and To headers.
    pub fn domain(&self) -> String {
        self.proxy.host_port()
    }

    /// The params with the password masked, for replies (passwords never leave the switch).
    pub fn public_params(&self) -> BTreeMap<String, String> {
        let mut p = self.params.clone();
        if let Some(v) = p.get_mut("password") {
            *v = "***".into();
        }
        p
    }
}

/// Applies an update: params given replace old ones, an empty string removes one (§3.11).
pub fn merge(
    old: Option<&StoredGateway>,
    name: &str,
    params: &BTreeMap<String, String>,
    variables: &BTreeMap<String, String>,
) -> StoredGateway {
    let mut merged = old.map(|o| o.params.clone()).unwrap_or_default();
    for (k, v) in params {
        if v.is_empty() {
            merged.remove(k);
        } else {
            merged.insert(k.clone(), v.clone());
        }
    }
    let mut vars = old.map(|o| o.variables.clone()).unwrap_or_default();
    for (k, v) in variables {
        if v.is_empty() {
            vars.remove(k);
        } else {
            vars.insert(k.clone(), v.clone());
        }
    }
    StoredGateway {
        name: name.to_string(),
        params: merged,
        variables: vars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(pairs: &[(&str, &str)]) -> StoredGateway {
        StoredGateway {
            name: "gw1".into(),
            params: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            variables: BTreeMap::new(),
        }
    }

    #[test]
    fn proxy_forms() {
        assert_eq!(Target::parse("1.2.3.4").unwrap().port, 5060);
        let t = Target::parse("sip.example.com:5080;transport=tcp").unwrap();
        assert_eq!((t.port, t.transport), (5080, Transport::Tcp));
        assert_eq!(Target::parse("h;transport=tls").unwrap().port, 5061);
        assert!(Target::parse("h:99999").is_err());
        assert!(Target::parse("h;transport=sctp").is_err());
        assert!(Target::parse("a b").is_err());
        assert_eq!(Target::parse("[::1]:5070").unwrap().host, "[::1]");
    }

    #[test]
    fn defaults_and_validation() {
        let g = GatewayConfig::from_stored(&stored(&[("proxy", "127.0.0.1:5080")])).unwrap();
        assert_eq!(
            (g.expire_seconds, g.retry_seconds, g.ping_max, g.ping_min),
            (3600, 30, 1, 1)
        );
        assert!(!g.register);
        assert!(GatewayConfig::from_stored(&stored(&[])).is_err());
        assert!(GatewayConfig::from_stored(&stored(&[("proxy", "h"), ("ping", "x")])).is_err());
        assert!(
            GatewayConfig::from_stored(&stored(&[("proxy", "h"), ("register", "true")])).is_err()
        );
        assert!(
            GatewayConfig::from_stored(&stored(&[("proxy", "h"), ("register", "maybe")])).is_err()
        );
    }

    #[test]
    fn update_removes_empty_params_and_masks_password() {
        let old = stored(&[("proxy", "h"), ("password", "s3cret"), ("ping", "5")]);
        let upd: BTreeMap<String, String> = [("ping".to_string(), String::new())].into();
        let m = merge(Some(&old), "gw1", &upd, &BTreeMap::new());
        assert!(!m.params.contains_key("ping"));
        let g = GatewayConfig::from_stored(&m).unwrap();
        assert_eq!(g.public_params()["password"], "***");
    }

    #[test]
    fn debug_never_prints_the_password() {
        let g = stored(&[("proxy", "h"), ("password", "s3cret"), ("username", "u")]);
        let c = GatewayConfig::from_stored(&g).unwrap();
        for text in [
            format!("{g:?}"),
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{:?}", std::sync::Arc::new(c.clone())),
        ] {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
        assert!(format!("{c:?}").contains("username: Some(\"u\")"));
    }
}
