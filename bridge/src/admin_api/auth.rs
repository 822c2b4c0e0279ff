//! Who may use the admin API: `Authorization: Bearer <admin token>`, and a limit on wrong
//! tokens per address.
//!
//! The token is operator-grade (it reads every transcript), so it is compared in constant time
//! and the answers say nothing about why it failed. An address that presents wrong tokens too
//! often is locked out for a while, its right token included: otherwise a guesser would still
//! learn, from a 200 among the 429s, when it had found the token.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use subtle::ConstantTimeEq;

use super::{AdminError, AdminState};

/// Wrong tokens an address may present in a row before it is locked out…
const FAILURES_BURST: u32 = 5;
/// …and the pace at which it earns another try: five a minute. An operator who mistyped gets
/// going again within seconds; a guesser gets 7,200 tries a day against a token of 32 random
/// characters or more.
const FAILURE_EVERY: Duration = Duration::from_secs(12);
/// Locked addresses remembered before those whose lock has passed are forgotten.
const LOCKS_BEFORE_SWEEP: usize = 10_000;

/// Wrong tokens per address, and the addresses locked out because of them.
pub(crate) struct FailedLogins {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    locked: Mutex<HashMap<IpAddr, Instant>>,
    /// Whether `X-Forwarded-For`'s last hop names the client (behind a reverse proxy, the
    /// peer is the proxy, and locking it would lock every operator out).
    trust_forwarded_for: bool,
}

impl FailedLogins {
    pub(crate) fn new(trust_forwarded_for: bool) -> Self {
        let quota = Quota::with_period(FAILURE_EVERY)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(FAILURES_BURST).expect("non-zero"));
        Self {
            failures: RateLimiter::keyed(quota),
            locked: Mutex::new(HashMap::new()),
            trust_forwarded_for,
        }
    }

    /// How long `addr` is still locked out, if it is.
    fn locked_for(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let locked = self.locked.lock().expect("not poisoned");
        locked
            .get(&addr)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Counts a wrong token from `addr`: `Some(wait)` when that was one too many, and the
    /// address is now locked for `wait`.
    fn failed(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        if self.failures.len() > LOCKS_BEFORE_SWEEP {
            self.failures.retain_recent();
        }
        let not_until = self.failures.check_key(&addr).err()?;
        let wait = not_until
            .wait_time_from(governor::clock::DefaultClock::default().now())
            .max(Duration::from_secs(1));
        let mut locked = self.locked.lock().expect("not poisoned");
        if locked.len() > LOCKS_BEFORE_SWEEP {
            locked.retain(|_, until| *until > now);
        }
        locked.insert(addr, now + wait);
        Some(wait)
    }

    fn client(&self, request: &Request) -> IpAddr {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(
                // Called without a socket (a router driven in-process): one shared key.
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                |ConnectInfo(addr)| *addr,
            );
        crate::visitor_api::limit_key(crate::visitor_api::client_address(
            request.headers(),
            peer,
            self.trust_forwarded_for,
        ))
    }
}

/// The middleware in front of every admin route.
pub(super) async fn require_admin_token(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let logins = &state.failed_logins;
    let client = logins.client(&request);
    let now = Instant::now();
    if let Some(left) = logins.locked_for(client, now) {
        crate::metrics::rate_limited("admin");
        return locked_out(left);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(state.token.as_bytes())) => {
            next.run(request).await
        }
        // A missing token is a client set up wrong, not a guess: it tells nothing about the
        // token, so it does not count against the address.
        None => AdminError::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing admin token",
        )
        .into_response(),
        Some(_) => {
            metrics::counter!("switchboard_admin_auth_failures_total").increment(1);
            match logins.failed(client, now) {
                None => {
                    tracing::warn!(client = %client, "admin API: wrong admin token");
                    AdminError::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", "Invalid admin token")
                        .into_response()
                }
                Some(wait) => {
                    tracing::warn!(
                        client = %client,
                        locked_secs = wait.as_secs(),
                        "admin API: too many wrong admin tokens; address locked out"
                    );
                    crate::metrics::rate_limited("admin");
                    locked_out(wait)
                }
            }
        }
    }
}

/// A 429 with `Retry-After` in whole seconds (rounded up) and Matrix's `retry_after_ms`.
fn locked_out(wait: Duration) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(serde_json::json!({
            "errcode": "M_LIMIT_EXCEEDED",
            "error": "Too many wrong admin tokens from this address; try again later",
            "retry_after_ms": wait.as_millis() as u64,
        })),
    )
        .into_response();
    let secs = wait.as_millis().div_ceil(1000).max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_locked_after_its_burst_of_wrong_tokens_and_only_that_address() {
        let logins = FailedLogins::new(false);
        let guesser: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let now = Instant::now();
        for attempt in 0..FAILURES_BURST {
            assert_eq!(logins.failed(guesser, now), None, "attempt {attempt}");
            assert_eq!(logins.locked_for(guesser, now), None);
        }
        let wait = logins.failed(guesser, now).expect("one too many");
        assert!(
            wait >= Duration::from_secs(1) && wait <= FAILURE_EVERY,
            "{wait:?}"
        );
        assert!(logins.locked_for(guesser, now).is_some());
        assert_eq!(logins.locked_for(other, now), None);
        assert_eq!(logins.failed(other, now), None);
        // Once the lock has passed, the address is heard again.
        assert_eq!(logins.locked_for(guesser, now + wait), None);
    }
}
