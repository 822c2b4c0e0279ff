//! `switchboard responders …`, `switchboard conversations …` and `switchboard dead-letters …`:
//! the admin API's operations on the command line. They work on the database directly, so they need the configuration (for
//! the database URL) but not a running service. `conversations erase` also talks to the
//! homeserver (as the appservice, from the same configuration and registration), unless told
//! `--store-only`. A running service routes waiting
//! conversations with the change at its next periodic look at the queue (within half a
//! minute); the admin API wakes it at once.

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use switchboard_appservice::{AppserviceRegistration, HomeserverClient, ruma::ServerName};
use switchboard_bridge::{
    Store, admin_api,
    connector::registry,
    conversation::ConversationState,
    responder::{Contact, Responder, ResponderStatus, WeeklyHours},
    retention::{EraseFailure, Eraser},
    routing::validate_responder,
    service_levels,
    store::SOURCE_ADMIN,
};

use crate::config::{Config, ConfigArg};

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Manage the responder register.
#[derive(Debug, Args)]
pub struct RespondersCommand {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub action: RespondersAction,
}

#[derive(Debug, Subcommand)]
pub enum RespondersAction {
    /// Add a responder.
    Add {
        /// Stable identifier: lowercase letters, digits and `._=-`.
        #[arg(long)]
        id: String,
        /// The responder's real name, for operators.
        #[arg(long)]
        display_name: String,
        #[command(flatten)]
        fields: ResponderFlags,
    },
    /// List responders: id, name, status, topics, contacts.
    List,
    /// Show one responder as JSON.
    Show { id: String },
    /// Change a responder: only the fields given change; a list flag replaces the whole list.
    Update {
        id: String,
        #[arg(long)]
        display_name: Option<String>,
        #[command(flatten)]
        fields: ResponderFlags,
    },
    /// Remove a responder from the register (their conversations stay theirs until they end).
    Remove { id: String },
    /// Set whether a responder takes new conversations: available, away or offline.
    Status {
        id: String,
        #[arg(value_parser = parse_status)]
        status: ResponderStatus,
    },
}

/// The fields `add` and `update` share. Repeat a list flag for several values; give it once
/// with an empty value (`--language ''`) to empty the list.
#[derive(Debug, Default, Args)]
pub struct ResponderFlags {
    /// The name visitors see instead of the real one; `''` removes it.
    #[arg(long)]
    pub pseudonym: Option<String>,
    /// A topic answered, e.g. `billing/refunds`, `billing/*` or `*` (repeatable).
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// A language spoken, e.g. `en` (repeatable); none means any.
    #[arg(long = "language", value_name = "LANG")]
    pub languages: Vec<String>,
    /// IANA time zone of the hours, e.g. `Europe/Berlin`.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Working hours: `DAY=HH:MM-HH:MM[,HH:MM-HH:MM…]`, DAY being `mon`…`sun` or a range such
    /// as `mon-fri` (repeatable); `any` for "any time".
    #[arg(long, value_name = "DAYS=INTERVALS")]
    pub hours: Vec<String>,
    /// How many conversations they hold at once at most (1 to 1000).
    #[arg(long, allow_negative_numbers = true)]
    pub max_concurrent: Option<i64>,
    /// Where to reach them, `PLATFORM:ADDRESS`, e.g. `telegram:123456789` or
    /// `matrix:@alice:example.org` (repeatable, most preferred first).
    #[arg(long = "contact", value_name = "PLATFORM:ADDRESS")]
    pub contacts: Vec<String>,
    /// available, away or offline.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<ResponderStatus>,
}

impl ResponderFlags {
    fn is_empty(&self) -> bool {
        self.pseudonym.is_none()
            && self.topics.is_empty()
            && self.languages.is_empty()
            && self.timezone.is_none()
            && self.hours.is_empty()
            && self.max_concurrent.is_none()
            && self.contacts.is_empty()
            && self.status.is_none()
    }

    /// Overwrites the fields given on the command line.
    fn apply_to(self, r: &mut Responder) -> anyhow::Result<()> {
        if let Some(p) = self.pseudonym {
            r.pseudonym = (!p.is_empty()).then_some(p);
        }
        if !self.topics.is_empty() {
            r.topics = list(self.topics);
        }
        if !self.languages.is_empty() {
            r.languages = list(self.languages);
        }
        if let Some(tz) = self.timezone {
            r.timezone = tz;
        }
        if !self.hours.is_empty() {
            r.hours = parse_hours(&self.hours)?;
        }
        if let Some(n) = self.max_concurrent {
            r.max_concurrent = n;
        }
        if !self.contacts.is_empty() {
            r.contacts = list(self.contacts)
                .iter()
                .map(|c| parse_contact(c))
                .collect::<anyhow::Result<_>>()?;
        }
        if let Some(s) = self.status {
            r.status = s;
        }
        Ok(())
    }
}

/// A repeated flag's values; a lone empty value means "none".
fn list(values: Vec<String>) -> Vec<String> {
    values.into_iter().filter(|v| !v.is_empty()).collect()
}

fn parse_status(s: &str) -> Result<ResponderStatus, String> {
    ResponderStatus::parse(s)
        .ok_or_else(|| format!("{s:?} is not a status: use available, away or offline"))
}

/// `telegram:123456789` → platform `telegram`, address `123456789`. Splits at the first colon,
/// so Matrix IDs keep theirs: `matrix:@alice:example.org`.
pub fn parse_contact(s: &str) -> anyhow::Result<Contact> {
    match s.split_once(':') {
        Some((platform, address)) if !platform.is_empty() && !address.is_empty() => Ok(Contact {
            platform: platform.trim().to_ascii_lowercase(),
            address: address.trim().to_owned(),
        }),
        _ => bail!(
            "contacts: {s:?} is not PLATFORM:ADDRESS such as telegram:123456789 or matrix:@alice:example.org"
        ),
    }
}

/// `--hours` values to weekly hours: `mon=09:00-12:00,13:00-17:00`, `mon-fri=09:00-17:00`,
/// `fri-mon=…` (wrapping), or `any` (no hours: any time). A day given twice gets both sets of
/// intervals. The intervals themselves are checked by `validate_responder`, which names the
/// day and position of a bad one.
pub fn parse_hours(specs: &[String]) -> anyhow::Result<WeeklyHours> {
    let mut hours = WeeklyHours::new();
    for spec in specs {
        let spec = spec.trim();
        if spec.eq_ignore_ascii_case("any") {
            continue;
        }
        let Some((days, intervals)) = spec.split_once('=') else {
            bail!(
                "hours: {spec:?} is not DAYS=HH:MM-HH:MM[,…] such as mon-fri=09:00-17:00, or `any`"
            );
        };
        let intervals: Vec<String> = intervals
            .split(',')
            .map(|i| i.trim().to_owned())
            .filter(|i| !i.is_empty())
            .collect();
        if intervals.is_empty() {
            bail!("hours: {spec:?} gives no interval after '='");
        }
        for day in weekdays(days.trim()).ok_or_else(|| {
            anyhow!(
                "hours: {days:?} in {spec:?} is not a day (mon … sun) or a range such as mon-fri"
            )
        })? {
            hours
                .entry(day.to_owned())
                .or_default()
                .extend(intervals.iter().cloned());
        }
    }
    Ok(hours)
}

/// `wed` → [wed]; `mon-fri` → [mon … fri]; `sat-mon` → [sat, sun, mon].
fn weekdays(days: &str) -> Option<Vec<&'static str>> {
    let index = |d: &str| {
        WEEKDAYS
            .iter()
            .position(|w| w.eq_ignore_ascii_case(d.trim()))
    };
    let (first, last) = match days.split_once('-') {
        Some((a, b)) => (index(a)?, index(b)?),
        None => (index(days)?, index(days)?),
    };
    let len = (last + 7 - first) % 7 + 1;
    Some((0..len).map(|i| WEEKDAYS[(first + i) % 7]).collect())
}

fn validated(r: &Responder) -> anyhow::Result<()> {
    // Every registered platform may be named from the command line (the CLI works on the
    // database, whichever platforms the running service has enabled).
    validate_responder(r, &registry::known_names()).map_err(|e| anyhow!("invalid responder: {e}"))
}

async fn existing(store: &Store, id: &str) -> anyhow::Result<Responder> {
    store
        .responder(id)
        .await?
        .with_context(|| format!("no responder {id:?}; see `switchboard responders list`"))
}

/// Runs a `responders` subcommand against the store.
pub async fn run_responders(cmd: RespondersCommand, store: &Store) -> anyhow::Result<()> {
    match cmd.action {
        RespondersAction::Add {
            id,
            display_name,
            fields,
        } => {
            let mut r = admin_api::responder_with_defaults(&id, &display_name);
            fields.apply_to(&mut r)?;
            validated(&r)?;
            if !store.insert_responder(&r, SOURCE_ADMIN).await? {
                bail!(
                    "a responder with id {id:?} already exists; change it with `switchboard responders update {id} …`"
                );
            }
            println!("Added responder {id}.");
        }
        RespondersAction::List => {
            let rows: Vec<[String; 5]> = store
                .list_responders()
                .await?
                .into_iter()
                .map(|r| {
                    let contacts: Vec<String> = r
                        .contacts
                        .iter()
                        .map(|c| format!("{}:{}", c.platform, c.address))
                        .collect();
                    [
                        r.id,
                        r.display_name,
                        r.status.as_str().to_owned(),
                        r.topics.join(","),
                        contacts.join(","),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(["ID", "NAME", "STATUS", "TOPICS", "CONTACTS"], &rows)
            );
        }
        RespondersAction::Show { id } => {
            println!("{}", admin_api::pretty_json(&existing(store, &id).await?));
        }
        RespondersAction::Update {
            id,
            display_name,
            fields,
        } => {
            if display_name.is_none() && fields.is_empty() {
                bail!("nothing to change: give at least one field, e.g. --status away");
            }
            let mut r = existing(store, &id).await?;
            if let Some(name) = display_name {
                r.display_name = name;
            }
            fields.apply_to(&mut r)?;
            validated(&r)?;
            if !store.update_responder(&r).await? {
                bail!("responder {id:?} was removed meanwhile");
            }
            println!("Updated responder {id}.");
        }
        RespondersAction::Remove { id } => {
            if !store.remove_responder(&id).await? {
                bail!("no responder {id:?}; see `switchboard responders list`");
            }
            println!("Removed responder {id}.");
        }
        RespondersAction::Status { id, status } => {
            if !store.set_responder_status(&id, status).await? {
                bail!("no responder {id:?}; see `switchboard responders list`");
            }
            println!("Responder {id} is now {}.", status.as_str());
        }
    }
    Ok(())
}

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

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM` in UTC (the binary has no date crate;
/// this is Howard Hinnant's `civil_from_days`).
fn utc_timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, secs_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hours_take_days_ranges_and_several_intervals() {
        let hours = parse_hours(&strings(&[
            "mon=09:00-12:00,13:00-17:00",
            "tue-thu=10:00-16:00",
            "mon=20:00-22:00",
        ]))
        .unwrap();
        assert_eq!(
            hours["mon"],
            strings(&["09:00-12:00", "13:00-17:00", "20:00-22:00"])
        );
        assert_eq!(
            hours.keys().collect::<Vec<_>>(),
            ["mon", "thu", "tue", "wed"]
        );
        assert_eq!(hours["wed"], strings(&["10:00-16:00"]));
        // A range may wrap past Sunday.
        let weekend = parse_hours(&strings(&["sat-mon=22:00-02:00"])).unwrap();
        assert_eq!(weekend.keys().collect::<Vec<_>>(), ["mon", "sat", "sun"]);
        assert!(parse_hours(&strings(&["any"])).unwrap().is_empty());
    }

    #[test]
    fn malformed_hours_name_the_field() {
        for bad in [
            "monday=09:00-17:00",
            "09:00-17:00",
            "mon=",
            "mon-xyz=09:00-10:00",
        ] {
            let err = parse_hours(&strings(&[bad])).unwrap_err().to_string();
            assert!(err.starts_with("hours: "), "{bad}: {err}");
        }
        // The interval's own shape is left to validate_responder, which names its position.
        let mut r = admin_api::responder_with_defaults("alex", "Alex");
        r.hours = parse_hours(&strings(&["mon=9-17"])).unwrap();
        let err = validated(&r).unwrap_err().to_string();
        assert!(err.contains("hours.mon[0]"), "{err}");
    }

    #[test]
    fn contacts_split_at_the_first_colon() {
        assert_eq!(
            parse_contact("telegram:123456789").unwrap(),
            Contact {
                platform: "telegram".into(),
                address: "123456789".into()
            }
        );
        assert_eq!(
            parse_contact("matrix:@alice:example.org").unwrap(),
            Contact {
                platform: "matrix".into(),
                address: "@alice:example.org".into()
            }
        );
        for bad in ["telegram", ":123", "telegram:", ""] {
            let err = parse_contact(bad).unwrap_err().to_string();
            assert!(err.starts_with("contacts: "), "{bad:?}: {err}");
        }
    }

    #[test]
    fn flags_change_only_what_is_given() {
        let mut r = admin_api::responder_with_defaults("alex", "Alex");
        r.pseudonym = Some("Sam".into());
        r.languages = strings(&["en"]);
        ResponderFlags {
            topics: strings(&["billing/*", "sales"]),
            languages: strings(&[""]),
            max_concurrent: Some(5),
            contacts: strings(&["telegram:42"]),
            ..Default::default()
        }
        .apply_to(&mut r)
        .unwrap();
        assert_eq!(r.pseudonym.as_deref(), Some("Sam"));
        assert_eq!(r.topics, strings(&["billing/*", "sales"]));
        assert!(
            r.languages.is_empty(),
            "a lone empty value empties the list"
        );
        assert_eq!((r.max_concurrent, r.timezone.as_str()), (5, "UTC"));
        assert_eq!(r.contacts[0].address, "42");
        ResponderFlags {
            pseudonym: Some(String::new()),
            ..Default::default()
        }
        .apply_to(&mut r)
        .unwrap();
        assert_eq!(r.pseudonym, None);
    }

    #[test]
    fn an_unknown_platform_is_refused_by_name() {
        let mut r = admin_api::responder_with_defaults("alex", "Alex");
        r.contacts = vec![parse_contact("icq:1").unwrap()];
        let err = validated(&r).unwrap_err().to_string();
        assert!(err.contains("contacts[0].platform"), "{err}");
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
