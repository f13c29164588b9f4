//! RFC 4028 session timers, the arithmetic and the header rules: who refreshes, when, and when an
//! unrefreshed session is dead. Carriers clear calls that are not refreshed, so a long call lives
//! only if one side re-INVITEs (or UPDATEs) at half the interval.
//!
//! Pure: the call core turns a [`Session`] into its refresh and expiry timers.

use std::time::Duration;

use crate::msg::{Request, Response};

/// RFC 4028 §4: no Min-SE may be below 90 s on the wire.
pub const MIN_SE_FLOOR: u32 = 90;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// `Session-Expires: delta-seconds [;refresher=uac|uas]` (§4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    pub interval: u32,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    pub fn parse(v: &str) -> Option<SessionExpires> {
        let mut parts = v.split(';');
        let interval = parts.next()?.trim().parse().ok()?;
        let mut refresher = None;
        for p in parts {
            if let Some((k, val)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("refresher") {
                    refresher = match val.trim().to_ascii_lowercase().as_str() {
                        "uac" => Some(Refresher::Uac),
                        "uas" => Some(Refresher::Uas),
                        _ => None,
                    };
                }
            }
        }
        Some(SessionExpires {
            interval,
            refresher,
        })
    }

    pub fn header(&self) -> String {
        match self.refresher {
            Some(Refresher::Uac) => format!("{};refresher=uac", self.interval),
            Some(Refresher::Uas) => format!("{};refresher=uas", self.interval),
            None => self.interval.to_string(),
        }
    }

    fn of(headers: &crate::msg::Headers) -> Option<SessionExpires> {
        headers.get("Session-Expires").and_then(Self::parse)
    }
}

/// `Min-SE: delta-seconds` (§5), parameters ignored.
pub fn parse_min_se(v: &str) -> Option<u32> {
    v.split(';').next()?.trim().parse().ok()
}

/// Whether `timer` is listed in a Supported or Require header.
pub fn supports_timer(headers: &crate::msg::Headers) -> bool {
    ["Supported", "Require"].iter().any(|name| {
        headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("timer"))
    })
}

/// A session timer in force on a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub interval: u32,
    /// We send the refreshes; otherwise the far end does and we only watch for them.
    pub we_refresh: bool,
}

impl Session {
    /// §7.4/§9: the refresher refreshes at half the interval.
    pub fn refresh_after(&self) -> Duration {
        Duration::from_secs(self.interval as u64) / 2
    }

    /// §10: with no refresh by the interval minus the lesser of 32 s and a third of it, the
    /// session is over and is ended with BYE.
    pub fn expire_after(&self) -> Duration {
        let i = self.interval as u64;
        Duration::from_secs(i - (i / 3).min(32))
    }
}

/// The UAC's view after a 2xx to a request that asked for a timer (§7.2): a 2xx without
/// Session-Expires means there is none; without a refresher parameter we refresh.
pub fn from_2xx(resp: &Response) -> Option<Session> {
    let se = SessionExpires::of(&resp.headers)?;
    Some(Session {
        interval: se.interval,
        we_refresh: se.refresher != Some(Refresher::Uas),
    })
}

/// What a UAS does with a request's Session-Expires (§9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UasDecision {
    /// The request asked for no timer.
    None,
    /// 422 Session Interval Too Small, with `Min-SE: min_se`.
    TooSmall { min_se: u32 },
    /// Accept: put `Session-Expires: header` (and `Require: timer` when `require`) on the 2xx.
    Use {
        session: Session,
        header: SessionExpires,
        require: bool,
    },
}

/// §9: a request below our Min-SE is refused with 422 when the sender knows timers (a proxy may
/// have inserted the header for a UAC that does not; then the interval is raised instead). The
/// refresher is copied from the request; if it names none, the UAC refreshes when it can.
pub fn uas_decide(req: &Request, min_se: u32) -> UasDecision {
    let Some(se) = SessionExpires::of(&req.headers) else {
        return UasDecision::None;
    };
    let supported = supports_timer(&req.headers);
    let mut interval = se.interval;
    if interval < min_se {
        if supported {
            return UasDecision::TooSmall { min_se };
        }
        interval = min_se;
    }
    let refresher = match se.refresher {
        Some(r) => r,
        None if supported => Refresher::Uac,
        None => Refresher::Uas,
    };
    UasDecision::Use {
        session: Session {
            interval,
            we_refresh: refresher == Refresher::Uas,
        },
        header: SessionExpires {
            interval,
            refresher: Some(refresher),
        },
        require: supported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Request;

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut r = Request::new("INVITE", "sip:a@b");
        for (k, v) in headers {
            r.headers.push(k, *v);
        }
        r
    }

    #[test]
    fn header_round_trips() {
        let se = SessionExpires::parse("1800 ; refresher=UAS").unwrap();
        assert_eq!(se.interval, 1800);
        assert_eq!(se.refresher, Some(Refresher::Uas));
        assert_eq!(se.header(), "1800;refresher=uas");
        assert_eq!(SessionExpires::parse("x"), None);
        assert_eq!(parse_min_se("90;lr"), Some(90));
    }

    #[test]
    fn refresh_at_half_and_expire_before_the_interval() {
        let s = Session {
            interval: 1800,
            we_refresh: true,
        };
        assert_eq!(s.refresh_after(), Duration::from_secs(900));
        assert_eq!(s.expire_after(), Duration::from_secs(1768));
        let short = Session {
            interval: 90,
            we_refresh: false,
        };
        assert_eq!(short.expire_after(), Duration::from_secs(60));
    }

    #[test]
    fn uas_refuses_too_small_only_from_a_timer_aware_uac() {
        let r = req(&[("Session-Expires", "60"), ("Supported", "timer, 100rel")]);
        assert_eq!(uas_decide(&r, 90), UasDecision::TooSmall { min_se: 90 });
        let r = req(&[("Session-Expires", "60")]);
        let UasDecision::Use {
            session, require, ..
        } = uas_decide(&r, 90)
        else {
            panic!()
        };
        assert_eq!(session.interval, 90);
        assert!(
            session.we_refresh,
            "a UAC without timer support cannot refresh"
        );
        assert!(!require);
    }

    #[test]
    fn uas_copies_the_refresher_or_lets_the_uac_refresh() {
        let r = req(&[("x", "600;refresher=uas"), ("k", "timer")]);
        let UasDecision::Use {
            session, header, ..
        } = uas_decide(&r, 90)
        else {
            panic!()
        };
        assert!(session.we_refresh);
        assert_eq!(header.header(), "600;refresher=uas");
        let r = req(&[("Session-Expires", "600"), ("Supported", "timer")]);
        let UasDecision::Use { session, .. } = uas_decide(&r, 90) else {
            panic!()
        };
        assert!(!session.we_refresh);
        assert_eq!(uas_decide(&req(&[]), 90), UasDecision::None);
    }
}
