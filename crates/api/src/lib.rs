//! The NATS API of BotStream: request validation and error codes (§2, §6), the call core and
//! its shell, events (§4) and the hangup-cause rules (§5).

pub mod board;
pub mod cause;
pub mod cpa_configs;
pub mod cpa_run;
pub mod directory;
pub mod error;
pub mod events;
pub mod quota;
pub mod request;
pub mod service;
pub mod shell;
pub mod switch;

pub use switch::{Cidr, InboundRoute, Switch, SwitchConfig};
