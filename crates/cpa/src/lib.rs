//! Call progress analysis (CPA): answering-machine detection, fax and configured tones,
//! the voicemail beep, and in-band DTMF, as pure DSP over 8 kHz audio.
//!
//! The core is sans-IO: feed audio with [`Engine::handle_frame`], then drain
//! [`Engine::poll_output`] to `None`. Time is counted in samples from answer, so results
//! are reproducible and tests run faster than real time.
//!
//! How the AMD decides (api.md §3.1 results):
//! * a spectral VAD (energy above an adaptive per-band noise floor in several bands at
//!   once, not concentrated in one or two narrow peaks) finds speech; a segment counts once
//!   it rises well above the mean noise, which keeps babble and tone clicks out;
//! * `LV` when a person's answer is followed by a pause long enough to mean "waiting for a
//!   reply" (850 ms), checked again against the noise level as then known;
//! * `AM` when the talk runs on past the decision window without such a pause, when a long
//!   utterance (3.5 s) holds a long unbroken run of speech (1.75 s without a 100 ms pause:
//!   read out, where people answering at length pause between phrases), or when a pure
//!   tone (the beep) follows the greeting;
//! * `FX` for fax CNG (1100 Hz) or CED (2100 Hz) heard before any greeting;
//! * `SIL` when no speech starts within `initial_silence_ignore + time_limit`, `NS` if
//!   tones rather than silence filled that time.
//!
//! Tones: a block is tonal when one sinusoid holds nearly all its power above the noise and
//! no second narrow peak exists, so dual tones (ringback, busy, dial, DTMF) never qualify.
//! A lone tone at a call-progress frequency (380-500 Hz) is a `BEEP` only after a greeting
//! and when it does not repeat (a cadence).

pub mod dtmf;
mod engine;
mod fft;
mod params;
pub mod wav;

pub use engine::{Detection, DoneReason, Engine, Output};
pub use params::{CpaParams, ToneSpec};
