//! The TCP/TLS stream decoder (`msg::StreamDecoder`) on arbitrary bytes cut into arbitrary
//! pieces: it frames exactly what `msg::parse` frames on the whole buffer, message for message,
//! whatever the cuts, and never holds more than one message's worth of input.
//!
//! Run from `crates/sip-core`: `cargo fuzz run stream`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_core::msg::{parse, Framing, StreamDecoder, MAX_MESSAGE_LEN};

fuzz_target!(|input: (Vec<u8>, Vec<u16>)| {
    let (data, cuts) = input;
    // What parse frames from the whole buffer, one message after another.
    let mut expected = Vec::new();
    let mut rest = &data[..];
    let whole_err = loop {
        match parse(rest, Framing::Stream) {
            Ok((m, used)) => {
                expected.push(m);
                rest = &rest[used..];
            }
            Err(e) => break e,
        }
    };
    let mut d = StreamDecoder::new();
    let mut got = Vec::new();
    let mut at = 0;
    let mut failed = None;
    let mut pieces: Vec<usize> = cuts.iter().map(|c| usize::from(*c % 4096) + 1).collect();
    pieces.push(data.len());
    'feed: for len in pieces {
        if at >= data.len() {
            break;
        }
        let end = (at + len).min(data.len());
        d.push(&data[at..end]);
        at = end;
        loop {
            match d.next_message() {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break 'feed;
                }
            }
        }
        assert!(d.pending() <= MAX_MESSAGE_LEN + 4096 + 3);
    }
    assert_eq!(got, expected[..got.len().min(expected.len())].to_vec());
    match failed {
        // The decoder fails where parse fails on the rest.
        Some(e) => {
            assert_eq!(got.len(), expected.len());
            assert_ne!(whole_err, sip_core::msg::ParseError::Incomplete, "{e:?}");
        }
        None => {
            if at == data.len() {
                assert_eq!(got.len(), expected.len());
            }
        }
    }
});
