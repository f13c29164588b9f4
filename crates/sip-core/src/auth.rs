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
}
