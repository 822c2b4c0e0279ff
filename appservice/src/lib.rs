//! The Matrix side of Switchboard.
//!
//! This crate knows the application-service protocol and the client-server API, and nothing
//! about conversations, responders or remote platforms. It offers three things:
//!
//! - [`registration`]: generating and loading the registration file the homeserver reads;
//! - [`server`]: the HTTP endpoints the homeserver calls (`/_matrix/app/v1/...`), which hand
//!   every transaction to an [`server::EventSink`] and answer only once the sink has recorded it;
//! - [`client`]: a homeserver client that acts as the bot or as any ghost in our namespace
//!   (identity assertion), built from ruma's endpoint types.

pub mod client;
pub mod registration;
pub mod server;
pub mod txn_order;

pub use client::{ClientError, HomeserverClient};
pub use registration::{AppserviceRegistration, RegistrationError};
pub use server::{EventSink, SinkError};

/// Re-exported so that users of this crate compile exactly one ruma.
pub use ruma;
