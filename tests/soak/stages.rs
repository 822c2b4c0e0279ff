//! Where a soak message's time went, read from Switchboard's own store after the run: each
//! row it keeps on a message's way (the inbox, the outbox, the room posts) has the time the
//! message reached it, so the total the soak measures from outside splits into the
//! homeserver's part (before Switchboard had the message), the conversation's lane, and the
//! delivery (Telegram's pacing and the Bot API call, or the post into the room). Towards a
//! responder the delivery is cut in two at the stand-in's own record of the call, so the
//! wait before the call is told apart from the recording after it.

use std::collections::{HashMap, HashSet};

use super::find_marker;

/// The steps of a visitor's message, from Switchboard's store: the homeserver storing it and
/// pushing it to us (the visitor's `PUT` to the inbox row's `received_at`, so our recording
/// of the transaction too), the conversation's lane (to the row's `processed_at`: waiting
/// behind the lane's earlier events and handling it), the outbox up to the Bot API call
/// (to the stand-in's record of `sendMessage`: the chat's lane picking the row up, Telegram's
/// pacing of the responder's chat, the call itself), and recording it (to the delivery's
/// `done_at`: the call's answer back and our turn to write it down).
pub const TO_RESPONDER_STAGES: [&str; 4] = [
    "homeserver (sent → recorded)",
    "lane (→ handled)",
    "outbox (→ Bot API has it)",
    "record (→ marked sent)",
];
/// The steps of a responder's reply: our long poll of the Bot API picking it up (the reply
/// to the `remote_inbox` row's `received_at`), the lane (to its `processed_at`), and the
/// post into the visitor's room (to the room post's `done_at`, once the homeserver answered).
pub const TO_VISITOR_STAGES: [&str; 3] = [
    "Telegram poll (sent → recorded)",
    "lane (→ handled)",
    "room post (→ posted)",
];

/// For each message, the times (unix ms, Switchboard's clock, which is this machine's) at which
/// it reached the end of each of its steps, by (conversation, number). Towards a responder the
/// third (the stand-in's record) is the soak's to fill in; the store has the others.
#[derive(Default)]
pub struct StageTimes {
    pub to_responder: HashMap<(usize, usize), [Option<i64>; 4]>,
    pub to_visitor: HashMap<(usize, usize), [Option<i64>; 3]>,
    /// The messages whose delivery to the responder was tried more than once (a failed
    /// or refused call, or a row left for a later pass).
    pub retried: HashSet<(usize, usize)>,
}

/// Reads from Switchboard's store (SQLite, as the soak runs it) when each message was
/// recorded, handled and delivered or posted: every row is found by the marker its JSON
/// carries. The first row with a marker is the message itself; a later one may be a reply
/// quoting it.
pub async fn stage_times(db_url: &str) -> anyhow::Result<StageTimes> {
    anyhow::ensure!(db_url.starts_with("sqlite:"), "not SQLite: {db_url}");
    let db = sqlx::SqlitePool::connect(db_url).await?;
    let mut times = StageTimes::default();
    // A visitor's event: its JSON, received, processed, and its outbox row's done and attempts.
    type InboxRow = (String, i64, Option<i64>, Option<i64>, Option<i64>);
    let rows: Vec<InboxRow> = sqlx::query_as(
        "SELECT i.event_json, i.received_at, i.processed_at, o.done_at, o.attempts FROM inbox i
         LEFT JOIN outbox o ON o.event_id = i.event_id ORDER BY i.seq",
    )
    .fetch_all(&db)
    .await?;
    for (json, received, processed, done, attempts) in rows {
        if let Some(key) = find_marker(&json, 'v')
            && !times.to_responder.contains_key(&key)
        {
            times
                .to_responder
                .insert(key, [Some(received), processed, None, done]);
            if attempts.unwrap_or(0) > 0 {
                times.retried.insert(key);
            }
        }
    }
    let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT event_json, received_at, processed_at FROM remote_inbox ORDER BY seq",
    )
    .fetch_all(&db)
    .await?;
    for (json, received, processed) in rows {
        if let Some(key) = find_marker(&json, 'r') {
            times
                .to_visitor
                .entry(key)
                .or_insert([Some(received), processed, None]);
        }
    }
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT op_json, done_at FROM room_posts ORDER BY seq")
            .fetch_all(&db)
            .await?;
    let mut posted = HashSet::new();
    for (json, done) in rows {
        if let Some(key) = find_marker(&json, 'r')
            && posted.insert(key)
            && let Some(marks) = times.to_visitor.get_mut(&key)
        {
            marks[2] = done;
        }
    }
    db.close().await;
    Ok(times)
}

/// The length of each step of a message sent at `sent`, given when each ended; `None` unless
/// every step has its end.
pub fn steps<const N: usize>(sent: i64, marks: &[Option<i64>; N]) -> Option<[f64; N]> {
    let mut out = [0.0; N];
    let mut from = sent;
    for (step, mark) in out.iter_mut().zip(marks) {
        let to = (*mark)?;
        *step = (to - from) as f64;
        from = to;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_measured_from_the_send_and_need_every_end() {
        assert_eq!(
            steps(1_000, &[Some(1_040), Some(1_045), Some(2_000)]),
            Some([40.0, 5.0, 955.0])
        );
        assert_eq!(steps(1_000, &[Some(1_040), None, Some(2_000)]), None);
        assert_eq!(
            steps(1_000, &[Some(1_040), Some(1_045), Some(1_900), Some(2_000)]),
            Some([40.0, 5.0, 855.0, 100.0])
        );
    }
}
