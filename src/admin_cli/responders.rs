//! `switchboard responders …`: the responder register, with the hours and contacts written the
//! way the command line takes them.

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use switchboard_bridge::{
    Store, admin_api,
    connector::registry,
    responder::{Contact, Responder, ResponderStatus, WeeklyHours},
    routing::validate_responder,
    store::SOURCE_ADMIN,
};

use super::table;
use crate::config::ConfigArg;

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
}
