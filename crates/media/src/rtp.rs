//! RTP data packets (RFC 3550 §5.1): the fixed header, nothing else. Parsing never trusts a
//! length field: anything that does not add up is `None`, and the caller drops the datagram.

/// The fields of an RTP header this switch acts on. CSRCs and header extensions are skipped on
/// parse and never written (a softswitch endpoint is not a mixer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

const FIXED_LEN: usize = 12;
const VERSION: u8 = 2;

/// Parses an RTP packet: returns the header and the payload (CSRC list, header extension and
/// padding removed). `None` for any version other than 2 or any inconsistent length.
pub fn parse(buf: &[u8]) -> Option<(RtpHeader, &[u8])> {
    let fixed = buf.get(..FIXED_LEN)?;
    if fixed[0] >> 6 != VERSION {
        return None;
    }
    let padding = fixed[0] & 0x20 != 0;
    let extension = fixed[0] & 0x10 != 0;
    let csrc_count = (fixed[0] & 0x0F) as usize;
    let header = RtpHeader {
        payload_type: fixed[1] & 0x7F,
        marker: fixed[1] & 0x80 != 0,
        seq: u16::from_be_bytes([fixed[2], fixed[3]]),
        timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
    };

    let mut offset = FIXED_LEN + 4 * csrc_count;
    if extension {
        // RFC 3550 §5.3.1: 16-bit profile id, then the length in 32-bit words not counting
        // this 4-byte preamble.
        let ext = buf.get(offset..offset + 4)?;
        let words = u16::from_be_bytes([ext[2], ext[3]]) as usize;
        offset += 4 + 4 * words;
    }
    let mut body = buf.get(offset..)?;
    if padding {
        // The last octet counts the padding including itself, so zero is malformed.
        let count = *body.last()? as usize;
        if count == 0 || count > body.len() {
            return None;
        }
        body = &body[..body.len() - count];
    }
    Some((header, body))
}

/// Writes a 12-byte header (no CSRCs, extension or padding) and the payload into `out`, which is
/// cleared first so a caller can reuse one buffer per send.
pub fn write(h: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(FIXED_LEN + payload.len());
    out.push(VERSION << 6);
    out.push((u8::from(h.marker) << 7) | (h.payload_type & 0x7F));
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// True when `buf` looks like RTCP (RFC 5761 §4): version 2 and a packet type 200–204 (SR, RR,
/// SDES, BYE, APP) where RTP has its marker and payload type. Those values are RTP payload types
/// 72–76 with the marker set, which RFC 5761 reserves, so the test is unambiguous.
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf[0] >> 6 == VERSION && (200..=204).contains(&buf[1])
}

/// Extended sequence numbers (RFC 3550 A.1): wraps u16 into u64 given the previous highest.
///
/// The first number seen extends to itself; later ones are placed in the cycle that puts them
/// nearest the highest seen so far (within ±32768), so reordered packets land before it and a
/// 65535 → 0 step lands after it. A packet from before the very first one across a wrap (which
/// would be negative) extends to 0, i.e. "old".
#[derive(Debug, Default, Clone)]
pub struct SeqExtender {
    /// Highest extended number so far; `None` until the first packet.
    highest: Option<u64>,
}

impl SeqExtender {
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            self.highest = Some(seq as u64);
            return seq as u64;
        };
        let delta = seq.wrapping_sub(highest as u16) as i16;
        if delta >= 0 {
            let ext = highest + delta as u64;
            self.highest = Some(ext);
            ext
        } else {
            highest.saturating_sub(delta.unsigned_abs() as u64)
        }
    }

    /// The highest extended sequence number seen, if any (RTCP reports its low 32 bits).
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Forgets the stream, e.g. when its SSRC changes: the next number extends to itself.
    pub fn reset(&mut self) {
        self.highest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        RtpHeader {
            payload_type: 0,
            marker: true,
            seq: 0x1234,
            timestamp: 0xDEAD_BEEF,
            ssrc: 0x0102_0304,
        }
    }

    #[test]
    fn write_then_parse_round_trips() {
        let mut buf = vec![0xAA; 3];
        write(&header(), &[1, 2, 3], &mut buf);
        assert_eq!(
            buf,
            [0x80, 0x80, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4, 1, 2, 3]
        );
        let (h, payload) = parse(&buf).unwrap();
        assert_eq!(h, header());
        assert_eq!(payload, [1, 2, 3]);
    }

    #[test]
    fn payload_type_is_seven_bits() {
        let mut buf = Vec::new();
        let h = RtpHeader {
            payload_type: 101,
            marker: false,
            ..header()
        };
        write(&h, &[], &mut buf);
        assert_eq!(buf[1], 101);
        assert_eq!(parse(&buf).unwrap(), (h, &[][..] as &[u8]));
    }

    #[test]
    fn skips_csrcs_extension_and_padding() {
        let mut buf = vec![0xB2, 0x08, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
        buf.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // two CSRCs
        buf.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAB, 0, 0]); // one-word extension
        buf.extend_from_slice(&[0xD5, 0xD5]); // payload
        buf.extend_from_slice(&[0, 0, 3]); // three octets of padding
        let (h, payload) = parse(&buf).unwrap();
        assert_eq!(
            h,
            RtpHeader {
                payload_type: 8,
                marker: false,
                seq: 1,
                timestamp: 160,
                ssrc: 9
            }
        );
        assert_eq!(payload, [0xD5, 0xD5]);
    }

    #[test]
    fn rejects_inconsistent_packets() {
        let mut good = Vec::new();
        write(&header(), &[0; 4], &mut good);
        assert!(parse(&good[..11]).is_none(), "short header");
        let mut v1 = good.clone();
        v1[0] = 0x40;
        assert!(parse(&v1).is_none(), "version 1");
        let mut csrc = good.clone();
        csrc[0] |= 0x02; // two CSRCs claimed, only 4 bytes follow
        assert!(parse(&csrc).is_none(), "CSRC overrun");
        let mut ext = good.clone();
        ext[0] |= 0x10;
        ext[15] = 1; // one word of extension claimed, none follows
        assert!(parse(&ext).is_none(), "extension header overrun");
        let mut pad = good.clone();
        pad[0] |= 0x20;
        *pad.last_mut().unwrap() = 5; // more padding than payload
        assert!(parse(&pad).is_none(), "padding overrun");
        *pad.last_mut().unwrap() = 0;
        assert!(parse(&pad).is_none(), "zero padding count");
        *pad.last_mut().unwrap() = 4;
        assert!(parse(&pad).unwrap().1.is_empty(), "padding may eat all");
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // Every short prefix of every flag combination, with hostile length fields.
        for b0 in 0..=255u8 {
            let mut buf = vec![b0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            buf.extend_from_slice(&[0xFF; 70]);
            for len in 0..buf.len() {
                let _ = parse(&buf[..len]);
                let _ = is_rtcp(&buf[..len]);
            }
        }
    }

    #[test]
    fn rtcp_demux() {
        assert!(is_rtcp(&[0x80, 200, 0, 6])); // SR
        assert!(is_rtcp(&[0x81, 201, 0, 7])); // RR with one block
        assert!(is_rtcp(&[0x80, 204, 0, 2])); // APP
        assert!(!is_rtcp(&[0x80, 205, 0, 2]));
        assert!(!is_rtcp(&[0x80, 0x00, 0, 1])); // PCMU
        assert!(!is_rtcp(&[0x80, 0x80 | 101, 0, 1])); // telephone-event with marker
        assert!(!is_rtcp(&[0x40, 200, 0, 6])); // version 1
        assert!(!is_rtcp(&[0x80, 200]));
    }

    #[test]
    fn extends_across_wrap_and_reorder() {
        let mut x = SeqExtender::default();
        assert_eq!(x.extend(65534), 65534);
        assert_eq!(x.extend(65535), 65535);
        assert_eq!(x.extend(1), 65537); // 0 lost or late
        assert_eq!(x.extend(0), 65536); // late, still placed before
        assert_eq!(x.extend(65535), 65535); // duplicate from the old cycle
        assert_eq!(x.highest(), Some(65537));
        assert_eq!(x.extend(2), 65538);
        // A jump just under half the space goes forward; the rest are read as old.
        assert_eq!(x.extend(2u16.wrapping_add(32767)), 65538 + 32767);
    }

    #[test]
    fn extension_before_the_first_packet_saturates() {
        let mut x = SeqExtender::default();
        assert_eq!(x.extend(2), 2);
        assert_eq!(x.extend(65535), 0);
        assert_eq!(x.extend(3), 3);
        x.reset();
        assert_eq!(x.highest(), None);
        assert_eq!(x.extend(40000), 40000);
    }
}
