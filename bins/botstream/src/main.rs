//! The BotStream switch binary (operator.md).

mod analyze;
mod client;
mod config;
mod http;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use config::{Cli, ClientSettings, Command, Settings};

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Analyze { cpa, file }) = &cli.command {
        let mut out = std::io::stdout().lock();
        return match analyze::run(cpa, file, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("botstream analyze: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(cmd) = &cli.command {
        return client_command(&cli, cmd);
    }
    init_logs(&cli.log_format);
    let settings = match Settings::resolve(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("botstream: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("botstream: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(settings));
    // Whatever is still running (a DNS lookup on a blocking thread, a reconnecting NATS client)
    // does not hold the exit up.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("botstream: {e}");
            tracing::error!(error = %e, "exiting");
            ExitCode::FAILURE
        }
    }
}

/// `request`, `events` and `call` (operator.md "Client commands").
fn client_command(cli: &Cli, cmd: &Command) -> ExitCode {
    let name = match cmd {
        Command::Request { .. } => "request",
        Command::Events { .. } => "events",
        Command::Call { .. } => "call",
        Command::Analyze { .. } => "analyze",
    };
    let settings = match ClientSettings::resolve(cli) {
        Ok(s) => s,
        Err(e) => return client::Outcome::BadInput(format!("configuration: {e}")).exit(name),
    };
    let outcome = match cmd {
        Command::Request { name, json } => client::run_request(&settings, name, json.as_deref()),
        Command::Events {
            subject,
            count,
            show_subject,
        } => client::run_events(&settings, subject.as_deref(), *count, *show_subject),
        Command::Call {
            gateway,
            to,
            from,
            stream,
            tenant,
            subject,
            extra,
        } => client::run_call(
            &settings,
            &client::CallArgs {
                gateway,
                to,
                from,
                stream: stream.as_deref(),
                tenant,
                subject: subject.as_deref(),
                extra: extra.as_deref(),
            },
        ),
        Command::Analyze { .. } => unreachable!("handled first"),
    };
    outcome.exit(name)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(s: Settings) -> Result<(), BoxError> {
    // Before anything answers (HTTP, SIP): a SIGTERM that comes while the switch is starting
    // is kept and honoured once it is up, instead of killing it by the default action.
    let mut signals = Signals::new();
    let ready = Arc::new(AtomicBool::new(false));
    // operator.md: exit with a clear message if NATS is unreachable at start-up.
    let servers: Vec<async_nats::ServerAddr> = s
        .nats_url
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("nats.url '{}': {e}", s.nats_url))?;
    let client = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::ConnectOptions::new()
            .name(format!("botstream {}", s.pod_id))
            // A connection that died without a word (a partition, no RST) is found in ~30 s,
            // not the default's 3 minutes; the event publisher keeps what it could not confirm.
            .ping_interval(Duration::from_secs(10))
            .connect(servers),
    )
    .await
    .map_err(|_| format!("NATS at {} did not answer within 5 s", s.nats_url))?
    .map_err(|e| format!("cannot connect to NATS at {}: {e}", s.nats_url))?;
    let js = async_nats::jetstream::new(client.clone());
    let store = gateway::Store::open(&js, &s.store_prefix)
        .await
        .map_err(|e| format!("JetStream KV (is nats-server running with -js?): {e}"))?;

    let ws_tls = media::ws::tls_config(s.ws_tls_verify, s.ws_ca_file.as_deref())
        .map_err(|e| format!("ws TLS: {e}"))?;
    let sip_tls = sip_core::io::TlsOptions {
        listen: match &s.sip_tls {
            Some((addr, cert, key)) => Some((*addr, sip_tls_server(cert, key)?)),
            None => None,
        },
        // Towards trunks: encrypted, certificates not checked against names (see io.rs).
        client: Some(media::ws::tls_config(false, None).map_err(|e| format!("SIP TLS: {e}"))?),
    };
    let user_agent = format!("BotStream/{}", env!("CARGO_PKG_VERSION"));
    let (stack, front) = sip_core::io::SipStack::bind_with(
        s.sip_listen,
        sip_tls,
        Default::default(),
        sip_core::io::StackOptions {
            rate_limit: s.sip_rate_limit,
            server: Some(user_agent.clone()),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| format!("cannot listen for SIP on {}: {e}", s.sip_listen))?;
    let local = sip_core::dialog::Local {
        host: s.public_ip.to_string(),
        port: stack.local_addr.port(),
        user_agent,
    };
    let bind_ip = if s.sip_listen.ip().is_unspecified() {
        s.sip_listen.ip()
    } else {
        s.public_ip
    };
    let ports = media::PortPool::new(bind_ip, s.rtp_ports.0, s.rtp_ports.1);
    let (registry, counts) = gateway::Registry::new(s.pod_id.clone(), stack.clone(), local.clone());
    registry.spawn_resolver(Duration::from_secs(30));
    // The inbound ACL, applied where INVITEs arrive: a refused one costs no transaction.
    let acl = s.inbound_acl.clone();
    let trunks = registry.clone();
    stack.set_inbound_filter(sip_core::io::InboundFilter {
        allowed: Arc::new(move |ip| {
            acl.iter().any(|c| c.contains(ip)) || trunks.gateway_for_source(ip).is_some()
        }),
        reason: api::cause::HangupCause::from_name("INCOMING_CALL_BARRED")
            .map(api::cause::reason_header_value),
    });
    store
        .sync(registry.clone(), counts)
        .await
        .map_err(|e| format!("loading gateways: {e}"))?;
    std::fs::create_dir_all(&s.data_dir)
        .map_err(|e| format!("data.dir {}: {e}", s.data_dir.display()))?;

    let directory = api::directory::CallDirectory::open(&js, &s.store_prefix, &s.pod_id)
        .await
        .map_err(|e| format!("call directory: {e}"))?;
    let cpa_configs = api::cpa_configs::CpaConfigs::open(&js, &s.store_prefix)
        .await
        .map_err(|e| format!("CPA configuration store: {e}"))?;
    let tenant_counts = api::quota::TenantCounts::open(&js, &s.store_prefix, &s.pod_id)
        .await
        .map_err(|e| format!("tenant call counts: {e}"))?;
    let (board, board_inputs) = api::shell::channel();
    let sw = api::Switch::new(
        api::SwitchConfig {
            pod_id: s.pod_id.clone(),
            api_subject: s.api_subject.clone(),
            public_ip: s.public_ip,
            inbound_acl: s.inbound_acl.clone(),
            inbound_routes: s.inbound_routes.clone(),
            inbound_subject: s.inbound_subject.clone(),
            inbound_tenant: s.inbound_tenant.clone(),
            dialplan: s.dialplan.clone(),
            tenants: s.tenants.clone(),
            tenants_enforce: s.tenants_enforce,
            media_timeout: Duration::from_secs(s.media_timeout_secs),
        },
        client.clone(),
        stack.clone(),
        local,
        registry,
        store,
        directory,
        cpa_configs,
        ports,
        media::leg::MediaConfig {
            media_timeout: Duration::from_secs(s.media_timeout_secs),
            tls: ws_tls,
            counters: Default::default(),
        },
        s.data_dir.clone(),
        board.clone(),
        tenant_counts,
    );
    api::shell::spawn(
        sw.clone(),
        api::board::BoardConfig {
            local: sw.local.clone(),
            public_ip: s.public_ip,
            pod_id: s.pod_id.clone(),
            data_dir: s.data_dir.clone(),
            t1: sip_core::transaction::TimerConfig::default().t1,
            session_expires: s.session_expires,
            min_se: s.min_se,
            codecs: s.media_codecs.clone(),
            refer_timeout: Duration::from_secs(120),
        },
        &board,
        board_inputs,
        front,
    );
    let http = tokio::net::TcpListener::bind(s.http_listen)
        .await
        .map_err(|e| format!("cannot listen for HTTP on {}: {e}", s.http_listen))?;
    tokio::spawn(http::serve(http, sw.clone(), ready.clone()));
    let sub = client
        .queue_subscribe(s.api_subject.clone(), "botstream".into())
        .await
        .map_err(|e| format!("subscribing to {}: {e}", s.api_subject))?;
    let direct = client
        .subscribe(api::directory::pod_subject(&s.api_subject, &s.pod_id))
        .await
        .map_err(|e| format!("subscribing to the pod subject: {e}"))?;
    let api_task = tokio::spawn(api::service::serve(sw.clone(), sub, false));
    // Forwarded requests for this pod's calls keep flowing while it drains.
    tokio::spawn(api::service::serve(sw.clone(), direct, true));
    ready.store(true, Ordering::Relaxed);
    tracing::info!(pod = %s.pod_id, sip = %stack.local_addr, api = %s.api_subject, "BotStream ready");
    if let Some(tls) = stack.tls_local_addr {
        tracing::info!(sip_tls = %tls, "SIP over TLS");
    }

    signals.next().await;
    tracing::info!(drain_secs = s.drain_secs, "shutting down: draining calls");
    // Not ready at once, and out of the queue group so other pods take new requests. Nothing
    // below waits on NATS without a bound: it may be away, which is when pods get restarted.
    sw.draining.store(true, Ordering::Relaxed);
    api_task.abort();
    flush(&client, Duration::from_secs(1)).await;
    tokio::select! {
        _ = api::service::drain(&sw, Duration::from_secs(s.drain_secs)) => {}
        _ = signals.next() => {
            tracing::info!("second signal: ending the remaining calls now");
            api::service::end_calls(&sw).await;
        }
    }
    flush(&client, Duration::from_secs(2)).await;
    let lost = sw.metrics.events_dropped.load(Ordering::Relaxed);
    tracing::info!(events_not_published = lost, "stopped");
    Ok(())
}

/// The server side of SIP over TLS from PEM files (sip.tls_cert, sip.tls_key).
fn sip_tls_server(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sip.tls_cert {}: {e}", cert.display()))?;
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| format!("sip.tls_key {}: {e}", key.display()))?
        .ok_or_else(|| format!("sip.tls_key {}: no private key found", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("sip.tls_cert/tls_key: {e}"))?;
    Ok(Arc::new(config))
}

/// Hands NATS what is buffered, for at most `within`, and not at all while it is away.
async fn flush(client: &async_nats::Client, within: Duration) {
    if client.connection_state() == async_nats::connection::State::Connected {
        let _ = tokio::time::timeout(within, client.flush()).await;
    }
}

/// SIGTERM and SIGINT, as a stream: the first starts the drain, the second cuts it short. Both
/// are listened for from [`Signals::new`] on, so one that comes early waits for [`Signals::next`].
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
                match s.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = one(&mut self.int) => {}
                _ = one(&mut self.term) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
