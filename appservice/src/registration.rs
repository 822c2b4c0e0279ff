//! The appservice registration file: what the homeserver is told about us.

use std::path::Path;

use rand::{Rng, distributions::Alphanumeric};
use ruma::api::appservice::{Namespace, Namespaces, Registration, RegistrationInit};
use ruma::{OwnedUserId, ServerName, UserId};

/// Errors while reading or writing a registration file.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("cannot read registration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("registration file {path} is not valid YAML for an appservice registration: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("registration file {path} declares no user namespace for the ghosts")]
    NoGhostNamespace { path: String },
    #[error("cannot serialise registration: {0}")]
    Serialize(#[from] serde_yaml::Error),
    #[error("invalid localpart {0:?} for server {1}")]
    InvalidLocalpart(String, String),
}

/// A loaded registration plus what we derive from it.
#[derive(Debug, Clone)]
pub struct AppserviceRegistration {
    pub inner: Registration,
    /// Localparts of ghosts start with this prefix (taken from the exclusive user namespace).
    pub ghost_prefix: String,
}

/// What `generate` needs to know.
pub struct GenerateOptions<'a> {
    pub id: &'a str,
    pub url: &'a str,
    pub bot_localpart: &'a str,
    pub ghost_prefix: &'a str,
}

fn random_token() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

impl AppserviceRegistration {
    /// A registration with fresh random tokens and an exclusive namespace for the bot and
    /// the ghosts. The regex is not tied to a server name so the same file works whatever
    /// `server_name` the homeserver has.
    pub fn generate(opts: &GenerateOptions<'_>) -> Self {
        let ghost_regex = format!("@{}.*:.*", regex_escape(opts.ghost_prefix));
        let bot_regex = format!("@{}:.*", regex_escape(opts.bot_localpart));
        let mut namespaces = Namespaces::new();
        namespaces.users = vec![
            Namespace::new(true, bot_regex),
            Namespace::new(true, ghost_regex),
        ];
        let mut inner: Registration = RegistrationInit {
            id: opts.id.to_owned(),
            url: Some(opts.url.to_owned()),
            as_token: random_token(),
            hs_token: random_token(),
            sender_localpart: opts.bot_localpart.to_owned(),
            namespaces,
            // Puppets speak for many people at once; the homeserver's per-user limits would
            // throttle a busy bridge for no reason.
            rate_limited: Some(false),
            protocols: None,
        }
        .into();
        // Typing notifications come as ephemeral events; without this the homeserver keeps
        // them from us.
        inner.receive_ephemeral = true;
        Self {
            inner,
            ghost_prefix: opts.ghost_prefix.to_owned(),
        }
    }

    pub fn to_yaml(&self) -> Result<String, RegistrationError> {
        Ok(serde_yaml::to_string(&self.inner)?)
    }

    pub fn load(path: &Path) -> Result<Self, RegistrationError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RegistrationError::Read {
            path: p.clone(),
            source,
        })?;
        let inner: Registration =
            serde_yaml::from_str(&text).map_err(|source| RegistrationError::Parse {
                path: p.clone(),
                source,
            })?;
        // The ghost namespace is the exclusive user regex of the form `@PREFIX.*:.*`; the
        // bot's own regex (`@bot:.*`) has no wildcard before the colon.
        let ghost_prefix = inner
            .namespaces
            .users
            .iter()
            .filter(|ns| ns.exclusive)
            .filter_map(|ns| ns.regex.strip_prefix('@')?.strip_suffix(".*:.*"))
            .map(regex_unescape)
            .next()
            .ok_or(RegistrationError::NoGhostNamespace { path: p })?;
        Ok(Self {
            inner,
            ghost_prefix,
        })
    }

    pub fn bot_user_id(&self, server_name: &ServerName) -> Result<OwnedUserId, RegistrationError> {
        user_id(&self.inner.sender_localpart, server_name)
    }

    /// The ghost user for an opaque, stable key (for example a responder ID).
    pub fn ghost_user_id(
        &self,
        key: &str,
        server_name: &ServerName,
    ) -> Result<OwnedUserId, RegistrationError> {
        user_id(&format!("{}{}", self.ghost_prefix, key), server_name)
    }

    /// Whether `user` lies in our exclusive namespace (the bot or a ghost).
    pub fn owns(&self, user: &UserId) -> bool {
        let local = user.localpart();
        local == self.inner.sender_localpart || local.starts_with(&self.ghost_prefix)
    }
}

fn user_id(localpart: &str, server_name: &ServerName) -> Result<OwnedUserId, RegistrationError> {
    UserId::parse(format!("@{localpart}:{server_name}")).map_err(|_| {
        RegistrationError::InvalidLocalpart(localpart.to_owned(), server_name.to_string())
    })
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

fn regex_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> GenerateOptions<'static> {
        GenerateOptions {
            id: "switchboard",
            url: "http://127.0.0.1:29330",
            bot_localpart: "switchboard",
            ghost_prefix: "_sb_",
        }
    }

    #[test]
    fn generated_registration_round_trips_and_owns_its_namespace() {
        let reg = AppserviceRegistration::generate(&opts());
        assert_eq!(reg.inner.as_token.len(), 64);
        assert_ne!(reg.inner.as_token, reg.inner.hs_token);
        assert_eq!(reg.inner.rate_limited, Some(false));
        assert!(reg.inner.receive_ephemeral);
        assert!(reg.inner.namespaces.users.iter().all(|n| n.exclusive));

        let dir = std::env::temp_dir().join(format!("reg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registration.yaml");
        std::fs::write(&path, reg.to_yaml().unwrap()).unwrap();
        let loaded = AppserviceRegistration::load(&path).unwrap();
        assert_eq!(loaded.ghost_prefix, "_sb_");
        assert_eq!(loaded.inner.hs_token, reg.inner.hs_token);

        let server: &ServerName = "example.org".try_into().unwrap();
        let ghost = loaded.ghost_user_id("r1", server).unwrap();
        assert_eq!(ghost.as_str(), "@_sb_r1:example.org");
        assert!(loaded.owns(&ghost));
        assert!(loaded.owns(&loaded.bot_user_id(server).unwrap()));
        assert!(!loaded.owns(<&UserId>::try_from("@alice:example.org").unwrap()));
    }

    #[test]
    fn two_generated_registrations_have_different_tokens() {
        let a = AppserviceRegistration::generate(&opts());
        let b = AppserviceRegistration::generate(&opts());
        assert_ne!(a.inner.hs_token, b.inner.hs_token);
        assert_ne!(a.inner.as_token, b.inner.as_token);
    }
}
