//! Configuration in operator.md's layers: built-in defaults < TOML file < environment < flags.
//! clap reads flags and environment; the TOML file fills what neither gave.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(
    name = "botstream",
    version,
    about = "BotStream: a SIP/RTP softswitch for voice-AI applications"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// NATS server(s), comma separated [default: nats://127.0.0.1:4222]
    #[arg(long, env = "BOTSTREAM_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// Request subject (queue group `botstream`) [default: botstream.api]
    #[arg(long, env = "BOTSTREAM_API_SUBJECT", global = true)]
    pub api_subject: Option<String>,
    /// `dialer_pod_id` in replies [default: host name]
    #[arg(long, env = "BOTSTREAM_POD_ID")]
    pub pod_id: Option<String>,
    /// SIP over UDP and TCP [default: 0.0.0.0:5060]
    #[arg(long, env = "BOTSTREAM_SIP_LISTEN")]
    pub sip_listen: Option<String>,
    /// SIP over TLS (needs sip.tls_cert/tls_key) [default: off]
    #[arg(long, env = "BOTSTREAM_SIP_TLS_LISTEN")]
    pub sip_tls_listen: Option<String>,
    /// PEM certificate chain for SIP over TLS
    #[arg(long, env = "BOTSTREAM_SIP_TLS_CERT")]
    pub sip_tls_cert: Option<PathBuf>,
    /// PEM private key for SIP over TLS
    #[arg(long, env = "BOTSTREAM_SIP_TLS_KEY")]
    pub sip_tls_key: Option<PathBuf>,
    /// Comma-separated CIDRs allowed to place inbound calls [default: 127.0.0.0/8]
    #[arg(long, env = "BOTSTREAM_SIP_INBOUND_ACL")]
    pub sip_inbound_acl: Option<String>,
    /// Address written in Via, Contact and SDP [default: the listen IP, or 127.0.0.1]
    #[arg(long, env = "BOTSTREAM_SIP_PUBLIC_ADDR")]
    pub sip_public_addr: Option<String>,
    /// RTP port range [default: 16384-32767]
    #[arg(long, env = "BOTSTREAM_RTP_PORTS")]
    pub rtp_ports: Option<String>,
    /// Seconds without RTP before MEDIA_TIMEOUT [default: 60]
    #[arg(long, env = "BOTSTREAM_MEDIA_TIMEOUT")]
    pub media_timeout: Option<u64>,
    /// /healthz, /readyz, /metrics [default: 127.0.0.1:9090]
    #[arg(long, env = "BOTSTREAM_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Recordings and CPA audio logs [default: ./data]
    #[arg(long, env = "BOTSTREAM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Event subject of inbound calls with no matching route [default: botstream.inbound]
    #[arg(long, env = "BOTSTREAM_INBOUND_SUBJECT", global = true)]
    pub inbound_subject: Option<String>,
    /// Tenant of inbound calls with no matching route [default: default]
    #[arg(long, env = "BOTSTREAM_INBOUND_TENANT")]
    pub inbound_tenant: Option<String>,
    /// JetStream KV bucket prefix [default: botstream]
    #[arg(long, env = "BOTSTREAM_STORE_PREFIX")]
    pub store_prefix: Option<String>,
    /// Verify the app's WebSocket certificate [default: false]
    #[arg(long, env = "BOTSTREAM_WS_TLS_VERIFY")]
    pub ws_tls_verify: Option<bool>,
    /// Extra CA for the app's certificate
    #[arg(long, env = "BOTSTREAM_WS_CA_FILE")]
    pub ws_ca_file: Option<PathBuf>,
    /// RFC 4028 Session-Expires our INVITEs ask for, in seconds; 0 asks for no timer [default: 1800]
    #[arg(long, env = "BOTSTREAM_SIP_SESSION_EXPIRES")]
    pub sip_session_expires: Option<u32>,
    /// RFC 4028 Min-SE: the shortest session interval accepted, in seconds [default: 90]
    #[arg(long, env = "BOTSTREAM_SIP_MIN_SE")]
    pub sip_min_se: Option<u32>,
    /// Codecs an inbound offer is answered with, in preference order [default: OPUS,G722,PCMU,PCMA]
    #[arg(long, env = "BOTSTREAM_MEDIA_CODECS")]
    pub media_codecs: Option<String>,
    /// Requests per second one source address may send outside its dialogs; above it they are
    /// dropped (UDP) or answered 503 (TCP/TLS), and a source over it for 10 s is ignored for
    /// 60 s; 0 turns the limit off [default: 50]
    #[arg(long, env = "BOTSTREAM_SIP_RATE_LIMIT")]
    pub sip_rate_limit: Option<u32>,
    /// Seconds to wait for calls to end on SIGTERM [default: 30]
    #[arg(long, env = "BOTSTREAM_DRAIN_SECS")]
    pub drain_secs: Option<u64>,
    /// Log format: text or json
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run call progress analysis on a recording (8 kHz mono 16-bit WAV, from the answer).
    Analyze {
        /// request_set_cpa_params fields as a JSON object
        #[arg(long)]
        cpa: String,
        file: PathBuf,
    },
    /// Send one API request to a running switch and print its reply
    /// (exit 0 on status 0, 1 on any other status, 2 on bad input).
    #[command(after_help = "Examples:\n  \
        botstream request request_get_sip_gateway '{\"name\":\"*\"}'\n  \
        botstream request add_sip_gateway '{\"name\":\"carrier\",\"params\":{\"proxy\":\"127.0.0.1:5080\"}}'\n  \
        echo '{\"call_uuid\":\"...\"}' | botstream request drop_call -")]
    Request {
        /// The request's event_name; the `request_` prefix may be left out
        name: String,
        /// Its event_data as a JSON object, or `-` to read it from standard input [default: {}]
        json: Option<String>,
    },
    /// Print events as they arrive, one JSON object per line
    Events {
        /// Subject to listen on (`>` for everything) [default: the inbound subject]
        subject: Option<String>,
        /// Exit after this many messages
        #[arg(long)]
        count: Option<u64>,
        /// Write each message's subject before it
        #[arg(long)]
        show_subject: bool,
    },
    /// Place a call, optionally stream it to an app, and print its events until hangup
    Call {
        /// Logical or SIP gateway to dial through
        #[arg(long)]
        gateway: String,
        /// Number to call
        #[arg(long)]
        to: String,
        /// Caller id
        #[arg(long)]
        from: String,
        /// Once answered, stream the call to this app: wss://host[:port][/path]
        #[arg(long)]
        stream: Option<String>,
        /// tenant_id of the call
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Event subject for the call [default: a fresh botstream.cli.* subject]
        #[arg(long)]
        subject: Option<String>,
        /// More request_make_call fields as a JSON object, e.g. '{"cpa_config":"amd"}'
        #[arg(long)]
        extra: Option<String>,
    },
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct FileConfig {
    nats: NatsSection,
    api: ApiSection,
    pod: PodSection,
    sip: SipSection,
    rtp: RtpSection,
    http: HttpSection,
    data: DataSection,
    inbound: InboundSection,
    store: StoreSection,
    ws: WsSection,
    shutdown: ShutdownSection,
    media: MediaSection,
    dialplan: BTreeMap<String, String>,
    tenants: Option<Tenants>,
    tenants_enforce: Option<bool>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct NatsSection {
    url: Option<String>,
}
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct ApiSection {
    subject: Option<String>,
}
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct PodSection {
    id: Option<String>,
}
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct SipSection {
    listen: Option<String>,
    tls_listen: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    inbound_acl: Option<String>,
    public_addr: Option<String>,
    session_expires: Option<u32>,
    min_se: Option<u32>,
    rate_limit: Option<u32>,
}
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct RtpSection {
    ports: Option<String>,
    media_timeout_secs: Option<u64>,
}
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct HttpSection {
    listen: Option<String>,
}
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct DataSection {
    dir: Option<PathBuf>,
}
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct InboundSection {
    subject: Option<String>,
    tenant: Option<String>,
    routes: Vec<RouteEntry>,
}
#[derive(Deserialize, Debug)]
struct RouteEntry {
    to_prefix: String,
    tenant_id: String,
    event_subject: String,
    #[serde(default)]
    call_params: Option<toml::Table>,
}
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct StoreSection {
    bucket_prefix: Option<String>,
}
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct WsSection {
    tls_verify: Option<bool>,
    ca_file: Option<PathBuf>,
}
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct MediaSection {
    codecs: Option<String>,
}
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct ShutdownSection {
    drain_secs: Option<u64>,
}

/// `[[tenants]]` entries; operator.md also speaks of `tenants.enforce`, which TOML can only hold
/// beside a list as a table, so both spellings are read.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Tenants {
    List(Vec<TenantEntry>),
    Table {
        #[serde(default)]
        enforce: bool,
        #[serde(default)]
        list: Vec<TenantEntry>,
    },
}

#[derive(Deserialize, Debug)]
struct TenantEntry {
    id: String,
    max_concurrent_calls: u32,
    #[serde(default)]
    enforce: Option<bool>,
    /// When the tenant's quota expires (110 from then on): an RFC 3339 date-time, or a date
    /// (midnight UTC), quoted or as a TOML date-time.
    #[serde(default)]
    expires: Option<toml::Value>,
    /// A suspended tenant's requests get 113.
    #[serde(default)]
    suspended: bool,
}

/// `expires` of a `[[tenants]]` entry.
fn parse_expiry(id: &str, v: &toml::Value) -> Result<std::time::SystemTime, String> {
    let text = match v {
        toml::Value::String(s) => s.trim().to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => {
            return Err(format!(
                "tenants '{id}': expires must be a date or date-time"
            ))
        }
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&text) {
        return Ok(t.with_timezone(&chrono::Utc).into());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().into());
        }
    }
    Err(format!(
        "tenants '{id}': expires '{text}' is not an RFC 3339 date-time (2026-01-31T00:00:00Z) or a date (2026-01-31)"
    ))
}

/// Everything the switch runs with, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nats_url: String,
    pub api_subject: String,
    pub pod_id: String,
    pub sip_listen: SocketAddr,
    /// SIP over TLS: listen address, certificate chain and key (PEM files).
    pub sip_tls: Option<(SocketAddr, PathBuf, PathBuf)>,
    pub public_ip: IpAddr,
    pub inbound_acl: Vec<api::Cidr>,
    pub rtp_ports: (u16, u16),
    pub media_timeout_secs: u64,
    pub http_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub inbound_subject: String,
    pub inbound_tenant: String,
    pub inbound_routes: Vec<api::InboundRoute>,
    pub store_prefix: String,
    pub drain_secs: u64,
    pub session_expires: u32,
    pub min_se: u32,
    /// `media.codecs`: what an inbound offer is answered with, by preference.
    pub media_codecs: Vec<sip_core::sdp::Codec>,
    /// `sip.rate_limit` (0: off).
    pub sip_rate_limit: u32,
    pub dialplan: BTreeMap<String, String>,
    pub tenants: HashMap<String, api::quota::TenantQuota>,
    pub tenants_enforce: bool,
    pub ws_tls_verify: bool,
    pub ws_ca_file: Option<PathBuf>,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "botstream".into())
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("rtp.ports '{s}' must be LOW-HIGH"))?;
    let lo: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("rtp.ports: bad number '{a}'"))?;
    let hi: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("rtp.ports: bad number '{b}'"))?;
    if lo < 1024 || hi <= lo + 2 {
        return Err(format!(
            "rtp.ports '{s}' must be a range above 1023 with room for a pair"
        ));
    }
    Ok((lo, hi))
}

fn toml_to_json(t: toml::Table) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
const DEFAULT_API_SUBJECT: &str = "botstream.api";
const DEFAULT_INBOUND_SUBJECT: &str = "botstream.inbound";

fn load_file(cli: &Cli) -> Result<FileConfig, String> {
    match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => Ok(FileConfig::default()),
    }
}

/// What the client commands (`request`, `events`, `call`) need of the switch's configuration,
/// from the same layers, so that they reach the switch started with the same flags, environment
/// or file.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub nats_url: String,
    pub api_subject: String,
    pub inbound_subject: String,
}

impl ClientSettings {
    pub fn resolve(cli: &Cli) -> Result<ClientSettings, String> {
        let file = load_file(cli)?;
        Ok(ClientSettings {
            nats_url: cli
                .nats_url
                .clone()
                .or(file.nats.url)
                .unwrap_or_else(|| DEFAULT_NATS_URL.into()),
            api_subject: cli
                .api_subject
                .clone()
                .or(file.api.subject)
                .unwrap_or_else(|| DEFAULT_API_SUBJECT.into()),
            inbound_subject: cli
                .inbound_subject
                .clone()
                .or(file.inbound.subject)
                .unwrap_or_else(|| DEFAULT_INBOUND_SUBJECT.into()),
        })
    }
}

impl Settings {
    pub fn resolve(cli: &Cli) -> Result<Settings, String> {
        let file = load_file(cli)?;
        let sip_tls = match cli.sip_tls_listen.clone().or(file.sip.tls_listen.clone()) {
            None => None,
            Some(l) => {
                let addr: SocketAddr = l
                    .parse()
                    .map_err(|_| format!("sip.tls_listen '{l}' is not IP:PORT"))?;
                let cert = cli.sip_tls_cert.clone().or(file.sip.tls_cert.clone());
                let key = cli.sip_tls_key.clone().or(file.sip.tls_key.clone());
                match (cert, key) {
                    (Some(c), Some(k)) => Some((addr, c, k)),
                    _ => return Err("sip.tls_listen needs sip.tls_cert and sip.tls_key".into()),
                }
            }
        };
        let pick = |flag: &Option<String>, file: &Option<String>, default: &str| {
            flag.clone()
                .or_else(|| file.clone())
                .unwrap_or_else(|| default.to_string())
        };
        let sip_listen_s = pick(&cli.sip_listen, &file.sip.listen, "0.0.0.0:5060");
        let sip_listen: SocketAddr = sip_listen_s
            .parse()
            .map_err(|_| format!("sip.listen '{sip_listen_s}' is not IP:PORT"))?;
        let public_ip = match cli.sip_public_addr.clone().or(file.sip.public_addr.clone()) {
            Some(a) => a
                .parse()
                .map_err(|_| format!("sip.public_addr '{a}' is not an IP address"))?,
            None if sip_listen.ip().is_unspecified() => "127.0.0.1".parse().expect("literal"),
            None => sip_listen.ip(),
        };
        let acl_s = pick(&cli.sip_inbound_acl, &file.sip.inbound_acl, "127.0.0.0/8");
        let inbound_acl = acl_s
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(api::Cidr::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let rtp_ports = parse_ports(&pick(&cli.rtp_ports, &file.rtp.ports, "16384-32767"))?;
        let http_s = pick(&cli.http_listen, &file.http.listen, "127.0.0.1:9090");
        let http_listen = http_s
            .parse()
            .map_err(|_| format!("http.listen '{http_s}' is not IP:PORT"))?;
        let (tenant_list, mut enforce) = match file.tenants {
            None => (vec![], false),
            Some(Tenants::List(l)) => (l, false),
            Some(Tenants::Table { enforce, list }) => (list, enforce),
        };
        enforce |= file.tenants_enforce.unwrap_or(false)
            || tenant_list.iter().any(|t| t.enforce == Some(true));
        let tenants = tenant_list
            .into_iter()
            .map(|t| {
                let expires = t
                    .expires
                    .as_ref()
                    .map(|v| parse_expiry(&t.id, v))
                    .transpose()?;
                let quota = api::quota::TenantQuota {
                    max_concurrent_calls: t.max_concurrent_calls,
                    expires,
                    suspended: t.suspended,
                };
                Ok((t.id, quota))
            })
            .collect::<Result<HashMap<_, _>, String>>()?;
        Ok(Settings {
            nats_url: pick(&cli.nats_url, &file.nats.url, DEFAULT_NATS_URL),
            api_subject: pick(&cli.api_subject, &file.api.subject, DEFAULT_API_SUBJECT),
            pod_id: cli.pod_id.clone().or(file.pod.id).unwrap_or_else(host_name),
            sip_listen,
            sip_tls,
            public_ip,
            inbound_acl,
            rtp_ports,
            media_timeout_secs: cli
                .media_timeout
                .or(file.rtp.media_timeout_secs)
                .unwrap_or(60),
            http_listen,
            data_dir: cli
                .data_dir
                .clone()
                .or(file.data.dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            inbound_subject: pick(
                &cli.inbound_subject,
                &file.inbound.subject,
                DEFAULT_INBOUND_SUBJECT,
            ),
            inbound_tenant: pick(&cli.inbound_tenant, &file.inbound.tenant, "default"),
            inbound_routes: file
                .inbound
                .routes
                .into_iter()
                .map(|r| api::InboundRoute {
                    to_prefix: r.to_prefix,
                    tenant_id: r.tenant_id,
                    event_subject: r.event_subject,
                    call_params: r.call_params.map(toml_to_json),
                })
                .collect(),
            store_prefix: pick(&cli.store_prefix, &file.store.bucket_prefix, "botstream"),
            drain_secs: cli.drain_secs.or(file.shutdown.drain_secs).unwrap_or(30),
            session_expires: cli
                .sip_session_expires
                .or(file.sip.session_expires)
                .unwrap_or(1800),
            min_se: cli.sip_min_se.or(file.sip.min_se).unwrap_or(90).max(1),
            media_codecs: {
                let s = pick(&cli.media_codecs, &file.media.codecs, "OPUS,G722,PCMU,PCMA");
                let list = sip_core::sdp::Codec::list(&s);
                if list.is_empty() {
                    return Err(format!(
                        "media.codecs '{s}' names no codec the switch speaks"
                    ));
                }
                list
            },
            sip_rate_limit: cli.sip_rate_limit.or(file.sip.rate_limit).unwrap_or(50),
            dialplan: file.dialplan,
            tenants,
            tenants_enforce: enforce,
            ws_tls_verify: cli.ws_tls_verify.or(file.ws.tls_verify).unwrap_or(false),
            ws_ca_file: cli.ws_ca_file.clone().or(file.ws.ca_file),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("botstream").chain(args.iter().copied()))
    }

    #[test]
    fn layers_rise_from_defaults_to_file_to_flags() {
        let dir = std::env::temp_dir().join(format!("bs-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            r#"
[api]
subject = "from.file"
[sip]
listen = "127.0.0.1:5070"
rate_limit = 80
[[inbound.routes]]
to_prefix = "1800"
tenant_id = "t1"
event_subject = "ev.t1"
call_params = { campaign = "x" }
[[tenants]]
id = "t1"
max_concurrent_calls = 2
enforce = true
"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let s = Settings::resolve(&cli(&["--config", p])).unwrap();
        assert_eq!(s.api_subject, "from.file");
        assert_eq!(s.sip_listen.port(), 5070);
        assert_eq!(s.public_ip.to_string(), "127.0.0.1");
        assert_eq!(
            s.inbound_routes[0].call_params.as_ref().unwrap()["campaign"],
            "x"
        );
        assert!(s.tenants_enforce);
        assert_eq!(s.drain_secs, 30);
        assert_eq!(s.sip_rate_limit, 80);
        let s = Settings::resolve(&cli(&["--config", p, "--api-subject", "from.flag"])).unwrap();
        assert_eq!(s.api_subject, "from.flag");
        let s = Settings::resolve(&cli(&["--config", p, "--sip-rate-limit", "0"])).unwrap();
        assert_eq!(s.sip_rate_limit, 0);
        assert_eq!(Settings::resolve(&cli(&[])).unwrap().sip_rate_limit, 50);
    }

    #[test]
    fn tenants_as_operator_md_writes_them_with_expiry_and_suspension() {
        let path = config_file_for_test(
            r#"
tenants_enforce = true
[[tenants]]
id = "t1"
max_concurrent_calls = 2
[[tenants]]
id = "old"
max_concurrent_calls = 5
expires = "2020-01-31"
[[tenants]]
id = "later"
max_concurrent_calls = 5
expires = 2999-01-01T00:00:00Z
[[tenants]]
id = "frozen"
max_concurrent_calls = 5
suspended = true
"#,
        );
        let s = Settings::resolve(&cli(&["--config", &path])).unwrap();
        assert!(s.tenants_enforce);
        assert_eq!(s.tenants["t1"].max_concurrent_calls, 2);
        let jan31 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_580_428_800);
        assert_eq!(s.tenants["old"].expires, Some(jan31));
        assert!(s.tenants["later"].expires.unwrap() > std::time::SystemTime::now());
        assert!(s.tenants["frozen"].suspended && !s.tenants["t1"].suspended);
        let bad = config_file_for_test(
            "[[tenants]]\nid = \"x\"\nmax_concurrent_calls = 1\nexpires = \"soon\"\n",
        );
        let e = Settings::resolve(&cli(&["--config", &bad])).unwrap_err();
        assert!(e.contains("expires"), "{e}");
    }

    fn config_file_for_test(toml: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bs-cfg-t-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, toml).unwrap();
        path.to_str().unwrap().to_string()
    }

    #[test]
    fn client_commands_read_the_same_layers_as_the_switch() {
        let dir = std::env::temp_dir().join(format!("bs-client-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[nats]\nurl = \"nats://10.0.0.1:4222\"\n[api]\nsubject = \"f.api\"\n\
             [inbound]\nsubject = \"f.in\"\n[sip]\nlisten = \"bad\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        // A switch-only value the client does not need (sip.listen) does not stop it.
        let c = ClientSettings::resolve(&cli(&["--config", p, "events"])).unwrap();
        assert_eq!(
            (
                c.nats_url.as_str(),
                c.api_subject.as_str(),
                c.inbound_subject.as_str()
            ),
            ("nats://10.0.0.1:4222", "f.api", "f.in")
        );
        // Flags win, and may come after the subcommand.
        let c = ClientSettings::resolve(&cli(&[
            "--config",
            p,
            "request",
            "list_calls",
            "--api-subject",
            "x.api",
        ]))
        .unwrap();
        assert_eq!(c.api_subject, "x.api");
        assert_eq!(c.nats_url, "nats://10.0.0.1:4222");
        let c = ClientSettings::resolve(&cli(&[
            "call",
            "--gateway",
            "g",
            "--to",
            "1",
            "--from",
            "2",
        ]))
        .unwrap();
        assert_eq!(c.inbound_subject, "botstream.inbound");
        assert!(Cli::try_parse_from(["botstream", "call", "--gateway", "g"]).is_err());
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let e = Settings::resolve(&cli(&["--rtp-ports", "5-3"])).unwrap_err();
        assert!(e.contains("rtp.ports"), "{e}");
        let e = Settings::resolve(&cli(&["--sip-listen", "nope"])).unwrap_err();
        assert!(e.contains("sip.listen"), "{e}");
    }
}
