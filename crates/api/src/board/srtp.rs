//! SRTP keyed by SDES (RFC 4568; api.md §7 SRTP): what a leg offers, and what an answer or an
//! offer from the far end gives it. Keys come from the CSPRNG, a fresh one for every offer and
//! answer of ours, and are never logged (their `Debug` hides them).

use sip_core::sdp::{Crypto, CryptoSuite, MediaDescription};

/// `rtp_secure_media` = `"true"` on the call or its gateway (the original's own variable).
pub(super) fn wanted(
    vars: &std::collections::BTreeMap<String, String>,
    gateway: Option<&gateway::GatewayConfig>,
) -> bool {
    let on = |v: Option<&String>| v.is_some_and(|v| v.eq_ignore_ascii_case("true"));
    on(vars.get("rtp_secure_media"))
        || on(gateway.and_then(|g| g.variables.get("rtp_secure_media")))
}

/// Our secure offer: AES_CM_128_HMAC_SHA1_80 first, then _32, each with a key of its own.
pub(super) fn offer() -> Vec<Crypto> {
    CryptoSuite::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| Crypto::new(i as u32 + 1, *s))
        .collect()
}

fn keys(suite: CryptoSuite, local: &Crypto, remote: &Crypto) -> media::session::SrtpKeys {
    media::session::SrtpKeys {
        suite: match suite {
            CryptoSuite::AesCm128HmacSha1_80 => media::session::SrtpSuite::AesCm128HmacSha1_80,
            CryptoSuite::AesCm128HmacSha1_32 => media::session::SrtpSuite::AesCm128HmacSha1_32,
        },
        local: local.key,
        remote: remote.key,
    }
}

/// The answer to our offer `ours` (empty: we offered plain RTP): the line we keep and the keys;
/// `Ok(None)` when both are plain; `Err` when the answer does not fit the offer — a plain answer
/// to a secure offer, or a crypto line matching none of ours. Either way the call cannot go on.
pub(super) fn from_answer(
    ours: &[Crypto],
    remote: &MediaDescription,
) -> Result<Option<(Crypto, media::session::SrtpKeys)>, &'static str> {
    match (ours.is_empty(), remote.secure) {
        (true, false) => Ok(None),
        (true, true) => Err("a secure answer to a plain offer"),
        (false, false) => Err("a plain answer to a secure offer"),
        (false, true) => remote
            .crypto
            .iter()
            .find_map(|theirs| {
                let mine = ours
                    .iter()
                    .find(|m| m.tag == theirs.tag && m.suite == theirs.suite)?;
                Some((mine.clone(), keys(mine.suite, mine, theirs)))
            })
            .map(Some)
            .ok_or("no crypto line in the answer matches the offer"),
    }
}

/// Our answer to an offer: the first suite offered that we speak, with the same tag and a key
/// of our own. `Ok(None)` for a plain offer; `Err` for a secure one with nothing usable (the
/// offer is refused with 488 — never answered with plain RTP).
pub(super) fn answer(
    remote: &MediaDescription,
) -> Result<Option<(Crypto, media::session::SrtpKeys)>, &'static str> {
    if !remote.secure {
        return Ok(None);
    }
    let theirs = remote
        .crypto
        .first()
        .ok_or("a secure offer with no crypto suite the switch speaks")?;
    let mine = Crypto::new(theirs.tag, theirs.suite);
    let k = keys(theirs.suite, &mine, theirs);
    Ok(Some((mine, k)))
}
