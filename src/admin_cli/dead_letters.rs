//! `switchboard dead-letters …`: work set aside because it never succeeded, listed and retried.

use anyhow::Context;
use clap::{Args, Subcommand};
use switchboard_bridge::{Store, admin_api};

use super::{table, utc_timestamp};
use crate::config::ConfigArg;

/// List and retry dead letters: work set aside because it never succeeded.
#[derive(Debug, Args)]
pub struct DeadLettersCommand {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub action: DeadLettersAction,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersAction {
    /// List dead letters, newest first: id, source and row, room, attempts, when, reason.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = admin_api::DEAD_LETTER_LIMIT)]
        limit: i64,
    },
    /// Put a dead letter's work back in its queue (and remove the dead letter). A running
    /// service picks it up at its next safety-net pass, within 2 seconds; the admin API's
    /// retry wakes it at once.
    Retry { id: i64 },
}

/// Runs a `dead-letters` subcommand against the store.
pub async fn run_dead_letters(cmd: DeadLettersCommand, store: &Store) -> anyhow::Result<()> {
    match cmd.action {
        DeadLettersAction::List { limit } => {
            anyhow::ensure!(limit > 0, "--limit must be at least 1");
            let rows: Vec<[String; 6]> = store
                .dead_letters(limit)
                .await?
                .into_iter()
                .map(|d| {
                    [
                        d.id.to_string(),
                        format!("{} {}", d.source, d.source_seq),
                        d.room_id.unwrap_or_else(|| "-".into()),
                        d.attempts.to_string(),
                        utc_timestamp(d.created_at),
                        d.reason.split_whitespace().collect::<Vec<_>>().join(" "),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    [
                        "ID",
                        "SOURCE",
                        "ROOM",
                        "ATTEMPTS",
                        "SET ASIDE (UTC)",
                        "REASON"
                    ],
                    &rows
                )
            );
        }
        DeadLettersAction::Retry { id } => {
            let letter = store
                .retry_dead_letter(id)
                .await?
                .with_context(|| format!("no dead letter {id}"))?;
            println!(
                "retried dead letter {id} ({} {})",
                letter.source, letter.source_seq
            );
            eprintln!("A running service picks it up within 2 seconds.");
        }
    }
    Ok(())
}
