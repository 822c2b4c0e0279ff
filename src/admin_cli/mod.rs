//! `switchboard responders …`, `conversations …`, `dead-letters …` and `service-levels`: the
//! admin API's operations on the command line, one module each. They work on the database
//! directly, so they need the configuration (for the database URL) but not a running service.
//! `conversations erase` also talks to the homeserver (as the appservice, from the same
//! configuration and registration), unless told `--store-only`. A running service routes
//! waiting conversations with the change at its next periodic look at the queue (within half a
//! minute); the admin API wakes it at once.

mod conversations;
mod dead_letters;
mod responders;
mod service_levels;

pub use conversations::{ConversationsCommand, run_conversations};
pub use dead_letters::{DeadLettersCommand, run_dead_letters};
pub use responders::{RespondersCommand, run_responders};
pub use service_levels::{ServiceLevelsCommand, run_service_levels};

/// Left-aligned columns, two spaces apart.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(std::array::from_fn(|i| row[i].as_str())));
    }
    out
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM` in UTC; the number itself if it is
/// beyond chrono's dates.
fn utc_timestamp(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(at) => at.format("%Y-%m-%d %H:%M").to_string(),
        None => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Subcommand;
    use responders::RespondersAction;
    use switchboard_bridge::responder::ResponderStatus;

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn clap_accepts_the_documented_invocations() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Command,
        }
        #[derive(Subcommand)]
        enum Command {
            Responders(RespondersCommand),
            Conversations(ConversationsCommand),
            DeadLetters(DeadLettersCommand),
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("switchboard").chain(args.iter().copied()))
        };
        let cli = parse(&[
            "responders",
            "add",
            "--id",
            "alex",
            "--display-name",
            "Alex",
            "--topic",
            "billing/*",
            "--topic",
            "sales",
            "--hours",
            "mon-fri=09:00-17:00",
            "--max-concurrent",
            "-1",
            "--contact",
            "telegram:123",
            "--status",
            "away",
            "--config",
            "x.toml",
        ])
        .unwrap();
        let Command::Responders(RespondersCommand {
            config,
            action: RespondersAction::Add { id, fields, .. },
        }) = cli.command
        else {
            panic!("not responders add");
        };
        assert_eq!(
            (config.path, id.as_str()),
            (std::path::PathBuf::from("x.toml"), "alex")
        );
        assert_eq!(fields.topics, strings(&["billing/*", "sales"]));
        assert_eq!(fields.max_concurrent, Some(-1));
        assert_eq!(fields.status, Some(ResponderStatus::Away));
        assert!(parse(&["responders", "status", "alex", "away"]).is_ok());
        assert!(parse(&["responders", "status", "alex", "asleep"]).is_err());
        assert!(
            parse(&[
                "responders",
                "update",
                "alex",
                "--timezone",
                "Europe/Berlin"
            ])
            .is_ok()
        );
        assert!(parse(&["conversations", "list", "--state", "transferring"]).is_ok());
        assert!(parse(&["conversations", "list", "--state", "open"]).is_err());
        assert!(parse(&["conversations", "show", "!room:example.org"]).is_ok());
        assert!(parse(&["dead-letters", "list"]).is_ok());
        assert!(parse(&["dead-letters", "list", "--limit", "5"]).is_ok());
        assert!(parse(&["dead-letters", "retry", "7", "--config", "x.toml"]).is_ok());
        assert!(parse(&["dead-letters", "retry", "seven"]).is_err());
    }

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01 00:00");
        assert_eq!(utc_timestamp(1_700_000_000_000), "2023-11-14 22:13");
        assert_eq!(utc_timestamp(951_782_400_000), "2000-02-29 00:00");
        assert_eq!(utc_timestamp(-1), "1969-12-31 23:59");
        assert_eq!(utc_timestamp(i64::MAX), i64::MAX.to_string());
    }

    #[test]
    fn tables_align_columns() {
        let rows = [["alex".to_owned(), "Alex Example".to_owned()]];
        assert_eq!(
            table(["ID", "NAME"], &rows),
            "ID    NAME\nalex  Alex Example\n"
        );
    }
}
