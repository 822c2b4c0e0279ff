//! The `[email]` section of the configuration file; without it email is off.
//!
//! ```toml
//! [email]
//! domain = "mail.example.org"          # reply+TOKEN@ and bounce+ID@ addresses live here
//! from_address = "support@example.org"
//! batch_window_secs = 5                # visitor lines this close together go out as one mail
//! max_attachment_bytes = 10485760      # files one mail carries, before base64
//! initiators = false                   # true: a mail from anyone else starts a conversation
//! topic_addresses = { billing = "billing@example.org" }   # optional, one address per topic
//!
//! [email.smtp]
//! host = "smtp.example.org"
//! port = 587
//! security = "starttls"                # "none" | "starttls" | "tls"
//! username = "support@example.org"     # optional: no AUTH without it
//! password = "..."                     # or SWITCHBOARD_EMAIL_SMTP_PASSWORD
//!
//! [email.imap]                         # one way mail comes in; at least one of the three
//! host = "imap.example.org"
//! port = 993
//! security = "tls"
//! username = "support@example.org"
//! password = "..."                     # or SWITCHBOARD_EMAIL_IMAP_PASSWORD
//! mailbox = "INBOX"
//!
//! [email.listener]                     # optional: an SMTP server of our own for the MX
//! address = "127.0.0.1:2525"           # (or a relay) to deliver to; answers 250 once recorded
//! max_message_bytes = 26214400
//!
//! [email.http]                         # optional: POST /email/v1/inbound takes a raw mail
//! token = "..."                        # or SWITCHBOARD_EMAIL_HTTP_TOKEN (Bearer)
//!
//! [email.authentication]               # SPF, DKIM, DMARC of replies
//! nameservers = ["127.0.0.1:53"]       # default: the system's resolver
//! strict = false                       # true: refuse a DMARC failure even under p=none
//!
//! [email.dkim]                         # optional
//! selector = "sb2026"
//! key_file = "/etc/switchboard/dkim.pem"
//! algorithm = "rsa"                    # "rsa" (PKCS#1 PEM) | "ed25519" (base64 seed)
//! ```
//!
//! The section is read field by field rather than by serde, so that every error names the
//! field at fault with its full path (`email.smtp.port`), which serde's messages do not, and
//! never quotes a password's value. Unknown fields are refused: a misspelt optional field
//! would otherwise fall back to its default without a word.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::compose::{ComposeError, Composer, ComposerConfig, DkimAlgorithm, DkimKey};

/// The environment variable that overrides `email.smtp.password`.
pub const SMTP_PASSWORD_ENV: &str = "SWITCHBOARD_EMAIL_SMTP_PASSWORD";
/// The environment variable that overrides `email.imap.password`.
pub const IMAP_PASSWORD_ENV: &str = "SWITCHBOARD_EMAIL_IMAP_PASSWORD";
/// The environment variable that overrides `email.http.token`.
pub const HTTP_TOKEN_ENV: &str = "SWITCHBOARD_EMAIL_HTTP_TOKEN";
/// The shortest HTTP token accepted: it is all that guards the endpoint.
const MIN_HTTP_TOKEN_CHARS: usize = 24;
const DEFAULT_MAX_MESSAGE_BYTES: usize = 25 * 1024 * 1024;

const DEFAULT_BATCH_WINDOW_SECS: u64 = 5;
/// Longest batch window accepted: a visitor's first line should not wait longer than this.
const MAX_BATCH_WINDOW_SECS: u64 = 300;
const DEFAULT_MAX_ATTACHMENT_BYTES: usize = 10 * 1024 * 1024;
const DEFAULT_MAILBOX: &str = "INBOX";

/// The `[email]` section, read and checked.
#[derive(Clone)]
pub struct EmailConfig {
    /// Our mail domain: Message-IDs, `reply+TOKEN@` and `bounce+ID@` addresses.
    pub domain: String,
    /// Whether a mail from someone who is not a responder starts a conversation (issue 14):
    /// its topic is the one its address names (`support+TOPIC@domain`, or
    /// [`Self::topic_addresses`]), else they are asked by mail.
    pub initiators: bool,
    /// (topic ID, address): a mail to the address is about that topic. Lower-cased.
    pub topic_addresses: Vec<(String, String)>,
    /// The address our mails come from.
    pub from_address: String,
    pub smtp: SmtpSettings,
    /// The mailbox replies are read from, if mail comes in that way.
    pub imap: Option<ImapSettings>,
    /// Our own SMTP server, if mail is delivered to it.
    pub listener: Option<ListenerSettings>,
    /// The bearer token of `POST /email/v1/inbound`, if mail is posted there.
    pub http_token: Option<Secret>,
    pub authentication: AuthenticationSettings,
    /// The signing key, read from `dkim.key_file` at start-up.
    pub dkim: Option<DkimKey>,
    /// Visitor lines written within this window go out as one mail.
    pub batch_window: Duration,
    /// Most bytes of files one mail carries.
    pub max_attachment_bytes: usize,
}

/// How to reach the SMTP server our mails leave through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// For SMTP AUTH; `None` sends without authenticating (a relay that trusts our address).
    pub credentials: Option<Login>,
}

/// How to reach the IMAP mailbox replies arrive in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub login: Login,
    /// The mailbox watched for replies and bounces.
    pub mailbox: String,
}

/// A username and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: Secret,
}

/// A password: its `Debug` prints nothing of it, so it cannot reach a log with its settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The password itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[email.listener]`.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub address: std::net::SocketAddr,
    pub max_message_bytes: usize,
}

/// `[email.authentication]`.
#[derive(Debug, Clone, Default)]
pub struct AuthenticationSettings {
    /// Empty: the system's resolver.
    pub nameservers: Vec<std::net::SocketAddr>,
    pub strict: bool,
}

/// How a connection to a mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain text throughout: for a relay on the same host or a test server only.
    None,
    /// Plain connection upgraded with STARTTLS, which is required (a server that does not
    /// offer it is refused before any password is sent).
    StartTls,
    /// TLS from the first byte (SMTP submissions on 465, IMAPS on 993).
    Tls,
}

impl Security {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Security::None),
            "starttls" => Some(Security::StartTls),
            "tls" => Some(Security::Tls),
            _ => None,
        }
    }
}

impl std::fmt::Debug for EmailConfig {
    // Not derived in spirit: every field here is safe to print (passwords are `Secret`, the
    // DKIM key's own `Debug` leaves out the key), but writing it out keeps that a decision.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("domain", &self.domain)
            .field("from_address", &self.from_address)
            .field("smtp", &self.smtp)
            .field("imap", &self.imap)
            .field("listener", &self.listener)
            .field(
                "http_token",
                &self.http_token.as_ref().map(|_| "<redacted>"),
            )
            .field("authentication", &self.authentication)
            .field("dkim", &self.dkim)
            .field("batch_window", &self.batch_window)
            .field("max_attachment_bytes", &self.max_attachment_bytes)
            .field("initiators", &self.initiators)
            .field("topic_addresses", &self.topic_addresses)
            .finish()
    }
}

impl EmailConfig {
    /// Reads the section, the passwords overridden by [`SMTP_PASSWORD_ENV`] and
    /// [`IMAP_PASSWORD_ENV`] when those are set, and reads the DKIM key file. The error names
    /// the field (`email.smtp.host is missing`), never a password's value.
    pub fn read(section: &Value) -> Result<Self, String> {
        Self::read_with_env(section, |name| std::env::var(name).ok())
    }

    /// [`read`](Self::read) with the environment given as a function (tests cannot set
    /// variables: `set_var` is unsafe, and unsafe code is forbidden here).
    pub fn read_with_env(
        section: &Value,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let email = Table::new("email", section)?;
        email.only(&[
            "domain",
            "from_address",
            "smtp",
            "imap",
            "listener",
            "http",
            "authentication",
            "dkim",
            "batch_window_secs",
            "max_attachment_bytes",
            "initiators",
            "topic_addresses",
        ])?;
        let domain = email.required_string("domain")?;
        let from_address = email.required_string("from_address")?;

        let smtp = email.required_table("smtp")?;
        smtp.only(&["host", "port", "security", "username", "password"])?;
        let smtp = SmtpSettings {
            host: smtp.required_string("host")?,
            port: smtp.required_port("port")?,
            security: smtp.required_security("security")?,
            credentials: optional_login(&smtp, env(SMTP_PASSWORD_ENV), SMTP_PASSWORD_ENV)?,
        };

        let imap = match email.table("imap")? {
            None => None,
            Some(imap) => {
                imap.only(&[
                    "host", "port", "security", "username", "password", "mailbox",
                ])?;
                Some(ImapSettings {
                    host: imap.required_string("host")?,
                    port: imap.required_port("port")?,
                    security: imap.required_security("security")?,
                    login: optional_login(&imap, env(IMAP_PASSWORD_ENV), IMAP_PASSWORD_ENV)?
                        .ok_or_else(|| imap.missing("username"))?,
                    mailbox: imap
                        .string("mailbox")?
                        .unwrap_or_else(|| DEFAULT_MAILBOX.to_owned()),
                })
            }
        };
        let listener = match email.table("listener")? {
            None => None,
            Some(listener) => {
                listener.only(&["address", "max_message_bytes"])?;
                let address = listener.required_string("address")?;
                Some(ListenerSettings {
                    address: address.parse().map_err(|_| {
                        format!(
                            "{} {address:?} is not an IP address and port like 127.0.0.1:2525",
                            listener.name("address")
                        )
                    })?,
                    max_message_bytes: match listener.integer("max_message_bytes")? {
                        None => DEFAULT_MAX_MESSAGE_BYTES,
                        Some(n) => usize::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                            format!("{} must be above 0", listener.name("max_message_bytes"))
                        })?,
                    },
                })
            }
        };
        let http_token = match email.table("http")? {
            None => None,
            Some(http) => {
                http.only(&["token"])?;
                let token = env(HTTP_TOKEN_ENV)
                    .filter(|t| !t.is_empty())
                    .or(http.string("token")?)
                    .ok_or_else(|| format!("{} (or {HTTP_TOKEN_ENV})", http.missing("token")))?;
                if token.chars().count() < MIN_HTTP_TOKEN_CHARS {
                    return Err(format!(
                        "{} must be at least {MIN_HTTP_TOKEN_CHARS} characters: it is all that \
                         guards the endpoint",
                        http.name("token")
                    ));
                }
                Some(Secret(token))
            }
        };
        if imap.is_none() && listener.is_none() && http_token.is_none() {
            return Err(
                "email: no way for replies to come in: configure email.imap, \
                        email.listener or email.http"
                    .into(),
            );
        }
        let authentication = match email.table("authentication")? {
            None => AuthenticationSettings::default(),
            Some(auth) => {
                auth.only(&["nameservers", "strict"])?;
                let nameservers = match auth.fields.get("nameservers") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(list)) => list
                        .iter()
                        .map(|v| {
                            v.as_str().and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
                                format!(
                                    "{} must list IP addresses with ports, like \"127.0.0.1:53\"",
                                    auth.name("nameservers")
                                )
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => {
                        return Err(format!("{} must be a list", auth.name("nameservers")));
                    }
                };
                let strict = auth.boolean("strict")?.unwrap_or(false);
                AuthenticationSettings {
                    nameservers,
                    strict,
                }
            }
        };

        let dkim = match email.table("dkim")? {
            None => None,
            Some(dkim) => Some(read_dkim(&dkim, &from_address)?),
        };

        let batch_window_secs = email
            .integer("batch_window_secs")?
            .unwrap_or(DEFAULT_BATCH_WINDOW_SECS);
        if batch_window_secs > MAX_BATCH_WINDOW_SECS {
            return Err(format!(
                "email.batch_window_secs must be at most {MAX_BATCH_WINDOW_SECS} (a visitor's \
                 line would wait that long before it is sent)"
            ));
        }
        let max_attachment_bytes = match email.integer("max_attachment_bytes")? {
            None => DEFAULT_MAX_ATTACHMENT_BYTES,
            Some(n) => usize::try_from(n)
                .map_err(|_| "email.max_attachment_bytes is too large".to_owned())?,
        };

        let initiators = email.boolean("initiators")?.unwrap_or(false);
        let topic_addresses = match email.table("topic_addresses")? {
            None => Vec::new(),
            Some(table) => table
                .fields
                .keys()
                .map(|topic| {
                    let address = table.required_string(topic)?;
                    if address.parse::<lettre::Address>().is_err() {
                        return Err(format!(
                            "{} {address:?} is not a mail address",
                            table.name(topic)
                        ));
                    }
                    Ok((topic.clone(), address.to_ascii_lowercase()))
                })
                .collect::<Result<_, String>>()?,
        };
        if !topic_addresses.is_empty() && !initiators {
            return Err(
                "email.topic_addresses is set but email.initiators is not true: nobody could \
                 start a conversation by writing to them"
                    .into(),
            );
        }

        let config = EmailConfig {
            initiators,
            topic_addresses,
            domain,
            from_address,
            smtp,
            imap,
            listener,
            http_token,
            authentication,
            dkim,
            batch_window: Duration::from_secs(batch_window_secs),
            max_attachment_bytes,
        };
        // The composer checks the domain, the address and the key; doing it here makes a bad
        // value fail at start-up, named as the configuration names it.
        Composer::new(&config.composer_config()).map_err(|error| match error {
            ComposeError::Domain(_) => {
                format!("email.domain {:?} is not a DNS name", config.domain)
            }
            ComposeError::Address { .. } => format!(
                "email.from_address {:?} is not a mail address",
                config.from_address
            ),
            ComposeError::DkimKey(why) => format!("email.dkim: the key is not usable: {why}"),
            other => format!("email: {other}"),
        })?;
        Ok(config)
    }

    /// What the [`Composer`] of this configuration is built from.
    pub fn composer_config(&self) -> ComposerConfig {
        ComposerConfig {
            domain: self.domain.clone(),
            from_address: self.from_address.clone(),
            dkim: self.dkim.clone(),
            max_attachment_bytes: self.max_attachment_bytes,
        }
    }
}

/// `username` and `password` of an `smtp` or `imap` table, the password taken from `env_value`
/// when set. Neither given: `None`; one without the other: an error.
fn optional_login(
    table: &Table<'_>,
    env_value: Option<String>,
    env_name: &str,
) -> Result<Option<Login>, String> {
    let username = table.string("username")?;
    let password = match env_value.filter(|value| !value.is_empty()) {
        Some(value) => Some(value),
        None => table.string("password")?,
    };
    match (username, password) {
        (None, None) => Ok(None),
        (Some(username), Some(password)) => Ok(Some(Login {
            username,
            password: Secret(password),
        })),
        (Some(_), None) => Err(format!(
            "{}.password is missing (or set {env_name}): {}.username is set",
            table.path, table.path
        )),
        (None, Some(_)) => Err(format!(
            "{}.username is missing: a password is set ({}.password or {env_name})",
            table.path, table.path
        )),
    }
}

fn read_dkim(dkim: &Table<'_>, from_address: &str) -> Result<DkimKey, String> {
    dkim.only(&["selector", "key_file", "algorithm"])?;
    let selector = dkim.required_string("selector")?;
    let key_file = PathBuf::from(dkim.required_string("key_file")?);
    let algorithm = match dkim.string("algorithm")?.as_deref() {
        None | Some("rsa") => DkimAlgorithm::Rsa,
        Some("ed25519") => DkimAlgorithm::Ed25519,
        Some(other) => {
            return Err(format!(
                "email.dkim.algorithm {other:?} is not one of \"rsa\", \"ed25519\""
            ));
        }
    };
    // The error names the file, never its content.
    let private_key = std::fs::read_to_string(&key_file).map_err(|error| {
        format!(
            "email.dkim.key_file {}: cannot read it: {error}",
            key_file.display()
        )
    })?;
    if private_key.trim().is_empty() {
        return Err(format!(
            "email.dkim.key_file {} is empty",
            key_file.display()
        ));
    }
    // `d=` is the domain of `From`, so that DMARC finds the signature aligned.
    let domain = from_address
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim().to_ascii_lowercase())
        .unwrap_or_default();
    Ok(DkimKey {
        selector,
        domain,
        algorithm,
        private_key,
    })
}

/// One table of the section, with the path its errors name.
struct Table<'a> {
    path: String,
    fields: &'a Map<String, Value>,
}

impl<'a> Table<'a> {
    fn new(path: &str, value: &'a Value) -> Result<Self, String> {
        match value {
            Value::Object(fields) => Ok(Table {
                path: path.to_owned(),
                fields,
            }),
            _ => Err(format!("{path} must be a table")),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn missing(&self, key: &str) -> String {
        format!("{} is missing", self.name(key))
    }

    /// Refuses fields not in `known` (a misspelt optional field would be silently ignored).
    fn only(&self, known: &[&str]) -> Result<(), String> {
        match self
            .fields
            .keys()
            .find(|key| !known.contains(&key.as_str()))
        {
            Some(key) => Err(format!(
                "{} is not a known field (known: {})",
                self.name(key),
                known.join(", ")
            )),
            None => Ok(()),
        }
    }

    fn table(&self, key: &str) -> Result<Option<Table<'a>>, String> {
        self.fields
            .get(key)
            .map(|value| Table::new(&self.name(key), value))
            .transpose()
    }

    fn required_table(&self, key: &str) -> Result<Table<'a>, String> {
        self.table(key)?.ok_or_else(|| self.missing(key))
    }

    /// A string field; an empty or blank one counts as missing.
    fn string(&self, key: &str) -> Result<Option<String>, String> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            // Not the value: it may be a password written as a number.
            Some(_) => Err(format!("{} must be a string", self.name(key))),
        }
    }

    fn required_string(&self, key: &str) -> Result<String, String> {
        self.string(key)?.ok_or_else(|| self.missing(key))
    }

    /// A non-negative integer, written as a number or (from the environment) as digits.
    fn integer(&self, key: &str) -> Result<Option<u64>, String> {
        let not_integer = || format!("{} must be a whole number, at least 0", self.name(key));
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(not_integer),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| not_integer()),
            Some(_) => Err(not_integer()),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, String> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("{} must be true or false", self.name(key))),
        }
    }

    fn required_port(&self, key: &str) -> Result<u16, String> {
        let port = self.integer(key)?.ok_or_else(|| self.missing(key))?;
        u16::try_from(port)
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| format!("{} must be a port, 1 to 65535", self.name(key)))
    }

    fn required_security(&self, key: &str) -> Result<Security, String> {
        let value = self.required_string(key)?;
        Security::parse(&value).ok_or_else(|| {
            format!(
                "{} {value:?} is not one of \"none\", \"starttls\", \"tls\"",
                self.name(key)
            )
        })
    }
}

#[cfg(test)]
mod tests;
