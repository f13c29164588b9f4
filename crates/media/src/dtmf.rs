//! DTMF as RFC 4733 telephone-events (RTP) and as SIP INFO bodies.
//!
//! Sans-IO: the receiver is a plain state machine fed with the RTP
//! timestamp and payload of each telephone-event packet; the sender only
//! builds payloads, the caller owns sequence numbers, timestamps and pacing.
//!
//! RFC 4733 §2.5.1 identifies one key press by its RTP timestamp: every
//! packet of an event (start, updates, the redundant end packets, and the
//! retransmissions some senders add to the start) carries the timestamp of
//! the event's beginning. That is the key the receiver deduplicates on.

use std::collections::VecDeque;

/// RFC 4733 §3.2 event codes 0-15 (DTMF) to their key.
fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + (event - 12)) as char),
        _ => None,
    }
}

fn digit_to_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// How many timestamps of finished presses (and of the earlier segments of
/// the current one) are remembered, so that late redundant end packets
/// (reordered behind the next press) stay ignored.
const RECENT: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Press {
    timestamp: u32,
    event: u8,
    /// Duration accumulated over earlier segments of a long event
    /// (RFC 4733 §2.5.1.3), plus the largest duration seen in this segment.
    done_segments: u32,
    duration: u16,
}

impl Press {
    fn total(&self) -> u32 {
        self.done_segments.saturating_add(u32::from(self.duration))
    }
}

/// Receiver: one digit per key press. A key press is identified by its RTP
/// timestamp (all packets of one event share it). Report the digit once, at
/// the first packet with the end bit (or, if the end packets were all lost,
/// when a new event timestamp arrives for an event that never ended, or via
/// `flush`). Redundant end packets (usually 3) and retransmitted starts are
/// ignored. Events 0-9 → '0'-'9', 10 '*', 11 '#', 12-15 'A'-'D'; other
/// events (e.g. 16 flash) ignored.
///
/// Returned durations are in RTP timestamp units (8 kHz: 160 per 20 ms).
///
/// In the rare case that one packet completes two presses (the previous
/// press lost all its end packets and the new one arrives as a lone end
/// packet), the second digit is queued: it comes out of the next
/// `handle_packet`, `poll_digit` or `flush` call. Call `flush` until it
/// returns `None` at the end of a call.
#[derive(Debug, Default, Clone)]
pub struct Rfc4733Receiver {
    /// The press in progress (not yet reported).
    current: Option<Press>,
    /// Timestamps of presses already reported, oldest first.
    recent: VecDeque<(u32, u8)>,
    ready: VecDeque<(char, u32)>,
}

impl Rfc4733Receiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one telephone-event payload (the RTP payload only, without the
    /// RTP header) with its RTP timestamp. Payloads shorter than 4 bytes are
    /// ignored; of a multi-event payload (§2.5.1.5) only the first block,
    /// which RFC 4733 says is the current event, is used.
    pub fn handle_packet(&mut self, timestamp: u32, payload: &[u8]) -> Option<(char, u32)> {
        self.take_packet(timestamp, payload);
        self.ready.pop_front()
    }

    /// A digit queued by an earlier packet, if any (see the type doc).
    pub fn poll_digit(&mut self) -> Option<(char, u32)> {
        self.ready.pop_front()
    }

    /// Ends the press in progress whose end packets never came (e.g. at
    /// hang-up or after a timeout chosen by the caller) and returns its
    /// digit with the longest duration seen. Queued digits come first.
    pub fn flush(&mut self) -> Option<(char, u32)> {
        if let Some(press) = self.current.take() {
            self.finish(press);
        }
        self.ready.pop_front()
    }

    fn take_packet(&mut self, timestamp: u32, payload: &[u8]) {
        let &[event, flags, d_hi, d_lo, ..] = payload else {
            return;
        };
        let end = flags & 0x80 != 0;
        let duration = u16::from_be_bytes([d_hi, d_lo]);
        if event_to_digit(event).is_none() {
            // Not a key; it still proves a different event is on the wire,
            // so a press with a different timestamp that never ended is over.
            if let Some(press) = self.current {
                if press.timestamp != timestamp {
                    self.current = None;
                    self.finish(press);
                }
            }
            return;
        }

        if self.recent.contains(&(timestamp, event)) {
            // Redundant end, or a late retransmitted start, of a press that
            // was already reported; it may arrive after the next press began.
            return;
        }
        if let Some(mut press) = self.current {
            if press.timestamp == timestamp && press.event == event {
                press.duration = press.duration.max(duration);
                self.current = Some(press);
                if end {
                    self.current = None;
                    self.finish(press);
                }
                return;
            }
            // §2.5.1.3: a long event continues in a new segment whose
            // timestamp is the previous one plus the previous duration. Some
            // senders also (wrongly) move the timestamp on while the key is
            // held; a "new" start that lies inside the span the press already
            // covers cannot be a new press either.
            let offset = timestamp.wrapping_sub(press.timestamp);
            let continues =
                press.event == event && offset > 0 && offset <= u32::from(press.duration);
            if continues {
                self.remember(press.timestamp, event);
                let next = Press {
                    timestamp,
                    event,
                    done_segments: press.done_segments.saturating_add(offset),
                    duration,
                };
                self.current = Some(next);
                if end {
                    self.current = None;
                    self.finish(next);
                }
                return;
            }
            // A different press began: the old one lost all its end packets.
            self.current = None;
            self.finish(press);
        }

        let press = Press {
            timestamp,
            event,
            done_segments: 0,
            duration,
        };
        if end {
            self.finish(press);
        } else {
            self.current = Some(press);
        }
    }

    fn remember(&mut self, timestamp: u32, event: u8) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((timestamp, event));
    }

    fn finish(&mut self, press: Press) {
        self.remember(press.timestamp, press.event);
        if let Some(digit) = event_to_digit(press.event) {
            self.ready.push_back((digit, press.total()));
        }
    }
}

/// Samples per 20 ms packet at 8 kHz.
const STEP: u32 = 160;
/// The duration field is 16 bits; longer events would need segmenting
/// (RFC 4733 §2.5.1.3), which nobody needs for a key press.
const MAX_PACKETS: u32 = u16::MAX as u32 / STEP;

/// Sender: the packets for one digit at 8 kHz and 20 ms packetisation:
/// `duration_ms` of event packets (duration field growing by 160 each),
/// marker on the first, then 3 end packets with the final duration. All
/// share the event's RTP timestamp (the caller supplies it); each element is
/// (marker, payload[4]) to be sent 20 ms apart (the 3 end packets may go
/// back to back).
///
/// `duration_ms` is rounded up to whole 20 ms packets, at least one, and
/// capped at 8.18 s (the 16-bit duration field). `volume` is the power
/// level in -dBm0 (RFC 4733 §2.3.4), clamped to its 6-bit range 0-63.
/// Lower-case 'a'-'d' are accepted; anything outside `0-9*#A-D` is `None`.
pub fn encode_digit(digit: char, duration_ms: u32, volume: u8) -> Option<Vec<(bool, [u8; 4])>> {
    let event = digit_to_event(digit)?;
    let volume = volume.min(63);
    let packets = duration_ms.div_ceil(20).clamp(1, MAX_PACKETS);
    let payload = |end: bool, duration: u32| {
        let d = u16::try_from(duration).unwrap_or(u16::MAX).to_be_bytes();
        let flags = if end { 0x80 | volume } else { volume };
        [event, flags, d[0], d[1]]
    };
    let mut out = Vec::with_capacity(packets as usize + 3);
    for i in 1..=packets {
        out.push((i == 1, payload(false, i * STEP)));
    }
    let last = payload(true, packets * STEP);
    out.extend([(false, last); 3]);
    Some(out)
}

/// SIP INFO body `application/dtmf-relay` ("Signal=5\r\nDuration=160"),
/// also tolerating `application/dtmf` bodies ("5"); returns the digit.
///
/// Keys are case-insensitive, spaces and bare-LF line ends are tolerated,
/// and the numeric forms some gateways send for the keys (`Signal=10` for
/// '*', `11` for '#', 12-15 for A-D) are understood.
pub fn parse_dtmf_relay(body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let mut saw_key = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        saw_key = true;
        if key.trim().eq_ignore_ascii_case("signal") {
            return signal_value(value.trim());
        }
    }
    if saw_key {
        // A dtmf-relay body without a Signal line carries no key.
        return None;
    }
    signal_value(text.trim())
}

fn signal_value(value: &str) -> Option<char> {
    let mut chars = value.chars();
    let first = chars.next()?;
    if chars.next().is_none() {
        let digit = first.to_ascii_uppercase();
        return digit_to_event(digit).map(|_| digit);
    }
    // Numeric event codes: "10" and up (single digits were handled above).
    let code: u8 = value.parse().ok()?;
    event_to_digit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(event: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [event, (if end { 0x80 } else { 0 }) | volume, d[0], d[1]]
    }

    /// Feeds packets and collects every digit, flushing at the end.
    fn run(rx: &mut Rfc4733Receiver, packets: &[(u32, [u8; 4])]) -> Vec<(char, u32)> {
        let mut out = Vec::new();
        for (ts, p) in packets {
            out.extend(rx.handle_packet(*ts, p));
            out.extend(std::iter::from_fn(|| rx.poll_digit()));
        }
        out.extend(std::iter::from_fn(|| rx.flush()));
        out
    }

    #[test]
    fn event_codes_map_to_keys() {
        let keys: String = (0..=15).filter_map(event_to_digit).collect();
        assert_eq!(keys, "0123456789*#ABCD");
        assert_eq!(event_to_digit(16), None);
        for c in keys.chars() {
            assert_eq!(event_to_digit(digit_to_event(c).unwrap()), Some(c));
        }
    }

    /// Two key presses in the shape of the RFC 4733 §5 examples: 50 ms
    /// packetisation (400 timestamp units per update), the start carries the
    /// marker, each end is sent three times, a press is keyed by the
    /// timestamp of its start.
    #[test]
    fn rfc4733_style_sequence_of_two_digits() {
        let mut rx = Rfc4733Receiver::new();
        let mut packets = Vec::new();
        for d in [400, 800, 1200] {
            packets.push((0, pkt(9, false, 7, d)));
        }
        for _ in 0..3 {
            packets.push((0, pkt(9, true, 7, 1600)));
        }
        for d in [400, 800] {
            packets.push((7040, pkt(1, false, 7, d)));
        }
        for _ in 0..3 {
            packets.push((7040, pkt(1, true, 7, 1040)));
        }
        assert_eq!(run(&mut rx, &packets), vec![('9', 1600), ('1', 1040)]);
    }

    #[test]
    fn three_redundant_ends_give_exactly_one_digit() {
        let mut rx = Rfc4733Receiver::new();
        let ts = 123_456;
        assert_eq!(rx.handle_packet(ts, &pkt(5, false, 10, 160)), None);
        assert_eq!(rx.handle_packet(ts, &pkt(5, false, 10, 320)), None);
        assert_eq!(
            rx.handle_packet(ts, &pkt(5, true, 10, 480)),
            Some(('5', 480))
        );
        assert_eq!(rx.handle_packet(ts, &pkt(5, true, 10, 480)), None);
        assert_eq!(rx.handle_packet(ts, &pkt(5, true, 10, 480)), None);
        // A retransmitted start arriving late is ignored too.
        assert_eq!(rx.handle_packet(ts, &pkt(5, false, 10, 160)), None);
        assert_eq!(rx.flush(), None);
    }

    #[test]
    fn lost_ends_report_on_next_event() {
        let mut rx = Rfc4733Receiver::new();
        assert_eq!(rx.handle_packet(1000, &pkt(3, false, 10, 160)), None);
        assert_eq!(rx.handle_packet(1000, &pkt(3, false, 10, 320)), None);
        // The ends of '3' are lost; '4' starts.
        assert_eq!(
            rx.handle_packet(5000, &pkt(4, false, 10, 160)),
            Some(('3', 320))
        );
        assert_eq!(
            rx.handle_packet(5000, &pkt(4, true, 10, 800)),
            Some(('4', 800))
        );
        assert_eq!(rx.handle_packet(5000, &pkt(4, true, 10, 800)), None);
    }

    #[test]
    fn lost_ends_report_on_flush() {
        let mut rx = Rfc4733Receiver::new();
        assert_eq!(rx.handle_packet(1000, &pkt(11, false, 10, 160)), None);
        assert_eq!(rx.handle_packet(1000, &pkt(11, false, 10, 480)), None);
        assert_eq!(rx.flush(), Some(('#', 480)));
        assert_eq!(rx.flush(), None);
        // Its late end packets do not report it again.
        assert_eq!(rx.handle_packet(1000, &pkt(11, true, 10, 640)), None);
    }

    #[test]
    fn lone_end_after_unended_press_queues_second_digit() {
        let mut rx = Rfc4733Receiver::new();
        let got = run(
            &mut rx,
            &[(0, pkt(1, false, 10, 160)), (4000, pkt(2, true, 10, 800))],
        );
        assert_eq!(got, vec![('1', 160), ('2', 800)]);
    }

    #[test]
    fn same_digit_twice_is_two_presses() {
        let mut rx = Rfc4733Receiver::new();
        let mut packets = Vec::new();
        for ts in [0u32, 2000] {
            packets.push((ts, pkt(7, false, 10, 160)));
            packets.extend([(ts, pkt(7, true, 10, 320)); 3]);
        }
        assert_eq!(run(&mut rx, &packets), vec![('7', 320), ('7', 320)]);
    }

    #[test]
    fn late_redundant_end_of_previous_press_is_ignored() {
        let mut rx = Rfc4733Receiver::new();
        assert_eq!(
            rx.handle_packet(0, &pkt(1, true, 10, 800)),
            Some(('1', 800))
        );
        assert_eq!(rx.handle_packet(4000, &pkt(2, false, 10, 160)), None);
        assert_eq!(rx.handle_packet(0, &pkt(1, true, 10, 800)), None);
        assert_eq!(
            rx.handle_packet(4000, &pkt(2, true, 10, 320)),
            Some(('2', 320))
        );
    }

    #[test]
    fn long_event_segments_are_one_press() {
        let mut rx = Rfc4733Receiver::new();
        let got = run(
            &mut rx,
            &[
                (100, pkt(0, false, 10, 30_000)),
                (100, pkt(0, false, 10, 0xFFFF)),
                (100u32.wrapping_add(0xFFFF), pkt(0, false, 10, 160)),
                (100u32.wrapping_add(0xFFFF), pkt(0, true, 10, 800)),
            ],
        );
        assert_eq!(got, vec![('0', 0xFFFF + 800)]);
    }

    #[test]
    fn sender_moving_the_timestamp_while_held_is_one_press() {
        let mut rx = Rfc4733Receiver::new();
        let got = run(
            &mut rx,
            &[
                (1000, pkt(6, false, 10, 160)),
                (1160, pkt(6, false, 10, 160)),
                (1000, pkt(6, false, 10, 160)), // late retransmitted start
                (1320, pkt(6, false, 10, 160)),
                (1320, pkt(6, true, 10, 320)),
                (1320, pkt(6, true, 10, 320)),
                (1160, pkt(6, false, 10, 160)), // late
            ],
        );
        assert_eq!(got, vec![('6', 640)]);
    }

    #[test]
    fn non_dtmf_events_and_short_payloads_are_ignored() {
        let mut rx = Rfc4733Receiver::new();
        assert_eq!(rx.handle_packet(0, &pkt(16, true, 10, 800)), None);
        assert_eq!(rx.handle_packet(0, &[]), None);
        assert_eq!(rx.handle_packet(0, &[5, 0x80, 0]), None);
        assert_eq!(rx.flush(), None);
    }

    #[test]
    fn never_panics_on_arbitrary_payloads() {
        let mut rx = Rfc4733Receiver::new();
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let b = x.to_be_bytes();
            let len = (x % 7) as usize;
            let payload = [b[0] & 0x1F, b[1], b[2], b[3], b[0], b[1]];
            let ts = x % 5 * 1000;
            rx.handle_packet(ts, &payload[..len]);
        }
        while rx.flush().is_some() {}
    }

    #[test]
    fn encode_digit_packets() {
        let pkts = encode_digit('5', 100, 10).unwrap();
        assert_eq!(pkts.len(), 5 + 3);
        let expected_durations = [160u16, 320, 480, 640, 800, 800, 800, 800];
        for (i, (marker, p)) in pkts.iter().enumerate() {
            assert_eq!(*marker, i == 0);
            assert_eq!(p[0], 5);
            assert_eq!(p[1] & 0x3F, 10);
            assert_eq!(p[1] & 0x40, 0, "R bit must be zero");
            assert_eq!(p[1] & 0x80 != 0, i >= 5, "end bit on the last three");
            assert_eq!(u16::from_be_bytes([p[2], p[3]]), expected_durations[i]);
        }
        assert_eq!(encode_digit('*', 0, 10).unwrap()[0].1[0], 10);
        assert_eq!(encode_digit('#', 1, 10).unwrap().len(), 4);
        assert_eq!(encode_digit('d', 20, 10).unwrap()[0].1[0], 15);
        assert_eq!(encode_digit('x', 100, 10), None);
        assert_eq!(encode_digit('5', 100, 200).unwrap()[0].1[1], 63);
        let long = encode_digit('1', u32::MAX, 0).unwrap();
        let last = long.last().unwrap().1;
        assert_eq!(u16::from_be_bytes([last[2], last[3]]), 65_440);
    }

    #[test]
    fn encoded_digits_round_trip_through_receiver() {
        let mut rx = Rfc4733Receiver::new();
        let mut got = String::new();
        for (i, c) in "0123456789*#ABCD".chars().enumerate() {
            let ts = i as u32 * 8000;
            for (_, p) in encode_digit(c, 100, 10).unwrap() {
                if let Some((d, dur)) = rx.handle_packet(ts, &p) {
                    assert_eq!(dur, 800);
                    got.push(d);
                }
            }
        }
        assert_eq!(got, "0123456789*#ABCD");
    }

    #[test]
    fn dtmf_relay_bodies() {
        assert_eq!(parse_dtmf_relay(b"Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(parse_dtmf_relay(b"Signal= #\nDuration= 250"), Some('#'));
        assert_eq!(parse_dtmf_relay(b"signal=*"), Some('*'));
        assert_eq!(parse_dtmf_relay(b"Duration=160\r\nSignal=b\r\n"), Some('B'));
        assert_eq!(parse_dtmf_relay(b"Signal=10\r\nDuration=160"), Some('*'));
        assert_eq!(parse_dtmf_relay(b"Signal=11"), Some('#'));
        assert_eq!(parse_dtmf_relay(b"Signal=16"), None);
        assert_eq!(parse_dtmf_relay(b"Signal=\r\n"), None);
        assert_eq!(parse_dtmf_relay(b"Duration=160"), None);
        // application/dtmf
        assert_eq!(parse_dtmf_relay(b"7"), Some('7'));
        assert_eq!(parse_dtmf_relay(b" 7\r\n"), Some('7'));
        assert_eq!(parse_dtmf_relay(b"11"), Some('#'));
        assert_eq!(parse_dtmf_relay(b""), None);
        assert_eq!(parse_dtmf_relay(b"hello"), None);
        assert_eq!(parse_dtmf_relay(&[0xFF, 0xFE, b'=']), None);
    }

    // --- the SIPp sample captures -------------------------------------

    const PCAP_DIR: &str = "/usr/share/sip-tester";

    /// RTP packets (payload type, timestamp, payload) of a classic pcap of
    /// Ethernet/IPv4/UDP frames; anything else is skipped.
    fn pcap_rtp(bytes: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
        let Some(magic) = bytes.get(..4) else {
            return Vec::new();
        };
        let le = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
            _ => return Vec::new(),
        };
        let u32_at = |b: &[u8], at: usize| -> Option<u32> {
            let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
            Some(if le {
                u32::from_le_bytes(w)
            } else {
                u32::from_be_bytes(w)
            })
        };
        if u32_at(bytes, 20) != Some(1) {
            return Vec::new(); // not Ethernet
        }
        let mut out = Vec::new();
        let mut off = 24;
        while let Some(incl) = u32_at(bytes, off + 8) {
            let start = off + 16;
            let Some(frame) = bytes.get(start..start + incl as usize) else {
                break;
            };
            off = start + incl as usize;
            if frame.get(12..14) != Some(&[0x08, 0x00]) {
                continue;
            }
            let ip = &frame[14..];
            let Some(&vihl) = ip.first() else { continue };
            if vihl >> 4 != 4 || ip.get(9) != Some(&17) {
                continue;
            }
            let Some(udp) = ip.get(usize::from(vihl & 0x0F) * 4..) else {
                continue;
            };
            let Some(rtp) = udp.get(8..) else { continue };
            if rtp.len() < 12 || rtp[0] >> 6 != 2 {
                continue;
            }
            let cc = usize::from(rtp[0] & 0x0F);
            let ts = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
            let Some(payload) = rtp.get(12 + 4 * cc..) else {
                continue;
            };
            out.push((rtp[1] & 0x7F, ts, payload.to_vec()));
        }
        out
    }

    #[test]
    fn sipp_dtmf_2833_captures() {
        let files = [
            ("0", '0'),
            ("1", '1'),
            ("2", '2'),
            ("3", '3'),
            ("4", '4'),
            ("5", '5'),
            ("6", '6'),
            ("7", '7'),
            ("8", '8'),
            ("9", '9'),
            ("star", '*'),
            ("pound", '#'),
        ];
        let mut seen = 0;
        for (name, digit) in files {
            let path = format!("{PCAP_DIR}/dtmf_2833_{name}.pcap");
            let Ok(bytes) = std::fs::read(&path) else {
                eprintln!("skipping {path}: not present");
                continue;
            };
            seen += 1;
            let packets = pcap_rtp(&bytes);
            // The telephone-event payload type is the dynamic one whose
            // payloads are 4-byte event blocks.
            let pt = packets
                .iter()
                .find(|(pt, _, p)| *pt >= 96 && p.len() % 4 == 0 && !p.is_empty())
                .map(|(pt, _, _)| *pt)
                .unwrap_or_else(|| panic!("{path}: no telephone-event packets"));
            let mut rx = Rfc4733Receiver::new();
            let events: Vec<_> = packets
                .iter()
                .filter(|(p, _, _)| *p == pt)
                .map(|(_, ts, payload)| (*ts, payload.as_slice()))
                .collect();
            let mut got = Vec::new();
            for (ts, payload) in &events {
                got.extend(rx.handle_packet(*ts, payload).map(|(d, _)| d));
            }
            got.extend(std::iter::from_fn(|| rx.flush()).map(|(d, _)| d));
            assert_eq!(got, vec![digit], "{path}: payload type {pt}");
            eprintln!(
                "{path}: {} telephone-event packets (PT {pt}) -> {got:?}",
                events.len()
            );
        }
        if seen == 0 {
            eprintln!("skipping: no {PCAP_DIR}/dtmf_2833_*.pcap");
        }
    }
}
