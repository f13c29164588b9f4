//! Call quality for the `call_quality` event (api.md §4): `mos` and
//! `quality` as strings with two decimals, "4.50" and "100.00" for a
//! perfect call, as the FreeSWITCH-based original reported them.
//!
//! # What FreeSWITCH reports
//!
//! FreeSWITCH (`src/switch_rtp.c`, the MOS update run as packets arrive)
//! keeps a per-stream `R` that starts at 100 and, once "flaws" (lost or
//! badly late packets, with a penalty for consecutive ones) occur, becomes
//! `R = (received − flaws) / received × 100` as an integer clamped to
//! 0-100. It then applies the ITU-T G.107 Annex B mapping from R to MOS,
//! `MOS = 1 + 0.035 R + 7·10⁻⁶ R (R − 60)(100 − R)`, which gives exactly
//! 4.5 at R = 100. The channel variables `rtp_audio_in_quality_percentage`
//! and `rtp_audio_in_mos` are that R and that MOS printed with `%0.2f`. So
//! FreeSWITCH's "quality percentage" is an R on a 0-100 scale where 100
//! means no impairment, and its MOS is the G.107 mapping of it.
//!
//! # What we compute
//!
//! A real E-model R (ITU-T G.107, simplified) instead of a flaw count, so
//! that delay and jitter count too, then rescaled to FreeSWITCH's 0-100
//! scale so that a perfect call still reads 4.50 / 100.00:
//!
//! * `Ppl` = packet loss in percent = 100 × lost / expected.
//! * One-way delay `Ta` = RTT/2 + 2 × jitter (a jitter buffer holding two
//!   jitters) + 20 ms packetisation, in ms.
//! * Delay impairment `Idd` (G.107 §7.2): 0 for `Ta` ≤ 100 ms, else with
//!   `X = log2(Ta/100)`:
//!   `Idd = 25 ((1 + X⁶)^(1/6) − 3 (1 + (X/3)⁶)^(1/6) + 2)`.
//!   The talker-echo terms (`Idte`, `Idle`) are left out: they are small
//!   with echo-cancelled (or synthetic, voice-AI) endpoints.
//! * Equipment impairment with loss (G.107 §7.4):
//!   `Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl/BurstR + Bpl)` with G.711 with
//!   packet loss concealment: `Ie = 0`, `Bpl = 25.1` (ITU-T G.113 Appendix
//!   I), random loss `BurstR = 1`.
//! * `R = 93.2 − Idd − Ie,eff` (93.2: G.107's R with every parameter at its
//!   default, i.e. the best a narrow-band call can get). This is
//!   [`Quality::r_factor`].
//! * `quality = 100 × R / 93.2`, clamped to 0-100: R relative to that of a
//!   perfect G.711 call, FreeSWITCH's percentage scale.
//! * `mos` = the G.107 Annex B mapping applied to `quality` (as FreeSWITCH
//!   applies it to its percentage), clamped to 1.0-4.5.
//!
//! A call without loss, with RTT up to about 160 ms and little jitter
//! (one-way delay ≤ 100 ms) is therefore exactly 4.50 / 100.00, like a
//! flawless call in FreeSWITCH. With no packets expected (no media, or no
//! statistics), the loss term is taken as zero: no evidence of impairment,
//! so the result is as good as the delay terms allow (4.50 / 100.00 when
//! jitter and RTT are small or unknown).

/// The E-model R of a perfect narrow-band call (G.107, default parameters).
const R_PERFECT: f64 = 93.2;
/// G.711 with PLC (ITU-T G.113 Appendix I).
const IE_G711: f64 = 0.0;
const BPL_G711_PLC: f64 = 25.1;
/// Random (not bursty) loss.
const BURST_R: f64 = 1.0;
/// 20 ms packets.
const PACKETISATION_MS: f64 = 20.0;
/// Keeps absurd inputs (hours of delay) from reaching `powf` as infinity.
const MAX_DELAY_MS: f64 = 1.0e6;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// 1.0-4.5.
    pub mos: f64,
    /// percent 0-100 (FreeSWITCH's `rtp_audio_in_quality_percentage` scale).
    pub quality: f64,
    /// The unscaled E-model R, 0-93.2.
    pub r_factor: f64,
}

/// Non-finite or negative inputs count as zero.
fn sane(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

/// G.107 delay impairment `Idd` for a one-way delay in ms.
fn delay_impairment(ta_ms: f64) -> f64 {
    if ta_ms <= 100.0 {
        return 0.0;
    }
    let x = (ta_ms / 100.0).log2();
    25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
        + 2.0)
}

/// G.107 Annex B: R (0-100) to MOS.
fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        return 1.0;
    }
    if r >= 100.0 {
        return 4.5;
    }
    (1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
}

/// E-model (ITU-T G.107 simplified for G.711 with PLC: Ie=0, Bpl≈25.1
/// random loss) from loss %, jitter ms and RTT ms; one-way delay ≈ rtt/2 +
/// jitter buffer (2×jitter) + 20 ms packetisation. A perfect call gives
/// exactly mos 4.50 and quality 100.00; see the module doc for the formula
/// and how it matches FreeSWITCH. `rtt_ms` `None` (no RTCP from the peer)
/// counts as no network delay.
pub fn estimate(
    packets_expected: u64,
    packets_lost: u64,
    jitter_ms: f64,
    rtt_ms: Option<f64>,
) -> Quality {
    let loss_pct = if packets_expected == 0 {
        0.0
    } else {
        (packets_lost.min(packets_expected) as f64 / packets_expected as f64) * 100.0
    };
    let rtt = rtt_ms.map_or(0.0, sane);
    let ta = (rtt / 2.0 + 2.0 * sane(jitter_ms) + PACKETISATION_MS).min(MAX_DELAY_MS);
    let idd = delay_impairment(ta);
    let ie_eff = IE_G711 + (95.0 - IE_G711) * loss_pct / (loss_pct / BURST_R + BPL_G711_PLC);
    let r_factor = (R_PERFECT - idd - ie_eff).clamp(0.0, R_PERFECT);
    let quality = (100.0 * r_factor / R_PERFECT).clamp(0.0, 100.0);
    Quality {
        mos: mos_from_r(quality),
        quality,
        r_factor,
    }
}

/// Two decimals, as the `call_quality` event carries them: "4.50".
/// Non-finite values print as "0.00", and a negative zero as "0.00".
pub fn format2(v: f64) -> String {
    if !v.is_finite() {
        return "0.00".to_owned();
    }
    let s = format!("{v:.2}");
    if s == "-0.00" {
        "0.00".to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(q: Quality) -> (String, String) {
        (format2(q.mos), format2(q.quality))
    }

    #[test]
    fn perfect_call_is_4_50_and_100_00() {
        let q = estimate(50_000, 0, 0.0, Some(0.0));
        assert_eq!(strs(q), ("4.50".into(), "100.00".into()));
        assert_eq!(q.r_factor, R_PERFECT);
        // A good real call: LAN RTT, a little jitter.
        assert_eq!(
            strs(estimate(50_000, 0, 2.5, Some(40.0))),
            ("4.50".into(), "100.00".into())
        );
        assert_eq!(
            strs(estimate(50_000, 0, 0.3, None)),
            ("4.50".into(), "100.00".into())
        );
    }

    #[test]
    fn zero_packets_expected_is_neutral_perfect() {
        assert_eq!(
            strs(estimate(0, 0, 0.0, None)),
            ("4.50".into(), "100.00".into())
        );
        assert_eq!(
            strs(estimate(0, 10, 0.0, None)),
            ("4.50".into(), "100.00".into())
        );
    }

    #[test]
    fn loss_lowers_quality_monotonically() {
        let mut last = estimate(10_000, 0, 0.0, None);
        for lost in [100, 500, 2_000, 5_000, 10_000] {
            let q = estimate(10_000, lost, 0.0, None);
            assert!(q.mos < last.mos, "{lost}: {q:?} vs {last:?}");
            assert!(q.quality < last.quality);
            assert!(q.r_factor < last.r_factor);
            last = q;
        }
        // Spot values of the formula (1 %, 5 %, 20 % random loss).
        assert_eq!(
            strs(estimate(10_000, 100, 0.0, None)),
            ("4.46".into(), "96.09".into())
        );
        assert_eq!(
            strs(estimate(10_000, 500, 0.0, None)),
            ("4.13".into(), "83.07".into())
        );
        assert_eq!(
            strs(estimate(10_000, 2_000, 0.0, None)),
            ("2.83".into(), "54.80".into())
        );
        // Total loss bottoms out.
        let q = estimate(10_000, 10_000, 0.0, None);
        assert!(q.mos >= 1.0 && q.quality >= 0.0);
        // More lost than expected is treated as all lost.
        assert_eq!(estimate(10, 50, 0.0, None), estimate(10, 10, 0.0, None));
    }

    #[test]
    fn delay_lowers_quality() {
        let base = estimate(1000, 0, 0.0, Some(100.0));
        let high = estimate(1000, 0, 0.0, Some(400.0));
        let higher = estimate(1000, 0, 0.0, Some(800.0));
        assert!(high.mos < base.mos && higher.mos < high.mos);
        assert!(high.quality < 100.0);
        // Jitter counts twice (buffer) into the delay.
        assert!(estimate(1000, 0, 150.0, None).quality < 100.0);
        assert!(estimate(1000, 0, 150.0, None).quality > estimate(1000, 0, 300.0, None).quality);
    }

    #[test]
    fn delay_impairment_matches_g107_shape() {
        assert_eq!(delay_impairment(100.0), 0.0);
        assert!(delay_impairment(150.0) > 0.0);
        // G.107 Idd grows without exceeding its asymptote of 50.
        let mut prev = 0.0;
        for ta in [150.0, 200.0, 300.0, 500.0, 1000.0, 10_000.0, MAX_DELAY_MS] {
            let idd = delay_impairment(ta);
            assert!(idd > prev && idd < 50.0, "{ta}: {idd}");
            prev = idd;
        }
    }

    #[test]
    fn mos_mapping_endpoints() {
        assert_eq!(mos_from_r(100.0), 4.5);
        assert_eq!(mos_from_r(0.0), 1.0);
        assert_eq!(mos_from_r(-5.0), 1.0);
        let mut prev = 1.0;
        for r in 1..=100 {
            let m = mos_from_r(f64::from(r));
            assert!(m >= prev, "{r}");
            prev = m;
        }
    }

    #[test]
    fn odd_inputs_are_tamed() {
        for j in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 1e300] {
            for rtt in [
                None,
                Some(f64::NAN),
                Some(f64::INFINITY),
                Some(-3.0),
                Some(1e300),
            ] {
                let q = estimate(u64::MAX, u64::MAX / 3, j, rtt);
                assert!(q.mos.is_finite() && (1.0..=4.5).contains(&q.mos), "{q:?}");
                assert!(q.quality.is_finite() && (0.0..=100.0).contains(&q.quality));
                assert!(q.r_factor.is_finite());
            }
        }
    }

    #[test]
    fn format2_cases() {
        assert_eq!(format2(4.5), "4.50");
        assert_eq!(format2(100.0), "100.00");
        assert_eq!(format2(4.456), "4.46");
        assert_eq!(format2(-0.001), "0.00");
        assert_eq!(format2(f64::NAN), "0.00");
        assert_eq!(format2(f64::INFINITY), "0.00");
    }
}
