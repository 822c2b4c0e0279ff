//! The order a pass hands mails over in: arrival order, except that one sender's mails go in
//! the order they were written (a mailbox can show a mail after one written later).

use std::collections::HashMap;

/// Who wrote a mail (the `From:` address, lower-cased) and when (its `Date:`, unix seconds),
/// from its header.
pub(super) fn sender_and_date(header: &[u8]) -> Option<(String, i64)> {
    let mail = mail_parser::MessageParser::default().parse(header)?;
    let from = mail.from()?.first()?.address()?.to_lowercase();
    Some((from, mail.date()?.to_timestamp()))
}

/// Reorders `uids` (in arrival order) so that each sender's mails are in the order they were
/// written, each in a place one of that sender's mails had; see
/// `Reader::in_writing_order` (imap.rs). `written` has what each mail's header said (`None`: not
/// readable, which leaves the whole pass in arrival order).
pub(super) fn order_as_written(uids: &mut [u32], written: &HashMap<u32, Option<(String, i64)>>) {
    let mut places: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, uid) in uids.iter().enumerate() {
        match written.get(uid) {
            Some(Some((from, _))) => places.entry(from.as_str()).or_default().push(i),
            // Whose it is, is not known: it could be any sender's, so nothing moves.
            _ => return,
        }
    }
    for positions in places.values() {
        let mut mails: Vec<u32> = positions.iter().map(|&i| uids[i]).collect();
        mails.sort_by_key(|uid| (written[uid].as_ref().map(|(_, at)| *at), *uid));
        for (&i, uid) in positions.iter().zip(mails) {
            uids[i] = uid;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(from: &str, date: &str) -> Option<(String, i64)> {
        sender_and_date(format!("From: {from}\r\nDate: {date}\r\nSubject: x\r\n\r\n").as_bytes())
    }

    #[test]
    fn a_senders_mails_go_in_the_order_they_were_written_in_their_places() {
        let a1 = header("A <a@x.test>", "Wed, 2 Dec 2026 07:18:17 +0000");
        let a2 = header("a@X.test", "Wed, 2 Dec 2026 07:18:19 +0000");
        let b1 = header("b@x.test", "Wed, 2 Dec 2026 07:18:18 +0000");
        assert!(a1.is_some() && a2.is_some() && b1.is_some());
        // Arrival: a's second (uid 1), b's (uid 2), a's first (uid 3).
        let written = HashMap::from([(1, a2.clone()), (2, b1.clone()), (3, a1.clone())]);
        let mut uids = [1, 2, 3];
        order_as_written(&mut uids, &written);
        assert_eq!(uids, [3, 2, 1], "a's first takes a's first place; b stays");
        // The same second: arrival order.
        let same = header("a@x.test", "Wed, 2 Dec 2026 07:18:19 +0000");
        let written = HashMap::from([(4, a2), (5, same)]);
        let mut uids = [4, 5];
        order_as_written(&mut uids, &written);
        assert_eq!(uids, [4, 5]);
        // A mail whose header cannot be read: nothing moves.
        let written = HashMap::from([(6, None), (7, b1), (8, a1)]);
        let mut uids = [6, 7, 8];
        order_as_written(&mut uids, &written);
        assert_eq!(uids, [6, 7, 8]);
    }
}
