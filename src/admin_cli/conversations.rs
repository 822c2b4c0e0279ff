//! `switchboard conversations …`: reading conversations and transcripts, and erasing them
//! (on the homeserver too, unless told `--store-only`).

use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use switchboard_appservice::{AppserviceRegistration, HomeserverClient, ruma::ServerName};
use switchboard_bridge::{
    Store, admin_api,
    conversation::ConversationState,
    retention::{EraseFailure, Eraser},
};

use super::{table, utc_timestamp};
use crate::config::{Config, ConfigArg};

/// Read conversations and their transcripts.
#[derive(Debug, Args)]
pub struct ConversationsCommand {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub action: ConversationsAction,
}

#[derive(Debug, Subcommand)]
pub enum ConversationsAction {
    /// List conversations, oldest first (without visitors' Matrix IDs).
    List {
        /// Only those in this state: queued, offered, active, transferring or closed.
        #[arg(long, value_parser = parse_state)]
        state: Option<ConversationState>,
    },
    /// Show a conversation with its assignments and transcript, as JSON.
    Show { room_id: String },
    /// Stop the person who started this conversation from a platform (Telegram, …) from
    /// starting more, without learning who they are.
    BlockInitiator { room_id: String },
    /// Lift such a block.
    UnblockInitiator { room_id: String },
    /// Erase a closed conversation: its room's messages on the homeserver (purged with
    /// `[retention] homeserver_admin_token`, else redacted by the bot, which then leaves),
    /// then everything Switchboard's database holds about it. Prints what was done, as JSON.
    Erase {
        room_id: String,
        /// Erase only Switchboard's database, without contacting the homeserver (the room's
        /// messages stay there).
        #[arg(long)]
        store_only: bool,
    },
}

fn parse_state(s: &str) -> Result<ConversationState, String> {
    s.parse().map_err(|()| {
        format!("{s:?} is not a state: use queued, offered, active, transferring or closed")
    })
}

/// Runs a `conversations` subcommand against the store (and, to erase, the homeserver).
pub async fn run_conversations(
    cmd: ConversationsCommand,
    store: &Store,
    config: &Config,
) -> anyhow::Result<()> {
    match cmd.action {
        ConversationsAction::List { state } => {
            let rows: Vec<[String; 5]> = admin_api::conversation_summaries(store, state)
                .await?
                .into_iter()
                .map(|c| {
                    [
                        c.room_id,
                        c.topic,
                        c.state.as_str().to_owned(),
                        c.visitor_alias,
                        utc_timestamp(c.created_at),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    ["ROOM", "TOPIC", "STATE", "VISITOR", "CREATED (UTC)"],
                    &rows
                )
            );
        }
        ConversationsAction::Show { room_id } => {
            let detail = admin_api::conversation_detail(store, &room_id)
                .await?
                .with_context(|| format!("no conversation in room {room_id:?}"))?;
            println!("{}", admin_api::pretty_json(&detail));
        }
        ConversationsAction::BlockInitiator { room_id } => {
            let changed = set_initiator_block(store, &room_id, true).await?;
            println!(
                "{}",
                if changed {
                    "blocked"
                } else {
                    "already blocked"
                }
            );
        }
        ConversationsAction::UnblockInitiator { room_id } => {
            let changed = set_initiator_block(store, &room_id, false).await?;
            println!(
                "{}",
                if changed {
                    "unblocked"
                } else {
                    "was not blocked"
                }
            );
        }
        ConversationsAction::Erase {
            room_id,
            store_only,
        } => {
            let erased = if store_only {
                Eraser::erase_store_only(store, &room_id).await
            } else {
                homeserver_eraser(config)
                    .await
                    .context("the homeserver is needed to erase the room there; with --store-only, only Switchboard's database is erased")?
                    .erase(store, &room_id)
                    .await
            };
            let erasure = erased.map_err(|e| match e {
                EraseFailure::NotFound => {
                    anyhow!("no conversation in room {room_id:?} (erased already?)")
                }
                EraseFailure::Open(_) => anyhow!("{e}: the visitor or the responder ends it"),
                EraseFailure::Homeserver(_) | EraseFailure::Platform { .. } => anyhow!(
                    "{e}; try again, or with --store-only to erase only Switchboard's database"
                ),
                EraseFailure::Store(e) => e.into(),
            })?;
            println!("{}", admin_api::pretty_json(&erasure));
            if store_only {
                eprintln!(
                    "Erased from Switchboard's database only: the room's messages are still on the homeserver."
                );
            }
        }
    }
    Ok(())
}

/// The appservice's connection to the homeserver, as the service makes it (one try: an
/// operator at a prompt is told at once), for erasing rooms there.
async fn homeserver_eraser(config: &Config) -> anyhow::Result<Eraser> {
    let registration = Arc::new(
        AppserviceRegistration::load(&config.appservice.registration)
            .context("loading the appservice registration")?,
    );
    let server_name = ServerName::parse(&config.homeserver.server_name)
        .context("homeserver.server_name is not a valid server name")?;
    let bot = registration.bot_user_id(&server_name)?;
    let client =
        HomeserverClient::connect(&config.homeserver.url, &registration.inner.as_token, bot)
            .await
            .context("connecting to the homeserver")?;
    Ok(Eraser::new(
        Arc::new(client),
        registration,
        &config.retention,
    ))
}

/// Blocks or unblocks the initiator of `room_id`; whether that changed anything.
async fn set_initiator_block(store: &Store, room_id: &str, block: bool) -> anyhow::Result<bool> {
    admin_api::set_initiator_block(store, room_id, block)
        .await?
        .with_context(|| format!("no conversation started from a platform in room {room_id:?}"))
}
