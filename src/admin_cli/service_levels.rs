//! `switchboard service-levels`: the first-reply report per topic and platform.

use anyhow::anyhow;
use clap::Args;
use switchboard_bridge::{Store, admin_api, service_levels};

use super::table;
use crate::config::ConfigArg;

/// The first-reply report per topic and platform over a window (as
/// `GET /admin/v1/service-levels` answers it).
#[derive(Debug, Args)]
pub struct ServiceLevelsCommand {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Conversations started from this time on (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    /// Default: a week before --to.
    #[arg(long)]
    pub from: Option<String>,
    /// ...and before this time (RFC 3339). Default: now.
    #[arg(long)]
    pub to: Option<String>,
    /// Print the report as JSON, as the admin API answers it.
    #[arg(long)]
    pub json: bool,
}

/// Runs `service-levels`: the report with the configured topics' targets.
pub async fn run_service_levels(
    cmd: ServiceLevelsCommand,
    store: &Store,
    targets: &std::collections::BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    let now = store.clock().now_ms();
    let (from, to) = service_levels::window(cmd.from.as_deref(), cmd.to.as_deref(), now)
        .map_err(|(field, message)| anyhow!("--{field}: {message}"))?;
    let levels = admin_api::service_levels(store, targets, from, to, now).await?;
    if cmd.json {
        println!(
            "{}",
            admin_api::pretty_json(&serde_json::json!({
                "from": service_levels::rfc3339(from),
                "to": service_levels::rfc3339(to),
                "levels": levels,
            }))
        );
        return Ok(());
    }
    println!(
        "Conversations started {} to {} (waits in the answering responder's working hours)",
        service_levels::rfc3339(from),
        service_levels::rfc3339(to)
    );
    let secs = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |s| format!("{s:.0} s"));
    let rows: Vec<[String; 9]> = levels
        .iter()
        .map(|l| {
            [
                l.topic.clone(),
                l.platform.clone(),
                l.target_secs
                    .map_or_else(|| "-".into(), |t| format!("{t} s")),
                l.conversations.to_string(),
                l.answered.to_string(),
                l.met_share
                    .map_or_else(|| "-".into(), |s| format!("{:.0}%", s * 100.0)),
                l.waiting.to_string(),
                secs(l.median_wait_secs),
                secs(l.p90_wait_secs),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            [
                "TOPIC", "PLATFORM", "TARGET", "STARTED", "ANSWERED", "MET", "WAITING", "MEDIAN",
                "P90"
            ],
            &rows
        )
    );
    Ok(())
}
