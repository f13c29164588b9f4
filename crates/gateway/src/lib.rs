//! SIP gateways (trunks) and logical gateways: configuration, registration, OPTIONS pings, the
//! choice of a trunk for a call, and their shared store.

pub mod agent;
pub mod config;
pub mod registry;
pub mod store;

pub use config::{GatewayConfig, StoredGateway, Target};
pub use registry::{CallSlot, LogicalGateway, Member, Registry, SelectError, Selected};
pub use store::Store;
