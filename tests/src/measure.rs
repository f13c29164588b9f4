//! What the benchmarks read off the machine and the switch: CPU and memory of a process, UDP
//! drops, and the switch's own counters and latency histograms from /metrics.

/// A process's CPU time so far, user and system apart, in seconds.
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub user: f64,
    pub sys: f64,
}

pub fn proc_cpu(pid: &str) -> Cpu {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let secs = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    Cpu {
        user: secs(11),
        sys: secs(12),
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// (busy, total) jiffies over all cores, from /proc/stat: how saturated the machine is.
pub fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Datagrams the kernel dropped on the switch's own UDP sockets (the `drops` column of
/// /proc/net/udp for the socket inodes the process holds): what the switch failed to read in
/// time, apart from drops at SIPp's socket.
pub fn switch_udp_drops(pid: u32) -> u64 {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect();
    let mut drops = 0;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 12 && inodes.contains(f[9]) {
                drops += f[12].parse::<u64>().unwrap_or(0);
            }
        }
    }
    drops
}

pub fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return 0;
    };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A histogram of /metrics as (bucket upper bound µs or None for +Inf, cumulative count).
pub fn buckets(text: &str, histogram: &str) -> Vec<(Option<u64>, u64)> {
    let prefix = format!("{histogram}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str())?.split_once("\"} "))
        .map(|(le, n)| (le.parse().ok(), n.trim().parse().unwrap_or(0)))
        .collect()
}

/// The bucket holding quantile `q` of what was recorded between two scrapes: its label and its
/// upper bound in µs (None when above the largest bucket or nothing was recorded).
pub fn quantile(
    before: &[(Option<u64>, u64)],
    after: &[(Option<u64>, u64)],
    q: f64,
) -> (String, Option<u64>) {
    let delta: Vec<(Option<u64>, u64)> = after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&(None, 0))))
        .map(|(a, b)| (a.0, a.1 - b.1.min(a.1)))
        .collect();
    let total = delta.last().map(|d| d.1).unwrap_or(0);
    if total == 0 {
        return ("n/a".into(), None);
    }
    let want = (total as f64 * q).ceil() as u64;
    for (le, n) in &delta {
        if *n >= want {
            return match le {
                Some(us) => (format!("≤ {us} µs"), Some(*us)),
                None => ("above the largest bucket".into(), None),
            };
        }
    }
    ("n/a".into(), None)
}
