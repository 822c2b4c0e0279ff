//! What the email connector remembers, kept in the bridge's connector state
//! (`ConnectorState`), so it survives a restart and needs no table of its own:
//!
//! - `thread:TOKEN`: one conversation with one responder, under its reply token (which is
//!   also the offer's handle): the responder's address, the topic and pseudonym its mails are
//!   titled with, and the Message-IDs sent in it, for `In-Reply-To` / `References`; or the
//!   thread of someone who started a conversation by mail ([`Thread::initiator`]), under the
//!   token of its `Reply-To`, which is the conversation's thread in the bridge;
//! - `sent:ID`: the token of the thread a mail of ours belongs to, by the random part of its
//!   Message-ID: a reply that lost its `reply+TOKEN` address (forwarded, "reply to sender")
//!   still names it in `In-Reply-To`, and a bounce names it in its `bounce+ID` address;
//! - `link:TOKEN`: an Accept or Decline link of an offer (see `links.rs`);
//! - `file:KEY`: a file a responder sent, until the bridge fetched it for the visitor.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::compose::MessageId;
use crate::connector::{Attachment, ConnectorError, ConnectorState, FileKind, Platform};

/// Message-IDs a thread keeps: the first and the latest, enough for `References` (which keeps
/// twelve) and for routing a reply to any recent mail.
const KEPT_IDS: usize = 40;

/// One conversation with one responder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    /// The address the offer went to, as the bridge knows it.
    pub address: String,
    pub topic: String,
    pub pseudonym: String,
    /// Message-IDs of the mails in it (with angle brackets), oldest first: ours, and in an
    /// initiator's thread theirs too, so our answers thread under what they wrote.
    pub ids: Vec<String>,
    /// Set for the thread of someone who started a conversation by mail: `address` is
    /// theirs, and what goes to it is an answer, not an offer or a visitor's message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub initiator: bool,
    /// The subject of the mail that started an initiator's thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Thread {
    /// The IDs as the composer takes them (any that do not parse are left out: the store is
    /// ours, but a header is only ever written from an ID of our own shape).
    pub fn earlier(&self) -> Vec<MessageId> {
        self.ids
            .iter()
            .filter_map(|id| MessageId::parse(id))
            .collect()
    }
}

/// A file a responder mailed, held until the bridge fetches it.
#[derive(Debug, Serialize, Deserialize)]
struct HeldFile {
    mimetype: Option<String>,
    filename: String,
    image: bool,
    base64: String,
}

/// The connector's state, over the bridge's store.
#[derive(Clone)]
pub struct Threads {
    state: Arc<dyn ConnectorState>,
    platform: Platform,
}

/// A random token of 128 bits, as 32 lower-case hex digits: fits a local part as it is
/// (`reply+TOKEN@`), survives servers that fold case, and cannot be guessed.
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Threads {
    pub fn new(state: Arc<dyn ConnectorState>, platform: Platform) -> Self {
        Threads { state, platform }
    }

    pub async fn get(&self, token: &str) -> Result<Option<Thread>, ConnectorError> {
        Ok(self
            .state
            .get(self.platform, &format!("thread:{token}"))
            .await?
            .and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// Starts a thread (before its first mail goes out, so a reply is never faster than
    /// what it answers).
    pub async fn start(&self, token: &str, thread: &Thread) -> Result<(), ConnectorError> {
        self.put(token, thread).await
    }

    async fn put(&self, token: &str, thread: &Thread) -> Result<(), ConnectorError> {
        let json = serde_json::to_string(thread).expect("a thread serialises");
        self.state
            .put(self.platform, &format!("thread:{token}"), &json)
            .await
    }

    /// Records a mail of ours as sent in the thread `token`.
    pub async fn sent(&self, token: &str, id: &MessageId) -> Result<(), ConnectorError> {
        self.state
            .put(self.platform, &format!("sent:{}", id.local_part()), token)
            .await?;
        self.add_id(token, id).await
    }

    /// Records an initiator's mail as part of their thread `token`, so our answer threads
    /// under it (a mail already there is not added again).
    pub async fn received(&self, token: &str, id: &MessageId) -> Result<(), ConnectorError> {
        self.add_id(token, id).await
    }

    async fn add_id(&self, token: &str, id: &MessageId) -> Result<(), ConnectorError> {
        let Some(mut thread) = self.get(token).await? else {
            return Ok(());
        };
        if thread.ids.iter().any(|known| known == id.as_str()) {
            return Ok(());
        }
        thread.ids.push(id.as_str().to_owned());
        if thread.ids.len() > KEPT_IDS {
            // The root stays: mail clients thread by it.
            thread.ids.drain(1..thread.ids.len() - (KEPT_IDS - 1));
        }
        self.put(token, &thread).await
    }

    /// The thread a mail of ours belongs to, by the random part of its Message-ID (what a
    /// bounce address carries), or by the whole ID as `In-Reply-To` names it.
    pub async fn token_of_mail(&self, id: &str) -> Result<Option<String>, ConnectorError> {
        let id = id.trim().trim_start_matches('<').trim_end_matches('>');
        let local = id.split_once('@').map_or(id, |(local, _)| local);
        if local.is_empty() || local.len() > 64 {
            return Ok(None);
        }
        self.state
            .get(
                self.platform,
                &format!("sent:{}", local.to_ascii_lowercase()),
            )
            .await
    }

    /// Holds a file a responder sent under `key`, for [`Self::take_file`].
    pub async fn hold_file(
        &self,
        key: &str,
        filename: &str,
        mimetype: &str,
        bytes: &[u8],
    ) -> Result<(), ConnectorError> {
        let held = HeldFile {
            mimetype: Some(mimetype.to_owned()),
            filename: filename.to_owned(),
            image: mimetype.starts_with("image/"),
            base64: BASE64.encode(bytes),
        };
        let json = serde_json::to_string(&held).expect("a file serialises");
        self.state
            .put(self.platform, &format!("file:{key}"), &json)
            .await
    }

    /// A held file. Kept after it is read: the bridge may fetch it again after a crash.
    pub async fn file(&self, key: &str) -> Result<Attachment, ConnectorError> {
        let json = self
            .state
            .get(self.platform, &format!("file:{key}"))
            .await?
            .ok_or_else(|| ConnectorError::Permanent(format!("no file {key} is held")))?;
        let held: HeldFile = serde_json::from_str(&json)
            .map_err(|e| ConnectorError::Permanent(format!("held file {key}: {e}")))?;
        let bytes = BASE64
            .decode(held.base64)
            .map_err(|e| ConnectorError::Permanent(format!("held file {key}: {e}")))?;
        Ok(Attachment {
            bytes,
            mimetype: held.mimetype,
            filename: held.filename,
            kind: if held.image {
                FileKind::Image
            } else {
                FileKind::File
            },
        })
    }

    pub fn state(&self) -> &Arc<dyn ConnectorState> {
        &self.state
    }

    pub fn platform(&self) -> Platform {
        self.platform
    }
}
