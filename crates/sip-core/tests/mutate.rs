//! Mutated torture messages must never panic the parser, `validate` or the typed header views,
//! and whatever parses must print back to itself.
//!
//! A cheap, deterministic stand-in for the cargo-fuzz target in `crates/sip-core/fuzz` (which
//! needs nightly): a fixed seed, a bounded number of mutants, no dependencies.

use std::path::PathBuf;

use sip_core::msg::{
    add_tag, check_usable, parse, validate, CSeq, Framing, Message, NameAddr, Uri, Via,
    MAX_MESSAGE_LEN,
};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/test-vectors/sip-torture"
);

/// Mutants per seed message; about 60 seeds, so roughly 25,000 messages in all (a few seconds
/// unoptimised). `SIP_MUTANTS_PER_SEED` and `SIP_MUTATE_SEED` override both for a longer soak:
/// `SIP_MUTANTS_PER_SEED=100000 cargo test -p sip-core --release --test mutate`.
const MUTANTS_PER_SEED: usize = 400;
const SEED: u64 = 0x5EED_4475_5118_0001;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes that mean something to a SIP parser: line ends, separators, quotes, brackets, escapes,
/// and bytes that are not UTF-8.
const INTERESTING: &[&[u8]] = &[
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n ",
    b"\r\n\r\n",
    b":",
    b",",
    b";",
    b"<",
    b">",
    b"\"",
    b"\\",
    b" ",
    b"\t",
    b"[",
    b"]",
    b"@",
    b"?",
    b"=",
    b"%",
    b"/",
    b"\0",
    b"\xff",
    b"\xe9",
    b"\xc3",
    b"0",
    b"-1",
    b"99999999999999999999",
    b"SIP/2.0",
    b"sip:",
    b";;",
    b"z9hG4bK",
];

/// xorshift64*: enough to spread mutations, and the same run everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(VECTORS);
    let mut out = Vec::new();
    for sub in ["rfc4475", "rfc5118"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort(); // read_dir order is not stable; the run must be
        out.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
    }
    if out.is_empty() {
        eprintln!("note: {VECTORS} is absent; mutating the built-in seeds only");
    }
    out.push(
        b"INVITE sip:bob@[2001:db8::1]:5060;transport=tcp SIP/2.0\r\n\
          v: SIP / 2.0 / UDP h.example.com:5060;branch=z9hG4bK1, SIP/2.0/TCP [::1];received=::1\r\n\
          f: \"A \\\"B\\\"\" <sip:a@h>;tag=1\r\nt: sip:b@h\r\ni: x@y\r\nCSeq: 1 INVITE\r\n\
          m: <sip:a@h>;expires=60, *\r\nContent-Type: application/sdp\r\nl: 4\r\n\r\nv=0\r\n"
            .to_vec(),
    );
    out.push(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
          To: <sip:b@h>;tag=2\r\nCall-ID: x@y\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
    );
    out
}

fn mutate(rng: &mut Rng, seed: &[u8], all: &[Vec<u8>]) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(m.len() + 1);
        match rng.below(8) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 => m.truncate(at),
            2 | 3 => {
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                m.splice(at..at, ins.iter().copied());
            }
            4 => {
                let end = (at + rng.below(64)).min(m.len());
                m.drain(at..end);
            }
            5 => {
                // Splice: this message's head onto another's tail.
                let other = &all[rng.below(all.len())];
                let from = rng.below(other.len() + 1);
                m.truncate(at);
                m.extend_from_slice(&other[from..]);
            }
            6 => {
                // Repeat a slice, as a flood of headers or folds would.
                let end = (at + rng.below(80)).min(m.len());
                let chunk = m[at..end].to_vec();
                for _ in 0..rng.below(20) {
                    m.splice(at..at, chunk.iter().copied());
                }
            }
            _ if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            _ => {}
        }
    }
    m
}

/// Everything the layers above call on a message they received.
fn exercise(m: &Message) {
    // `check_usable` is the first part of `validate`.
    if validate(m).is_ok() {
        assert_eq!(check_usable(m), Ok(()));
    }
    let h = m.headers();
    for v in h.get_all("Via") {
        let _ = Via::parse(v).map(|v| v.branch().map(str::len));
    }
    for name in ["From", "To", "Contact", "Route", "Record-Route"] {
        for v in h.get_all(name) {
            if let Some(a) = NameAddr::parse(v) {
                let _ = a.tag();
                let _ = Uri::parse(&a.uri).map(|u| u.to_string());
            }
        }
    }
    // Our tag added to a From or To without one must leave a value that parses with that tag.
    for name in ["From", "To"] {
        if let Some(v) = h.get(name) {
            if NameAddr::parse(v).is_some_and(|a| a.tag().is_none()) {
                let tagged = add_tag(v, "ours");
                let tag = NameAddr::parse(&tagged).and_then(|a| a.tag().map(str::to_string));
                assert_eq!(tag.as_deref(), Some("ours"), "{v:?} -> {tagged:?}");
            }
        }
    }
    let _ = h.get("CSeq").and_then(CSeq::parse);
    if let Message::Request(r) = m {
        let _ = Uri::parse(&r.uri).map(|u| u.to_string());
        let _ = (r.call_id(), r.cseq(), r.top_via());
    }
}

fn without_content_length(mut m: Message) -> Message {
    match &mut m {
        Message::Request(r) => r.headers.remove("Content-Length"),
        Message::Response(r) => r.headers.remove("Content-Length"),
    }
    m
}

fn check(input: &[u8]) {
    for framing in [Framing::Datagram, Framing::Stream] {
        let Ok((m, used)) = parse(input, framing) else {
            continue;
        };
        assert!(used <= input.len());
        if framing == Framing::Stream {
            // What a stream frames, the same bytes as a datagram must frame alike.
            let (alone, _) = parse(&input[..used], Framing::Datagram)
                .expect("a message framed on a stream parses as a datagram");
            assert_eq!(alone, m);
        }
        exercise(&m);
        let printed = m.to_bytes();
        // Printing spells compact names out, which can take a message at the cap over it.
        if printed.len() > MAX_MESSAGE_LEN {
            continue;
        }
        let (again, _) = parse(&printed, Framing::Stream).unwrap_or_else(|e| {
            panic!(
                "printed form does not parse ({e}):\n{}",
                String::from_utf8_lossy(&printed)
            )
        });
        assert_eq!(
            without_content_length(again),
            without_content_length(m),
            "round trip of {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn mutated_torture_messages_never_panic_and_round_trip() {
    let seeds = seeds();
    // xorshift never leaves zero, so a zero seed is nudged.
    let mut rng = Rng(setting("SIP_MUTATE_SEED", SEED).max(1));
    let per_seed = setting("SIP_MUTANTS_PER_SEED", MUTANTS_PER_SEED as u64);
    let mut parsed = 0usize;
    let mut total = 0usize;
    for seed in &seeds {
        check(seed);
        for _ in 0..per_seed {
            let mutant = mutate(&mut rng, seed, &seeds);
            check(&mutant);
            total += 1;
            parsed += usize::from(parse(&mutant, Framing::Datagram).is_ok());
        }
    }
    println!("{total} mutants, {parsed} parsed as datagrams");
    // If almost nothing parses, the mutations are too coarse to reach the header decoders.
    assert!(parsed * 10 > total, "{parsed} of {total}");
}
