//! Text frames from the app (`ws::parse_control` for our protocol, the Twilio Media Streams
//! parser behind `AppStream::from_app_text`): never a panic, a mark name never longer than
//! `playout::MAX_MARK_NAME`, Twilio audio always whole samples.
//!
//! Run from `crates/media`: `cargo fuzz run ws_text`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use media::playout::{PlayoutQueue, MAX_MARK_NAME};
use media::stream::{AppStream, Protocol, StreamConfig};
use media::ws::{parse_control, FromApp};

fn stream(protocol: Protocol) -> AppStream {
    AppStream::new(StreamConfig {
        url: "wss://app.example".into(),
        protocol,
        sample_rate: 8000,
        resume_secs: 0,
        first: Default::default(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut queue = PlayoutQueue::new(8000, 60_000);
    let direct = parse_control(text);
    for (protocol, parsed) in [
        (
            Protocol::Botstream,
            stream(Protocol::Botstream).from_app_text(text),
        ),
        (
            Protocol::Twilio,
            stream(Protocol::Twilio).from_app_text(text),
        ),
    ] {
        match parsed {
            Some(FromApp::Mark(name)) => {
                assert!(name.len() <= MAX_MARK_NAME, "{}", name.len());
                queue.push_mark(name);
            }
            Some(FromApp::Audio(pcm)) => {
                assert_eq!(protocol, Protocol::Twilio);
                assert_eq!(pcm.len() % 2, 0);
                let _ = queue.push_pcm(&pcm);
            }
            Some(FromApp::Clear) => {
                let _ = queue.clear();
            }
            Some(FromApp::Text(_) | FromApp::Closed { .. }) => panic!("not from a text frame"),
            None => {}
        }
    }
    assert_eq!(
        format!("{direct:?}"),
        format!("{:?}", stream(Protocol::Botstream).from_app_text(text))
    );
    let mut frame = [0i16; 160];
    let _ = queue.next_frame(&mut frame);
});
