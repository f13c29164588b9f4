//! The audio codecs a leg speaks (api.md §7 Codecs): G.711 (ours), G.722 (the `ezk-g722` crate, a
//! port of the reference libg722) and Opus (libopus). Each turns one packet's payload into PCM at
//! the codec's own rate and back; G.722 and Opus keep state from packet to packet.

use crate::g711::{self, Law};

/// Samples in one 20 ms G.711 frame.
pub const SAMPLES: usize = 160;

/// The codecs a leg speaks (api.md §7 Codecs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Pcmu,
    Pcma,
    /// Wideband: 16 kHz audio, RTP timestamps at 8000 (RFC 3551 §4.5.2).
    G722,
    /// Opus (RFC 7587), coded and decoded at 16 kHz (mono; a stereo stream is downmixed),
    /// RTP timestamps at 48000 whatever the audio.
    Opus,
}

impl AudioCodec {
    /// The rate of its audio: what the leg mixes, streams and plays at.
    pub fn rate(self) -> u32 {
        match self {
            AudioCodec::Pcmu | AudioCodec::Pcma => 8000,
            AudioCodec::G722 | AudioCodec::Opus => 16000,
        }
    }

    /// Its RTP clock.
    pub fn clock(self) -> u32 {
        match self {
            AudioCodec::Opus => 48000,
            _ => 8000,
        }
    }

    /// Samples in one 20 ms frame at [`Self::rate`].
    pub fn frame_samples(self) -> usize {
        self.rate() as usize / 50
    }
}

/// G.722's encoder and decoder keep adaptive state from frame to frame.
struct G722 {
    enc: ezk_g722::libg722::encoder::Encoder,
    dec: ezk_g722::libg722::decoder::Decoder,
}

impl G722 {
    fn new() -> G722 {
        use ezk_g722::libg722::{decoder::Decoder, encoder::Encoder, Bitrate};
        G722 {
            // 64 kbit/s, 16 kHz samples, one code per byte.
            enc: Encoder::new(Bitrate::Mode1_64000, false, false),
            dec: Decoder::new(Bitrate::Mode1_64000, false, false),
        }
    }
}
/// Opus keeps state too; libopus does the work.
struct Opus {
    enc: opus::Encoder,
    dec: opus::Decoder,
}

impl Opus {
    fn new() -> Option<Opus> {
        let rate = AudioCodec::Opus.rate();
        let mut enc =
            opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip).ok()?;
        // Speech at 16 kHz: 24 kbit/s is transparent for it and above every fmtp floor.
        enc.set_bitrate(opus::Bitrate::Bits(24000)).ok()?;
        Some(Opus {
            enc,
            // A mono decoder downmixes a stereo stream (RFC 7587 §3.4).
            dec: opus::Decoder::new(rate, opus::Channels::Mono).ok()?,
        })
    }

    fn encode(&mut self, frame: &[i16]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; 400];
        let n = self.enc.encode(frame, &mut out).ok()?;
        out.truncate(n);
        Some(out)
    }

    fn decode(&mut self, payload: &[u8]) -> Option<Vec<i16>> {
        // Up to 120 ms per packet.
        let mut out = vec![0i16; AudioCodec::Opus.rate() as usize * 120 / 1000];
        let n = self.dec.decode(payload, &mut out, false).ok()?;
        out.truncate(n);
        Some(out)
    }
}

/// The stateful coders of one leg, made when a codec is first used.
#[derive(Default)]
pub(crate) struct Coders {
    g722: Option<G722>,
    opus: Option<Opus>,
}

impl Coders {
    pub(crate) fn prepare(&mut self, codec: AudioCodec) {
        match codec {
            AudioCodec::G722 if self.g722.is_none() => self.g722 = Some(G722::new()),
            AudioCodec::Opus if self.opus.is_none() => self.opus = Opus::new(),
            _ => {}
        }
    }

    /// One packet's payload as PCM at the codec's rate; `None` for a coder not prepared or a
    /// payload it rejects.
    pub(crate) fn decode(&mut self, codec: AudioCodec, payload: &[u8]) -> Option<Vec<i16>> {
        Some(match codec {
            AudioCodec::Pcmu | AudioCodec::Pcma => {
                let mut pcm = Vec::with_capacity(payload.len());
                g711::decode(law(codec), payload, &mut pcm);
                pcm
            }
            AudioCodec::G722 => self.g722.as_mut()?.dec.decode(payload),
            AudioCodec::Opus => self.opus.as_mut()?.decode(payload)?,
        })
    }

    /// One 20 ms frame at the codec's rate as a payload.
    pub(crate) fn encode(&mut self, codec: AudioCodec, frame: &[i16]) -> Option<Vec<u8>> {
        Some(match codec {
            AudioCodec::Pcmu | AudioCodec::Pcma => {
                let mut p = Vec::with_capacity(frame.len());
                g711::encode(law(codec), frame, &mut p);
                p
            }
            AudioCodec::G722 => self.g722.as_mut()?.enc.encode(frame),
            AudioCodec::Opus => self.opus.as_mut()?.encode(frame)?,
        })
    }
}

fn law(codec: AudioCodec) -> Law {
    if codec == AudioCodec::Pcma {
        Law::A
    } else {
        Law::Mu
    }
}
