//! Dialog state (RFC 3261 §12) and the requests built inside one.

use crate::msg::{NameAddr, Request, Response};
use crate::transaction::Peer;
use rand::Rng;

// Branches, tags and Call-IDs come from `thread_rng`, a CSPRNG (ChaCha seeded from the OS):
// knowing one must not help guess another, since a dialog's identifiers are all an attacker
// needs to end or redirect a call (RFC 3261 §19.3).

/// A branch with the RFC 3261 magic cookie, unique per transaction.
pub fn new_branch() -> String {
    format!("z9hG4bK{:016x}", rand::thread_rng().gen::<u64>())
}

/// A From or To tag: 64 random bits.
pub fn new_tag() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// A Call-ID for a new outbound dialog: 128 random bits, unrelated to anything published (the
/// call's uuid goes into every event; a Call-ID derived from it would let any reader of events
/// forge requests inside the call).
pub fn new_call_id(host: &str) -> String {
    format!("{:032x}@{host}", rand::thread_rng().gen::<u128>())
}

/// What we write about ourselves in Via and Contact.
#[derive(Debug, Clone)]
pub struct Local {
    /// Address written in Via/Contact/SDP (`sip.public_addr`).
    pub host: String,
    pub port: u16,
    pub user_agent: String,
}

impl Local {
    pub fn via(&self, transport: crate::transaction::Transport, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            transport.via_name(),
            self.host,
            self.port
        )
    }
    pub fn contact(&self, user: &str, transport: crate::transaction::Transport) -> String {
        let tp = match transport {
            crate::transaction::Transport::Udp => String::new(),
            t => format!(";transport={}", t.via_name().to_ascii_lowercase()),
        };
        format!("<sip:{user}@{}:{}{tp}>", self.host, self.port)
    }
}

#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    /// Our From (UAC) or To (UAS) header value, tag included.
    pub local: String,
    /// Their header value, tag included once known.
    pub remote: String,
    pub local_seq: u32,
    /// The CSeq of the last request from the far end (§12.2.2: a lower one is out of order).
    pub remote_seq: Option<u32>,
    pub remote_target: String,
    pub route_set: Vec<String>,
    /// Where in-dialog requests go (the proxy of the first Route, or the remote target).
    pub peer: Peer,
    pub contact: String,
}

impl Dialog {
    /// UAC side, from our INVITE and a 2xx (or a tagged 1xx) to it (§12.1.2).
    pub fn from_uac(invite: &Request, resp: &Response, peer: Peer) -> Dialog {
        let mut route_set: Vec<String> = resp
            .headers
            .get_all("Record-Route")
            .iter()
            .map(|s| s.to_string())
            .collect();
        route_set.reverse();
        let remote_target = resp
            .headers
            .get("Contact")
            .and_then(NameAddr::parse)
            .map(|n| n.uri)
            .unwrap_or_else(|| invite.uri.clone());
        Dialog {
            call_id: invite.call_id().unwrap_or_default().to_string(),
            local: invite.headers.get("From").unwrap_or_default().to_string(),
            remote: resp.headers.get("To").unwrap_or_default().to_string(),
            local_seq: invite.cseq().map(|c| c.seq).unwrap_or(1),
            remote_seq: None,
            remote_target,
            route_set,
            peer,
            contact: invite
                .headers
                .get("Contact")
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// UAS side, from the INVITE we answer with `local_tag` (§12.1.1).
    pub fn from_uas(invite: &Request, local_tag: &str, contact: String, peer: Peer) -> Dialog {
        let route_set = invite
            .headers
            .get_all("Record-Route")
            .iter()
            .map(|s| s.to_string())
            .collect();
        let to = invite.headers.get("To").unwrap_or_default();
        Dialog {
            call_id: invite.call_id().unwrap_or_default().to_string(),
            local: crate::msg::add_tag(to, local_tag),
            remote: invite.headers.get("From").unwrap_or_default().to_string(),
            local_seq: rand::thread_rng().gen_range(1..10_000),
            remote_seq: invite.cseq().map(|c| c.seq),
            remote_target: invite
                .headers
                .get("Contact")
                .and_then(NameAddr::parse)
                .map(|n| n.uri)
                .unwrap_or_default(),
            route_set,
            peer,
            contact,
        }
    }

    /// Our tag (From of a UAC, To of a UAS).
    pub fn local_tag(&self) -> Option<String> {
        NameAddr::parse(&self.local).and_then(|n| n.tag().map(str::to_string))
    }

    /// The far end's tag; `None` before it is known (or from an RFC 2543 peer that sends none).
    pub fn remote_tag(&self) -> Option<String> {
        NameAddr::parse(&self.remote).and_then(|n| n.tag().map(str::to_string))
    }

    /// A new in-dialog request (BYE, re-INVITE, REFER, INFO) with the next CSeq (§12.2.1.1).
    pub fn request(&mut self, method: &str, local: &Local) -> Request {
        self.local_seq += 1;
        let seq = self.local_seq;
        self.build(method, seq, &crate::dialog::new_branch(), local)
    }

    /// The ACK for a 2xx: CSeq number of the INVITE, a new branch (§13.2.2.4).
    pub fn ack(&self, invite_seq: u32, local: &Local) -> Request {
        let mut r = self.build("ACK", invite_seq, &new_branch(), local);
        r.headers.set("CSeq", format!("{invite_seq} ACK"));
        r
    }

    fn build(&self, method: &str, seq: u32, branch: &str, local: &Local) -> Request {
        // Loose routing (§12.2.1.1): with an `lr` first route, the Request-URI stays the target.
        let strict = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r))
            .is_some_and(|n| !n.uri.contains(";lr"));
        let (uri, routes): (String, Vec<String>) = if strict {
            let first = NameAddr::parse(&self.route_set[0])
                .map(|n| n.uri)
                .unwrap_or_default();
            let mut rest: Vec<String> = self.route_set[1..].to_vec();
            rest.push(format!("<{}>", self.remote_target));
            (first, rest)
        } else {
            (self.remote_target.clone(), self.route_set.clone())
        };
        let mut r = Request::new(method, &uri);
        r.headers
            .push("Via", local.via(self.peer.transport, branch));
        r.headers.push("Max-Forwards", "70");
        for route in routes {
            r.headers.push("Route", route);
        }
        r.headers.push("From", self.local.clone());
        r.headers.push("To", self.remote.clone());
        r.headers.push("Call-ID", self.call_id.clone());
        r.headers.push("CSeq", format!("{seq} {method}"));
        if !self.contact.is_empty() && method != "BYE" && method != "ACK" {
            r.headers.push("Contact", self.contact.clone());
        }
        r.headers.push("User-Agent", local.user_agent.clone());
        r
    }
}
