//! The media path of a call: RTP/RTCP ports and endpoints.

pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod leg;
pub mod mix;
pub mod playout;
pub mod ports;
pub mod quality;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod session;
pub mod srtp;
pub mod stream;
pub mod wav;
pub mod ws;

pub use ports::{PortLease, PortPool};
