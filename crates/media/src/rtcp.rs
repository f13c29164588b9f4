//! RTCP (RFC 3550 §6): receive statistics for report blocks, and SR/RR
//! packets on the wire.
//!
//! Sans-IO: [`ReceiverStats`] is fed the header fields of each received RTP
//! packet together with the local arrival time, which the caller converts to
//! RTP timestamp units (8000 Hz) of its own clock; nothing here reads a
//! clock. NTP times are passed in as 64-bit NTP timestamps (32.32 fixed
//! point, seconds since 1900), see [`ntp_from_unix`].

/// A.1: a forward jump of up to this many sequence numbers is loss, not a
/// new stream.
const MAX_DROPOUT: u16 = 3000;
/// A.1: a backward step of up to this many is a late packet, not a restart.
const MAX_MISORDER: u16 = 100;
const SEQ_MOD: u64 = 1 << 16;

/// Per-source receive statistics: A.1 sequence validation (probation
/// optional), A.3 loss, A.8 interarrival jitter. `arrival` is in RTP
/// timestamp units (8000 Hz) of the local clock, supplied by the caller.
///
/// There is no probation: the first packet of a source is counted, because
/// a call's first packets are real audio and a SIP dialog already vouches
/// for the source. A change of SSRC restarts the statistics (api.md §7), and
/// so does a large sequence jump once a second, consecutive packet confirms
/// it (A.1's `bad_seq` rule; a single stray packet is ignored instead).
#[derive(Debug, Default, Clone)]
pub struct ReceiverStats {
    ssrc: Option<u32>,
    base_seq: u16,
    max_seq: u16,
    /// Sequence number wraps seen, times 2^16 (A.1 `cycles`), kept wide so
    /// that `packets_expected` never overflows.
    cycles: u64,
    /// A.1: the sequence number that would confirm a jump as a restart.
    bad_seq: Option<u16>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// A.8 relative transit time of the previous packet.
    transit: Option<u32>,
    /// A.8 jitter scaled by 16 (the integer form of the estimator).
    jitter_q4: u64,
}

impl ReceiverStats {
    /// Records one received RTP packet. SSRC change restarts stats (api.md §7).
    pub fn update(&mut self, ssrc: u32, seq: u16, rtp_ts: u32, arrival: u32) {
        if self.ssrc != Some(ssrc) {
            self.restart(ssrc, seq);
        } else {
            let udelta = seq.wrapping_sub(self.max_seq);
            if udelta < MAX_DROPOUT {
                if seq < self.max_seq {
                    self.cycles += SEQ_MOD;
                }
                self.max_seq = seq;
            } else if udelta <= u16::MAX - MAX_MISORDER + 1 {
                if self.bad_seq == Some(seq) {
                    // Two in a row after a jump: the sender restarted.
                    self.restart(ssrc, seq);
                } else {
                    self.bad_seq = Some(seq.wrapping_add(1));
                    return;
                }
            }
            // else: a duplicate or reordered packet, counted but not moving
            // max_seq (A.1).
        }
        self.received += 1;
        self.update_jitter(rtp_ts, arrival);
    }

    fn restart(&mut self, ssrc: u32, seq: u16) {
        *self = Self {
            ssrc: Some(ssrc),
            base_seq: seq,
            max_seq: seq,
            ..Self::default()
        };
    }

    /// A.8, integer form: J += (|D| - J) / 16 with J kept scaled by 16.
    fn update_jitter(&mut self, rtp_ts: u32, arrival: u32) {
        let transit = arrival.wrapping_sub(rtp_ts);
        if let Some(prev) = self.transit {
            let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    pub fn packets_received(&self) -> u64 {
        self.received
    }

    /// A.3: extended highest sequence number minus the first, plus one.
    pub fn packets_expected(&self) -> u64 {
        if self.ssrc.is_none() {
            return 0;
        }
        let ext_max = self.cycles + u64::from(self.max_seq);
        (ext_max + 1).saturating_sub(u64::from(self.base_seq))
    }

    /// Expected minus received; duplicates can make the true value
    /// negative, which is reported as 0 here (see `take_interval` for the
    /// signed wire value).
    pub fn packets_lost(&self) -> u64 {
        self.packets_expected().saturating_sub(self.received)
    }

    /// Interarrival jitter in timestamp units, as A.8 puts it in an RR.
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// Jitter in milliseconds at 8000 Hz, unrounded.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_q4 as f64 / 16.0 / 8.0
    }

    /// fraction lost since the last call (for an RR block), and resets the
    /// interval counters.
    ///
    /// The second value is the report block's cumulative-lost field: a
    /// 24-bit two's-complement number (RFC 3550 §6.4.1), so duplicates that
    /// outnumber losses show as e.g. 0xFFFFFF for -1, and large values
    /// saturate at 0x7FFFFF.
    pub fn take_interval(&mut self) -> (u8, u32) {
        let expected = self.packets_expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let fraction = if expected_interval > received_interval {
            let lost = expected_interval - received_interval;
            u8::try_from((lost << 8) / expected_interval).unwrap_or(u8::MAX)
        } else {
            0
        };
        let lost = i128::from(expected) - i128::from(self.received);
        let lost = lost.clamp(-0x80_0000, 0x7F_FFFF) as i32;
        (fraction, (lost as u32) & 0xFF_FFFF)
    }

    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Extended highest sequence number received (cycles in the high 16
    /// bits), as it goes in a report block.
    pub fn ext_max_seq(&self) -> u32 {
        (self.cycles + u64::from(self.max_seq)) as u32
    }

    /// A report block about this source (takes the interval, like
    /// `take_interval`). `lsr`/`dlsr` come from the last SR received from it
    /// (0 if none), see [`ntp_middle32`].
    pub fn report_block(&mut self, lsr: u32, dlsr: u32) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let (fraction_lost, cumulative_lost) = self.take_interval();
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost,
            ext_max_seq: self.ext_max_seq(),
            jitter: self.jitter(),
            lsr,
            dlsr,
        })
    }
}

/// RFC 3550 §6.4.1 reception report block. `cumulative_lost` holds the
/// 24-bit wire field; `lsr`/`dlsr` are in NTP middle-32 units (1/65536 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    pub cumulative_lost: u32,
    pub ext_max_seq: u32,
    pub jitter: u32,
    pub lsr: u32,
    pub dlsr: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport {
        ssrc: u32,
        ntp: u64,
        rtp_ts: u32,
        packets: u32,
        octets: u32,
        reports: Vec<ReportBlock>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: Vec<ReportBlock>,
    },
    Bye {
        ssrcs: Vec<u32>,
    },
    /// Any other RTCP packet type (SDES 202, APP 204, feedback …).
    Other(u8),
}

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
const SDES_CNAME: u8 = 1;
const BLOCK_LEN: usize = 24;
/// The 5-bit count field.
const MAX_BLOCKS: usize = 31;

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn report_blocks(body: &[u8], count: usize) -> Option<Vec<ReportBlock>> {
    let bytes = body.get(..count * BLOCK_LEN)?;
    bytes
        .chunks_exact(BLOCK_LEN)
        .map(|b| {
            let word = be32(b, 4)?;
            Some(ReportBlock {
                ssrc: be32(b, 0)?,
                fraction_lost: (word >> 24) as u8,
                cumulative_lost: word & 0xFF_FFFF,
                ext_max_seq: be32(b, 8)?,
                jitter: be32(b, 12)?,
                lsr: be32(b, 16)?,
                dlsr: be32(b, 20)?,
            })
        })
        .collect()
}

/// Parses a compound RTCP packet; garbage → empty vec, never panic.
///
/// Validation follows RFC 3550 A.2, leniently where reduced-size RTCP
/// (RFC 5506) needs it: every packet must be version 2 with a packet type
/// in the RTCP range 192-223, the length fields must add up to the datagram
/// exactly, padding only on the last packet. Any violation rejects the whole
/// datagram, since a length that is off makes every later packet suspect.
/// The first packet need not be an SR or RR.
pub fn parse(buf: &[u8]) -> Vec<RtcpPacket> {
    parse_compound(buf).unwrap_or_default()
}

fn parse_compound(buf: &[u8]) -> Option<Vec<RtcpPacket>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let header = rest.get(..4)?;
        if header[0] >> 6 != 2 || !(192..=223).contains(&header[1]) {
            return None;
        }
        let padded = header[0] & 0x20 != 0;
        let count = usize::from(header[0] & 0x1F);
        let pt = header[1];
        let len = (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
        let packet = rest.get(..len)?;
        rest = &rest[len..];
        let mut body = &packet[4..];
        if padded {
            if !rest.is_empty() {
                return None;
            }
            let pad = usize::from(*body.last()?);
            if pad == 0 || pad > body.len() {
                return None;
            }
            body = &body[..body.len() - pad];
        }
        out.push(match pt {
            PT_SR => RtcpPacket::SenderReport {
                ssrc: be32(body, 0)?,
                ntp: (u64::from(be32(body, 4)?) << 32) | u64::from(be32(body, 8)?),
                rtp_ts: be32(body, 12)?,
                packets: be32(body, 16)?,
                octets: be32(body, 20)?,
                reports: report_blocks(body.get(24..)?, count)?,
            },
            PT_RR => RtcpPacket::ReceiverReport {
                ssrc: be32(body, 0)?,
                reports: report_blocks(body.get(4..)?, count)?,
            },
            PT_BYE => RtcpPacket::Bye {
                ssrcs: (0..count)
                    .map(|i| be32(body, i * 4))
                    .collect::<Option<_>>()?,
            },
            other => RtcpPacket::Other(other),
        });
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

fn write_header(out: &mut Vec<u8>, count: usize, pt: u8, len_bytes: usize) {
    let words = u16::try_from(len_bytes / 4 - 1).unwrap_or(u16::MAX);
    out.push(0x80 | count as u8);
    out.push(pt);
    out.extend_from_slice(&words.to_be_bytes());
}

fn write_blocks(out: &mut Vec<u8>, reports: &[ReportBlock]) {
    for r in reports {
        out.extend_from_slice(&r.ssrc.to_be_bytes());
        out.extend_from_slice(
            &((u32::from(r.fraction_lost) << 24) | (r.cumulative_lost & 0xFF_FFFF)).to_be_bytes(),
        );
        out.extend_from_slice(&r.ext_max_seq.to_be_bytes());
        out.extend_from_slice(&r.jitter.to_be_bytes());
        out.extend_from_slice(&r.lsr.to_be_bytes());
        out.extend_from_slice(&r.dlsr.to_be_bytes());
    }
}

/// SDES with one chunk holding the CNAME (RFC 3550 §6.5), which every
/// compound packet must carry. A CNAME over 255 bytes is cut at a character
/// boundary.
fn write_sdes_cname(out: &mut Vec<u8>, ssrc: u32, cname: &str) {
    let mut end = cname.len().min(255);
    while !cname.is_char_boundary(end) {
        end -= 1;
    }
    let text = &cname.as_bytes()[..end];
    // The item list ends with at least one null octet, padded to 32 bits.
    let nulls = 4 - (6 + text.len()) % 4;
    let chunk = 4 + 2 + text.len() + nulls;
    write_header(out, 1, PT_SDES, 4 + chunk);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(SDES_CNAME);
    out.push(text.len() as u8);
    out.extend_from_slice(text);
    out.extend(std::iter::repeat_n(0u8, nulls));
}

/// Appends an SR + SDES CNAME compound packet to `out`. At most 31 report
/// blocks fit one SR; extra ones are left out.
#[allow(clippy::too_many_arguments)] // the fields of an SR, in wire order
pub fn write_sr(
    ssrc: u32,
    ntp: u64,
    rtp_ts: u32,
    packets: u32,
    octets: u32,
    reports: &[ReportBlock],
    cname: &str,
    out: &mut Vec<u8>,
) {
    let reports = &reports[..reports.len().min(MAX_BLOCKS)];
    write_header(out, reports.len(), PT_SR, 28 + reports.len() * BLOCK_LEN);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&ntp.to_be_bytes());
    out.extend_from_slice(&rtp_ts.to_be_bytes());
    out.extend_from_slice(&packets.to_be_bytes());
    out.extend_from_slice(&octets.to_be_bytes());
    write_blocks(out, reports);
    write_sdes_cname(out, ssrc, cname);
}

/// Appends an RR + SDES CNAME compound packet to `out` (at most 31 blocks).
pub fn write_rr(ssrc: u32, reports: &[ReportBlock], cname: &str, out: &mut Vec<u8>) {
    let reports = &reports[..reports.len().min(MAX_BLOCKS)];
    write_header(out, reports.len(), PT_RR, 8 + reports.len() * BLOCK_LEN);
    out.extend_from_slice(&ssrc.to_be_bytes());
    write_blocks(out, reports);
    write_sdes_cname(out, ssrc, cname);
}

/// Round-trip time from a report block about us (RFC 3550 §6.4.1): now_ntp
/// is our NTP time when the report arrived.
///
/// `None` when the peer has not received an SR from us yet (`lsr` 0) or
/// when the result would be negative (clock trouble, a stale block).
pub fn rtt_ms(now_ntp: u64, lsr: u32, dlsr: u32) -> Option<f64> {
    if lsr == 0 {
        return None;
    }
    // Modulo 2^32 arithmetic, so the 18-hour wrap of the middle 32 bits
    // does not matter.
    let rtt = ntp_middle32(now_ntp).wrapping_sub(lsr).wrapping_sub(dlsr) as i32;
    if rtt < 0 {
        return None;
    }
    Some(f64::from(rtt) * 1000.0 / 65536.0)
}

/// The middle 32 bits of an NTP timestamp (16.16 fixed point seconds), the
/// unit of LSR and DLSR.
pub fn ntp_middle32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A Unix time (as from `SystemTime::duration_since(UNIX_EPOCH)`) as a
/// 64-bit NTP timestamp. Seconds wrap modulo 2^32 (NTP era rollover in
/// 2036), which RTCP's modular arithmetic tolerates.
pub fn ntp_from_unix(secs: u64, nanos: u32) -> u64 {
    let secs = secs.wrapping_add(u64::from(nanos / 1_000_000_000));
    let nanos = u64::from(nanos % 1_000_000_000);
    let ntp_secs = secs.wrapping_add(NTP_UNIX_OFFSET) & 0xFFFF_FFFF;
    let frac = (nanos << 32) / 1_000_000_000;
    (ntp_secs << 32) | frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_stream_has_no_loss_and_no_jitter() {
        let mut s = ReceiverStats::default();
        assert_eq!(s.ssrc(), None);
        assert_eq!(s.packets_expected(), 0);
        for i in 0..100u32 {
            s.update(7, 1000 + i as u16, 5000 + i * 160, 99 + i * 160);
        }
        assert_eq!(s.ssrc(), Some(7));
        assert_eq!(s.packets_received(), 100);
        assert_eq!(s.packets_expected(), 100);
        assert_eq!(s.packets_lost(), 0);
        assert_eq!(s.jitter(), 0);
        assert_eq!(s.ext_max_seq(), 1099);
        assert_eq!(s.take_interval(), (0, 0));
    }

    /// A.8 on a stream whose packets alternately arrive on time and 10 ms
    /// (80 units) late: |D| is always 80, so the estimate converges to 80.
    #[test]
    fn jitter_a8_converges_to_known_value() {
        let mut s = ReceiverStats::default();
        let mut reference = 0.0f64;
        let mut prev_transit: Option<i64> = None;
        for i in 0..400u32 {
            let ts = i * 160;
            let arrival = 1_000_000 + ts + if i % 2 == 1 { 80 } else { 0 };
            s.update(1, i as u16, ts, arrival);
            // The floating-point form of A.8 as a reference.
            let transit = i64::from(arrival) - i64::from(ts);
            if let Some(p) = prev_transit {
                reference += ((transit - p).abs() as f64 - reference) / 16.0;
            }
            prev_transit = Some(transit);
            // The integer form rounds each step and the report truncates.
            assert!(
                (f64::from(s.jitter()) - reference).abs() <= 2.0,
                "packet {i}: {} vs {reference}",
                s.jitter()
            );
        }
        // The integer form settles just under the true value (A.8 truncates
        // J/16 when reporting).
        assert!((79..=80).contains(&s.jitter()), "{}", s.jitter());
        assert!((s.jitter_ms() - 10.0).abs() < 0.1, "{}", s.jitter_ms());
    }

    #[test]
    fn jitter_handles_timestamp_and_clock_wrap() {
        let mut s = ReceiverStats::default();
        for i in 0..50u32 {
            let ts = (u32::MAX - 1000).wrapping_add(i * 160);
            let arrival = (u32::MAX - 10).wrapping_add(i * 160);
            s.update(1, i as u16, ts, arrival);
        }
        assert_eq!(s.jitter(), 0);
    }

    #[test]
    fn loss_counting_across_sequence_wrap() {
        let mut s = ReceiverStats::default();
        let mut seq: u16 = 65_500;
        let mut sent = 0u32;
        let mut lost = 0u64;
        for i in 0..200u32 {
            if i % 10 == 3 {
                lost += 1;
            } else {
                s.update(9, seq, i * 160, i * 160);
            }
            sent += 1;
            seq = seq.wrapping_add(1);
        }
        assert_eq!(s.packets_expected(), u64::from(sent));
        assert_eq!(s.packets_lost(), lost);
        assert_eq!(s.packets_received(), u64::from(sent) - lost);
        assert_eq!(s.ext_max_seq(), 65_536 + u32::from(seq.wrapping_sub(1)));
        let (fraction, cumulative) = s.take_interval();
        assert_eq!(fraction, (20 * 256 / 200) as u8);
        assert_eq!(cumulative, 20);
        // Nothing new since: the next interval is clean.
        assert_eq!(s.take_interval(), (0, 20));
    }

    #[test]
    fn reordered_and_duplicate_packets() {
        let mut s = ReceiverStats::default();
        for seq in [10u16, 12, 11, 13, 13] {
            s.update(1, seq, u32::from(seq) * 160, u32::from(seq) * 160);
        }
        assert_eq!(s.packets_expected(), 4);
        assert_eq!(s.packets_received(), 5);
        assert_eq!(s.packets_lost(), 0);
        // One more received than expected: -1 in 24 bits.
        assert_eq!(s.take_interval(), (0, 0xFF_FFFF));
    }

    #[test]
    fn ssrc_change_restarts() {
        let mut s = ReceiverStats::default();
        for i in 0..10u16 {
            s.update(1, i * 2, 0, 0); // half lost
        }
        assert!(s.packets_lost() > 0);
        s.update(2, 40_000, 0, 0);
        assert_eq!(s.ssrc(), Some(2));
        assert_eq!(s.packets_received(), 1);
        assert_eq!(s.packets_expected(), 1);
        assert_eq!(s.jitter(), 0);
    }

    #[test]
    fn sequence_jump_restarts_after_two_packets() {
        let mut s = ReceiverStats::default();
        for i in 0..10u16 {
            s.update(1, 100 + i, u32::from(i) * 160, u32::from(i) * 160);
        }
        // One stray packet far away is ignored.
        s.update(1, 30_000, 0, 0);
        assert_eq!(s.packets_received(), 10);
        assert_eq!(s.packets_expected(), 10);
        // A sender restart: two consecutive packets at the new place.
        s.update(1, 50_000, 0, 0);
        s.update(1, 50_001, 160, 160);
        assert_eq!(s.packets_received(), 1);
        assert_eq!(s.packets_expected(), 1);
        assert_eq!(s.ext_max_seq(), 50_001);
        s.update(1, 50_002, 320, 320);
        assert_eq!(s.packets_received(), 2);
        assert_eq!(s.packets_lost(), 0);
    }

    #[test]
    fn fraction_lost_when_everything_in_interval_lost_but_last() {
        let mut s = ReceiverStats::default();
        s.update(1, 0, 0, 0);
        s.take_interval();
        s.update(1, 100, 0, 0);
        let (fraction, cumulative) = s.take_interval();
        assert_eq!(fraction, (99 * 256 / 100) as u8);
        assert_eq!(cumulative, 99);
    }

    fn block(n: u32) -> ReportBlock {
        ReportBlock {
            ssrc: 0x1000 + n,
            fraction_lost: n as u8,
            cumulative_lost: 0xFF_FFFF - n,
            ext_max_seq: 70_000 + n,
            jitter: 80 + n,
            lsr: 0xb705_2000,
            dlsr: 0x0005_4000,
        }
    }

    #[test]
    fn sr_round_trip() {
        let mut out = vec![0xAA]; // appends, keeps what was there
        let blocks = [block(1), block(2)];
        write_sr(
            0xdead_beef,
            0x0123_4567_89ab_cdef,
            160,
            50,
            8000,
            &blocks,
            "bot@host",
            &mut out,
        );
        assert_eq!(out[0], 0xAA);
        let wire = &out[1..];
        assert_eq!(wire.len() % 4, 0);
        assert_eq!(wire[0], 0x82);
        assert_eq!(wire[1], 200);
        let parsed = parse(wire);
        assert_eq!(
            parsed,
            vec![
                RtcpPacket::SenderReport {
                    ssrc: 0xdead_beef,
                    ntp: 0x0123_4567_89ab_cdef,
                    rtp_ts: 160,
                    packets: 50,
                    octets: 8000,
                    reports: blocks.to_vec(),
                },
                RtcpPacket::Other(202),
            ]
        );
        // SDES: header, SSRC, CNAME item, null terminator, 32-bit padding.
        let sdes = &wire[28 + 48..];
        assert_eq!(&sdes[..2], &[0x81, 202]);
        assert_eq!(&sdes[4..8], &0xdead_beef_u32.to_be_bytes());
        assert_eq!(&sdes[8..10], &[1, 8]);
        assert_eq!(&sdes[10..18], b"bot@host");
        assert_eq!(&sdes[18..], &[0, 0]);
    }

    #[test]
    fn rr_round_trip_and_cname_lengths() {
        for len in 0..=300 {
            let cname = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let blocks: Vec<_> = (0..(len as u32 % 40)).map(block).collect();
            let mut out = Vec::new();
            write_rr(42, &blocks, &cname, &mut out);
            let parsed = parse(&out);
            let kept = blocks.len().min(31);
            assert_eq!(
                parsed,
                vec![
                    RtcpPacket::ReceiverReport {
                        ssrc: 42,
                        reports: blocks[..kept].to_vec()
                    },
                    RtcpPacket::Other(202)
                ],
                "len {len}"
            );
            let sdes = &out[8 + kept * 24..];
            assert!(usize::from(sdes[9]) <= 255);
            assert!(std::str::from_utf8(&sdes[10..10 + usize::from(sdes[9])]).is_ok());
        }
    }

    #[test]
    fn bye_and_padding() {
        // BYE for two sources with a 4-byte padding tail.
        let mut buf = vec![0xA2, 203, 0, 3];
        buf.extend_from_slice(&1u32.to_be_bytes());
        buf.extend_from_slice(&2u32.to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 4]);
        assert_eq!(parse(&buf), vec![RtcpPacket::Bye { ssrcs: vec![1, 2] }]);
        // Padding on a packet that is not the last is invalid.
        let mut two = buf.clone();
        two.extend_from_slice(&buf);
        assert_eq!(parse(&two), vec![]);
    }

    #[test]
    fn report_block_from_stats() {
        let mut s = ReceiverStats::default();
        assert_eq!(s.report_block(0, 0), None);
        for seq in [0u16, 1, 3] {
            s.update(5, seq, 0, 0);
        }
        let b = s.report_block(7, 8).unwrap();
        assert_eq!(
            b,
            ReportBlock {
                ssrc: 5,
                fraction_lost: 64,
                cumulative_lost: 1,
                ext_max_seq: 3,
                jitter: 0,
                lsr: 7,
                dlsr: 8
            }
        );
    }

    /// RFC 3550 §6.4.1, Figure 2: A = 0xb710:8000 (46864.500 s),
    /// LSR = 0xb705:2000 (46853.125 s), DLSR = 0x0005:4000 (5.250 s), so the
    /// round trip is 0x0006:2000 (6.125 s).
    #[test]
    fn rtt_rfc3550_example() {
        let now = 0xb710_8000_u64 << 16;
        assert_eq!(ntp_middle32(now), 0xb710_8000);
        assert_eq!(rtt_ms(now, 0xb705_2000, 0x0005_4000), Some(6125.0));
        assert_eq!(rtt_ms(now, 0, 0x0005_4000), None);
        assert_eq!(rtt_ms(now, 0xb710_8000, 0x0005_4000), None);
        // Across the wrap of the middle 32 bits.
        assert_eq!(
            rtt_ms(0x0000_0010_u64 << 16, 0xFFFF_FFF0, 0),
            Some(0x20 as f64 * 1000.0 / 65536.0)
        );
    }

    #[test]
    fn ntp_conversion() {
        assert_eq!(ntp_from_unix(0, 0), NTP_UNIX_OFFSET << 32);
        assert_eq!(
            ntp_from_unix(0, 500_000_000),
            (NTP_UNIX_OFFSET << 32) | 0x8000_0000
        );
        assert_eq!(
            ntp_from_unix(0, 1_500_000_000),
            ((NTP_UNIX_OFFSET + 1) << 32) | 0x8000_0000
        );
        // 2036 era rollover wraps instead of overflowing.
        let t = ntp_from_unix(u32::MAX as u64 - NTP_UNIX_OFFSET + 1, 0);
        assert_eq!(t, 0);
        let _ = ntp_from_unix(u64::MAX, u32::MAX);
        let a = ntp_from_unix(1_700_000_000, 0);
        let b = ntp_from_unix(1_700_000_000, 250_000_000);
        assert_eq!(ntp_middle32(b) - ntp_middle32(a), 0x4000);
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(parse(&[]), vec![]);
        assert_eq!(parse(&[0x80]), vec![]);
        assert_eq!(parse(&[0x80, 200, 0, 0]), vec![]); // SR without a body
        assert_eq!(
            parse(&[0x80, 201, 0, 1, 0, 0, 0, 1]),
            vec![RtcpPacket::ReceiverReport {
                ssrc: 1,
                reports: vec![]
            }]
        );
        assert_eq!(parse(&[0x81, 201, 0, 1, 0, 0, 0, 1]), vec![]); // block missing
        assert_eq!(parse(&[0x80, 96, 0, 0]), vec![]); // RTP, not RTCP
        assert_eq!(parse(&[0x40, 201, 0, 1, 0, 0, 0, 1]), vec![]); // version 1
        assert_eq!(parse(&[0xA0, 201, 0, 1, 0, 0, 0, 0]), vec![]); // zero padding
        assert_eq!(parse(&[0xA0, 201, 0, 1, 0, 0, 0, 9]), vec![]); // padding too long
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut buf = Vec::new();
        for round in 0..20_000 {
            x ^= x << 7;
            x ^= x >> 9;
            buf.clear();
            let len = (x % 80) as usize;
            for i in 0..len {
                buf.push((x >> (i % 8 * 8)) as u8 ^ i as u8);
            }
            if round % 2 == 0 && len >= 4 {
                buf[0] = 0x80 | (buf[0] & 0x3F);
                buf[1] = 200 + (buf[1] % 5);
                buf[2] = 0;
                buf[3] %= 20;
            }
            let _ = parse(&buf);
        }
    }
}
