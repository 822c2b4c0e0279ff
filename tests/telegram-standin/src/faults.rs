//! Fault injection: flood-control 429s, one-off failures, and an optional per-chat send
//! interval modelling Telegram's "about one message per second per chat" limit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::ApiError;

/// "After `skip` matching calls pass, the next `remaining` matching calls get 429, and so
/// does every matching call until `retry_after` seconds have passed since the last 429
/// issued."
#[derive(Debug)]
struct RateLimit {
    method: String,
    chat_id: Option<i64>,
    skip: u32,
    remaining: u32,
    retry_after: u32,
    blocked_until: Option<Instant>,
}

/// All armed faults.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rate_limits: Vec<RateLimit>,
    failures: Vec<(String, ApiError)>,
    min_interval: Option<Duration>,
    last_send: HashMap<i64, Instant>,
}

/// Whole seconds to wait, rounded up, at least 1 (Telegram never says "retry after 0").
fn whole_seconds(d: Duration) -> u32 {
    (d.as_millis().div_ceil(1000) as u32).max(1)
}

impl Faults {
    pub fn add_rate_limit(
        &mut self,
        method: &str,
        chat_id: Option<i64>,
        skip: u32,
        count: u32,
        retry_after_secs: u32,
    ) {
        self.rate_limits.push(RateLimit {
            method: method.to_ascii_lowercase(),
            chat_id,
            skip,
            remaining: count,
            retry_after: retry_after_secs,
            blocked_until: None,
        });
    }

    pub fn add_failure(&mut self, method: &str, error_code: u16, description: &str) {
        self.failures.push((
            method.to_ascii_lowercase(),
            ApiError::new(error_code, description),
        ));
    }

    pub fn set_min_interval(&mut self, d: Option<Duration>) {
        self.min_interval = d;
    }

    /// The error an armed fault imposes on this call, if any. `method` is lowercase.
    pub fn check(&mut self, method: &str, chat_id: Option<i64>, now: Instant) -> Option<ApiError> {
        if let Some(pos) = self.failures.iter().position(|(m, _)| m == method) {
            return Some(self.failures.remove(pos).1);
        }
        let mut verdict = None;
        for rule in &mut self.rate_limits {
            let matches =
                rule.method == method && (rule.chat_id.is_none() || rule.chat_id == chat_id);
            if !matches || verdict.is_some() {
                continue;
            }
            match rule.blocked_until {
                // A client that ignores retry_after keeps being refused, and is told how
                // long is really left.
                Some(until) if now < until => {
                    verdict = Some(ApiError::too_many_requests(whole_seconds(until - now)))
                }
                // Not yet: this call passes, and counts towards the ones let through.
                _ if rule.skip > 0 => rule.skip -= 1,
                _ if rule.remaining > 0 => {
                    rule.remaining -= 1;
                    rule.blocked_until = Some(now + Duration::from_secs(rule.retry_after.into()));
                    verdict = Some(ApiError::too_many_requests(rule.retry_after));
                }
                _ => {}
            }
        }
        self.rate_limits
            .retain(|r| r.remaining > 0 || r.blocked_until.is_some_and(|u| now < u));
        verdict
    }

    /// 429 if the bot sent to this chat less than the minimum interval ago.
    pub fn check_send_interval(&self, chat_id: i64, now: Instant) -> Option<ApiError> {
        let min = self.min_interval?;
        let last = *self.last_send.get(&chat_id)?;
        let elapsed = now.saturating_duration_since(last);
        (elapsed < min).then(|| ApiError::too_many_requests(whole_seconds(min - elapsed)))
    }

    /// Remembers a successful send, for the interval check.
    pub fn record_send(&mut self, chat_id: i64, now: Instant) {
        self.last_send.insert(chat_id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_holds_until_retry_after_elapses() {
        let mut f = Faults::default();
        let t0 = Instant::now();
        f.add_rate_limit("sendMessage", Some(5), 0, 1, 3);
        assert!(
            f.check("sendmessage", Some(6), t0).is_none(),
            "other chats are not limited"
        );
        assert_eq!(
            f.check("sendmessage", Some(5), t0)
                .unwrap()
                .parameters
                .unwrap()["retry_after"],
            3
        );
        let early = f
            .check("sendmessage", Some(5), t0 + Duration::from_millis(1500))
            .unwrap();
        assert_eq!(early.parameters.unwrap()["retry_after"], 2);
        assert!(
            f.check("sendmessage", Some(5), t0 + Duration::from_secs(3))
                .is_none()
        );
    }

    #[test]
    fn rate_limit_after_lets_the_first_calls_through() {
        let mut f = Faults::default();
        let t0 = Instant::now();
        f.add_rate_limit("sendMessage", Some(5), 2, 1, 1);
        assert!(f.check("sendmessage", Some(6), t0).is_none());
        assert!(f.check("sendmessage", Some(5), t0).is_none(), "first");
        assert!(f.check("getme", None, t0).is_none());
        assert!(f.check("sendmessage", Some(5), t0).is_none(), "second");
        assert_eq!(
            f.check("sendmessage", Some(5), t0).map(|e| e.code),
            Some(429),
            "third"
        );
        assert!(
            f.check("sendmessage", Some(5), t0 + Duration::from_secs(1))
                .is_none()
        );
    }

    #[test]
    fn failures_fire_once() {
        let mut f = Faults::default();
        f.add_failure("getMe", 500, "Internal Server Error");
        assert_eq!(f.check("getme", None, Instant::now()).unwrap().code, 500);
        assert!(f.check("getme", None, Instant::now()).is_none());
    }

    #[test]
    fn send_interval() {
        let mut f = Faults::default();
        let t0 = Instant::now();
        f.set_min_interval(Some(Duration::from_millis(1000)));
        assert!(f.check_send_interval(1, t0).is_none());
        f.record_send(1, t0);
        assert_eq!(
            f.check_send_interval(1, t0 + Duration::from_millis(200))
                .unwrap()
                .code,
            429
        );
        assert!(
            f.check_send_interval(1, t0 + Duration::from_millis(1000))
                .is_none()
        );
    }
}
