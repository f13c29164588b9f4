//! `/healthz`, `/readyz` and `/metrics` (operator.md "Health and metrics"). Three fixed GETs do
//! not need an HTTP framework; this answers them and closes the connection.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub async fn serve(
    listener: TcpListener,
    sw: Arc<api::Switch>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let sw = sw.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/healthz" => ("200 OK", "ok\n".to_string()),
                "/readyz" => {
                    if ready.load(Ordering::Relaxed) && !sw.is_draining() {
                        ("200 OK", "ready\n".to_string())
                    } else {
                        ("503 Service Unavailable", "not ready\n".to_string())
                    }
                }
                "/metrics" => ("200 OK", metrics(&sw)),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric with one unlabelled sample.
fn one(s: &mut String, name: &str, kind: &str, value: impl std::fmt::Display) {
    let _ = writeln!(s, "# TYPE {name} {kind}\n{name} {value}");
}

fn metrics(sw: &api::Switch) -> String {
    let m = &sw.metrics;
    let mut s = String::new();
    one(
        &mut s,
        "botstream_calls_active",
        "gauge",
        m.calls_active.load(Ordering::Relaxed),
    );
    let _ = writeln!(s, "# TYPE botstream_calls_total counter");
    for ((dir, cause), n) in m
        .calls_total
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let _ = writeln!(
            s,
            "botstream_calls_total{{direction=\"{}\",cause=\"{}\"}} {n}",
            label(dir),
            label(cause)
        );
    }
    let _ = writeln!(s, "# TYPE botstream_api_requests_total counter");
    for ((req, code), n) in m
        .api_requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let _ = writeln!(
            s,
            "botstream_api_requests_total{{request=\"{}\",status_code=\"{code}\"}} {n}",
            label(req)
        );
    }
    let _ = writeln!(s, "# TYPE botstream_rtp_packets_total counter");
    let _ = writeln!(
        s,
        "botstream_rtp_packets_total{{dir=\"in\"}} {}",
        sw.media.counters.rtp_in.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        s,
        "botstream_rtp_packets_total{{dir=\"out\"}} {}",
        sw.media.counters.rtp_out.load(Ordering::Relaxed)
    );
    one(
        &mut s,
        "botstream_rtp_foreign_dropped_total",
        "counter",
        sw.media
            .counters
            .rtp_foreign_dropped
            .load(Ordering::Relaxed),
    );
    one(
        &mut s,
        "botstream_srtp_auth_failed_total",
        "counter",
        sw.media.counters.srtp_auth_failed.load(Ordering::Relaxed),
    );
    one(
        &mut s,
        "botstream_rtp_ticks_skipped_total",
        "counter",
        sw.media.counters.ticks_skipped.load(Ordering::Relaxed),
    );
    one(
        &mut s,
        "botstream_streams_active",
        "gauge",
        sw.media.counters.streams_active.load(Ordering::Relaxed),
    );
    one(
        &mut s,
        "botstream_ws_frames_dropped_total",
        "counter",
        sw.media.counters.ws_frames_dropped.load(Ordering::Relaxed),
    );
    histogram(
        &mut s,
        "botstream_ws_forward_latency_us",
        &sw.media.counters.forward_latency,
    );
    histogram(
        &mut s,
        "botstream_bridge_latency_us",
        &sw.media.counters.bridge_latency,
    );
    one(
        &mut s,
        "botstream_events_dropped_total",
        "counter",
        sw.metrics.events_dropped.load(Ordering::Relaxed),
    );
    one(
        &mut s,
        "botstream_call_core_panics_total",
        "counter",
        sw.metrics.core_panics.load(Ordering::Relaxed),
    );
    let _ = writeln!(s, "# TYPE botstream_gateway_up gauge");
    for (name, up) in sw.registry.statuses() {
        let _ = writeln!(
            s,
            "botstream_gateway_up{{gateway=\"{}\"}} {}",
            label(&name),
            up as u8
        );
    }
    let st = &sw.stack.stats;
    let _ = writeln!(s, "# TYPE botstream_sip_messages_total counter");
    let _ = writeln!(
        s,
        "botstream_sip_messages_total{{dir=\"in\"}} {}",
        st.received.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        s,
        "botstream_sip_messages_total{{dir=\"out\"}} {}",
        st.sent.load(Ordering::Relaxed)
    );
    one(
        &mut s,
        "botstream_sip_malformed_total",
        "counter",
        st.malformed.load(Ordering::Relaxed),
    );
    let _ = writeln!(s, "# TYPE botstream_sip_dropped_total counter");
    for (reason, n) in st.dropped.all() {
        let _ = writeln!(s, "botstream_sip_dropped_total{{reason=\"{reason}\"}} {n}");
    }
    for (name, gauge) in [
        ("botstream_sip_transactions", &st.transactions),
        ("botstream_sip_connections", &st.connections),
        ("botstream_sip_sources_tracked", &st.sources),
        ("botstream_sip_dialogs_tracked", &st.dialogs),
    ] {
        one(&mut s, name, "gauge", gauge.load(Ordering::Relaxed));
    }
    one(
        &mut s,
        "botstream_rtp_ports_in_use",
        "gauge",
        sw.ports.in_use(),
    );
    s
}

/// A latency histogram in Prometheus text: cumulative buckets by upper bound, then the count.
fn histogram(s: &mut String, name: &str, h: &media::leg::LatencyHistogram) {
    let _ = writeln!(s, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, n) in h.snapshot().iter().enumerate() {
        cumulative += n;
        let le = h
            .bounds()
            .get(i)
            .map(|b| b.to_string())
            .unwrap_or_else(|| "+Inf".into());
        let _ = writeln!(s, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(s, "{name}_count {cumulative}");
}
