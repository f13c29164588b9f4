//! What keeps a SIP flood from costing the calls that are up: a per-source rate limit for
//! requests outside the switch's dialogs (operator.md `sip.rate_limit`), and the set of dialogs
//! that are never limited. Both are plain state machines fed the time, like the transaction
//! layer; `io.rs` consults them before a message reaches a transaction.
//!
//! Every table here is bounded and expires:
//! * sources: at most [`MAX_SOURCES`] entries; an entry goes 2 s after its source's last request
//!   (its bucket is full again by then) or when its 60 s ban ends. Sources beyond the bound share
//!   one bucket of the same rate.
//! * dialogs: at most [`MAX_DIALOGS`] (only answered calls make one, so the switch's RTP ports
//!   bound them long before); each goes 32 s after a BYE in either direction, or after
//!   [`DIALOG_IDLE`] without a message.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::transaction::Peer;

/// Distinct sources tracked at once (~100 bytes each).
pub const MAX_SOURCES: usize = 65_536;
/// A source over its rate for this long is ignored for [`BAN`].
pub const OVER_FOR: Duration = Duration::from_secs(10);
pub const BAN: Duration = Duration::from_secs(60);
/// Dialogs tracked at once.
pub const MAX_DIALOGS: usize = 65_536;
/// A dialog with no message for this long is forgotten (a call that ended without a BYE the
/// switch saw). Only the exemption from the rate limit goes with it, never the call.
pub const DIALOG_IDLE: Duration = Duration::from_secs(12 * 3600);
/// After a BYE, how long its dialog stays known: the BYE's own retransmissions and answers.
pub const DIALOG_LINGER: Duration = Duration::from_secs(32);

/// What the limiter says about one request from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Over the rate: dropped (UDP) or answered 503 (TCP/TLS).
    Over,
    /// Over the rate for [`OVER_FOR`]: ignored until the ban ends.
    Banned,
}

/// A source address as the limiter counts it: an IPv4 address, or an IPv6 /64 (one host's
/// share of a network; a host can take any address of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    V4(u32),
    V6(u64),
}

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(u32::from(v4)),
                None => SourceKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Start of the current run of drops (a run ends after 1 s without one).
    over_since: Option<Instant>,
    last_drop: Option<Instant>,
    banned_until: Option<Instant>,
}

impl Bucket {
    fn new(now: Instant, capacity: f64) -> Bucket {
        Bucket {
            tokens: capacity,
            last: now,
            over_since: None,
            last_drop: None,
            banned_until: None,
        }
    }

    fn check(&mut self, now: Instant, rate: f64, ban: bool) -> Verdict {
        if let Some(until) = self.banned_until {
            if now < until {
                return Verdict::Banned;
            }
            *self = Bucket::new(now, rate);
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Pass;
        }
        let continuing = self
            .last_drop
            .is_some_and(|d| now.saturating_duration_since(d) <= Duration::from_secs(1));
        if !continuing {
            self.over_since = Some(now);
        }
        self.last_drop = Some(now);
        if ban
            && self
                .over_since
                .is_some_and(|s| now.saturating_duration_since(s) >= OVER_FOR)
        {
            self.banned_until = Some(now + BAN);
            self.over_since = None;
            return Verdict::Banned;
        }
        Verdict::Over
    }

    fn idle(&self, now: Instant) -> bool {
        match self.banned_until {
            Some(until) => now >= until,
            None => now.saturating_duration_since(self.last) >= Duration::from_secs(2),
        }
    }
}

/// `sip.rate_limit`: requests per second one source may send outside its dialogs.
pub struct RateLimiter {
    rate: u32,
    sources: HashMap<SourceKey, Bucket>,
    /// Shared by the sources that find the table full.
    overflow: Option<Bucket>,
    max_sources: usize,
}

impl RateLimiter {
    /// `rate` 0 turns the limit off.
    pub fn new(rate: u32) -> RateLimiter {
        Self::with_capacity(rate, MAX_SOURCES)
    }

    pub fn with_capacity(rate: u32, max_sources: usize) -> RateLimiter {
        RateLimiter {
            rate,
            sources: HashMap::new(),
            overflow: None,
            max_sources,
        }
    }

    pub fn enabled(&self) -> bool {
        self.rate > 0
    }

    /// Counts one request from `ip`.
    pub fn check(&mut self, now: Instant, ip: IpAddr) -> Verdict {
        if self.rate == 0 {
            return Verdict::Pass;
        }
        let rate = f64::from(self.rate);
        let key = SourceKey::of(ip);
        if let Some(b) = self.sources.get_mut(&key) {
            return b.check(now, rate, true);
        }
        if self.sources.len() >= self.max_sources {
            // No ban here: the bucket is shared, so one source's excess must not silence others
            // for a minute.
            return self
                .overflow
                .get_or_insert_with(|| Bucket::new(now, rate))
                .check(now, rate, false);
        }
        let mut b = Bucket::new(now, rate);
        let v = b.check(now, rate, true);
        self.sources.insert(key, b);
        v
    }

    /// Whether `ip` is ignored right now (checked before a datagram is even parsed).
    pub fn banned(&self, now: Instant, ip: IpAddr) -> bool {
        self.sources
            .get(&SourceKey::of(ip))
            .and_then(|b| b.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Forgets sources whose bucket is full again and whose ban (if any) is over.
    pub fn sweep(&mut self, now: Instant) {
        self.sources.retain(|_, b| !b.idle(now));
        if self.overflow.as_ref().is_some_and(|b| b.idle(now)) {
            self.overflow = None;
        }
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[derive(Debug, Clone)]
struct DialogEntry {
    peer: Peer,
    last: Instant,
    /// Set by a BYE: the dialog is forgotten then.
    ends: Option<Instant>,
}

/// The dialogs of answered calls, as the transport sees them: Call-ID and the switch's own tag.
/// Requests in them are never rate limited; a stream connection that carries one is never
/// closed for being idle.
#[derive(Default)]
pub struct Dialogs {
    /// By Call-ID, then our tag (looked up without building a key for every request).
    by_call: HashMap<String, Vec<(String, DialogEntry)>>,
    count: usize,
    per_ip: HashMap<SourceKey, u32>,
    per_peer: HashMap<Peer, u32>,
}

impl Dialogs {
    pub fn new() -> Dialogs {
        Dialogs::default()
    }

    /// A 2xx to an INVITE went out (our tag in To) or came in (our tag in From).
    pub fn established(&mut self, now: Instant, call_id: &str, local_tag: &str, peer: Peer) {
        if let Some(e) = self.lookup_mut(call_id, local_tag) {
            e.last = now;
            return;
        }
        if self.count >= MAX_DIALOGS {
            return;
        }
        *self
            .per_ip
            .entry(SourceKey::of(peer.addr.ip()))
            .or_default() += 1;
        *self.per_peer.entry(peer).or_default() += 1;
        self.count += 1;
        self.by_call.entry(call_id.to_string()).or_default().push((
            local_tag.to_string(),
            DialogEntry {
                peer,
                last: now,
                ends: None,
            },
        ));
    }

    /// Whether a request (by its Call-ID and the tag it addressed to us) belongs to a dialog;
    /// counts as activity.
    pub fn touch(&mut self, now: Instant, call_id: &str, local_tag: &str) -> bool {
        match self.lookup_mut(call_id, local_tag) {
            Some(e) => {
                e.last = now;
                true
            }
            None => false,
        }
    }

    fn lookup_mut(&mut self, call_id: &str, local_tag: &str) -> Option<&mut DialogEntry> {
        self.by_call
            .get_mut(call_id)?
            .iter_mut()
            .find(|(t, _)| t == local_tag)
            .map(|(_, e)| e)
    }

    /// A BYE in the dialog, either way: it ends [`DIALOG_LINGER`] from now.
    pub fn ending(&mut self, now: Instant, call_id: &str, local_tag: &str) {
        if let Some(e) = self.lookup_mut(call_id, local_tag) {
            e.ends.get_or_insert(now + DIALOG_LINGER);
        }
    }

    /// Whether any dialog lives with a peer at this address (its requests are parsed before
    /// they are counted).
    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.per_ip.contains_key(&SourceKey::of(ip))
    }

    /// Whether any dialog lives on this transport peer (a TCP/TLS connection).
    pub fn has_peer(&self, peer: &Peer) -> bool {
        self.per_peer.contains_key(peer)
    }

    pub fn sweep(&mut self, now: Instant) {
        let mut gone = Vec::new();
        self.by_call.retain(|_, tags| {
            tags.retain(|(_, e)| {
                let keep = e.ends.is_none_or(|at| now < at)
                    && now.saturating_duration_since(e.last) < DIALOG_IDLE;
                if !keep {
                    gone.push(e.peer);
                }
                keep
            });
            !tags.is_empty()
        });
        self.count -= gone.len();
        for peer in gone {
            dec(&mut self.per_ip, SourceKey::of(peer.addr.ip()));
            dec(&mut self.per_peer, peer);
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) {
    if let Some(n) = m.get_mut(&k) {
        *n -= 1;
        if *n == 0 {
            m.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::Transport;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_rate_and_no_more() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(50);
        let a = ip("10.0.0.1");
        let passed = (0..60).filter(|_| l.check(t0, a) == Verdict::Pass).count();
        assert_eq!(passed, 50, "a burst of the rate passes");
        // Another source is not touched by the first one's excess.
        assert_eq!(l.check(t0, ip("10.0.0.2")), Verdict::Pass);
        // Refilled at the rate.
        let t = t0 + Duration::from_millis(100);
        let passed = (0..10).filter(|_| l.check(t, a) == Verdict::Pass).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn ten_seconds_over_the_rate_is_a_minute_ignored() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10);
        let a = ip("10.0.0.1");
        let mut banned_at = None;
        // 20 requests a second.
        for i in 0..400u64 {
            let now = t0 + Duration::from_millis(i * 50);
            if l.check(now, a) == Verdict::Banned {
                banned_at = Some(now);
                break;
            }
        }
        let at = banned_at.expect("banned");
        let over = at - t0;
        assert!(
            over >= Duration::from_secs(10) && over < Duration::from_secs(12),
            "{over:?}"
        );
        assert!(l.banned(at + Duration::from_secs(59), a));
        assert_eq!(l.check(at + Duration::from_secs(59), a), Verdict::Banned);
        assert!(!l.banned(at + BAN, a));
        assert_eq!(
            l.check(at + BAN, a),
            Verdict::Pass,
            "a fresh start after the ban"
        );
    }

    #[test]
    fn bursts_with_pauses_are_never_banned() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10);
        let a = ip("10.0.0.1");
        // 3 s at twice the rate, 2 s of silence, over and over for a minute.
        for cycle in 0..12u64 {
            for i in 0..60u64 {
                let now = t0 + Duration::from_secs(cycle * 5) + Duration::from_millis(i * 50);
                assert_ne!(l.check(now, a), Verdict::Banned);
            }
        }
    }

    #[test]
    fn the_source_table_is_bounded_and_expires() {
        let t0 = Instant::now();
        let mut l = RateLimiter::with_capacity(5, 100);
        for i in 0..1000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.check(t0, a);
        }
        assert_eq!(l.len(), 100);
        // The rest share one bucket of the same rate.
        assert_eq!(l.check(t0, ip("192.168.1.1")), Verdict::Over);
        l.sweep(t0 + Duration::from_secs(2));
        assert!(l.is_empty());
        assert_eq!(
            l.check(t0 + Duration::from_secs(2), ip("192.168.1.1")),
            Verdict::Pass
        );
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        assert_eq!(
            SourceKey::of(ip("2001:db8::1")),
            SourceKey::of(ip("2001:db8::ffff:1"))
        );
        assert_ne!(
            SourceKey::of(ip("2001:db8::1")),
            SourceKey::of(ip("2001:db8:0:1::1"))
        );
        assert_eq!(
            SourceKey::of(ip("::ffff:10.0.0.1")),
            SourceKey::of(ip("10.0.0.1"))
        );
    }

    #[test]
    fn dialogs_end_after_a_bye_or_a_long_silence() {
        let t0 = Instant::now();
        let peer = Peer {
            transport: Transport::Tcp,
            addr: "10.0.0.1:5060".parse().unwrap(),
        };
        let mut d = Dialogs::new();
        d.established(t0, "c1", "ours", peer);
        d.established(t0, "c2", "ours", peer);
        assert!(d.touch(t0, "c1", "ours"));
        assert!(!d.touch(t0, "c1", "theirs"));
        assert!(d.has_ip(ip("10.0.0.1")) && d.has_peer(&peer));
        d.ending(t0, "c1", "ours");
        d.sweep(t0 + Duration::from_secs(31));
        assert_eq!(d.len(), 2);
        d.sweep(t0 + DIALOG_LINGER);
        assert_eq!(d.len(), 1);
        assert!(d.has_peer(&peer));
        d.sweep(t0 + DIALOG_IDLE);
        assert!(d.is_empty());
        assert!(!d.has_ip(ip("10.0.0.1")) && !d.has_peer(&peer));
    }
}
