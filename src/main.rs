//! `switchboard`: the binary's command line. Sets up logging, parses the command and runs it:
//! the operators' commands here and in `admin_cli/` and `check_config.rs`, the service
//! (`switchboard run`, which wires the Matrix side, `switchboard-appservice`, to the
//! conversation logic, `switchboard-bridge`) in `service.rs`.

mod admin_cli;
mod check_config;
mod config;
mod service;
mod web;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_appservice::{AppserviceRegistration, registration::GenerateOptions};
use switchboard_bridge::{Store, connector::registry};

/// What `--version` prints and the start-up log names: the package version and the commit the
/// binary was built from (set by build.rs), so a report can say exactly which build it tried.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SWITCHBOARD_BUILD_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(name = "switchboard", version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write an appservice registration with fresh random tokens.
    GenerateRegistration {
        /// The appservice ID the homeserver knows us by.
        #[arg(long, default_value = "switchboard")]
        id: String,
        /// The URL the homeserver reaches Switchboard at.
        #[arg(long)]
        url: String,
        /// Localpart of the bot user.
        #[arg(long, default_value = "switchboard")]
        bot_localpart: String,
        /// Localpart prefix of the ghost users that stand for responders.
        #[arg(long, default_value = "_switchboard_")]
        ghost_prefix: String,
        /// Where to write it; `-` for standard output.
        #[arg(long, default_value = "registration.yaml")]
        output: PathBuf,
    },
    /// Issue a one-time code with which a responder links their platform account themselves
    /// (Telegram: they send the bot `/start CODE`). Valid for 24 hours.
    LinkCode {
        #[command(flatten)]
        config: config::ConfigArg,
        /// The responder's `id` from `[[responders]]`.
        #[arg(long)]
        responder: String,
        /// The platform they link (one whose bot takes `/start CODE`, e.g. `telegram`).
        /// Required: no platform is assumed.
        #[arg(long)]
        platform: Option<String>,
    },
    /// Manage the responder register (add, list, show, update, remove, status).
    Responders(admin_cli::RespondersCommand),
    /// List conversations and show their transcripts.
    Conversations(admin_cli::ConversationsCommand),
    /// List work set aside because it never succeeded, and retry it.
    DeadLetters(admin_cli::DeadLettersCommand),
    /// How long visitors waited for a first reply, per topic and platform, against each
    /// topic's target.
    ServiceLevels(admin_cli::ServiceLevelsCommand),
    /// Check the configuration, the registration, and that the homeserver, the database
    /// and each enabled platform accept what it gives them, without starting anything.
    /// One line per check; exits non-zero if any failed.
    CheckConfig {
        #[command(flatten)]
        config: config::ConfigArg,
        /// How long each check that connects somewhere may take, in seconds.
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Print the OpenAPI 3.1 document of the admin API or the visitor API (the one the
    /// running service serves at /admin/v1/openapi.json and /api/v1/openapi.json), for code
    /// generators and API browsers. Needs no configuration.
    Openapi {
        #[arg(value_enum)]
        api: Api,
    },
    /// Run the service.
    Run {
        #[command(flatten)]
        config: config::ConfigArg,
    },
}

/// An HTTP API Switchboard describes with an OpenAPI document.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Api {
    /// The operators' API (`/admin/v1/…`).
    Admin,
    /// The chat widget's API (`/api/v1/…`).
    Visitor,
}

/// Logs to standard output, filtered by `RUST_LOG` (default `info,sqlx=warn`), as text or,
/// with `SWITCHBOARD_LOG_FORMAT=json`, one JSON object a line for a log collector (each with
/// its level, target, fields and the span it was written in).
fn init_logging() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    match std::env::var("SWITCHBOARD_LOG_FORMAT").as_deref() {
        // Colours only on a terminal: a log file or a journal would keep the escape codes.
        Err(_) | Ok("text") => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter)
            .init(),
        Ok("json") => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .init(),
        Ok(other) => {
            anyhow::bail!(
                "SWITCHBOARD_LOG_FORMAT={other:?}: use \"text\" (the default) or \"json\""
            )
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    init_logging()?;
    let cli = Cli::parse();
    match cli.command {
        Command::GenerateRegistration {
            id,
            url,
            bot_localpart,
            ghost_prefix,
            output,
        } => {
            let registration = AppserviceRegistration::generate(&GenerateOptions {
                id: &id,
                url: &url,
                bot_localpart: &bot_localpart,
                ghost_prefix: &ghost_prefix,
            });
            let yaml = registration.to_yaml()?;
            if output.as_os_str() == "-" {
                print!("{yaml}");
            } else {
                std::fs::write(&output, yaml)
                    .with_context(|| format!("writing {}", output.display()))?;
                eprintln!(
                    "wrote {}; list it under app_service_config_files in homeserver.yaml",
                    output.display()
                );
            }
            Ok(())
        }
        Command::LinkCode {
            config,
            responder,
            platform,
        } => {
            let linking = registry::PLATFORMS
                .iter()
                .filter(|p| p.links_by_code)
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ");
            let platform = platform.with_context(|| {
                format!(
                    "--platform is required: the platform the responder links, one of: {linking}"
                )
            })?;
            let spec = registry::lookup(&platform).map_err(|e| anyhow::anyhow!(e))?;
            anyhow::ensure!(
                spec.links_by_code,
                "platform {platform:?}: link codes are for platforms with a bot to send them to ({linking})"
            );
            let config = config.load()?;
            let seeded = config.responders.iter().any(|r| r.id == responder);
            with_store(&config, |store| async move {
                anyhow::ensure!(
                    seeded || store.responder(&responder).await?.is_some(),
                    "no responder {responder:?} in the register or in [[responders]] of the configuration"
                );
                let code = new_link_code();
                store.create_link_code(&code, &responder, &platform).await?;
                println!("{code}");
                eprintln!(
                    "Give this to {responder}: they send the bot `/start {code}` (valid 24 hours, once)."
                );
                Ok(())
            })
        }
        Command::Responders(cmd) => {
            let config = cmd.config.load()?;
            with_store(&config, |store| async move {
                admin_cli::run_responders(cmd, &store).await
            })
        }
        Command::Conversations(cmd) => {
            let config = cmd.config.load()?;
            let config_ref = &config;
            with_store(config_ref, |store| async move {
                admin_cli::run_conversations(cmd, &store, config_ref).await
            })
        }
        Command::DeadLetters(cmd) => {
            let config = cmd.config.load()?;
            with_store(&config, |store| async move {
                admin_cli::run_dead_letters(cmd, &store).await
            })
        }
        Command::ServiceLevels(cmd) => {
            let config = cmd.config.load()?;
            let targets = config.first_reply_targets();
            with_store(&config, |store| async move {
                admin_cli::run_service_levels(cmd, &store, &targets).await
            })
        }
        Command::Openapi { api } => {
            let document = match api {
                Api::Admin => switchboard_bridge::admin_api::openapi(),
                Api::Visitor => switchboard_bridge::visitor_api::openapi(),
            };
            println!("{}", document.to_pretty_json()?);
            Ok(())
        }
        Command::CheckConfig { config, timeout } => {
            let report = tokio::runtime::Runtime::new()?
                .block_on(check_config::check(&config, Duration::from_secs(timeout)));
            let failed = report.failed();
            anyhow::ensure!(
                failed == 0,
                "{failed} check{} failed",
                if failed == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Command::Run { config } => {
            // First, before anything can fail, so every log of a run names its build.
            tracing::info!(version = VERSION, "switchboard starting");
            let config = config.load()?;
            tokio::runtime::Runtime::new()?.block_on(service::run(config))
        }
    }
}

/// Runs one CLI command against the configured database.
fn with_store<F, Fut>(config: &config::Config, f: F) -> anyhow::Result<()>
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    tokio::runtime::Runtime::new()?.block_on(async {
        let store = Store::connect(&config.database.url)
            .await
            .context("opening the database")?;
        let result = f(store.clone()).await;
        store.close().await;
        result
    })
}

/// Ten characters from an alphabet without look-alikes (no 0/O, 1/I/L): easy to type on a phone.
fn new_link_code() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..10)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The configuration file a parsed command reads, if it reads one.
    fn config_of(command: &Command) -> Option<&std::path::Path> {
        match command {
            Command::GenerateRegistration { .. } | Command::Openapi { .. } => None,
            Command::LinkCode { config, .. }
            | Command::Run { config }
            | Command::CheckConfig { config, .. } => Some(&config.path),
            Command::Responders(cmd) => Some(&cmd.config.path),
            Command::Conversations(cmd) => Some(&cmd.config.path),
            Command::DeadLetters(cmd) => Some(&cmd.config.path),
            Command::ServiceLevels(cmd) => Some(&cmd.config.path),
        }
    }

    #[test]
    fn every_command_that_reads_the_configuration_takes_config_the_same_way() {
        Cli::command().debug_assert();
        let commands: [&[&str]; 8] = [
            &["run"],
            &["check-config"],
            &["link-code", "--responder", "alex"],
            &["responders", "list"],
            &["conversations", "list"],
            &["dead-letters", "list"],
            &["service-levels"],
            // Before the subcommand's own subcommand, too.
            &["responders", "-c", "x.toml", "list"],
        ];
        for args in commands {
            for flag in ["--config", "-c"] {
                let argv = std::iter::once("switchboard")
                    .chain(args.iter().copied())
                    .chain([flag, "x.toml"]);
                let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                assert_eq!(
                    config_of(&cli.command),
                    Some(std::path::Path::new("x.toml")),
                    "{args:?} {flag}"
                );
            }
        }
    }
}
