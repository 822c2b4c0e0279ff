//! Retention and erasure (`[retention]`): the periodic sweep of old closed conversations, and
//! erasing one conversation on request, in the store and on the homeserver.
//!
//! What the store forgets is described in `store/retention.rs`. On the homeserver, a
//! conversation is erased in one of two ways:
//!
//! - with a Synapse administrator's token (`[retention] homeserver_admin_token`): the room is
//!   deleted and purged through Synapse's admin API; nothing of it is left in Synapse's
//!   database (the files it carried stay in the media repository);
//! - without one, through the client-server API as the appservice's bot: every message event
//!   of the room is redacted (the bot created the room, so it holds power level 100 and may
//!   redact anyone's events, the visitor's included), then the bot's ghosts and the bot
//!   leave. The homeserver keeps the redacted events' skeletons (IDs, senders, times) and the
//!   room's state (its name is the topic), as redaction does.
//!
//! The homeserver goes first: if it cannot be reached, the store keeps everything and the
//! erasure can be asked again. A room the bot has already left (so it may no longer read or
//! redact it) is erased from the store anyway, and the answer says the homeserver part was
//! not possible.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use switchboard_appservice::{
    AppserviceRegistration, ClientError, HomeserverClient,
    ruma::{OwnedUserId, RoomId},
};

use crate::{
    Store,
    conversation::ConversationState,
    store::{DeletedRows, EraseError, StoreError},
};

/// `[retention]`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Closed conversations are erased from the store this many days after they closed (a
    /// positive whole number). Unset: kept until erased by hand.
    pub transcript_days: Option<u32>,
    /// A Synapse administrator's access token: with it, an erasure deletes and purges the
    /// room through Synapse's admin API instead of redacting its messages. A secret: give it
    /// as `homeserver_admin_token_file` or `SWITCHBOARD_RETENTION__HOMESERVER_ADMIN_TOKEN`.
    pub homeserver_admin_token: Option<String>,
}

impl std::fmt::Debug for RetentionConfig {
    // Hand-written so the admin token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionConfig")
            .field("transcript_days", &self.transcript_days)
            .field(
                "homeserver_admin_token",
                &self.homeserver_admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl RetentionConfig {
    /// Checks the section; the error names the key.
    pub fn check(&self) -> Result<(), String> {
        if self.transcript_days == Some(0) {
            return Err("retention.transcript_days must be at least 1 (days); leave it out to keep transcripts until erased".into());
        }
        if self
            .homeserver_admin_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(
                "retention.homeserver_admin_token is empty; leave it out to erase by redaction"
                    .into(),
            );
        }
        Ok(())
    }
}

/// How often the sweep runs, and how long after start-up it first does (start-up has the
/// queues to catch up on first).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);
pub const FIRST_SWEEP_AFTER: Duration = Duration::from_secs(60);

/// How long an erasure waits for Synapse to finish purging a room before answering that it
/// is still under way.
const PURGE_WAIT: Duration = Duration::from_secs(60);

/// The reason every redaction of an erasure gives.
pub const REASON: &str = "erased on the operator's request";

/// What happened to the room on the homeserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum HomeserverErasure {
    /// Deleted and purged through Synapse's admin API; `complete` false if Synapse was still
    /// purging when we stopped waiting (it goes on by itself).
    Purged { complete: bool },
    /// Its message events redacted by the bot, and our users gone from it.
    Redacted { events: u64 },
    /// Nothing could be done there (`reason` says why); the store was erased anyway.
    NotPossible { reason: String },
    /// Not asked: erased from the store only (the command line's `--store-only`, or no
    /// homeserver connection).
    NotAsked,
}

/// An erasure's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Erasure {
    pub room_id: String,
    pub homeserver: HomeserverErasure,
    /// Rows deleted from the store, by table.
    pub rows_deleted: DeletedRows,
}

/// Why a conversation was not erased.
#[derive(Debug, thiserror::Error)]
pub enum EraseFailure {
    #[error("no such conversation")]
    NotFound,
    #[error("the conversation is {}, not closed; it can be erased once it has ended", .0.as_str())]
    Open(ConversationState),
    /// The homeserver failed; nothing was deleted from the store.
    #[error("the homeserver failed, nothing was erased: {0}")]
    Homeserver(#[source] ClientError),
    /// A platform's connector failed to remove what it put there (a Matrix relay room); nothing
    /// was deleted from the store.
    #[error("{platform} failed, nothing was erased: {error}")]
    Platform { platform: String, error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<EraseError> for EraseFailure {
    fn from(e: EraseError) -> Self {
        match e {
            EraseError::NotFound => Self::NotFound,
            EraseError::Open(state) => Self::Open(state),
            EraseError::Store(e) => Self::Store(e),
        }
    }
}

/// Erases one conversation, wherever it is kept (what the admin API calls; the bridge
/// implements it, taking the room's lock so no work of the room runs meanwhile).
#[async_trait::async_trait]
pub trait EraseConversation: Send + Sync {
    /// May take as long as the room has messages to redact (one request each), or as Synapse
    /// takes to purge it (at most a minute). Erasing a conversation already erased answers
    /// [`EraseFailure::NotFound`].
    async fn erase_conversation(&self, room_id: &str) -> Result<Erasure, EraseFailure>;
}

/// Erases conversations on the homeserver and in the store.
#[derive(Clone)]
pub struct Eraser {
    client: Arc<HomeserverClient>,
    registration: Arc<AppserviceRegistration>,
    admin_token: Option<Arc<str>>,
}

impl Eraser {
    pub fn new(
        client: Arc<HomeserverClient>,
        registration: Arc<AppserviceRegistration>,
        config: &RetentionConfig,
    ) -> Self {
        Self {
            client,
            registration,
            admin_token: config.homeserver_admin_token.as_deref().map(Arc::from),
        }
    }

    /// Erases the closed conversation in `room_id`: its room on the homeserver first, then
    /// its rows in the store (see the module's description).
    pub async fn erase(&self, store: &Store, room_id: &str) -> Result<Erasure, EraseFailure> {
        let conversation = store
            .conversation(room_id)
            .await?
            .ok_or(EraseFailure::NotFound)?;
        if conversation.state != ConversationState::Closed {
            return Err(EraseFailure::Open(conversation.state));
        }
        // Our users who may be in the room: the ghosts of everyone who held it, and the
        // visitor when it is one of ours (a visitor account, an initiator's ghost).
        let mut ours: Vec<OwnedUserId> = store
            .assignment_history(room_id)
            .await?
            .into_iter()
            .filter_map(|h| h.assignment.ghost_user_id.parse().ok())
            .collect();
        if let Ok(visitor) = conversation.visitor_user_id.parse::<OwnedUserId>()
            && self.registration.owns(&visitor)
        {
            ours.push(visitor);
        }
        ours.sort();
        ours.dedup();
        // Nothing more is written into the room: a notice still queued (the one the visitor
        // ending it queued, say) would land after the redaction and stay readable.
        store
            .cancel_room_posts(room_id, "the conversation is being erased")
            .await?;
        let homeserver = match RoomId::parse(room_id) {
            Ok(room) => self.erase_room(&room, &ours).await?,
            Err(_) => HomeserverErasure::NotPossible {
                reason: "the conversation's ID is not a Matrix room ID".into(),
            },
        };
        let rows_deleted = store.erase_conversation(room_id).await?;
        Ok(Self::report(room_id, homeserver, rows_deleted))
    }

    /// Erases the conversation from the store only (see [`HomeserverErasure::NotAsked`]).
    pub async fn erase_store_only(store: &Store, room_id: &str) -> Result<Erasure, EraseFailure> {
        let rows_deleted = store.erase_conversation(room_id).await?;
        Ok(Self::report(
            room_id,
            HomeserverErasure::NotAsked,
            rows_deleted,
        ))
    }

    fn report(room_id: &str, homeserver: HomeserverErasure, rows_deleted: DeletedRows) -> Erasure {
        tracing::info!(
            room_id,
            rows = rows_deleted.total(),
            tables = %rows_deleted,
            homeserver = ?homeserver,
            "conversation erased"
        );
        Erasure {
            room_id: room_id.to_owned(),
            homeserver,
            rows_deleted,
        }
    }

    async fn erase_room(
        &self,
        room: &RoomId,
        ours: &[OwnedUserId],
    ) -> Result<HomeserverErasure, EraseFailure> {
        if let Some(token) = &self.admin_token {
            let complete = self
                .client
                .synapse_purge_room(room, token, PURGE_WAIT)
                .await
                .map_err(EraseFailure::Homeserver)?;
            return Ok(HomeserverErasure::Purged { complete });
        }
        // Twice: a write into the room the posting loop had taken before the erasure set the
        // room's writes aside (`Eraser::erase`) may land during the first pass.
        let events = match self.client.redact_room_messages(room, REASON).await {
            Ok(n) => {
                n + self
                    .client
                    .redact_room_messages(room, REASON)
                    .await
                    .unwrap_or(0)
            }
            // The bot is not in the room (any more): it can neither read nor redact there.
            Err(ClientError::Matrix {
                status: 403 | 404, ..
            }) => {
                return Ok(HomeserverErasure::NotPossible {
                    reason: "the bot is not in the room; redact its messages with a homeserver administrator's help".into(),
                });
            }
            Err(e) => return Err(EraseFailure::Homeserver(e)),
        };
        // Our users leave; the bot last, as it is the one that could still act in the room.
        for user in ours {
            if let Err(e) = self.client.leave(room, user).await {
                // One that had left already, or never joined: nothing to do.
                tracing::debug!(room_id = %room, error = %e, "a ghost did not leave");
            }
        }
        if let Err(e) = self.client.leave(room, self.client.bot()).await {
            tracing::warn!(room_id = %room, error = %e, "the bot did not leave an erased room");
        }
        Ok(HomeserverErasure::Redacted { events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_is_never_printed_and_zero_days_are_refused() {
        let config = RetentionConfig {
            transcript_days: Some(30),
            homeserver_admin_token: Some("syt_secret".into()),
        };
        assert!(!format!("{config:?}").contains("syt_secret"));
        assert!(config.check().is_ok());
        let zero = RetentionConfig {
            transcript_days: Some(0),
            ..RetentionConfig::default()
        };
        assert!(zero.check().unwrap_err().contains("transcript_days"));
    }
}
