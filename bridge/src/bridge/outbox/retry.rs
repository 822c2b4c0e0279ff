//! What happens when a delivery fails, and once it succeeded: the row retried with backoff
//! or set aside for good (the responder then unreachable), and the record of a sent part
//! kept through a store outage so that nothing goes out twice.

use std::time::Duration;

use backon::BackoffBuilder;

use super::{super::Bridge, RowOutcome};
use crate::{
    connector::{Capabilities, ConnectorError, Delivery, Platform},
    store::{DeadLetterSource, OutboxRow, StoreError},
};

/// Transient delivery failures are retried this many times before the responder counts as
/// unreachable (about four minutes of backoff).
const DELIVERY_ATTEMPTS: i64 = 12;

/// How the record of a sent message is retried while the store is away: 100 ms growing to
/// 5 s, with jitter, for about ten minutes; a longer outage stops the whole service anyway.
fn record_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(125)
        .with_jitter()
        .build()
}

impl Bridge {
    /// A row whose step `sent` failed with `e`: retried later with backoff, or set aside for
    /// good. A visitor message that can never be delivered makes the responder unreachable
    /// (`hands_over`); a change to one already delivered does not.
    pub(in crate::bridge) async fn row_failed(
        &self,
        row: &OutboxRow,
        platform: Platform,
        caps: &Capabilities,
        e: ConnectorError,
        sent: usize,
        hands_over: bool,
    ) -> Result<RowOutcome, StoreError> {
        // Parts accepted in this pass started the count afresh (see `outbox_part_sent`).
        let attempts = if sent > row.parts_sent as usize {
            0
        } else {
            row.attempts
        };
        let delay = retry_delay(&e, attempts, caps.unreachable_hands_over);
        let outcome = if delay.is_some() { "retry" } else { "failed" };
        crate::metrics::delivery(&row.platform, outcome, e.kind());
        match delay {
            Some(wait) => {
                tracing::warn!(error = %e, part = sent, wait_ms = wait.as_millis() as u64, "delivery failed; will retry");
                let at = self.now_ms() + wait.as_millis() as i64;
                if let ConnectorError::RetryAfter(_) = e {
                    // Nothing else goes to this chat before then (notices included).
                    self.pacer.hold(platform, &row.address, at);
                }
                self.store.outbox_retry_at(row.seq, at).await?;
                Ok(RowOutcome::Later(at))
            }
            None => {
                tracing::error!(error = %e, part = sent, "delivery failed for good");
                self.set_aside(
                    DeadLetterSource::Outbox,
                    row.seq,
                    Some(&row.room_id),
                    &e.to_string(),
                    row.attempts + 1,
                )
                .await?;
                Ok(if hands_over {
                    RowOutcome::Unreachable
                } else {
                    RowOutcome::Delivered
                })
            }
        }
    }
}

/// Records what just reached a platform. The responder has it now: were the record lost
/// to a store outage, the row would go out again and, on a platform that cannot tell
/// (Telegram has no idempotency key), the responder would get it twice. So a transient
/// store failure is retried here, holding up only this chat, for as long as
/// [`record_backoff`] allows. (Found by the crash bursts, `tests/e2e_chaos.rs`: PostgreSQL
/// killed under Switchboard doubled a Telegram message.)
pub(in crate::bridge) async fn record_sent<T, Fut>(
    record: impl Fn() -> Fut,
) -> Result<T, StoreError>
where
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = record_backoff();
    loop {
        match record().await {
            Err(e) if e.is_transient() => match backoff.next() {
                Some(wait) => {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "the store did not take the record of a sent message; trying again, not resending");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// The platform's capabilities as they apply to `delivery`'s recipient. A delivery to an
/// initiator is retried for as long as their platform fails for a passing reason: giving up
/// would end their conversation (see `drain_chat`), where a responder is merely replaced.
pub(super) fn for_recipient(caps: Capabilities, delivery: &Delivery) -> Capabilities {
    if delivery.to_initiator {
        Capabilities {
            unreachable_hands_over: false,
            ..caps
        }
    } else {
        caps
    }
}

/// How long to wait before retrying a delivery that failed with `error` after `attempts`
/// earlier failures, or `None` to give up, which hands the conversation over. A platform
/// whose connector declares that unreachability does not hand over (`may_give_up` false:
/// Matrix, where the platform is the homeserver itself) is retried as long as it takes. Pure,
/// so the "unreachable after retries" trigger is tested without waiting.
fn retry_delay(error: &ConnectorError, attempts: i64, may_give_up: bool) -> Option<Duration> {
    match error {
        // The platform said when; a rate limit is not a failure of the responder.
        ConnectorError::RetryAfter(after) => Some(*after),
        ConnectorError::Transient(_) if attempts < DELIVERY_ATTEMPTS || !may_give_up => Some(
            Duration::from_millis(500 * 2u64.pow(attempts.clamp(0, 6) as u32)),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    /// The record of a sent message outlasts a store outage (retried, never given up while
    /// the failures are transient and the backoff lasts) and a lasting fault is not retried.
    #[tokio::test(start_paused = true)]
    async fn a_sent_part_is_recorded_once_the_store_is_back() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let recorded = record_sent(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..5 => Err(StoreError::Database(sqlx::Error::PoolTimedOut)),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(recorded.unwrap(), 5, "tried until the store took it");

        let calls = std::sync::atomic::AtomicU32::new(0);
        let refused: Result<(), _> = record_sent(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Corrupt {
                table: "outbox",
                detail: "unreadable".into(),
            })
        })
        .await;
        assert!(refused.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a lasting fault is not retried"
        );

        // An outage longer than the backoff ends in the error, after minutes, not at once.
        let started = tokio::time::Instant::now();
        let gone: Result<(), _> =
            record_sent(|| async { Err(StoreError::Database(sqlx::Error::PoolTimedOut)) }).await;
        assert!(gone.is_err());
        assert!(
            started.elapsed() >= Duration::from_secs(300),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn transient_failures_back_off_then_give_up() {
        let e = ConnectorError::Transient("connection reset".into());
        let waits: Vec<_> = (0..DELIVERY_ATTEMPTS)
            .map(|n| retry_delay(&e, n, true).map(|d| d.as_millis()))
            .collect();
        assert_eq!(
            waits,
            [
                500, 1000, 2000, 4000, 8000, 16000, 32000, 32000, 32000, 32000, 32000, 32000
            ]
            .map(Some)
        );
        assert_eq!(
            retry_delay(&e, DELIVERY_ATTEMPTS, true),
            None,
            "the twelfth failure makes the responder unreachable"
        );
    }

    #[test]
    fn a_platform_that_is_the_homeserver_is_waited_for_however_long() {
        let e = ConnectorError::Transient("homeserver unreachable".into());
        assert_eq!(
            retry_delay(&e, DELIVERY_ATTEMPTS * 100, false),
            Some(Duration::from_millis(32_000))
        );
        let refused = ConnectorError::Permanent("M_FORBIDDEN".into());
        assert_eq!(retry_delay(&refused, 0, false), None);
    }

    #[test]
    fn permanent_failures_give_up_at_once_and_rate_limits_never_do() {
        let blocked = ConnectorError::Permanent("bot was blocked by the user".into());
        assert_eq!(retry_delay(&blocked, 0, true), None);
        let limited = ConnectorError::RetryAfter(Duration::from_secs(7));
        assert_eq!(retry_delay(&limited, 0, true), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_delay(&limited, 1000, true),
            Some(Duration::from_secs(7))
        );
    }
}
