//! The boundary between conversations and the platforms responders use.
//!
//! Each platform (Matrix, Telegram, Discord, email) is one [`Connector`]. The bridge never
//! branches on the platform; it asks the connector, and the connector declares what it can do
//! in [`Capabilities`] instead of being probed by trial.

use async_trait::async_trait;

pub mod matrix;

/// The platforms a responder can be reached on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Matrix,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Matrix => "matrix",
        }
    }
}

/// What a connector can do, declared up front.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// The responder is a member of the conversation room itself, so the homeserver already
    /// delivers every message both ways and the bridge must not relay them.
    pub shares_room: bool,
}

/// A new conversation offered to a responder. Holds nothing that identifies the visitor:
/// no Matrix ID, address or token, only the per-conversation alias.
#[derive(Debug, Clone)]
pub struct Offer {
    pub room_id: String,
    pub topic_name: String,
    pub visitor_alias: String,
}

/// Why a connector could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Worth trying again later (network, rate limit, the remote side is down).
    #[error("temporary failure: {0}")]
    Transient(String),
    /// Will not work however often it is tried (unknown address, refused, invalid).
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// One platform's way to reach responders.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    fn platform(&self) -> Platform;

    fn capabilities(&self) -> Capabilities;

    /// Offers a conversation to the responder at `address` (platform-specific, e.g. a Matrix
    /// user ID). Does network I/O; may be retried, so it must be idempotent.
    async fn offer(&self, offer: &Offer, address: &str) -> Result<(), ConnectorError>;
}
