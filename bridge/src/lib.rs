//! Switchboard's conversation logic: conversations (one per Matrix room), the store, the
//! visitor API, and the connectors that reach responders on their platforms.
//!
//! Depends on `switchboard-appservice` for everything Matrix; never the other way round.

pub mod admin_api;
pub mod bridge;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connector;
pub mod conversation;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod media_links;
pub mod metrics;
pub mod openapi;
pub mod responder;
pub mod retention;
pub mod routing;
pub mod service_levels;
pub mod store;
pub mod visitor_account;
pub mod visitor_api;
pub mod visitor_proxy;

pub use bridge::{Bridge, VisitorError};
pub use store::{Store, StoreError};
