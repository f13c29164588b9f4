//! SIP messages: framing, parsing and printing (RFC 3261 §7, §25).
//!
//! Parsing is linear in the input and never panics: carriers and scanners send anything, and a
//! malformed datagram must cost a 400 or silence, never the process. Headers are kept as text in
//! arrival order; typed views (`Via`, `NameAddr`, `CSeq`, `Uri`) are decoded on demand because most
//! messages are routed on four headers and the rest are only echoed.
//!
//! `parse` only frames the message and checks what printing it back needs (start line, header
//! names, no CR/LF inside a value, Content-Length). [`validate`] decodes the headers a UA acts on;
//! RFC 4475 §3.1.2 calls for rejecting most malformed messages only at that point, and the
//! torture vectors in `tests/torture.rs` pin which of the two steps rejects which message.

use std::fmt::Write as _;

/// Largest message accepted on any transport. A UDP payload cannot be larger anyway, and a
/// stream peer that sends more is not talking SIP to us.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Bounds that keep a hostile message from costing more than a legitimate one.
pub const MAX_HEADERS: usize = 256;
/// Longest header, name plus (unfolded) value.
pub const MAX_HEADER_LEN: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A stream transport has not delivered the whole message yet.
    Incomplete,
    /// The message is malformed; the text says where, for logs and the 400's reason.
    Invalid(&'static str),
    TooLarge,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Incomplete => f.write_str("incomplete message"),
            ParseError::Invalid(why) => f.write_str(why),
            ParseError::TooLarge => f.write_str("message too large"),
        }
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One datagram is one message; trailing octets beyond Content-Length are discarded
    /// (RFC 3261 §18.3); without Content-Length the body runs to the end of the datagram.
    Datagram,
    /// TCP/TLS: Content-Length is mandatory and the next message may follow in the buffer.
    Stream,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers {
    list: Vec<(String, String)>,
}

/// Headers whose values may be comma-joined (RFC 3261 §7.3.1). Splitting others (Date,
/// Authorization, User-Agent) would break their values.
const LIST_HEADERS: &[&str] = &[
    "Via",
    "Route",
    "Record-Route",
    "Contact",
    "Allow",
    "Supported",
    "Require",
    "Proxy-Require",
    "Unsupported",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Allow-Events",
    "Reason",
    "Path",
];

/// Every compact form registered with IANA (RFC 3261 §7.3.3 and its extensions).
const COMPACT: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("e", "Content-Encoding"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("f", "From"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("t", "To"),
    ("v", "Via"),
    ("o", "Event"),
    ("u", "Allow-Events"),
    ("r", "Refer-To"),
    ("b", "Referred-By"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
    ("n", "Identity-Info"),
    ("a", "Accept-Contact"),
    ("j", "Reject-Contact"),
    ("d", "Request-Disposition"),
];

const CANONICAL: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Route",
    "Record-Route",
    "Content-Type",
    "Content-Length",
    "Allow",
    "Supported",
    "Require",
    "Proxy-Require",
    "Unsupported",
    "Expires",
    "User-Agent",
    "Server",
    "Reason",
    "WWW-Authenticate",
    "Authorization",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Refer-To",
    "Referred-By",
    "Event",
    "Subscription-State",
    "Accept",
    "Min-Expires",
    "Retry-After",
    "Session-Expires",
    "Allow-Events",
    "P-Asserted-Identity",
    "Content-Encoding",
    "Subject",
    "Date",
];

/// The spelling used when storing a header, so lookups and printing agree whatever the peer sent
/// (`v`, `VIA`, `via` are all `Via`).
fn canonical_name(name: &str) -> String {
    if name.len() == 1 {
        for (short, long) in COMPACT {
            if name.eq_ignore_ascii_case(short) {
                return (*long).to_string();
            }
        }
    }
    for c in CANONICAL {
        if name.eq_ignore_ascii_case(c) {
            return (*c).to_string();
        }
    }
    name.to_string()
}

fn is_list_header(name: &str) -> bool {
    LIST_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Splits on commas that are outside quoted strings and angle brackets.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, ch) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                let part = value[start..i].trim();
                if !part.is_empty() {
                    out.push(part);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let part = value[start..].trim();
    if !part.is_empty() {
        out.push(part);
    }
    out
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.list.push((canonical_name(name), value.into()));
    }

    /// Puts `value` first among the headers of that name (a new top Via, a Route set).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        let canon = canonical_name(name);
        let at = self
            .list
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(&canon))
            .unwrap_or(self.list.len());
        self.list.insert(at, (canon, value.into()));
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.push(name, value);
    }

    pub fn remove(&mut self, name: &str) {
        let canon = canonical_name(name);
        self.list.retain(|(n, _)| !n.eq_ignore_ascii_case(&canon));
    }

    /// The first value of a header; for list headers the first element, skipping lines that hold
    /// none (`Via: ,` followed by a real Via still has a top Via).
    pub fn get(&self, name: &str) -> Option<&str> {
        let canon = canonical_name(name);
        let list = is_list_header(&canon);
        self.list
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&canon))
            .find_map(|(_, v)| {
                if list {
                    split_list(v).into_iter().next()
                } else {
                    Some(v.as_str())
                }
            })
    }

    /// Every value of a header, repeated lines and comma-joined values alike.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        let canon = canonical_name(name);
        let list = is_list_header(&canon);
        let mut out = Vec::new();
        for (n, v) in &self.list {
            if n.eq_ignore_ascii_case(&canon) {
                if list {
                    out.extend(split_list(v));
                } else {
                    out.push(v.as_str());
                }
            }
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
    pub fn body(&self) -> &[u8] {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

/// Appends `text` with any CR or LF turned into a space. Parsed messages never hold them, but a
/// value built from application input (a display name from the API) must not be able to end its
/// line and start a header of its own.
fn push_line_safe(out: &mut String, text: &str) {
    if text.contains(['\r', '\n']) {
        out.extend(
            text.chars()
                .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
        );
    } else {
        out.push_str(text);
    }
}

fn print(start: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut s = String::with_capacity(512 + body.len());
    push_line_safe(&mut s, start);
    s.push_str("\r\n");
    for (n, v) in headers.iter() {
        if n.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        push_line_safe(&mut s, n);
        s.push_str(": ");
        push_line_safe(&mut s, v);
        s.push_str("\r\n");
    }
    // Content-Length is always ours to write: a stale one would frame the next TCP message wrong.
    let _ = write!(s, "Content-Length: {}\r\n\r\n", body.len());
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

impl Request {
    pub fn new(method: &str, uri: &str) -> Self {
        Request {
            method: method.to_string(),
            uri: uri.to_string(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        print(
            &format!("{} {} SIP/2.0", self.method, self.uri),
            &self.headers,
            &self.body,
        )
    }
    pub fn call_id(&self) -> Option<&str> {
        self.headers.get("Call-ID")
    }
    pub fn cseq(&self) -> Option<CSeq> {
        self.headers.get("CSeq").and_then(CSeq::parse)
    }
    pub fn top_via(&self) -> Option<Via> {
        self.headers.get("Via").and_then(Via::parse)
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        print(
            &format!("SIP/2.0 {} {}", self.code, self.reason),
            &self.headers,
            &self.body,
        )
    }
    pub fn cseq(&self) -> Option<CSeq> {
        self.headers.get("CSeq").and_then(CSeq::parse)
    }
    pub fn top_via(&self) -> Option<Via> {
        self.headers.get("Via").and_then(Via::parse)
    }
}

/// The standard reason phrase, for responses we generate.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

/// Linear whitespace inside a header line once folds are joined (RFC 3261 §25.1 LWS).
const WS: [char; 2] = [' ', '\t'];

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// A decimal of at most `max`. Leading zeros are allowed (RFC 4475 §3.1.1.1 sends
/// `Max-Forwards: 0068`); a sign, spaces or an overlong value are not (RFC 4475 §3.1.2.4).
fn parse_decimal(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = s.trim_start_matches('0');
    // 19 digits always fit a u64, so the parse below cannot overflow.
    if digits.len() > 19 {
        return None;
    }
    let n = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    (n <= max).then_some(n)
}

/// `scheme` of `scheme:rest`, if it is one (RFC 3986 §3.1).
fn uri_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut b = scheme.bytes();
    let first = b.next()?;
    (first.is_ascii_alphabetic() && b.all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c)))
        .then_some(scheme)
}

fn is_sip_scheme(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")
}

/// Returns (end of the last header line, start of body). Bare LF line ends are tolerated
/// (RFC 3261 §7 asks for CRLF, but being lenient in what we accept costs nothing here).
fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// A CR that does not end a line would end one for the next parser down the line: a value
/// carrying it could smuggle a header into whatever we forward or echo.
fn has_bare_cr(buf: &[u8]) -> bool {
    buf.iter()
        .enumerate()
        .any(|(i, b)| *b == b'\r' && buf.get(i + 1) != Some(&b'\n'))
}

/// Parses one message from the front of `buf`; returns it with the number of bytes it used.
///
/// This frames and tokenises; [`validate`] decodes the headers a UA acts on.
pub fn parse(buf: &[u8], framing: Framing) -> Result<(Message, usize), ParseError> {
    // Keep-alive CRLFs between stream messages (RFC 5626 §3.5.1) are skipped, not errors.
    let lead = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let buf = &buf[lead..];
    if framing == Framing::Datagram && buf.len() > MAX_MESSAGE_LEN {
        return Err(ParseError::TooLarge);
    }
    // Looking further than the largest acceptable header block would only cost time.
    let window = &buf[..buf.len().min(MAX_MESSAGE_LEN + 3)];
    let Some((head_end, body_start)) = find_header_end(window) else {
        if buf.len() > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge);
        }
        return match framing {
            Framing::Stream => Err(ParseError::Incomplete),
            Framing::Datagram => Err(ParseError::Invalid("no end of headers")),
        };
    };
    if head_end > MAX_MESSAGE_LEN {
        return Err(ParseError::TooLarge);
    }
    // `head_end` indexes the LF of the last header line, so the slice includes its CR.
    if has_bare_cr(&buf[..=head_end]) {
        return Err(ParseError::Invalid("CR without LF in the header"));
    }
    // Latin-1 in a display name must not cost the whole message: decode lossily.
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in lines {
        if line.starts_with(WS) {
            // Folded continuation (RFC 3261 §7.3.1): joins the previous header with one space.
            // The start line cannot be folded: a continuation there is an injection attempt.
            let prev = fields
                .last_mut()
                .ok_or(ParseError::Invalid("continuation line without a header"))?;
            prev.push(' ');
            prev.push_str(line.trim_matches(WS));
        } else {
            // Checked before storing, so a flood of headers costs no more than MAX_HEADERS.
            if fields.len() == MAX_HEADERS {
                return Err(ParseError::Invalid("too many headers"));
            }
            fields.push(line.to_string());
        }
    }
    let mut headers = Headers::new();
    let mut content_lengths = 0;
    for field in &fields {
        let (name, value) = field
            .split_once(':')
            .ok_or(ParseError::Invalid("header line without a colon"))?;
        // HCOLON allows blanks before the colon: `Via  :` (RFC 3261 §25.1, RFC 4475 §3.1.1.7).
        let name = name.trim_end_matches(WS);
        if !is_token(name) {
            return Err(ParseError::Invalid("malformed header name"));
        }
        let name = canonical_name(name);
        let value = value.trim_matches(WS);
        // Measured on what is stored, so printing the message back cannot push it over.
        if name.len() + value.len() > MAX_HEADER_LEN {
            return Err(ParseError::Invalid("header too long"));
        }
        content_lengths += usize::from(name == "Content-Length");
        headers.list.push((name, value.to_string()));
    }
    // Printing always writes exactly one Content-Length. Without room for it, a datagram with
    // MAX_HEADERS headers and none of its own would parse but could not be forwarded or echoed.
    if headers.len() - content_lengths + 1 > MAX_HEADERS {
        return Err(ParseError::Invalid("too many headers"));
    }

    let content_length = framing_length(&headers, framing)?;
    let available = buf.len() - body_start;
    let body_len = match (content_length, framing) {
        (Some(n), Framing::Stream) if body_start.saturating_add(n) > MAX_MESSAGE_LEN => {
            return Err(ParseError::TooLarge)
        }
        (Some(n), _) if n <= available => n,
        (Some(_), Framing::Stream) => return Err(ParseError::Incomplete),
        (Some(_), Framing::Datagram) => {
            return Err(ParseError::Invalid(
                "Content-Length larger than the datagram",
            ))
        }
        (None, Framing::Datagram) => available,
        (None, Framing::Stream) => {
            return Err(ParseError::Invalid("Content-Length is required on streams"))
        }
    };
    let body = buf[body_start..body_start + body_len].to_vec();
    let used = lead + body_start + body_len;

    let msg = parse_start_line(start, headers, body)?;
    Ok((msg, used))
}

/// Frames messages off a TCP/TLS byte stream at a cost linear in what arrives: the end of the
/// header block is searched only in the bytes that came since the last search, and once the
/// headers are in, nothing is parsed again until the whole body is (a peer that drips a 64 KiB
/// message one byte at a time costs 64 Ki small steps, not 64 Ki parses of a growing buffer).
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// How far the search for the end of the headers got without finding it.
    scanned: usize,
    /// Once the headers are in: the length of the whole message.
    need: Option<usize>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends what the stream delivered.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes of a message begun but not complete (keep-alive CRLFs aside).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` until one is. An error means the stream cannot be
    /// framed any further (RFC 3261 §18.3): the connection must be closed.
    pub fn next_message(&mut self) -> Result<Option<Message>, ParseError> {
        if self.need.is_none() && self.scanned == 0 {
            // Keep-alive CRLFs between messages (RFC 5626 §3.5.1).
            let lead = self
                .buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            self.buf.drain(..lead);
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        match self.need {
            Some(n) if self.buf.len() < n => return Ok(None),
            Some(_) => {}
            None => {
                // A match needs up to 3 bytes, the first two of which may have come last time.
                let from = self.scanned.saturating_sub(2);
                let window_end = self.buf.len().min(MAX_MESSAGE_LEN + 3);
                let Some((_, body_start)) =
                    find_header_end(&self.buf[from..window_end]).map(|(a, b)| (a + from, b + from))
                else {
                    if self.buf.len() > MAX_MESSAGE_LEN {
                        return Err(ParseError::TooLarge);
                    }
                    self.scanned = window_end;
                    return Ok(None);
                };
                self.scanned = window_end;
                // The headers are in: what the Content-Length asks for decides when to parse.
                let length = content_length_hint(&self.buf[..body_start]);
                let need = body_start.saturating_add(length.unwrap_or(0));
                self.need = Some(need);
                if self.buf.len() < need && need <= MAX_MESSAGE_LEN {
                    return Ok(None);
                }
            }
        }
        match parse(&self.buf, Framing::Stream) {
            Ok((m, used)) => {
                self.buf.drain(..used);
                self.scanned = 0;
                self.need = None;
                Ok(Some(m))
            }
            // The hint and the parser disagree (an odd spelling of Content-Length): fall back
            // to parsing at the next delivery; linear again once the body is in.
            Err(ParseError::Incomplete) => {
                self.need = Some(self.buf.len() + 1);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// The Content-Length of a header block, read cheaply (the full parse checks it properly).
fn content_length_hint(head: &[u8]) -> Option<usize> {
    head.split(|b| *b == b'\n').skip(1).find_map(|line| {
        let (name, value) = line.split_at(line.iter().position(|b| *b == b':')?);
        let name = name.trim_ascii();
        if !(name.eq_ignore_ascii_case(b"Content-Length") || name.eq_ignore_ascii_case(b"l")) {
            return None;
        }
        let digits = std::str::from_utf8(&value[1..]).ok()?.trim();
        digits.parse::<usize>().ok()
    })
}

/// The Content-Length that frames the message, if any.
fn framing_length(headers: &Headers, framing: Framing) -> Result<Option<usize>, ParseError> {
    let mut found: Option<u64> = None;
    for v in headers.get_all("Content-Length") {
        // Negative (RFC 4475 §3.1.2.3) or absurd values are refused here, not wrapped or clamped.
        let n = parse_decimal(v, u64::from(u32::MAX))
            .ok_or(ParseError::Invalid("bad Content-Length"))?;
        match found {
            None => found = Some(n),
            // On a stream a disagreement leaves no way to find where the next message starts.
            // A datagram is framed by its first value; `validate` then refuses the duplicate
            // with a 400, which needs a parsed message (RFC 4475 §3.3.9).
            Some(f) if f != n && framing == Framing::Stream => {
                return Err(ParseError::Invalid("conflicting Content-Length"))
            }
            Some(_) => {}
        }
    }
    match found {
        Some(n) => usize::try_from(n)
            .map(Some)
            .map_err(|_| ParseError::TooLarge),
        None => Ok(None),
    }
}

fn parse_start_line(start: &str, headers: Headers, body: Vec<u8>) -> Result<Message, ParseError> {
    if start
        .get(..8)
        .is_some_and(|v| v.eq_ignore_ascii_case("SIP/2.0 "))
    {
        let rest = &start[8..];
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        // Exactly three digits: a wider code may not fit any integer (RFC 4475 §3.1.2.19).
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::Invalid("bad status code"));
        }
        let code: u16 = code
            .parse()
            .map_err(|_| ParseError::Invalid("bad status code"))?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::Invalid("status code out of range"));
        }
        return Ok(Message::Response(Response {
            code,
            reason: reason.to_string(),
            headers,
            body,
        }));
    }
    // Exactly one SP between the three elements (RFC 3261 §7.1): extra or trailing blanks
    // (RFC 4475 §3.1.2.9, §3.1.2.10) and a URI with LWS inside (§3.1.2.8) all fail the count.
    let mut parts = start.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Invalid("malformed request line"));
    };
    // Any token is a method: an extension method must reach the layer that answers 405/501.
    if !is_token(method) {
        return Err(ParseError::Invalid("malformed method"));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::Invalid("unsupported SIP version"));
    }
    // Any scheme is kept (tel:, urn:, unknown ones get a 416 from above); what no URI may hold
    // is a control character or the brackets of a name-addr (RFC 4475 §3.1.2.7).
    if uri_scheme(uri).is_none()
        || uri
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "<>\"".contains(c))
    {
        return Err(ParseError::Invalid("malformed Request-URI"));
    }
    Ok(Message::Request(Request {
        method: method.to_string(),
        uri: uri.to_string(),
        headers,
        body,
    }))
}

/// The checks a UA makes before acting on a parsed message: the headers every message must
/// have, decoded with the RFC 3261 §25 grammar, and the scalars that must fit their range.
///
/// A request that fails is answered with 400 and the returned text as reason phrase (RFC 3261
/// §8.2). A response that fails is dropped only if it also fails [`check_usable`] (§8.1.3.3):
/// one that is merely sloppy in a header the switch does not read still reaches its
/// transaction. It deliberately leaves to the layers above what only they can judge (unknown
/// schemes: 416, Require: 420, Max-Forwards 0: 483, ...).
///
/// What the switch never reads is not held against a message where RFC 4475 lets a liberal
/// element accept it: Date in any form (§3.1.2.12), unquoted display names before `<`
/// (§3.1.2.15), blanks inside `< >` (§3.1.2.14), Max-Forwards above 255 (§3.1.2.4), Expires
/// given as an RFC 2543 date, one trailing `;` after parameters and an empty `tag=`.
pub fn validate(m: &Message) -> Result<(), &'static str> {
    check_usable(m)?;
    let h = m.headers();
    // Not needed to act, but a second value would still be ambiguous (RFC 4475 §3.3.8).
    for name in ["Max-Forwards", "Content-Type", "Expires"] {
        if h.get_all(name).len() > 1 {
            return Err("single-valued header repeated");
        }
    }
    // Every Via, not only the top one a response is matched by: a request's are echoed back.
    for v in h.get_all("Via") {
        Via::parse(v).ok_or("malformed Via")?;
    }
    for name in ["From", "To"] {
        if let Some(addr) = h.get(name).and_then(NameAddr::parse) {
            check_addr_uri(&addr.uri)?;
        }
    }
    for name in ["Contact", "Route", "Record-Route"] {
        for v in h.get_all(name) {
            // REGISTER's "remove every binding" (RFC 3261 §10.2.2).
            if name == "Contact" && v == "*" {
                continue;
            }
            let addr = NameAddr::parse(v).ok_or("malformed Contact, Route or Record-Route")?;
            check_addr_uri(&addr.uri)?;
            if let Some(e) = addr.params.get("expires") {
                if !is_expires(e) {
                    return Err("Contact expires out of range");
                }
            }
        }
    }
    // Scalars beyond their range (RFC 4475 §3.1.2.4, §3.1.2.5): acting on a wrapped or clamped
    // value would be acting on a number the sender never sent.
    //
    // Max-Forwards is the exception: the switch is an endpoint, never forwards a request and
    // never reads it, and RFC 4475 §3.1.2.4 says that with only Max-Forwards out of range "the
    // element could choose to process the request as if the field were absent". Any number is
    // accepted (a reader would clamp it to 255); one that is not a number is still refused.
    if let Some(v) = h.get("Max-Forwards") {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err("malformed Max-Forwards");
        }
    }
    if let Some(v) = h.get("Expires") {
        if !is_expires(v) {
            return Err("Expires out of range");
        }
    }
    if let Some(v) = h.get("Min-Expires") {
        parse_decimal(v, u32::MAX.into()).ok_or("Expires out of range")?;
    }
    if let Some(v) = h.get("Retry-After") {
        // delta-seconds [ comment ] *( SEMI retry-param ): only the number is ours to check.
        let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
        parse_decimal(&v[..end], u32::MAX.into()).ok_or("Retry-After out of range")?;
    }
    // Date is not checked: nothing in the switch reads it, and RFC 4475 §3.1.2.12 says an element
    // should not reject a non-GMT one "unless the contents of the Date header field were actually
    // important to its processing". PBXs send local time zones and single-digit days.
    if let Message::Request(r) = m {
        if !is_token(&r.method) {
            return Err("malformed method");
        }
        // Case-sensitive, as methods are (RFC 3261 §7.1, RFC 4475 §3.1.2.17, §3.1.2.18).
        let cseq = r.cseq().ok_or("malformed CSeq")?;
        if cseq.method != r.method {
            return Err("CSeq method does not match the request");
        }
        check_request_uri(&r.uri)?;
    }
    Ok(())
}

/// What the switch cannot act on a message without; the first part of [`validate`], so a
/// message that passes `validate` passes this.
///
/// A response that fails `validate` but passes this is handed to its transaction all the same:
/// the transaction layer reads the top Via's branch and the CSeq, calls and dialogs read
/// Call-ID, the From and To tags, the body framed by Content-Length and, from a 2xx to an
/// INVITE, the remote target (the first Contact) and the route set (Record-Route). Dropping a
/// response over any other header would lose the call for a field nobody reads; a response
/// failing this one could only be matched or acted on wrongly.
pub fn check_usable(m: &Message) -> Result<(), &'static str> {
    let h = m.headers();
    // Parsed messages pass these two by construction; built ones might not.
    for (n, v) in h.iter() {
        if !is_token(n) {
            return Err("malformed header name");
        }
        if v.contains(['\r', '\n']) {
            return Err("line break inside a header value");
        }
    }
    // RFC 3261 §8.1.1: without these there is no transaction or dialog to act in.
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if h.get(name).is_none() {
            return Err("missing mandatory header");
        }
    }
    // A second value would make the dialog, transaction or framing ambiguous (RFC 4475 §3.3.8,
    // §3.3.9).
    for name in ["From", "To", "Call-ID", "CSeq", "Content-Length"] {
        if h.get_all(name).len() > 1 {
            return Err("single-valued header repeated");
        }
    }
    let call_id = h.get("Call-ID").unwrap_or_default();
    if call_id.is_empty() || !call_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("malformed Call-ID");
    }
    let cseq = h
        .get("CSeq")
        .and_then(CSeq::parse)
        .filter(|c| is_token(&c.method))
        .ok_or("malformed CSeq")?;
    h.get("Via").and_then(Via::parse).ok_or("malformed Via")?;
    for name in ["From", "To"] {
        h.get(name)
            .and_then(NameAddr::parse)
            .ok_or("malformed From or To")?;
    }
    if let Some(v) = h.get("Content-Length") {
        let n = parse_decimal(v, u64::MAX).ok_or("bad Content-Length")?;
        if n != m.body().len() as u64 {
            return Err("Content-Length does not match the body");
        }
    }
    if let Message::Response(r) = m {
        if !(100..=699).contains(&r.code) {
            return Err("status code out of range");
        }
        if r.reason.contains(['\r', '\n']) {
            return Err("line break inside the reason phrase");
        }
        // A 2xx to INVITE makes the dialog: in-dialog requests go to its Contact, through its
        // Record-Route (RFC 3261 §12.1.2). Guessing either would send the ACK and BYE astray.
        if (200..300).contains(&r.code) && cseq.method == "INVITE" {
            if let Some(v) = h.get("Contact") {
                let addr = NameAddr::parse(v).ok_or("malformed Contact, Route or Record-Route")?;
                check_addr_uri(&addr.uri)?;
            }
            for v in h.get_all("Record-Route") {
                let addr = NameAddr::parse(v).ok_or("malformed Contact, Route or Record-Route")?;
                check_addr_uri(&addr.uri)?;
            }
        }
    }
    Ok(())
}

/// An Expires header or a Contact `expires` parameter: delta-seconds that fit 32 bits, or the
/// date RFC 2543 §6.20 also allowed there (`Thu, 01 Dec 1994 16:00:00 GMT`, quoted in a
/// parameter). Old registrars and PBXs still send the date. Nothing in the switch can use it
/// (the gateway's REGISTER reads a number and keeps the interval it asked for otherwise), so
/// only its shape is checked, loosely: a day name, a comma and a time.
fn is_expires(v: &str) -> bool {
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    let looks_like_date = |d: &str| {
        let b = d.as_bytes();
        b.len() > 4
            && b[3] == b','
            && DAYS.iter().any(|day| b[..3].eq_ignore_ascii_case(day))
            && d.contains(':')
    };
    parse_decimal(v, u32::MAX.into()).is_some()
        || looks_like_date(v)
        || take_quoted(v).is_some_and(|(d, rest)| rest.is_empty() && looks_like_date(&d))
}

/// The URI of a From, To, Contact or Route: any scheme, but a SIP one must be well formed.
fn check_addr_uri(uri: &str) -> Result<(), &'static str> {
    let scheme = uri_scheme(uri).ok_or("URI without a scheme")?;
    if is_sip_scheme(scheme) && Uri::parse(uri).is_none() {
        return Err("malformed SIP URI");
    }
    Ok(())
}

fn check_request_uri(uri: &str) -> Result<(), &'static str> {
    if uri
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "<>\"".contains(c))
    {
        return Err("malformed Request-URI");
    }
    let scheme = uri_scheme(uri).ok_or("malformed Request-URI")?;
    if is_sip_scheme(scheme) {
        // An unbracketed IPv6 host lands here too (RFC 5118 §4.2).
        let parsed = Uri::parse(uri).ok_or("malformed Request-URI")?;
        // RFC 3261 §19.1.1 forbids headers in a Request-URI; honouring them would let the
        // sender write headers into what we forward (RFC 4475 §3.1.2.11).
        if parsed.headers.is_some() {
            return Err("headers in the Request-URI");
        }
    }
    Ok(())
}

/// `;name=value;flag` parameters, names lower-cased for lookup (RFC 3261 §7.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// Lenient, for URI parameters: escaped names and empty elements are kept or skipped.
    fn parse(s: &str) -> Params {
        let mut out = Vec::new();
        for p in split_outside_quotes(s, ';') {
            let p = p.trim_matches(WS);
            if p.is_empty() {
                continue;
            }
            match p.split_once('=') {
                Some((k, v)) => out.push((
                    k.trim_matches(WS).to_ascii_lowercase(),
                    Some(v.trim_matches(WS).to_string()),
                )),
                None => out.push((p.to_ascii_lowercase(), None)),
            }
        }
        Params(out)
    }

    /// Header parameters, `s` being what follows the first `;` of a name-addr or Via value.
    ///
    /// One trailing `;` (`<sip:a@b>;tag=x;`, `SIP/2.0/UDP h;branch=z9hG4bKx;`) is let through:
    /// stacks that build parameter lists by appending `;name=value` send it, and it hides
    /// nothing. An empty element anywhere else (`;;`) is still refused (RFC 4475 §3.1.2.1), and
    /// so is an empty value, except for the parameters named in `empty_ok`.
    fn parse_header(s: &str, empty_ok: &[&str]) -> Option<Params> {
        let s = s.trim_end_matches(WS);
        if s.is_empty() {
            return Some(Params::default());
        }
        Self::parse_strict(s.strip_suffix(';').unwrap_or(s), empty_ok)
    }

    /// Header parameters: `SEMI` may be surrounded by LWS, but every element needs a token name
    /// and a value that is a token, a host or a complete quoted string. `;;` fails
    /// (RFC 4475 §3.1.2.1). A parameter named in `empty_ok` may have an empty value.
    fn parse_strict(s: &str, empty_ok: &[&str]) -> Option<Params> {
        let mut out = Vec::new();
        for p in split_outside_quotes(s, ';') {
            let p = p.trim_matches(WS);
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n.trim_matches(WS), Some(v.trim_matches(WS))),
                None => (p, None),
            };
            if !is_token(name) {
                return None;
            }
            if let Some(v) = value {
                let ok = if v.starts_with('"') {
                    take_quoted(v).is_some_and(|(_, rest)| rest.is_empty())
                } else if v.is_empty() {
                    empty_ok.iter().any(|n| n.eq_ignore_ascii_case(name))
                } else {
                    !v.contains(|c: char| c.is_whitespace() || "\"<>".contains(c))
                };
                if !ok {
                    return None;
                }
            }
            out.push((name.to_ascii_lowercase(), value.map(str::to_string)));
        }
        Some(Params(out))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped) = (false, false);
    let mut start = 0;
    for (i, ch) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Reads the quoted-string `s` starts with; returns its content with quoted-pairs undone and
/// what follows the closing quote. `None` if the quote is never closed (RFC 4475 §3.1.2.6).
fn take_quoted(s: &str) -> Option<(String, &str)> {
    let inner = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &inner[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

/// `SIP/2.0/UDP host:port;branch=...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(s: &str) -> Option<Via> {
        // SLASH is SWS "/" SWS, so `SIP / 2.0 / UDP` is a legal sent-protocol (RFC 4475
        // §3.1.1.1); LWS then separates it from sent-by.
        let (name, rest) = s.split_once('/')?;
        let (version, rest) = rest.split_once('/')?;
        let rest = rest.trim_start_matches(WS);
        let (transport, rest) = rest.split_at(rest.find(WS).unwrap_or(rest.len()));
        if !name.trim_matches(WS).eq_ignore_ascii_case("SIP")
            || version.trim_matches(WS) != "2.0"
            || !is_token(transport)
        {
            return None;
        }
        let (sent_by, params) = match rest.split_once(';') {
            // An empty branch is refused: it would match every other empty branch.
            Some((h, p)) => (h, Params::parse_header(p, &[])?),
            None => (rest, Params::default()),
        };
        let (host, port) = split_host_port(sent_by)?;
        if !is_valid_host(&host) {
            return None;
        }
        Some(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch")
    }
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim_matches(WS);
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = format!("[{}]", &rest[..end]);
        let after = rest[end + 1..].trim_start_matches(WS);
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p)?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    let (host, port) = match s.rsplit_once(':') {
        // More than one colon outside brackets: an IPv6 address without its brackets, where no
        // one can tell the port from the last group (RFC 5118 §4.2, §4.3).
        Some((h, _)) if h.contains(':') => return None,
        Some((h, p)) => (h.trim_end_matches(WS), Some(parse_port(p)?)),
        None => (s, None),
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

fn parse_port(p: &str) -> Option<u16> {
    parse_decimal(p.trim_matches(WS), u16::MAX.into()).and_then(|n| u16::try_from(n).ok())
}

/// A hostname, IPv4 address or bracketed IPv6 reference. Underscores are let through because
/// real deployments use them in hostnames.
fn is_valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        // The exact IPv6 grammar is not enforced: RFC 5118 §4.10 asks receivers to tolerate the
        // three-colon form RFC 3261's ABNF once allowed.
        return inner.contains(':')
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// A SIP or SIPS URI, or any other scheme kept whole in `host` with `scheme` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
    pub headers: Option<String>,
}

impl Uri {
    pub fn parse(s: &str) -> Option<Uri> {
        let s = s.trim_matches(WS);
        // No blank or control character belongs anywhere in a URI; one let through here would be
        // carried into every Request-Line and header built from it.
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let scheme = uri_scheme(s)?;
        let rest = &s[scheme.len() + 1..];
        let scheme_l = scheme.to_ascii_lowercase();
        if !is_sip_scheme(scheme) {
            if rest.is_empty() {
                return None;
            }
            return Some(Uri {
                scheme: scheme_l,
                user: None,
                password: None,
                host: rest.to_string(),
                port: None,
                params: Params::default(),
                headers: None,
            });
        }
        // '@' may not appear unescaped in the user, password, parameters or headers, so the
        // first one ends the userinfo even when the user part holds '?' or ';' (RFC 4475
        // §3.1.1.2, §3.1.1.9).
        let (userinfo, rest) = match rest.split_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h.to_string())),
            None => (rest, None),
        };
        let (hostport, params) = match rest.split_once(';') {
            Some((hp, p)) => (hp, Params::parse(p)),
            None => (rest, Params::default()),
        };
        let (host, port) = split_host_port(hostport)?;
        if !is_valid_host(&host) {
            return None;
        }
        let (user, password) = match userinfo {
            Some("") => return None,
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(u.to_string()), None),
            },
            None => (None, None),
        };
        Some(Uri {
            scheme: scheme_l,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }
}

impl std::fmt::Display for Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.scheme != "sip" && self.scheme != "sips" {
            return write!(f, "{}:{}", self.scheme, self.host);
        }
        write!(f, "{}:", self.scheme)?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (k, v) in &self.params.0 {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// Header parameters of a name-addr that may be given empty: `tag=` is read as no tag.
const NAME_ADDR_EMPTY_OK: &[&str] = &["tag"];

/// `"Display" <uri>;tag=x` or a bare `uri;tag=x` (From, To, Contact, Route, Refer-To).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, quoted-pairs undone (`"A \"B\""` gives `A "B"`).
    pub display: Option<String>,
    pub uri: String,
    pub params: Params,
}

impl NameAddr {
    pub fn parse(s: &str) -> Option<NameAddr> {
        let s = s.trim_matches(WS);
        let Some(lt) = find_unquoted(s, '<') else {
            return Self::parse_addr_spec(s);
        };
        let d = s[..lt].trim_matches(WS);
        // A display name is a quoted-string or *(token LWS) (RFC 3261 §25.1), but PBXs send
        // `Bell, Alexander`, `John (Office)` or `j@x` unquoted. With the address in brackets
        // nothing is ambiguous, so everything before the first unquoted '<' is the name: RFC 4475
        // §3.1.2.15 lets a liberal element "infer the missing quotes", as long as it does not
        // propagate the error, and the switch never copies a display name into another leg.
        // An unterminated quote still fails: its '<' is inside the quotes (§3.1.2.6).
        let display = match take_quoted(d) {
            Some((quoted, after)) if after.trim_matches(WS).is_empty() => quoted,
            _ => d.to_string(),
        };
        let rest = &s[lt..];
        let (uri, rest) = rest.strip_prefix('<')?.split_once('>')?;
        // LAQUOT and RAQUOT allow blanks outside the brackets only, but `< sip:a@b >` is
        // unambiguous and RFC 4475 §3.1.2.14 lets a liberal element "ignore the spaces". Blanks
        // inside the URI itself are still refused.
        let uri = uri.trim_matches(WS);
        if uri.is_empty() || uri.contains(char::is_whitespace) {
            return None;
        }
        let rest = rest.trim_start_matches(WS);
        let params = if rest.is_empty() {
            Params::default()
        } else {
            Params::parse_header(rest.strip_prefix(';')?, NAME_ADDR_EMPTY_OK)?
        };
        Some(NameAddr {
            display: Some(display).filter(|d| !d.is_empty()),
            uri: uri.to_string(),
            params,
        })
    }

    /// Without brackets the first ';' starts header parameters, so a URI holding ',', '?' or
    /// ';' must have come in brackets (RFC 3261 §20, RFC 4475 §3.1.2.13).
    fn parse_addr_spec(s: &str) -> Option<NameAddr> {
        let (uri, params) = match s.split_once(';') {
            Some((u, p)) => (
                u.trim_end_matches(WS),
                Params::parse_header(p, NAME_ADDR_EMPTY_OK)?,
            ),
            None => (s, Params::default()),
        };
        if uri.is_empty() || uri.contains(|c: char| c.is_whitespace() || ",?<>\"".contains(c)) {
            return None;
        }
        Some(NameAddr {
            display: None,
            uri: uri.to_string(),
            params,
        })
    }

    /// The tag, if it has one. An empty `tag=` (or a bare `;tag`) counts as none: a sloppy UA's
    /// way of writing "no tag yet", which must not match or start a dialog with an empty tag.
    pub fn tag(&self) -> Option<&str> {
        self.params
            .0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("tag"))
            .find_map(|(_, v)| v.as_deref().filter(|t| !t.is_empty()))
    }
}

/// `value`, a From or To that has no tag, with `;tag=` and `tag` added (RFC 3261 §8.2.6.2,
/// §12.1.1). What a sloppy peer left where the tag goes is dropped first, so that what we send
/// parses: a trailing `;` (appending would make `;;`) and an empty `tag=` (appending would make
/// a second tag). Other parameters are kept, blanks around them trimmed.
pub fn add_tag(value: &str, tag: &str) -> String {
    let value = value.trim_matches(WS);
    // Header parameters start after the '>' of a name-addr, or at the first ';' of an addr-spec.
    let start = match find_unquoted(value, '<') {
        Some(lt) => value[lt..].find('>').map(|gt| lt + gt + 1),
        None => value.find(';'),
    }
    .unwrap_or(value.len());
    let (head, params) = value.split_at(start);
    let mut out = head.to_string();
    let mut parts = split_outside_quotes(params, ';').into_iter();
    // Whatever precedes the first ';' (blanks, in anything that parsed) stays as it was.
    out.push_str(parts.next().unwrap_or_default().trim_end_matches(WS));
    for p in parts.map(|p| p.trim_matches(WS)) {
        let empty_tag = p.split_once('=').is_some_and(|(n, v)| {
            n.trim_matches(WS).eq_ignore_ascii_case("tag") && v.trim_matches(WS).is_empty()
        });
        if p.is_empty() || empty_tag || p.eq_ignore_ascii_case("tag") {
            continue;
        }
        out.push(';');
        out.push_str(p);
    }
    let _ = write!(out, ";tag={tag}");
    out
}

fn find_unquoted(s: &str, c: char) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            x if x == c && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: String,
}

impl CSeq {
    pub fn parse(s: &str) -> Option<CSeq> {
        let mut it = s.split_whitespace();
        // Larger than 2**32-1 is malformed, not wrapped (RFC 4475 §3.1.2.4).
        let seq = parse_decimal(it.next()?, u32::MAX.into())?;
        let method = it.next()?.to_string();
        if it.next().is_some() {
            return None;
        }
        Some(CSeq {
            seq: u32::try_from(seq).ok()?,
            method,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_folded_headers() {
        let raw = b"INVITE sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP a.example.com;branch=z9hG4bK1,\r\n SIP/2.0/TCP b.example.com;branch=z9hG4bK2\r\nSubject: one\r\n  two\r\ni: abc\r\nl: 0\r\n\r\n";
        let (m, used) = parse(raw, Framing::Stream).unwrap();
        assert_eq!(used, raw.len());
        let Message::Request(r) = m else { panic!() };
        assert_eq!(r.headers.get_all("via").len(), 2);
        assert_eq!(r.headers.get("SUBJECT"), Some("one two"));
        assert_eq!(r.call_id(), Some("abc"));
        assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK1"));
    }

    #[test]
    fn stream_framing_waits_for_body_and_keeps_the_rest() {
        let raw = b"SIP/2.0 200 OK\r\nContent-Length: 4\r\n\r\nab";
        assert_eq!(parse(raw, Framing::Stream), Err(ParseError::Incomplete));
        let raw = b"SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nabSIP/2.0";
        let (m, used) = parse(raw, Framing::Stream).unwrap();
        assert_eq!(m.body(), b"ab");
        assert_eq!(used, raw.len() - 7);
    }

    #[test]
    fn round_trip() {
        let mut r = Request::new("OPTIONS", "sip:a@b");
        r.headers.push("Via", "SIP/2.0/UDP h:5060;branch=z9hG4bKx");
        r.headers.push("CSeq", "1 OPTIONS");
        let bytes = r.to_bytes();
        let (m, _) = parse(&bytes, Framing::Datagram).unwrap();
        r.headers.push("Content-Length", "0");
        assert_eq!(m, Message::Request(r));
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"Bob, Jr\" <sip:bob@h;lr>;tag=7").unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob, Jr"));
        assert_eq!(n.uri, "sip:bob@h;lr");
        assert_eq!(n.tag(), Some("7"));
        let n = NameAddr::parse("sip:bob@h;tag=8").unwrap();
        assert_eq!(n.uri, "sip:bob@h");
        assert_eq!(n.tag(), Some("8"));
    }

    #[test]
    fn via_with_blanks_around_slashes_and_semicolons() {
        // RFC 4475 §3.1.1.1 (wsinv), after folding.
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "spindle.example.com");
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        let v =
            Via::parse("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKa")
                .unwrap();
        assert_eq!(v.params.get("received"), Some("[2001:db8::9:255]"));
        // One trailing ';' is let through, with or without parameters before it.
        let v = Via::parse("SIP/2.0/UDP h:5060;branch=z9hG4bKx;rport; ").unwrap();
        assert_eq!(v.branch(), Some("z9hG4bKx"));
        assert!(v.params.has("rport"));
        assert_eq!(
            Via::parse("SIP/2.0/UDP h;").unwrap().params,
            Params::default()
        );
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP h;branch=z9hG4bKx;;",
            "SIP/2.0/UDP h;;branch=z9hG4bKx",
            ";",
            "SIP/7.0/UDP h",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP 2001:db8::1",
            "SIP/2.0/UDP h;branch=",
            "SIP/2.0/UDP h:99999",
        ] {
            assert_eq!(Via::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn name_addr_display_names() {
        // Quoted-pairs are undone; an escaped quote does not end the string (RFC 4475 wsinv).
        let n = NameAddr::parse(r#""J Rosenberg \\\"" <sip:jdrosen@example.com> ; tag = 98asjd8"#)
            .unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display.as_deref(), Some("caller"));
        // Unquoted non-token characters: the name is everything before '<' (RFC 4475 §3.1.2.15).
        for (value, display) in [
            (
                "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
                "Bell, Alexander",
            ),
            (
                "John (Office) <sip:john@example.com>;tag=43",
                "John (Office)",
            ),
            ("j@x <sip:j@example.com>;tag=43", "j@x"),
            ("Dr. No; Esq. <sip:no@example.com>;tag=43", "Dr. No; Esq."),
            (
                r#""Bob" Smith <sip:bob@example.com>;tag=43"#,
                r#""Bob" Smith"#,
            ),
        ] {
            let n = NameAddr::parse(value).unwrap_or_else(|| panic!("{value}"));
            assert_eq!(n.display.as_deref(), Some(display), "{value}");
            assert_eq!(n.tag(), Some("43"), "{value}");
        }
        // One trailing ';' is let through; an empty tag is no tag.
        for (value, tag) in [
            ("<sip:a@b>;tag=x;", Some("x")),
            ("<sip:a@b> ; tag=x ; ", Some("x")),
            ("<sip:a@b>;", None),
            ("sip:a@b;tag=x;", Some("x")),
            ("<sip:a@b>;tag=", None),
            ("<sip:a@b>;tag=;", None),
            ("<sip:a@b>;tag = ;x=1", None),
            ("<sip:a@b>;tag", None),
            ("<sip:a@b>;tag=;tag=y", Some("y")),
        ] {
            let n = NameAddr::parse(value).unwrap_or_else(|| panic!("{value}"));
            assert_eq!(n.tag(), tag, "{value}");
        }
        // Blanks just inside the brackets are dropped (RFC 4475 §3.1.2.14).
        let n = NameAddr::parse(r#""Watson, Thomas" < sip:t.watson@example.org >;tag=9"#).unwrap();
        assert_eq!(n.display.as_deref(), Some("Watson, Thomas"));
        assert_eq!(n.uri, "sip:t.watson@example.org");
        assert_eq!(n.tag(), Some("9"));
        assert_eq!(NameAddr::parse("<\tsip:a@b  >").unwrap().uri, "sip:a@b");
        let n = NameAddr::parse("sip:u@example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(n.uri, "sip:u@example.com");
        assert_eq!(n.tag(), Some("1918181833n"));
        for bad in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            r#""Mr. J. User <sip:j.user@example.com> <sip:realj@example.net>"#,
            "Bob\" <sip:bob@example.com>",
            "<sip:a b@example.org>",
            "< >",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            r#""Joe" <sip:joe@example.org>;;;;"#,
            "<sip:a@b>;;",
            "<sip:a@b>;tag=x;;",
            "<sip:a@b>;;tag=x",
            "<sip:a@b>;x=",
            "<sip:a@b> garbage",
            "<>",
        ] {
            assert_eq!(NameAddr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn uri_user_part_may_hold_question_marks_and_semicolons() {
        // RFC 4475 §3.1.1.2 (intmeth): everything up to the first '@' is userinfo.
        let u = Uri::parse(concat!(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
            ":&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
        ))
        .unwrap();
        assert_eq!(
            u.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(u.host, "example.com");
        assert_eq!(u.headers, None);
        let u = Uri::parse("sip:user@example.com?Route=%3Csip:example.com%3E").unwrap();
        assert_eq!(u.headers.as_deref(), Some("Route=%3Csip:example.com%3E"));
        assert_eq!(
            Uri::parse("sip:[2001:db8:::192.0.2.1]").unwrap().host,
            "[2001:db8:::192.0.2.1]"
        );
        for bad in [
            "sip:2001:db8::10",
            "sip:exa\rmple.com",
            "sip:a b@c",
            "sip:@h",
            "sip:h:port",
        ] {
            assert_eq!(Uri::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn scalars_accept_leading_zeros_but_not_overflow() {
        assert_eq!(CSeq::parse("0009 INVITE").map(|c| c.seq), Some(9));
        assert_eq!(
            CSeq::parse("4294967295 INVITE").map(|c| c.seq),
            Some(u32::MAX)
        );
        assert_eq!(CSeq::parse("4294967296 INVITE"), None);
        assert_eq!(CSeq::parse("+1 INVITE"), None);
        assert_eq!(parse_decimal("0068", 255), Some(68));
        assert_eq!(parse_decimal("256", 255), None);
        assert_eq!(parse_decimal(&"9".repeat(40), u64::MAX), None);
    }

    const REQUEST: &str = "OPTIONS sip:bob@example.com SIP/2.0";
    const RESPONSE: &str = "SIP/2.0 200 OK";

    /// A well-formed OPTIONS or its 200 with `lines` ("Name: value") in place of the header of
    /// that name, or added; parsed from bytes as the transport would.
    fn message(start: &str, lines: &[&str]) -> Message {
        let mut headers = vec![
            "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bK1".to_string(),
            "From: <sip:alice@example.com>;tag=1".to_string(),
            "To: <sip:bob@example.com>;tag=2".to_string(),
            "Call-ID: c1@example.com".to_string(),
            "CSeq: 1 OPTIONS".to_string(),
        ];
        for line in lines {
            let name = line.split(':').next().unwrap_or_default();
            match headers
                .iter_mut()
                .find(|h| h.starts_with(&format!("{name}:")))
            {
                Some(h) => *h = line.to_string(),
                None => headers.push(line.to_string()),
            }
        }
        let raw = format!(
            "{start}\r\n{}\r\nContent-Length: 0\r\n\r\n",
            headers.join("\r\n")
        );
        parse(raw.as_bytes(), Framing::Datagram).unwrap().0
    }

    /// Both forms of `message` pass `validate`.
    fn tolerated(lines: &[&str]) {
        for start in [REQUEST, RESPONSE] {
            assert_eq!(
                validate(&message(start, lines)),
                Ok(()),
                "{start} {lines:?}"
            );
        }
    }

    #[test]
    fn a_date_in_any_form_is_ignored() {
        // RFC 4475 §3.1.2.12: the switch never reads Date, so it does not reject over it.
        for date in [
            "Date: Sat, 15 Oct 2005 04:44:56 GMT",
            "Date: Fri, 01 Jan 2010 16:00:00 EST",
            "Date: Fri, 1 Jan 2010 16:00:00 GMT",
            "Date: 2010-01-01T16:00:00+01:00",
            "Date: yesterday",
        ] {
            tolerated(&[date]);
        }
    }

    #[test]
    fn unquoted_display_names_with_non_token_characters_are_accepted() {
        // RFC 4475 §3.1.2.15 (baddn) and what PBXs send.
        tolerated(&[
            "From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "To: Watson, Thomas <sip:t.watson@example.org>;tag=2",
        ]);
        tolerated(&["From: John (Office) <sip:john@example.com>;tag=1"]);
        tolerated(&["To: j@x <sip:bob@example.com>;tag=2"]);
        tolerated(&["Contact: John (Office) <sip:john@192.0.2.1>"]);
        // Without brackets nothing says where the name ends: still refused.
        for start in [REQUEST, RESPONSE] {
            let m = message(
                start,
                &["From: Bell, Alexander sip:a.g.bell@example.com;tag=43"],
            );
            assert_eq!(validate(&m), Err("malformed From or To"));
        }
    }

    #[test]
    fn blanks_inside_angle_brackets_are_trimmed() {
        // RFC 4475 §3.1.2.14 (badaspec).
        tolerated(&[r#"To: "Watson, Thomas" < sip:t.watson@example.org >;tag=2"#]);
        tolerated(&["From: < sip:alice@example.com >;tag=1"]);
        tolerated(&["Contact: <sip:alice@192.0.2.1 >"]);
        for start in [REQUEST, RESPONSE] {
            let m = message(start, &["To: <sip:bob @example.com>;tag=2"]);
            assert_eq!(validate(&m), Err("malformed From or To"));
        }
    }

    #[test]
    fn a_trailing_semicolon_after_parameters_is_accepted() {
        tolerated(&["From: <sip:alice@example.com>;tag=1;"]);
        tolerated(&["To: Bob <sip:bob@example.com>;tag=2;"]);
        tolerated(&["To: sip:bob@example.com;tag=2;"]);
        tolerated(&["Contact: <sip:alice@192.0.2.1>;expires=60;"]);
        tolerated(&["Record-Route: <sip:p.example.com;lr>;"]);
        tolerated(&["Via: SIP/2.0/UDP host.example.com;branch=z9hG4bK1;rport;"]);
        // An empty element elsewhere is still refused (RFC 4475 §3.1.2.1, badinv01).
        for start in [REQUEST, RESPONSE] {
            let m = message(
                start,
                &["Via: SIP/2.0/UDP host.example.com;;branch=z9hG4bK1"],
            );
            assert_eq!(validate(&m), Err("malformed Via"));
            let m = message(start, &["From: <sip:alice@example.com>;tag=1;;"]);
            assert_eq!(validate(&m), Err("malformed From or To"));
        }
    }

    #[test]
    fn an_empty_tag_is_read_as_no_tag() {
        tolerated(&["To: <sip:bob@example.com>;tag="]);
        tolerated(&["From: <sip:alice@example.com>;tag=;x-info=1"]);
        let m = message(RESPONSE, &["To: <sip:bob@example.com>;tag="]);
        let to = NameAddr::parse(m.headers().get("To").unwrap()).unwrap();
        assert_eq!(to.tag(), None);
        // Other parameters still need a value, and an empty branch matches nothing.
        for start in [REQUEST, RESPONSE] {
            let m = message(start, &["Via: SIP/2.0/UDP host.example.com;branch="]);
            assert_eq!(validate(&m), Err("malformed Via"));
        }
    }

    #[test]
    fn add_tag_leaves_a_value_that_parses_with_one_tag() {
        for (value, want) in [
            ("<sip:b@h>", "<sip:b@h>;tag=t"),
            ("Bob <sip:b@h>;x=1", "Bob <sip:b@h>;x=1;tag=t"),
            ("sip:b@h", "sip:b@h;tag=t"),
            ("sip:b@h;x=1", "sip:b@h;x=1;tag=t"),
            // What a sloppy peer left where the tag goes.
            ("<sip:b@h>;", "<sip:b@h>;tag=t"),
            ("<sip:b@h>;tag=", "<sip:b@h>;tag=t"),
            ("<sip:b@h> ; tag = ; x=1 ;", "<sip:b@h>;x=1;tag=t"),
            ("<sip:b@h>;tag", "<sip:b@h>;tag=t"),
            ("sip:b@h;tag=;", "sip:b@h;tag=t"),
            (
                r#""a;tag=" <sip:b@h;lr>;tag="#,
                r#""a;tag=" <sip:b@h;lr>;tag=t"#,
            ),
        ] {
            let got = add_tag(value, "t");
            assert_eq!(got, want, "{value}");
            assert_eq!(
                NameAddr::parse(&got)
                    .and_then(|n| n.tag().map(str::to_string))
                    .as_deref(),
                Some("t")
            );
        }
    }

    #[test]
    fn expires_given_as_a_date_is_accepted() {
        // RFC 2543 §6.20 allowed a date; RFC 3261 only delta-seconds.
        tolerated(&["Expires: Thu, 01 Dec 2040 16:00:00 GMT"]);
        tolerated(&["Expires: fri, 1 Jan 2010 16:00:00 EST"]);
        tolerated(&[r#"Contact: <sip:alice@192.0.2.1>;expires="Thu, 01 Dec 2040 16:00:00 GMT""#]);
        tolerated(&["Expires: 3600", "Contact: <sip:alice@192.0.2.1>;expires=0"]);
        for start in [REQUEST, RESPONSE] {
            for bad in ["Expires: soon", "Expires: -1", "Expires: 4294967296"] {
                assert_eq!(
                    validate(&message(start, &[bad])),
                    Err("Expires out of range"),
                    "{bad}"
                );
            }
            let m = message(start, &["Contact: <sip:alice@192.0.2.1>;expires=tomorrow"]);
            assert_eq!(validate(&m), Err("Contact expires out of range"));
        }
    }

    #[test]
    fn max_forwards_above_255_is_accepted() {
        // RFC 4475 §3.1.2.4: with only Max-Forwards out of range, act as if it were absent.
        tolerated(&["Max-Forwards: 256"]);
        tolerated(&["Max-Forwards: 300"]);
        tolerated(&["Max-Forwards: 100000000000000000000000000000000000000000"]);
        tolerated(&["Max-Forwards: 0070"]);
        for start in [REQUEST, RESPONSE] {
            for bad in [
                "Max-Forwards: -1",
                "Max-Forwards: seventy",
                "Max-Forwards: 7 0",
            ] {
                assert_eq!(
                    validate(&message(start, &[bad])),
                    Err("malformed Max-Forwards"),
                    "{bad}"
                );
            }
        }
    }

    #[test]
    fn a_response_sloppy_where_the_switch_does_not_read_is_usable() {
        for lines in [
            &["Expires: soon"][..],
            &["Max-Forwards: x"],
            &["Retry-After: 99999999999999999999"],
            &["From: <sip:@example.com>;tag=1"],
            &["Route: garbage"],
            // Only the top Via matches a response to its transaction.
            &["Via: SIP/2.0/UDP host.example.com;branch=z9hG4bK1, SIP/2.0/UDP 192.0.2.15;;"],
            // Contact and Record-Route matter in a 2xx to INVITE only.
            &["Contact: <sip:a b@example.com>", "Record-Route: garbage"],
        ] {
            let m = message(RESPONSE, lines);
            assert!(validate(&m).is_err(), "{lines:?}");
            assert_eq!(check_usable(&m), Ok(()), "{lines:?}");
        }
        let m = message(
            "SIP/2.0 180 Ringing",
            &["CSeq: 1 INVITE", "Contact: <sip:a b@example.com>"],
        );
        assert_eq!(check_usable(&m), Ok(()));
    }

    #[test]
    fn a_response_without_what_the_switch_reads_is_unusable() {
        for (lines, why) in [
            (
                &["Via: SIP/2.0/UDP host.example.com;;branch=z9hG4bK1"][..],
                "malformed Via",
            ),
            (&["CSeq: one OPTIONS"], "malformed CSeq"),
            (&["Call-ID: "], "malformed Call-ID"),
            (
                &[r#"To: "Bob <sip:bob@example.com>;tag=2"#],
                "malformed From or To",
            ),
            (
                &["From: <sip:alice@example.com>;tag=1;;"],
                "malformed From or To",
            ),
            (
                &["CSeq: 1 INVITE", "Contact: <sip:a b@example.com>"],
                "malformed Contact, Route or Record-Route",
            ),
            (
                &[
                    "CSeq: 1 INVITE",
                    "Contact: <sip:b@192.0.2.2>",
                    "Record-Route: garbage",
                ],
                "URI without a scheme",
            ),
        ] {
            let m = message(RESPONSE, lines);
            assert_eq!(check_usable(&m), Err(why), "{lines:?}");
            assert_eq!(validate(&m), Err(why), "{lines:?}");
        }
    }

    #[test]
    fn validate_checks_a_built_message_too() {
        let mut r = Request::new("OPTIONS", "sip:a@b");
        assert_eq!(
            validate(&Message::Request(r.clone())),
            Err("missing mandatory header")
        );
        r.headers.push("Via", "SIP/2.0/UDP h;branch=z9hG4bKx");
        r.headers.push("From", "<sip:a@b>;tag=1");
        r.headers.push("To", "<sip:b@b>");
        r.headers.push("Call-ID", "c");
        r.headers.push("CSeq", "1 OPTIONS");
        assert_eq!(validate(&Message::Request(r.clone())), Ok(()));
        r.headers.push("Subject", "a\r\nInjected: 1");
        assert_eq!(
            validate(&Message::Request(r)),
            Err("line break inside a header value")
        );
    }

    #[test]
    fn uri_v6_and_params() {
        let u = Uri::parse("sip:[2001:db8::10]:5070;transport=tcp").unwrap();
        assert_eq!(u.host, "[2001:db8::10]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params.get("transport"), Some("tcp"));
    }
    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<Message>, ParseError> {
        let mut d = StreamDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c);
            while let Some(m) = d.next_message()? {
                out.push(m);
            }
        }
        Ok(out)
    }

    #[test]
    fn the_stream_decoder_frames_like_parse_at_any_split() {
        let one =
            format!("\r\n{REQUEST}\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello");
        let two =
            format!("{RESPONSE}\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\n");
        let stream = format!("{one}\r\n\r\n{two}{one}");
        let whole = decode_all(&[stream.as_bytes()]).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].body(), b"hello");
        for size in [1, 2, 3, 7, 64] {
            let chunks: Vec<&[u8]> = stream.as_bytes().chunks(size).collect();
            assert_eq!(decode_all(&chunks).unwrap(), whole, "chunks of {size}");
        }
        // What breaks framing still does.
        let bad = format!("{REQUEST}\r\nContent-Length: -5\r\n\r\n");
        assert!(decode_all(&[bad.as_bytes()]).is_err());
        let big = format!("{REQUEST}\r\nContent-Length: 999999\r\n\r\n");
        assert_eq!(decode_all(&[big.as_bytes()]), Err(ParseError::TooLarge));
        let endless = vec![b'a'; MAX_MESSAGE_LEN + 10];
        let chunks: Vec<&[u8]> = endless.chunks(1000).collect();
        assert_eq!(decode_all(&chunks), Err(ParseError::TooLarge));
    }

    #[test]
    fn a_slow_drip_costs_linear_work() {
        // A 60 KiB header block delivered a byte at a time, then a 3 KiB body the same way:
        // re-parsing the buffer on every byte took minutes; this is a few milliseconds.
        let mut msg = format!("{REQUEST}\r\n");
        while msg.len() < 60 * 1024 {
            msg.push_str(&format!("X-Filler: {}\r\n", "a".repeat(4000)));
        }
        msg.truncate(msg.rfind("X-Filler").unwrap());
        msg.push_str("Content-Length: 3000\r\n\r\n");
        msg.push_str(&"b".repeat(3000));
        let mut d = StreamDecoder::new();
        let started = std::time::Instant::now();
        let mut got = None;
        for b in msg.as_bytes() {
            d.push(std::slice::from_ref(b));
            if let Some(m) = d.next_message().unwrap() {
                got = Some(m);
            }
        }
        assert!(got.is_some_and(|m| m.body().len() == 3000));
        assert_eq!(d.pending(), 0);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
