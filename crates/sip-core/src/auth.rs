//! HTTP digest authentication for SIP (RFC 3261 §22, RFC 2617; MD5 with and without qop=auth).

use md5::{Digest, Md5};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Option<String>,
    /// `auth` when the server offers it; `auth-int` alone is not supported.
    pub qop_auth: bool,
    pub stale: bool,
}

/// Parses a `WWW-Authenticate` / `Proxy-Authenticate` value. Only Digest with MD5 is answered;
/// anything else yields `None` and the call fails with the challenge's status.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let params = parse_auth_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let algorithm = get("algorithm");
    if let Some(a) = &algorithm {
        if !a.eq_ignore_ascii_case("MD5") {
            return None;
        }
    }
    Some(Challenge {
        realm: get("realm")?,
        nonce: get("nonce")?,
        opaque: get("opaque"),
        algorithm,
        qop_auth: get("qop")
            .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth"))),
        stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
    })
}

/// `k=v, k="quoted, value"` — linear, quotes respected (a quadratic tokenizer here once cost
/// another SIP stack seconds on one message).
pub fn parse_auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim().to_string();
        if i >= b.len() || b[i] == b',' {
            if !key.is_empty() {
                out.push((key, String::new()));
            }
            continue;
        }
        i += 1; // '='
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut start = i;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    val.push_str(&s[start..i]);
                    i += 1;
                    start = i;
                }
                i += 1;
            }
            val.push_str(&s[start..i.min(b.len())]);
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs..i].trim().to_string();
        }
        out.push((key, val));
    }
    out
}

fn md5_hex(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

/// The `Authorization` / `Proxy-Authorization` value answering `ch` for `method uri`.
/// `nc` counts our uses of this nonce; `cnonce` is fresh per answer.
pub fn authorization(
    ch: &Challenge,
    cred: &Credentials,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let ha1 = md5_hex(&format!("{}:{}:{}", cred.username, ch.realm, cred.password));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\"",
        cred.username, ch.realm, ch.nonce, uri
    );
    if ch.qop_auth {
        let nc = format!("{nc:08x}");
        let resp = md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce));
        v.push_str(&format!(
            ", response=\"{resp}\", qop=auth, nc={nc}, cnonce=\"{cnonce}\""
        ));
    } else {
        let resp = md5_hex(&format!("{ha1}:{}:{ha2}", ch.nonce));
        v.push_str(&format!(", response=\"{resp}\""));
    }
    v.push_str(", algorithm=MD5");
    if let Some(o) = &ch.opaque {
        v.push_str(&format!(", opaque=\"{o}\""));
    }
    v
}

/// Why a challenge is not answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The gateway has no username/password.
    NoCredentials,
    /// No Digest/MD5 challenge in the response.
    Unsupported,
    /// Only realms the gateway is not configured for: answering would hand an MD5 response over
    /// our password to whoever asked.
    ForeignRealm(String),
    /// The realm challenged again with a fresh nonce that was not stale: our answer was refused.
    Refused(String),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::NoCredentials => {
                f.write_str("challenged, and the gateway has no credentials")
            }
            AuthError::Unsupported => f.write_str("challenged with no Digest MD5 challenge"),
            AuthError::ForeignRealm(r) => {
                write!(f, "challenged for realm '{r}', not the gateway's")
            }
            AuthError::Refused(r) => write!(f, "credentials refused for realm '{r}'"),
        }
    }
}

#[derive(Debug, Clone)]
struct Cached {
    /// From a 407 (`Proxy-Authorization`) or a 401 (`Authorization`).
    proxy: bool,
    challenge: Challenge,
    /// How many times this nonce was used (RFC 2617 §3.2.2 `nc`).
    nc: u32,
}

/// The challenges a UA has answered for one dialog or registration (RFC 3261 §22.3): every
/// realm's nonce with its count, so each later request carries every credential so far — a
/// proxy's 407 and the far end's 401, in either order — and a nonce is used until the server
/// says it is stale.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    cached: Vec<Cached>,
}

impl Authenticator {
    /// Learns the challenges of a 401 or 407. With `realm`, only that realm is answered; `Err`
    /// when nothing in the response may or can be answered (the request then fails).
    pub fn challenged(
        &mut self,
        resp: &crate::msg::Response,
        realm: Option<&str>,
    ) -> Result<(), AuthError> {
        let proxy = resp.code == 407;
        let header = if proxy {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let challenges: Vec<Challenge> = resp
            .headers
            .get_all(header)
            .into_iter()
            .filter_map(parse_challenge)
            .collect();
        let Some(first) = challenges.first() else {
            return Err(AuthError::Unsupported);
        };
        let foreign = first.realm.clone();
        let mut learned = false;
        for ch in challenges {
            if realm.is_some_and(|r| !r.eq_ignore_ascii_case(&ch.realm)) {
                continue;
            }
            match self
                .cached
                .iter_mut()
                .find(|c| c.proxy == proxy && c.challenge.realm == ch.realm)
            {
                Some(c) if ch.stale => {
                    c.challenge = ch;
                    c.nc = 0;
                }
                Some(_) => return Err(AuthError::Refused(ch.realm)),
                None => self.cached.push(Cached {
                    proxy,
                    challenge: ch,
                    nc: 0,
                }),
            }
            learned = true;
        }
        if learned {
            Ok(())
        } else {
            Err(AuthError::ForeignRealm(foreign))
        }
    }

    /// Whether any challenge was learned (a request then carries credentials).
    pub fn is_empty(&self) -> bool {
        self.cached.is_empty()
    }

    /// Puts every credential so far on `req` (replacing any it had), counting each nonce's use.
    pub fn authorize(&mut self, req: &mut crate::msg::Request, cred: &Credentials, cnonce: &str) {
        req.headers.remove("Authorization");
        req.headers.remove("Proxy-Authorization");
        for c in &mut self.cached {
            c.nc += 1;
            let value = authorization(&c.challenge, cred, &req.method, &req.uri, c.nc, cnonce);
            let name = if c.proxy {
                "Proxy-Authorization"
            } else {
                "Authorization"
            };
            req.headers.push(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example_response() {
        // RFC 2617 §3.5, with the SIP method and URI it uses.
        let ch = parse_challenge(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert!(ch.qop_auth);
        let v = authorization(
            &ch,
            &Credentials {
                username: "Mufasa",
                password: "Circle Of Life",
            },
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(
            v.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{v}"
        );
        assert!(v.contains("nc=00000001"));
    }

    #[test]
    fn no_qop_and_stale() {
        let ch = parse_challenge("Digest realm=\"r\",nonce=\"n\",stale=TRUE").unwrap();
        assert!(ch.stale && !ch.qop_auth);
        assert!(parse_challenge("Basic realm=\"r\"").is_none());
        assert!(parse_challenge("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256").is_none());
    }

    #[test]
    fn params_with_escapes_and_commas() {
        let p = parse_auth_params("a=\"x, \\\"y\", b=z,c");
        assert_eq!(p[0], ("a".into(), "x, \"y".into()));
        assert_eq!(p[1], ("b".into(), "z".into()));
        assert_eq!(p[2], ("c".into(), String::new()));
    }

    fn challenge(code: u16, realm: &str, nonce: &str, stale: bool) -> crate::msg::Response {
        let name = if code == 407 {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let mut r = crate::transaction::response_to(&invite(), code, Some("t"));
        r.headers.push(
            name,
            format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", qop=\"auth\", stale={stale}"),
        );
        r
    }

    fn invite() -> crate::msg::Request {
        let mut r = crate::msg::Request::new("INVITE", "sip:1@gw");
        r.headers.push("Via", "SIP/2.0/UDP h;branch=z9hG4bK1");
        r.headers.push("From", "<sip:a@h>;tag=1");
        r.headers.push("To", "<sip:1@gw>");
        r.headers.push("Call-ID", "c");
        r.headers.push("CSeq", "1 INVITE");
        r
    }

    const CRED: Credentials = Credentials {
        username: "u",
        password: "p",
    };

    #[test]
    fn chained_407_then_401_are_both_answered() {
        let mut a = Authenticator::default();
        a.challenged(&challenge(407, "proxy", "n1", false), None)
            .unwrap();
        a.challenged(&challenge(401, "uas", "n2", false), None)
            .unwrap();
        let mut req = invite();
        a.authorize(&mut req, &CRED, "c1");
        let pa = req.headers.get("Proxy-Authorization").unwrap();
        let wa = req.headers.get("Authorization").unwrap();
        assert!(
            pa.contains("realm=\"proxy\"") && pa.contains("nc=00000001"),
            "{pa}"
        );
        assert!(
            wa.contains("realm=\"uas\"") && wa.contains("nonce=\"n2\""),
            "{wa}"
        );
        // The next request reuses both nonces, counting on.
        let mut bye = invite();
        bye.method = "BYE".into();
        a.authorize(&mut bye, &CRED, "c2");
        assert_eq!(bye.headers.get_all("Proxy-Authorization").len(), 1);
        assert!(bye
            .headers
            .get("Authorization")
            .unwrap()
            .contains("nc=00000002"));
    }

    #[test]
    fn same_realm_again_is_a_refusal_unless_stale() {
        let mut a = Authenticator::default();
        a.challenged(&challenge(401, "r", "n1", false), None)
            .unwrap();
        a.challenged(&challenge(401, "r", "n2", true), None)
            .unwrap();
        let mut req = invite();
        a.authorize(&mut req, &CRED, "c");
        let wa = req.headers.get("Authorization").unwrap();
        assert!(
            wa.contains("nonce=\"n2\"") && wa.contains("nc=00000001"),
            "{wa}"
        );
        assert_eq!(
            a.challenged(&challenge(401, "r", "n3", false), None),
            Err(AuthError::Refused("r".into()))
        );
    }

    #[test]
    fn a_realm_the_gateway_does_not_name_is_not_answered() {
        let mut a = Authenticator::default();
        assert_eq!(
            a.challenged(&challenge(401, "evil", "n", false), Some("carrier")),
            Err(AuthError::ForeignRealm("evil".into()))
        );
        assert!(a.is_empty());
        a.challenged(&challenge(401, "Carrier", "n", false), Some("carrier"))
            .unwrap();
        assert!(!a.is_empty());
    }
}
