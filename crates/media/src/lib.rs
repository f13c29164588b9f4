//! The media path of a call: RTP/RTCP ports and endpoints.

pub mod ports;

pub use ports::{PortLease, PortPool};
