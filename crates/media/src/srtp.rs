//! SRTP (RFC 3711) keyed by SDES (RFC 4568): the two one-way contexts of a call, from the
//! `rtc-srtp` crate (AES-CM with HMAC-SHA1, replay protection, rollover counting).

/// The SDES suites (RFC 4568) the switch speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

/// A call's SRTP master keys and salts (16 + 14 bytes): ours protects what we send, the peer's
/// what we receive. Its `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: SrtpSuite,
    pub local: [u8; 30],
    pub remote: [u8; 30],
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrtpKeys {{ suite: {:?}, keys: *** }}", self.suite)
    }
}

/// The two one-way SRTP contexts of a call.
pub(crate) struct Srtp {
    pub(crate) keys: SrtpKeys,
    pub(crate) inbound: rtc_srtp::context::Context,
    pub(crate) outbound: rtc_srtp::context::Context,
}

impl Srtp {
    pub(crate) fn new(keys: SrtpKeys) -> Option<Srtp> {
        use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
        use rtc_srtp::protection_profile::ProtectionProfile;
        let profile = match keys.suite {
            SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        };
        let context = |key: &[u8; 30], replay: bool| {
            let (k, salt) = key.split_at(16);
            let (rtp, rtcp) = if replay {
                (
                    Some(srtp_replay_protection(128)),
                    Some(srtcp_replay_protection(128)),
                )
            } else {
                (None, None)
            };
            rtc_srtp::context::Context::new(k, salt, profile, rtp, rtcp).ok()
        };
        Some(Srtp {
            inbound: context(&keys.remote, true)?,
            outbound: context(&keys.local, false)?,
            keys,
        })
    }
}
