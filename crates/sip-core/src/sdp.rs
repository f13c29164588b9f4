//! SDP offer/answer for one G.711 audio stream (RFC 4566, RFC 3264), the subset a carrier trunk
//! uses: PCMU, PCMA and telephone-event.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

/// What one side said about its audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub addr: SocketAddr,
    /// Codecs in the order of preference given.
    pub codecs: Vec<Codec>,
    /// Payload type of telephone-event/8000, if offered.
    pub telephone_event: Option<u8>,
    /// `a=sendonly`/`inactive` or port 0: the peer put us on hold or refused the stream.
    pub direction: Direction,
    /// Every `m=` line of the offer, in order, as `media proto first-format` (RFC 3264 §6: the
    /// answer has as many, the ones we do not take with port 0), and which one is this audio.
    pub streams: Vec<String>,
    pub audio_index: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// Our offer: PCMU, PCMA, telephone-event 101, ptime 20 (api.md §7).
pub fn offer(session_id: u64, version: u64, addr: IpAddr, port: u16) -> String {
    build(
        session_id,
        version,
        addr,
        port,
        &[Codec::Pcmu, Codec::Pcma],
        101,
        Direction::SendRecv,
    )
}

/// Our answer to `remote`: its first codec we speak, its telephone-event type, and the direction
/// that mirrors its own (a `sendonly` hold is answered `recvonly`). `version` is our `o=` version
/// (RFC 3264 §8: raised by every changed description). `None` when nothing is in common (the
/// offerer gets 488).
pub fn answer(
    remote: &MediaDescription,
    session_id: u64,
    version: u64,
    addr: IpAddr,
    port: u16,
) -> Option<(String, Codec)> {
    let codec = *remote.codecs.first()?;
    let te = remote.telephone_event.unwrap_or(101);
    let dir = match remote.direction {
        Direction::SendOnly => Direction::RecvOnly,
        Direction::RecvOnly => Direction::SendOnly,
        d => d,
    };
    let audio = if remote.telephone_event.is_some() {
        build(session_id, version, addr, port, &[codec], te, dir)
    } else {
        build_no_te(session_id, version, addr, port, codec, dir)
    };
    if remote.streams.len() <= 1 {
        return Some((audio, codec));
    }
    // The session lines, then each offered stream in its place: ours, or refused with port 0.
    let at = audio.find("m=audio").unwrap_or(audio.len());
    let (session, ours) = audio.split_at(at);
    let mut sdp = session.to_string();
    for (i, line) in remote.streams.iter().enumerate() {
        if i == remote.audio_index {
            sdp.push_str(ours);
        } else {
            let mut f = line.split_whitespace();
            let (media, proto) = (f.next().unwrap_or("audio"), f.next().unwrap_or("RTP/AVP"));
            let fmt = f.next().unwrap_or("0");
            sdp.push_str(&format!("m={media} 0 {proto} {fmt}\r\n"));
        }
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

fn build(
    sid: u64,
    ver: u64,
    addr: IpAddr,
    port: u16,
    codecs: &[Codec],
    te: u8,
    dir: Direction,
) -> String {
    let mut s = origin(sid, ver, addr);
    let pts: Vec<String> = codecs
        .iter()
        .map(|c| c.payload_type().to_string())
        .collect();
    s.push_str(&format!(
        "m=audio {port} RTP/AVP {} {te}\r\n",
        pts.join(" ")
    ));
    for c in codecs {
        s.push_str(&format!(
            "a=rtpmap:{} {}/8000\r\n",
            c.payload_type(),
            c.name()
        ));
    }
    s.push_str(&format!(
        "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\na=ptime:20\r\na={}\r\n",
        dir_attr(dir)
    ));
    s
}

fn build_no_te(
    sid: u64,
    ver: u64,
    addr: IpAddr,
    port: u16,
    codec: Codec,
    dir: Direction,
) -> String {
    let mut s = origin(sid, ver, addr);
    s.push_str(&format!(
        "m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {}/8000\r\na=ptime:20\r\na={}\r\n",
        codec.name(),
        dir_attr(dir),
        pt = codec.payload_type()
    ));
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
                let _proto = it.next();
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
    let mut telephone_event = None;
    for pt in pts {
        match (pt, enc_of(pt)) {
            (0, None) => codecs.push(Codec::Pcmu),
            (8, None) => codecs.push(Codec::Pcma),
            (_, Some(e)) if e.starts_with("pcmu/8000") => codecs.push(Codec::Pcmu),
            (_, Some(e)) if e.starts_with("pcma/8000") => codecs.push(Codec::Pcma),
            (_, Some(e)) if e.starts_with("telephone-event/8000") && telephone_event.is_none() => {
                telephone_event = Some(pt)
            }
            _ => {}
        }
    }
    // An offer that maps telephone-event to the static type of the codec we answer with (it
    // remapped 0 or 8) would have both on one payload type: events could not be told from audio,
    // and our answer would list the type twice. Such an offer gets no telephone-event.
    if codecs
        .first()
        .is_some_and(|c| telephone_event == Some(c.payload_type()))
    {
        telephone_event = None;
    }
    Some(MediaDescription {
        addr: SocketAddr::new(ip, port),
        codecs,
        telephone_event,
        direction,
        streams,
        audio_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_round_trips() {
        let o = offer(1, 1, "10.0.0.1".parse().unwrap(), 20000);
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
        let (ans, c) = answer(&m, 9, 1, "127.0.0.1".parse().unwrap(), 30000).unwrap();
        assert_eq!(c, Codec::Pcma);
        assert!(ans.contains("m=audio 30000 RTP/AVP 8 96"));
    }

    #[test]
    fn nothing_in_common() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 18\r\n";
        let m = parse(sdp.as_bytes()).unwrap();
        assert!(answer(&m, 1, 1, "127.0.0.1".parse().unwrap(), 2).is_none());
    }

    #[test]
    fn a_hold_is_answered_recvonly() {
        let sdp = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\na=sendonly\r\n";
        let m = parse(sdp.as_bytes()).unwrap();
        assert_eq!(m.direction, Direction::SendOnly);
        let (ans, _) = answer(&m, 1, 2, "127.0.0.1".parse().unwrap(), 4000).unwrap();
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
        let (ans, _) = answer(&m, 1, 1, "127.0.0.1".parse().unwrap(), 4000).unwrap();
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

    /// Found by `fuzz/fuzz_targets/sdp.rs`: an `m=` line with nothing on it before the audio one
    /// was answered `m=audio 0 …` ahead of ours, so our answer read as refused audio.
    #[test]
    fn an_empty_m_line_before_the_audio_is_not_answered_as_audio() {
        let offer = b"v=0\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=\r\nm=audio 6000 RTP/AVP 0\r\n";
        let m = parse(offer).unwrap();
        assert_eq!(m.audio_index, 1);
        let (sdp, _) = answer(&m, 1, 1, "192.0.2.9".parse().unwrap(), 4000).unwrap();
        let back = parse(sdp.as_bytes()).unwrap();
        assert_eq!(back.addr.port(), 4000, "{sdp}");
        assert_eq!(back.audio_index, 1);
        assert!(sdp.contains("m=unknown 0 RTP/AVP 0\r\n"), "{sdp}");
    }

    /// Found by `fuzz/fuzz_targets/sdp.rs`: an offer mapping PCMA to type 0 and
    /// telephone-event to type 8 was answered `m=audio … 8 8` with two rtpmaps for 8.
    #[test]
    fn telephone_event_on_our_codec_type_is_left_out() {
        let offer = b"v=0\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0\r\n\
a=rtpmap:8 telephone-event/8000\r\na=rtpmap:0 PCMA/8000\r\n";
        let m = parse(offer).unwrap();
        assert_eq!(m.codecs, vec![Codec::Pcma]);
        assert_eq!(m.telephone_event, None);
        let (sdp, _) = answer(&m, 1, 1, "192.0.2.9".parse().unwrap(), 4000).unwrap();
        assert!(sdp.contains("m=audio 4000 RTP/AVP 8\r\n"), "{sdp}");
        assert!(!sdp.contains("telephone-event"), "{sdp}");
        // A usual offer keeps its telephone-event.
        let usual = b"v=0\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n";
        assert_eq!(parse(usual).unwrap().telephone_event, Some(101));
    }
}
