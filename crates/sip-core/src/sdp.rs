//! SDP offer/answer for one audio stream (RFC 4566, RFC 3264), the subset a carrier trunk uses:
//! PCMU, PCMA, G.722, Opus and telephone-event, over RTP or SRTP (SDES).

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
    /// 16 kHz audio on an 8000 clock (RFC 3551 §4.5.2).
    G722,
    /// `opus/48000/2` (RFC 7587): a dynamic payload type, a 48 kHz clock whatever the audio.
    Opus,
}

/// The dynamic payload types of our offers: Opus, and telephone-event at 48 kHz beside it.
pub const OPUS_PT: u8 = 111;
pub const TELEPHONE_EVENT_48K_PT: u8 = 100;

impl Codec {
    /// The payload type our offers give it (an answer takes the offer's).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
            Codec::Opus => OPUS_PT,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "OPUS",
        }
    }

    /// Its RTP clock rate.
    pub fn clock(self) -> u32 {
        match self {
            Codec::Opus => 48000,
            _ => 8000,
        }
    }

    /// The encoding of its `a=rtpmap` line.
    fn rtpmap(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU/8000",
            Codec::Pcma => "PCMA/8000",
            Codec::G722 => "G722/8000",
            Codec::Opus => "opus/48000/2",
        }
    }

    /// A codec by its name in `absolute_codec_string` / `media.codecs` (FreeSWITCH's spelling,
    /// any case, parameters after `@` ignored). Names the switch does not speak give `None`.
    pub fn from_name(s: &str) -> Option<Codec> {
        let name = s.split('@').next()?.trim();
        [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// A comma-separated list such as `OPUS,G722,PCMU,PCMA`: the codecs the switch speaks, in
    /// that order.
    pub fn list(s: &str) -> Vec<Codec> {
        let mut out = Vec::new();
        for c in s.split(',').filter_map(Codec::from_name) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

/// The SDES crypto suites the switch speaks (RFC 4568 §6.2), in the order it offers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl CryptoSuite {
    pub const ALL: [CryptoSuite; 2] = [
        CryptoSuite::AesCm128HmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    fn from_name(s: &str) -> Option<CryptoSuite> {
        CryptoSuite::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// One `a=crypto` line (RFC 4568): a tag, a suite and its master key and salt (16 + 14 bytes).
/// Its `Debug` never shows the key: keys stay out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: CryptoSuite,
    pub key: [u8; 30],
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Crypto {{ tag: {}, suite: {}, key: *** }}",
            self.tag,
            self.suite.name()
        )
    }
}

impl Crypto {
    /// A fresh key for `suite` from the CSPRNG.
    pub fn new(tag: u32, suite: CryptoSuite) -> Crypto {
        let mut key = [0u8; 30];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
        Crypto { tag, suite, key }
    }

    /// `a=crypto:TAG SUITE inline:KEY` — only lines the switch can use: a known suite, a key of
    /// 30 bytes, no MKI and no session parameters (anything else is left for another line).
    fn parse(v: &str) -> Option<Crypto> {
        use base64::Engine as _;
        let mut f = v.split_whitespace();
        let tag = f.next()?.parse().ok()?;
        let suite = CryptoSuite::from_name(f.next()?)?;
        let params = f.next()?;
        if f.next().is_some() || params.contains(';') {
            return None;
        }
        let inline = params.strip_prefix("inline:")?;
        let mut parts = inline.split('|');
        let b64 = parts.next()?;
        for p in parts {
            // A lifetime (`2^31` or a number) is fine; an MKI (`1:4`) is not supported.
            if p.contains(':') {
                return None;
            }
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let key: [u8; 30] = bytes.try_into().ok()?;
        Some(Crypto { tag, suite, key })
    }

    fn line(&self) -> String {
        use base64::Engine as _;
        format!(
            "a=crypto:{} {} inline:{}\r\n",
            self.tag,
            self.suite.name(),
            base64::engine::general_purpose::STANDARD.encode(self.key)
        )
    }
}

/// What one side said about its audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub addr: SocketAddr,
    /// Codecs in the order of preference given.
    pub codecs: Vec<Codec>,
    /// The payload type of each of `codecs`, as this side numbers it.
    pub payload_types: Vec<u8>,
    /// Payload type of telephone-event/8000, if offered.
    pub telephone_event: Option<u8>,
    /// Payload type of telephone-event/48000 (beside Opus), if offered.
    pub telephone_event_48k: Option<u8>,
    /// `a=sendonly`/`inactive` or port 0: the peer put us on hold or refused the stream.
    pub direction: Direction,
    /// Every `m=` line of the offer, in order, as `media proto first-format` (RFC 3264 §6: the
    /// answer has as many, the ones we do not take with port 0), and which one is this audio.
    pub streams: Vec<String>,
    pub audio_index: usize,
    /// `RTP/SAVP` (or `SAVPF`): media must be SRTP.
    pub secure: bool,
    /// The usable `a=crypto` lines, in the offer's order of preference.
    pub crypto: Vec<Crypto>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl MediaDescription {
    /// The payload type this side gives `codec`.
    pub fn payload_type_of(&self, codec: Codec) -> Option<u8> {
        let i = self.codecs.iter().position(|c| *c == codec)?;
        self.payload_types.get(i).copied()
    }

    /// The telephone-event to use with the first codec, and its clock: the one at the codec's
    /// own rate where given, else telephone-event/8000 (api.md §7).
    pub fn dtmf(&self) -> Option<(u8, u32)> {
        let codec = self.codecs.first()?;
        match (
            codec.clock(),
            self.telephone_event_48k,
            self.telephone_event,
        ) {
            (48000, Some(pt), _) => Some((pt, 48000)),
            (_, _, Some(pt)) => Some((pt, 8000)),
            _ => None,
        }
    }

    /// An answer's codecs, keeping only those `offered` (RFC 3264 §6: an answer uses formats of
    /// the offer; an empty `offered` means [`DEFAULT_OFFER`]).
    pub fn within(mut self, offered: &[Codec]) -> MediaDescription {
        let offered = if offered.is_empty() {
            &DEFAULT_OFFER[..]
        } else {
            offered
        };
        let mut i = 0;
        while i < self.codecs.len() {
            if offered.contains(&self.codecs[i]) {
                i += 1;
            } else {
                self.codecs.remove(i);
                if i < self.payload_types.len() {
                    self.payload_types.remove(i);
                }
            }
        }
        self
    }

    /// This description with `codec` alone: what is in force after an answer chose it.
    pub fn with_only(mut self, codec: Codec) -> MediaDescription {
        let pt = self.payload_type_of(codec).unwrap_or(codec.payload_type());
        self.codecs = vec![codec];
        self.payload_types = vec![pt];
        self
    }
}

/// The offer of api.md §7 when nothing says otherwise: PCMU, then PCMA.
pub const DEFAULT_OFFER: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];

/// Our offer: `codecs` in order, telephone-event 101, ptime 20 (api.md §7); with `crypto`, SRTP
/// (`RTP/SAVP` and an `a=crypto` line each).
pub fn offer(
    session_id: u64,
    version: u64,
    addr: IpAddr,
    port: u16,
    codecs: &[Codec],
    crypto: &[Crypto],
) -> String {
    let mut s = origin(session_id, version, addr);
    let codecs = if codecs.is_empty() {
        &DEFAULT_OFFER[..]
    } else {
        codecs
    };
    let formats: Vec<(Codec, u8)> = codecs.iter().map(|c| (*c, c.payload_type())).collect();
    // telephone-event/8000 always, plus at 48 kHz beside Opus (api.md §7 Codecs).
    let mut te = vec![(101, 8000)];
    if codecs.iter().any(|c| c.clock() == 48000) {
        te.push((TELEPHONE_EVENT_48K_PT, 48000));
    }
    s.push_str(&audio(port, &formats, &te, Direction::SendRecv, crypto));
    s
}

/// Our answer to `remote`: its first codec we speak, its telephone-event type, and the direction
/// that mirrors its own (a `sendonly` hold is answered `recvonly`). `version` is our `o=` version
/// (RFC 3264 §8: raised by every changed description). `None` when nothing is in common (the
/// offerer gets 488).
/// The codec is the first of `prefer` that the offer lists (`media.codecs`); an empty `prefer`
/// takes the offer's first. With `crypto` (for a secure offer: the suite and tag chosen, with
/// our own key) the answer is `RTP/SAVP`.
#[allow(clippy::too_many_arguments)]
pub fn answer(
    remote: &MediaDescription,
    session_id: u64,
    version: u64,
    addr: IpAddr,
    port: u16,
    prefer: &[Codec],
    crypto: Option<&Crypto>,
) -> Option<(String, Codec)> {
    let codec = if prefer.is_empty() {
        *remote.codecs.first()?
    } else {
        *prefer.iter().find(|c| remote.codecs.contains(c))?
    };
    let dir = match remote.direction {
        Direction::SendOnly => Direction::RecvOnly,
        Direction::RecvOnly => Direction::SendOnly,
        d => d,
    };
    // The offer's payload type for the codec, and its telephone-event at the rate it offered.
    let chosen = remote.clone().with_only(codec);
    let pt = chosen.payload_types[0];
    let te: Vec<(u8, u32)> = chosen.dtmf().into_iter().collect();
    let ours = audio(
        port,
        &[(codec, pt)],
        &te,
        dir,
        crypto.map(std::slice::from_ref).unwrap_or(&[]),
    );
    // The session lines, then each offered stream in its place: ours, or refused with port 0.
    let mut sdp = origin(session_id, version, addr);
    for (i, line) in remote.streams.iter().enumerate() {
        if i == remote.audio_index {
            sdp.push_str(&ours);
        } else {
            let mut f = line.split_whitespace();
            let (media, proto) = (f.next().unwrap_or("audio"), f.next().unwrap_or("RTP/AVP"));
            let fmt = f.next().unwrap_or("0");
            sdp.push_str(&format!("m={media} 0 {proto} {fmt}\r\n"));
        }
    }
    if remote.streams.is_empty() {
        sdp.push_str(&ours);
    }
    Some((sdp, codec))
}

fn origin(session_id: u64, version: u64, addr: IpAddr) -> String {
    let fam = if addr.is_ipv4() { "IP4" } else { "IP6" };
    format!("v=0\r\no=BotStream {session_id} {version} IN {fam} {addr}\r\ns=BotStream\r\nc=IN {fam} {addr}\r\nt=0 0\r\n")
}

fn dir_attr(d: Direction) -> &'static str {
    match d {
        Direction::SendRecv => "sendrecv",
        Direction::SendOnly => "sendonly",
        Direction::RecvOnly => "recvonly",
        Direction::Inactive => "inactive",
    }
}

/// One audio stream: `m=`, its rtpmaps, telephone-event (when `te` is given), ptime, direction,
/// and the crypto lines of SRTP.
fn audio(
    port: u16,
    codecs: &[(Codec, u8)],
    te: &[(u8, u32)],
    dir: Direction,
    crypto: &[Crypto],
) -> String {
    let proto = if crypto.is_empty() {
        "RTP/AVP"
    } else {
        "RTP/SAVP"
    };
    let pts: Vec<String> = codecs
        .iter()
        .map(|(_, pt)| pt.to_string())
        .chain(te.iter().map(|(pt, _)| pt.to_string()))
        .collect();
    let mut s = format!("m=audio {port} {proto} {}\r\n", pts.join(" "));
    for (c, pt) in codecs {
        s.push_str(&format!("a=rtpmap:{pt} {}\r\n", c.rtpmap()));
        if *c == Codec::Opus {
            // We decode and play 16 kHz: no need for more, and mono.
            s.push_str(&format!(
                "a=fmtp:{pt} maxplaybackrate=16000;sprop-maxcapturerate=16000;stereo=0\r\n"
            ));
        }
    }
    for (pt, rate) in te {
        s.push_str(&format!(
            "a=rtpmap:{pt} telephone-event/{rate}\r\na=fmtp:{pt} 0-16\r\n"
        ));
    }
    s.push_str(&format!("a=ptime:20\r\na={}\r\n", dir_attr(dir)));
    for c in crypto {
        s.push_str(&c.line());
    }
    s
}

/// Reads the first audio stream. Unknown lines are ignored; a missing address or port is `None`.
pub fn parse(body: &[u8]) -> Option<MediaDescription> {
    let text = std::str::from_utf8(body).ok()?;
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    let mut pts: Vec<u8> = Vec::new();
    let mut rtpmap: Vec<(u8, String)> = Vec::new();
    let mut in_audio = false;
    let mut seen_audio = false;
    let mut streams = Vec::new();
    let mut audio_index = 0;
    let mut secure = false;
    let mut crypto = Vec::new();
    let mut direction = Direction::SendRecv;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.split_whitespace();
            let (media, _port, proto, fmt) = (f.next(), f.next(), f.next(), f.next());
            // A line with no media type is echoed as one nobody takes for audio: as "audio"
            // (port 0) it came before ours in the answer and was read as the refused audio.
            streams.push(format!(
                "{} {} {}",
                media.unwrap_or("unknown"),
                proto.unwrap_or("RTP/AVP"),
                fmt.unwrap_or("0")
            ));
            if seen_audio {
                in_audio = false;
                continue;
            }
            let mut it = m.split_whitespace();
            in_audio = it.next() == Some("audio");
            if in_audio {
                audio_index = streams.len() - 1;
            }
            if in_audio {
                seen_audio = true;
                port = it.next().and_then(|p| p.split('/').next()?.parse().ok());
                secure = it.next().is_some_and(|p| {
                    p.eq_ignore_ascii_case("RTP/SAVP") || p.eq_ignore_ascii_case("RTP/SAVPF")
                });
                pts = it.filter_map(|p| p.parse().ok()).collect();
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let ip = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next()?.parse().ok());
            if in_audio {
                media_ip = ip;
            } else if !seen_audio {
                session_ip = ip;
            }
        } else if let Some(a) = line.strip_prefix("a=crypto:") {
            if in_audio {
                crypto.extend(Crypto::parse(a));
            }
        } else if let Some(a) = line.strip_prefix("a=rtpmap:") {
            if in_audio {
                if let Some((pt, enc)) = a.split_once(' ') {
                    if let Ok(pt) = pt.trim().parse() {
                        rtpmap.push((pt, enc.trim().to_ascii_lowercase()));
                    }
                }
            }
        } else if in_audio || !seen_audio {
            direction = match line {
                "a=sendonly" => Direction::SendOnly,
                "a=recvonly" => Direction::RecvOnly,
                "a=inactive" => Direction::Inactive,
                "a=sendrecv" => Direction::SendRecv,
                _ => direction,
            };
        }
    }
    let ip = media_ip.or(session_ip)?;
    let port = port?;
    if port == 0 {
        direction = Direction::Inactive;
    }
    // The first rtpmap of each payload type, looked up in O(1): a 64 KiB offer of thousands of
    // formats and rtpmaps must not cost their product.
    let mut first_map: [Option<usize>; 256] = [None; 256];
    for (i, (pt, _)) in rtpmap.iter().enumerate() {
        first_map[usize::from(*pt)].get_or_insert(i);
    }
    let enc_of = |pt: u8| first_map[usize::from(pt)].map(|i| rtpmap[i].1.as_str());
    let mut codecs = Vec::new();
    let mut payload_types = Vec::new();
    let mut telephone_event = None;
    let mut telephone_event_48k = None;
    for pt in pts {
        let codec = match (pt, enc_of(pt)) {
            (0, None) => Some(Codec::Pcmu),
            (8, None) => Some(Codec::Pcma),
            (9, None) => Some(Codec::G722),
            (_, Some(e)) if e.starts_with("g722/8000") => Some(Codec::G722),
            (_, Some(e)) if e.starts_with("pcmu/8000") => Some(Codec::Pcmu),
            (_, Some(e)) if e.starts_with("pcma/8000") => Some(Codec::Pcma),
            // Mono or stereo: the decoder downmixes (api.md §7).
            (_, Some(e)) if e.starts_with("opus/48000") => Some(Codec::Opus),
            (_, Some(e)) if e.starts_with("telephone-event/8000") => {
                telephone_event = telephone_event.or(Some(pt));
                None
            }
            (_, Some(e)) if e.starts_with("telephone-event/48000") => {
                telephone_event_48k = telephone_event_48k.or(Some(pt));
                None
            }
            _ => None,
        };
        if let Some(c) = codec.filter(|c| !codecs.contains(c)) {
            codecs.push(c);
            payload_types.push(pt);
        }
    }
    Some(MediaDescription {
        addr: SocketAddr::new(ip, port),
        codecs,
        payload_types,
        telephone_event,
        telephone_event_48k,
        direction,
        streams,
        audio_index,
        secure,
        crypto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_round_trips() {
        let o = offer(1, 1, "10.0.0.1".parse().unwrap(), 20000, &[], &[]);
        let m = parse(o.as_bytes()).unwrap();
        assert_eq!(m.addr, "10.0.0.1:20000".parse().unwrap());
        assert_eq!(m.codecs, vec![Codec::Pcmu, Codec::Pcma]);
        assert_eq!(m.telephone_event, Some(101));
    }

    #[test]
    fn sipp_style_answer_without_rtpmap() {
        let sdp = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 96\r\na=rtpmap:96 telephone-event/8000\r\n";
        let m = parse(sdp.as_bytes()).unwrap();
        assert_eq!(m.codecs, vec![Codec::Pcma]);
        assert_eq!(m.telephone_event, Some(96));
        let (ans, c) = answer(&m, 9, 1, "127.0.0.1".parse().unwrap(), 30000, &[], None).unwrap();
        assert_eq!(c, Codec::Pcma);
        assert!(ans.contains("m=audio 30000 RTP/AVP 8 96"));
    }

    #[test]
    fn nothing_in_common() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 18\r\n";
        let m = parse(sdp.as_bytes()).unwrap();
        assert!(answer(&m, 1, 1, "127.0.0.1".parse().unwrap(), 2, &[], None).is_none());
    }

    #[test]
    fn a_hold_is_answered_recvonly() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\na=sendonly\r\n";
        let m = parse(sdp.as_bytes()).unwrap();
        assert_eq!(m.direction, Direction::SendOnly);
        let (ans, _) = answer(&m, 1, 2, "127.0.0.1".parse().unwrap(), 4000, &[], None).unwrap();
        assert!(
            ans.contains("a=recvonly") && ans.contains("o=BotStream 1 2 "),
            "{ans}"
        );
    }

    #[test]
    fn every_offered_stream_is_answered_unused_ones_with_port_0() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 5002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 5000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\nm=audio 5004 RTP/SAVP 8\r\n";
        let m = parse(sdp.as_bytes()).unwrap();
        assert_eq!(m.addr.port(), 5000);
        assert_eq!(m.audio_index, 1);
        let (ans, _) = answer(&m, 1, 1, "127.0.0.1".parse().unwrap(), 4000, &[], None).unwrap();
        let lines: Vec<&str> = ans.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            lines,
            [
                "m=video 0 RTP/AVP 96",
                "m=audio 4000 RTP/AVP 0 101",
                "m=audio 0 RTP/SAVP 8"
            ],
            "{ans}"
        );
        assert!(ans.find("m=video").unwrap() < ans.find("a=rtpmap:0").unwrap());
    }

    #[test]
    fn srtp_offers_and_answers_with_sdes_keys() {
        let ours = [
            Crypto::new(1, CryptoSuite::AesCm128HmacSha1_80),
            Crypto::new(2, CryptoSuite::AesCm128HmacSha1_32),
        ];
        let o = offer(1, 1, "10.0.0.1".parse().unwrap(), 20000, &[], &ours);
        assert!(o.contains("m=audio 20000 RTP/SAVP 0 8 101"), "{o}");
        let m = parse(o.as_bytes()).unwrap();
        assert!(m.secure);
        assert_eq!(m.crypto, ours);
        // Answered with the first suite, its tag, a key of the answerer's own.
        let mine = Crypto::new(1, m.crypto[0].suite);
        let (a, _) = answer(
            &m,
            2,
            1,
            "10.0.0.2".parse().unwrap(),
            30000,
            &[],
            Some(&mine),
        )
        .unwrap();
        let back = parse(a.as_bytes()).unwrap();
        assert!(back.secure && back.crypto == vec![mine.clone()], "{a}");
        assert!(
            !format!("{mine:?}").contains(&format!("{:?}", mine.key)),
            "keys never in Debug"
        );
    }

    #[test]
    fn crypto_lines_the_switch_cannot_use_are_left_out() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/SAVP 0\r\n\
            a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20\r\n\
            a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:short\r\n\
            a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n\
            a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20 UNENCRYPTED_SRTP\r\n\
            a=crypto:x garbage\r\n\
            a=crypto:5 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20\r\n";
        let m = parse(sdp.as_bytes()).unwrap();
        assert!(m.secure);
        assert_eq!(m.crypto.len(), 1, "{:?}", m.crypto);
        assert_eq!(m.crypto[0].tag, 5);
        assert_eq!(m.crypto[0].suite, CryptoSuite::AesCm128HmacSha1_32);
    }

    #[test]
    fn g722_offered_named_and_preferred() {
        assert_eq!(
            Codec::list("OPUS,g722,PCMU,pcma,PCMU,AMR"),
            [Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma]
        );
        let o = offer(
            1,
            1,
            "10.0.0.1".parse().unwrap(),
            20000,
            &[Codec::G722, Codec::Pcmu],
            &[],
        );
        assert!(
            o.contains("m=audio 20000 RTP/AVP 9 0 101") && o.contains("a=rtpmap:9 G722/8000"),
            "{o}"
        );
        let m = parse(o.as_bytes()).unwrap();
        assert_eq!(m.codecs, [Codec::G722, Codec::Pcmu]);
        // The answer takes our first preference the offer has, not the offer's first.
        let ip = "10.0.0.2".parse().unwrap();
        let (_, c) = answer(
            &m,
            1,
            1,
            ip,
            4000,
            &[Codec::Pcma, Codec::Pcmu, Codec::G722],
            None,
        )
        .unwrap();
        assert_eq!(c, Codec::Pcmu);
        assert!(answer(&m, 1, 1, ip, 4000, &[Codec::Pcma], None).is_none());
    }

    #[test]
    fn opus_offered_with_telephone_event_at_both_rates() {
        let o = offer(
            1,
            1,
            "10.0.0.1".parse().unwrap(),
            20000,
            &[Codec::Opus, Codec::Pcmu],
            &[],
        );
        assert!(o.contains("m=audio 20000 RTP/AVP 111 0 101 100\r\n"), "{o}");
        assert!(o.contains("a=rtpmap:111 opus/48000/2\r\n"), "{o}");
        assert!(o.contains("a=fmtp:111 maxplaybackrate=16000;"), "{o}");
        assert!(o.contains("a=rtpmap:100 telephone-event/48000\r\n"), "{o}");
        let m = parse(o.as_bytes()).unwrap();
        assert_eq!(m.codecs, [Codec::Opus, Codec::Pcmu]);
        assert_eq!(m.payload_types, [111, 0]);
        assert_eq!(m.dtmf(), Some((100, 48000)));
        assert_eq!(m.clone().with_only(Codec::Pcmu).dtmf(), Some((101, 8000)));
    }

    #[test]
    fn an_opus_answer_keeps_the_offers_numbers_and_telephone_event_rate() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
            m=audio 5000 RTP/AVP 96 0 97 98\r\na=rtpmap:96 opus/48000/2\r\n\
            a=fmtp:96 useinbandfec=1\r\na=rtpmap:97 telephone-event/48000\r\n\
            a=rtpmap:98 telephone-event/8000\r\n";
        let m = parse(offer.as_bytes()).unwrap();
        let ip = "10.0.0.2".parse().unwrap();
        let (a, c) = answer(&m, 1, 1, ip, 4000, &[Codec::Opus, Codec::Pcmu], None).unwrap();
        assert_eq!(c, Codec::Opus);
        assert!(a.contains("m=audio 4000 RTP/AVP 96 97\r\n"), "{a}");
        assert!(a.contains("a=rtpmap:96 opus/48000/2\r\n"), "{a}");
        assert!(a.contains("a=rtpmap:97 telephone-event/48000\r\n"), "{a}");
        let back = parse(a.as_bytes()).unwrap();
        assert_eq!(back.dtmf(), Some((97, 48000)));
        // Only telephone-event/8000 offered: the answer uses that rate.
        let only8k = offer
            .replace("97 98", "98")
            .replace("a=rtpmap:97 telephone-event/48000\r\n", "");
        let m = parse(only8k.as_bytes()).unwrap();
        let (a, _) = answer(&m, 1, 1, ip, 4000, &[Codec::Opus], None).unwrap();
        assert!(a.contains("m=audio 4000 RTP/AVP 96 98\r\n"), "{a}");
        assert!(a.contains("a=rtpmap:98 telephone-event/8000\r\n"), "{a}");
    }

    /// Found by `fuzz/fuzz_targets/sdp.rs`: an `m=` line with nothing on it before the audio one
    /// was answered `m=audio 0 …` ahead of ours, so our answer read as refused audio.
    #[test]
    fn an_empty_m_line_before_the_audio_is_not_answered_as_audio() {
        let offer = b"v=0\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=\r\nm=audio 6000 RTP/AVP 0\r\n";
        let m = parse(offer).unwrap();
        assert_eq!(m.audio_index, 1);
        let (sdp, _) = answer(&m, 1, 1, "192.0.2.9".parse().unwrap(), 4000, &[], None).unwrap();
        let back = parse(sdp.as_bytes()).unwrap();
        assert_eq!(back.addr.port(), 4000, "{sdp}");
        assert_eq!(back.audio_index, 1);
        assert!(sdp.contains("m=unknown 0 RTP/AVP 0\r\n"), "{sdp}");
    }

    /// Found by `fuzz/fuzz_targets/sdp.rs`: an offer mapping PCMA to type 0 and
    /// telephone-event to type 8 was answered `m=audio … 8 8` with two rtpmaps for 8. The
    /// answer keeps the offer's numbers (RFC 3264 §6.1): PCMA on 0, telephone-event on 8.
    #[test]
    fn telephone_event_on_a_static_type_keeps_the_offers_numbers() {
        let offer = b"v=0\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0\r\n\
a=rtpmap:8 telephone-event/8000\r\na=rtpmap:0 PCMA/8000\r\n";
        let m = parse(offer).unwrap();
        assert_eq!(m.codecs, vec![Codec::Pcma]);
        assert_eq!(m.payload_types, vec![0]);
        assert_eq!(m.telephone_event, Some(8));
        let (sdp, _) = answer(&m, 1, 1, "192.0.2.9".parse().unwrap(), 4000, &[], None).unwrap();
        assert!(sdp.contains("m=audio 4000 RTP/AVP 0 8\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:0 PCMA/8000\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:8 telephone-event/8000\r\n"), "{sdp}");
        // A usual offer keeps its telephone-event.
        let usual = b"v=0\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n";
        assert_eq!(parse(usual).unwrap().telephone_event, Some(101));
    }
}
