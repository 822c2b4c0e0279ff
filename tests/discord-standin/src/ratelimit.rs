//! Discord's rate limits: a bucket per route template (named by an opaque hash in
//! `X-RateLimit-Bucket`) counted separately per major parameter (channel, guild or webhook id),
//! plus the global limit of 50 requests per second for a bot.
//!
//! Windows are fixed: the first request of a window starts it, the window resets `per` later.
//! A client that reads the headers (or `retry_after`) never sees a 429; one that does not,
//! does.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::faults::{Route, RouteKey};

/// How many requests a bucket takes per window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limit {
    pub limit: u32,
    pub per: Duration,
}

/// The headers of a request counted against a bucket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BucketState {
    pub bucket: String,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset_after: f64,
    /// Unix time (seconds) when it resets.
    pub reset_at: f64,
}

/// A 429 the limiter decided on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Limited {
    pub retry_after: f64,
    pub global: bool,
    /// The bucket's headers (absent for global 429s, as on Discord).
    pub bucket: Option<BucketState>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    overrides: Vec<(Route, Limit)>,
    windows: HashMap<(&'static str, &'static str, Option<u64>), Window>,
    global: Limit,
    global_window: Option<Window>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            overrides: Vec::new(),
            windows: HashMap::new(),
            global: Limit {
                limit: 50,
                per: Duration::from_secs(1),
            },
            global_window: None,
        }
    }
}

/// The limit a route has unless a test changed it. The numbers are of the order Discord
/// answers with; they are not Discord's (which it may change any time and tells only in
/// headers), so clients must read the headers rather than hard-code these.
fn default_limit(key: &RouteKey) -> Limit {
    let (limit, secs) = match (key.method, key.template) {
        ("POST", "/channels/{channel_id}/messages") => (5, 5),
        ("PATCH" | "DELETE", "/channels/{channel_id}/messages/{message_id}") => (5, 5),
        ("POST", "/channels/{channel_id}/typing") => (5, 5),
        ("POST", "/webhooks/{webhook_id}/{webhook_token}") => (5, 2),
        ("POST", "/channels/{channel_id}/threads") => (10, 10),
        ("POST", "/users/@me/channels") => (10, 10),
        _ => (20, 1),
    };
    Limit {
        limit,
        per: Duration::from_secs(secs),
    }
}

/// An opaque, stable bucket name per route template (Discord's are hashes too).
fn bucket_hash(key: &RouteKey) -> String {
    // FNV-1a: tiny, deterministic across runs, and nobody should read meaning into it.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.method.bytes().chain(key.template.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn unix_secs(at: Instant, now: Instant) -> f64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    wall + at.saturating_duration_since(now).as_secs_f64()
}

impl RateLimiter {
    /// Changes the global limit; counting starts afresh.
    pub fn set_global(&mut self, limit: Limit) {
        self.global = limit;
        self.global_window = None;
    }

    pub fn set(&mut self, route: Route, limit: Limit) {
        self.overrides.retain(|(r, _)| *r != route);
        // Latest first, so a specific limit set after `Route::Any` wins and vice versa.
        self.overrides.insert(0, (route, limit));
    }

    fn limit_for(&self, key: &RouteKey) -> Limit {
        self.overrides
            .iter()
            .find(|(route, _)| route.matches(key))
            .map_or_else(|| default_limit(key), |(_, limit)| *limit)
    }

    /// Counts a request. `global` says whether it counts against the bot's global limit
    /// (interaction callbacks and token-authenticated webhook calls do not).
    pub fn check(
        &mut self,
        key: &RouteKey,
        global: bool,
        now: Instant,
    ) -> Result<BucketState, Limited> {
        if global {
            let limit = self.global;
            let window = self
                .global_window
                .filter(|w| now.duration_since(w.start) < limit.per)
                .unwrap_or(Window {
                    start: now,
                    count: 0,
                });
            if window.count >= limit.limit {
                let retry = (window.start + limit.per).saturating_duration_since(now);
                self.global_window = Some(window);
                return Err(Limited {
                    retry_after: retry.as_secs_f64(),
                    global: true,
                    bucket: None,
                });
            }
            self.global_window = Some(Window {
                count: window.count + 1,
                ..window
            });
        }
        let limit = self.limit_for(key);
        let slot = (key.method, key.template, key.major);
        let window = self
            .windows
            .get(&slot)
            .copied()
            .filter(|w| now.duration_since(w.start) < limit.per)
            .unwrap_or(Window {
                start: now,
                count: 0,
            });
        let reset = window.start + limit.per;
        let mut state = BucketState {
            bucket: bucket_hash(key),
            limit: limit.limit,
            remaining: 0,
            reset_after: reset.saturating_duration_since(now).as_secs_f64(),
            reset_at: unix_secs(reset, now),
        };
        if window.count >= limit.limit {
            self.windows.insert(slot, window);
            return Err(Limited {
                retry_after: state.reset_after,
                global: false,
                bucket: Some(state),
            });
        }
        let count = window.count + 1;
        self.windows.insert(slot, Window { count, ..window });
        state.remaining = limit.limit - count;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(channel: u64) -> RouteKey {
        RouteKey {
            method: "POST",
            template: "/channels/{channel_id}/messages",
            major: Some(channel),
        }
    }

    #[test]
    fn a_bucket_refuses_past_its_limit_until_the_window_resets() {
        let mut limiter = RateLimiter::default();
        let t0 = Instant::now();
        for left in (0..5).rev() {
            assert_eq!(limiter.check(&key(1), true, t0).unwrap().remaining, left);
        }
        let limited = limiter.check(&key(1), true, t0).unwrap_err();
        assert!(!limited.global && (limited.retry_after - 5.0).abs() < 0.01);
        assert!(
            limiter.check(&key(2), true, t0).is_ok(),
            "other channels have their own count"
        );
        assert!(
            limiter
                .check(&key(1), true, t0 + Duration::from_secs(5))
                .is_ok()
        );
    }

    #[test]
    fn buckets_share_a_hash_across_channels_but_not_routes() {
        let mut limiter = RateLimiter::default();
        let now = Instant::now();
        let a = limiter.check(&key(1), true, now).unwrap().bucket;
        let b = limiter.check(&key(2), true, now).unwrap().bucket;
        let other = RouteKey {
            method: "GET",
            ..key(1)
        };
        let c = limiter.check(&other, true, now).unwrap().bucket;
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_global_limit_counts_every_route() {
        let mut limiter = RateLimiter::default();
        limiter.set_global(Limit {
            limit: 3,
            per: Duration::from_secs(1),
        });
        let now = Instant::now();
        for channel in 0..3 {
            limiter.check(&key(channel), true, now).unwrap();
        }
        assert!(limiter.check(&key(9), true, now).unwrap_err().global);
        assert!(
            limiter.check(&key(9), false, now).is_ok(),
            "exempt routes pass"
        );
    }
}
