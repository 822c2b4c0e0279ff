//! Who owns a visitor's token, remembered for a moment.
//!
//! Every visitor API call about a conversation (start, typing, end) names the visitor by the
//! access token the widget holds, and only the homeserver can say whose it is (`whoami`: the
//! browser's claims are never trusted). A visitor typing makes such a call every few seconds,
//! so asking each time costs a homeserver round trip per call, and a flood of made-up tokens
//! would become a flood of questions to the homeserver. So the answer is kept briefly: an owner
//! for `KNOWN_FOR` (a token logged out meanwhile still works here for up to that long, for
//! typing or ending the visitor's own conversation), a refusal for `REFUSED_FOR` (a made-up
//! token sent again and again costs one question per that time). Keyed by the token's SHA-256,
//! so no token is held; at most `CAPACITY` answers of each kind, least recently used dropped
//! first.

use std::time::Duration;

use moka::sync::Cache;
use sha2::Digest;
use switchboard_appservice::ruma::OwnedUserId;

const KNOWN_FOR: Duration = Duration::from_secs(60);
const REFUSED_FOR: Duration = Duration::from_secs(10);
const CAPACITY: u64 = 20_000;

/// What the homeserver said a token is, while it is remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Owner {
    Visitor(OwnedUserId),
    /// The homeserver does not know the token.
    Nobody,
}

pub(super) struct TokenOwners {
    known: Cache<[u8; 32], OwnedUserId>,
    refused: Cache<[u8; 32], ()>,
}

impl Default for TokenOwners {
    fn default() -> Self {
        Self {
            known: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(KNOWN_FOR)
                .build(),
            refused: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(REFUSED_FOR)
                .build(),
        }
    }
}

impl TokenOwners {
    fn key(token: &str) -> [u8; 32] {
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    /// The remembered answer for `token`, if any.
    pub fn get(&self, token: &str) -> Option<Owner> {
        let key = Self::key(token);
        if let Some(user) = self.known.get(&key) {
            return Some(Owner::Visitor(user));
        }
        self.refused.get(&key).map(|()| Owner::Nobody)
    }

    /// Remembers what the homeserver answered about `token`.
    pub fn remember(&self, token: &str, owner: Owner) {
        let key = Self::key(token);
        match owner {
            Owner::Visitor(user) => self.known.insert(key, user),
            Owner::Nobody => self.refused.insert(key, ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_remembered_by_token_and_kept_apart() {
        let owners = TokenOwners::default();
        assert_eq!(owners.get("a"), None);
        let alice: OwnedUserId = "@guest1:example.org".try_into().unwrap();
        owners.remember("a", Owner::Visitor(alice.clone()));
        owners.remember("b", Owner::Nobody);
        assert_eq!(owners.get("a"), Some(Owner::Visitor(alice)));
        assert_eq!(owners.get("b"), Some(Owner::Nobody));
        assert_eq!(owners.get("c"), None);
    }
}
