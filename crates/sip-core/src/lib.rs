//! SIP for BotStream: messages, the RFC 3261 transaction layer, dialogs, digest authentication,
//! SDP offer/answer, and the tokio shell that owns the sockets.
//!
//! Everything but `io` is free of I/O and clocks: time is passed in, output is polled.

pub mod auth;
pub mod dialog;
pub mod guard;
pub mod io;
pub mod msg;
pub mod sdp;
pub mod session_timer;
pub mod transaction;

pub use msg::{Message, Request, Response};
pub use transaction::{Peer, Transport, TxId};
