//! Mails written by machines, which must never reach a visitor as a message.
//!
//! An out-of-office answering our offer would otherwise be relayed to the visitor, and our
//! answer to it could start a loop between two robots. Which signals count, and why:
//!
//! - `Auto-Submitted` (RFC 3834 §5): any value but `no` (`auto-generated`, `auto-replied`,
//!   `auto-notified`, and extensions) means no human sent the mail. The standard signal.
//! - `Precedence: bulk | junk | list | auto_reply`: never standardised, but RFC 3834
//!   §3.1.8 tells responders to leave such mail alone, and vacation programs and Exchange
//!   set `bulk`/`auto_reply` on their own answers.
//! - `X-Autoreply`, `X-Autorespond`: set by autoresponders that predate RFC 3834
//!   (cPanel, Zimbra, many vacation scripts); their presence is enough.
//! - `X-Auto-Response-Suppress` containing `All` or `OOF` ([MS-OXCMAIL] §2.2.3.2.20): a
//!   request not to be auto-answered, which Exchange puts on its own out-of-office and
//!   other automatic mail. Outlook does not put it on what a person writes. (Other values,
//!   e.g. `DR` or `RN` about receipts, say nothing about the sender.)
//! - `List-Id` (RFC 2919) or `List-Unsubscribe` (RFC 2369): the mail came through a list;
//!   a responder's reply goes straight to our address, never through one.
//! - `Return-Path: <>`: the null reverse-path, which RFC 5321 §4.5.5 requires of delivery
//!   notifications and RFC 3834 §3.3 recommends for auto-responses; a person's mail
//!   always has a return address. (`Return-Path` is written by the final delivery MTA,
//!   which is ours.)

use mail_parser::Message;

use super::raw_header_values;

/// Why a mail counts as written by a machine (for the log; every kind is refused alike).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Automated {
    /// `Auto-Submitted` with this value (lower-cased, without parameters).
    AutoSubmitted(String),
    /// `Precedence` with this value (lower-cased).
    Precedence(String),
    /// `X-Autoreply` or `X-Autorespond`.
    Autoresponder,
    /// Microsoft's `X-Auto-Response-Suppress` with `All` or `OOF`.
    AutoResponseSuppress,
    /// `List-Id` or `List-Unsubscribe`.
    MailingList,
    /// `Return-Path: <>`.
    NullReturnPath,
}

pub(super) fn automated(message: &Message<'_>) -> Option<Automated> {
    let values = |name: &str| raw_header_values(message, name);
    for value in values("Auto-Submitted") {
        let kind = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_lowercase();
        // An empty value is malformed; treating it as `no` keeps a person's mail with a
        // broken header flowing.
        if !kind.is_empty() && kind != "no" {
            return Some(Automated::AutoSubmitted(kind));
        }
    }
    for value in values("Precedence") {
        let value = value.trim().to_lowercase();
        if matches!(value.as_str(), "bulk" | "junk" | "list" | "auto_reply") {
            return Some(Automated::Precedence(value));
        }
    }
    if !values("X-Autoreply").is_empty() || !values("X-Autorespond").is_empty() {
        return Some(Automated::Autoresponder);
    }
    let suppresses = values("X-Auto-Response-Suppress").iter().any(|value| {
        value
            .split(|c: char| c == ',' || c.is_whitespace())
            .any(|v| v.eq_ignore_ascii_case("all") || v.eq_ignore_ascii_case("oof"))
    });
    if suppresses {
        return Some(Automated::AutoResponseSuppress);
    }
    if !values("List-Id").is_empty() || !values("List-Unsubscribe").is_empty() {
        return Some(Automated::MailingList);
    }
    let null_return_path = values("Return-Path").iter().any(|value| {
        let inner: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        inner == "<>"
    });
    null_return_path.then_some(Automated::NullReturnPath)
}
