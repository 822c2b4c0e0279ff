//! Visitor accounts: Matrix users Switchboard registers for visitors when the homeserver has
//! no guest access. (A Synapse behind Matrix Authentication Service has no guests either, but
//! it refuses to log in appservice-registered users, so it issues no token to hand out; see
//! the operator guide.)
//!
//! A visitor account lives in our exclusive appservice namespace, under the ghost prefix, as
//! `@{ghost_prefix}visitor-{24 random [a-z0-9]}`. Responder IDs may not start with `visitor-`
//! (`routing::validate_responder`), so no responder's ghost (`@{ghost_prefix}{responder_id}`)
//! can ever be a visitor account, and [`is_visitor_account`] tells the two apart.
//!
//! The widget receives that user's own access token (never the `as_token`), so it can act as
//! that user alone, exactly as it would with a guest's token.

use std::sync::Arc;

use rand::Rng;
use switchboard_appservice::{
    AppserviceRegistration, ClientError, HomeserverClient,
    client::UserLogin,
    ruma::{OwnedUserId, UserId},
};

/// What follows the ghost prefix in every visitor account's localpart.
pub const VISITOR_LOCALPART_PREFIX: &str = "visitor-";

/// The display name every visitor account gets: neutral, like a guest's.
pub const VISITOR_DISPLAY_NAME: &str = "Visitor";

/// Whether `user` is a visitor account of ours (as opposed to the bot or a responder's ghost).
pub fn is_visitor_account(registration: &AppserviceRegistration, user: &UserId) -> bool {
    user.localpart()
        .strip_prefix(registration.ghost_prefix.as_str())
        .is_some_and(|rest| rest.starts_with(VISITOR_LOCALPART_PREFIX))
}

/// A fresh visitor localpart: 24 characters of `[a-z0-9]` (about 124 bits) after the prefix,
/// so the name says nothing about the visitor and cannot be guessed.
fn new_localpart(ghost_prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let random: String = (0..24)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{ghost_prefix}{VISITOR_LOCALPART_PREFIX}{random}")
}

/// A fresh visitor user ID that nobody has registered yet: for a person who writes from a
/// platform (an initiator), whose messages Switchboard posts as this user (registered and
/// joined as a ghost by the room-post queue, never logged in).
pub fn new_visitor_user_id(
    registration: &AppserviceRegistration,
    server_name: &switchboard_appservice::ruma::ServerName,
) -> Result<OwnedUserId, String> {
    UserId::parse(format!(
        "@{}:{server_name}",
        new_localpart(&registration.ghost_prefix)
    ))
    .map_err(|e| e.to_string())
}

/// Registers visitor accounts.
pub struct VisitorAccounts {
    client: Arc<HomeserverClient>,
    registration: Arc<AppserviceRegistration>,
}

impl VisitorAccounts {
    pub fn new(client: Arc<HomeserverClient>, registration: Arc<AppserviceRegistration>) -> Self {
        Self {
            client,
            registration,
        }
    }

    /// Registers a fresh visitor account, names it "Visitor" and returns its own login.
    pub async fn create(&self) -> Result<UserLogin, ClientError> {
        let mut attempt = 0;
        let login = loop {
            attempt += 1;
            let localpart = new_localpart(&self.registration.ghost_prefix);
            match self
                .client
                .register_with_login(&localpart, "Switchboard widget")
                .await
            {
                // 124 random bits make a clash all but impossible; try another name anyway.
                Err(e) if e.errcode() == Some("M_USER_IN_USE") && attempt < 3 => continue,
                other => break other?,
            }
        };
        // Without this the homeserver would show the localpart; a guest is named the same way
        // by the widget.
        self.client
            .set_displayname(&login.user_id, VISITOR_DISPLAY_NAME)
            .await?;
        // Not its user ID: logs never name a visitor (docs/security.md).
        tracing::info!("visitor account created");
        Ok(login)
    }

    /// Registers a fresh visitor user *without* logging it in (`inhibit_login`), for proxied
    /// mode: the homeserver issues no token at all, which is why this works where appservice
    /// logins are refused (Matrix Authentication Service, MSC4190). Names it "Visitor".
    pub async fn create_unlogged(&self) -> Result<OwnedUserId, ClientError> {
        let localpart = new_localpart(&self.registration.ghost_prefix);
        // `register_ghost` treats "already registered" as success, which is right here too: a
        // retry after a lost answer finds the user it just made, and 124 random bits make a
        // clash with anyone else's user all but impossible.
        self.client.register_ghost(&localpart).await?;
        let user_id = UserId::parse(format!("@{localpart}:{}", self.client.bot().server_name()))
            .map_err(|e| ClientError::Build(e.to_string()))?;
        self.client
            .set_displayname(&user_id, VISITOR_DISPLAY_NAME)
            .await?;
        tracing::info!("proxied visitor registered");
        Ok(user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_appservice::registration::GenerateOptions;

    fn registration() -> AppserviceRegistration {
        AppserviceRegistration::generate(&GenerateOptions {
            id: "switchboard",
            url: "http://127.0.0.1:29330",
            bot_localpart: "switchboard",
            ghost_prefix: "_sb_",
        })
    }

    #[test]
    fn visitor_accounts_are_ours_but_never_a_ghost_or_the_bot() {
        let reg = registration();
        let server = "example.org";
        let localpart = new_localpart(&reg.ghost_prefix);
        assert!(localpart.starts_with("_sb_visitor-"));
        assert_eq!(localpart.len(), "_sb_visitor-".len() + 24);
        assert!(
            localpart[4..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
        let visitor = UserId::parse(format!("@{localpart}:{server}")).unwrap();
        assert!(reg.owns(&visitor), "the homeserver must let us register it");
        assert!(is_visitor_account(&reg, &visitor));

        let ghost = UserId::parse(format!("@_sb_alice:{server}")).unwrap();
        let bot = UserId::parse(format!("@switchboard:{server}")).unwrap();
        let outsider = UserId::parse(format!("@visitor-abc:{server}")).unwrap();
        for user in [&ghost, &bot, &outsider] {
            assert!(!is_visitor_account(&reg, user), "{user}");
        }
        assert_ne!(new_localpart("_sb_"), new_localpart("_sb_"));
    }
}
