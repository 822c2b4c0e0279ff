//! Delivery status notifications (RFC 3464): a mail of ours that could not be delivered.
//!
//! Our mails go out with the return path `bounce+TOKEN@domain`, so the report comes back
//! to that address and the token names the mail (and so the responder) that failed. Only
//! the standard `multipart/report; report-type=delivery-status` form is read (Postfix,
//! Exim, Exchange, Gmail and Sendmail all send it, and `global-delivery-status`, RFC 6533,
//! for internationalised mail). A free-text bounce from an ancient MTA yields no report;
//! the connector should still never relay mail that reached a `bounce+` address.

use mail_parser::{Message, MimeHeaders, PartType};

use super::{InboundMail, bounce_token};

/// What a delivery status notification says about each recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryReport {
    pub recipients: Vec<RecipientReport>,
}

/// One per-recipient block of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientReport {
    /// `Final-Recipient`, without its address type (`rfc822;`), lower-cased.
    pub recipient: Option<String>,
    pub action: Action,
    /// `Status`, e.g. `5.1.1`, when it is a well-formed status code.
    pub status: Option<String>,
    /// `Diagnostic-Code`, as the remote server gave it (e.g. `smtp; 550 5.1.1 …`).
    pub diagnostic: Option<String>,
}

/// RFC 3464 §2.3.3's `Action`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
    /// A value the RFC does not define, lower-cased.
    Other(String),
}

/// A mail of ours that was not delivered, and to whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounce {
    /// The token of the `bounce+TOKEN@domain` address the report came back to.
    pub token: String,
    /// A 5.x.x status (or a failure without a status): the address will not take mail, so
    /// stop sending there. Otherwise (4.x.x, or a delay) it may work later.
    pub permanent: bool,
    /// The `Status` code, e.g. `5.1.1`; empty when the report gave none.
    pub status: String,
    pub diagnostic: Option<String>,
    /// The recipient that failed, as the report names it.
    pub recipient: Option<String>,
}

/// The bounce this mail reports, if it is a delivery status notification about a failed or
/// delayed delivery sent to one of our `bounce+TOKEN@domain` addresses. Reports of success
/// (`delivered`, `relayed`, `expanded`) are no bounce. With several recipients, the
/// failed ones come before the delayed ones, in report order.
pub fn bounce(mail: &InboundMail, envelope_rcpts: &[&str], domain: &str) -> Option<Bounce> {
    let report = mail.delivery_report.as_ref()?;
    let worst = report
        .recipients
        .iter()
        .find(|r| r.action == Action::Failed)
        .or_else(|| {
            report
                .recipients
                .iter()
                .find(|r| r.action == Action::Delayed)
        })?;
    let token = bounce_token(mail, envelope_rcpts, domain)?;
    let status = worst.status.clone().unwrap_or_default();
    let permanent = match status.as_bytes().first() {
        Some(b'5') => true,
        Some(_) => false,
        None => worst.action == Action::Failed,
    };
    Some(Bounce {
        token,
        permanent,
        status,
        diagnostic: worst.diagnostic.clone(),
        recipient: worst.recipient.clone(),
    })
}

pub(super) fn delivery_report(message: &Message<'_>) -> Option<DeliveryReport> {
    let root = message.content_type()?;
    let is_report = root.ctype().eq_ignore_ascii_case("multipart")
        && root
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        && root.attribute("report-type").is_some_and(|t| {
            t.eq_ignore_ascii_case("delivery-status")
                || t.eq_ignore_ascii_case("global-delivery-status")
        });
    if !is_report {
        return None;
    }
    let status_part = message.parts.iter().find(|part| {
        part.is_content_type("message", "delivery-status")
            || part.is_content_type("message", "global-delivery-status")
    })?;
    let fields = match &status_part.body {
        PartType::Binary(bytes) | PartType::InlineBinary(bytes) => String::from_utf8_lossy(bytes),
        PartType::Text(text) => text.clone(),
        _ => return None,
    };
    Some(DeliveryReport {
        recipients: field_groups(&fields)
            .into_iter()
            // The first group is about the whole message (Reporting-MTA, …).
            .skip(1)
            .filter_map(recipient_report)
            .collect(),
    })
}

fn recipient_report(fields: Vec<(String, String)>) -> Option<RecipientReport> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let action = match field("Action")?.to_lowercase().as_str() {
        "failed" => Action::Failed,
        "delayed" => Action::Delayed,
        "delivered" => Action::Delivered,
        "relayed" => Action::Relayed,
        "expanded" => Action::Expanded,
        other => Action::Other(other.to_owned()),
    };
    let recipient = field("Final-Recipient")
        .or_else(|| field("Original-Recipient"))
        .map(|r| {
            // `rfc822; user@example.org`: the address type is not part of the address.
            let address = r.split_once(';').map_or(r.as_str(), |(_, a)| a);
            address
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_lowercase()
        });
    let status = field("Status")
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .filter(|s| is_status_code(s));
    Some(RecipientReport {
        recipient,
        action,
        status,
        diagnostic: field("Diagnostic-Code"),
    })
}

/// `class.subject.detail` (RFC 3463): class 2, 4 or 5, then one to three digits twice.
fn is_status_code(code: &str) -> bool {
    let parts: Vec<&str> = code.split('.').collect();
    matches!(parts.as_slice(), [class, subject, detail]
    if matches!(*class, "2" | "4" | "5")
        && [subject, detail].iter().all(|p| {
            (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
        }))
}

/// The header-like field groups of a `message/delivery-status` body, separated by blank
/// lines, folded lines unfolded.
fn field_groups(body: &str) -> Vec<Vec<(String, String)>> {
    let mut groups: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in body.lines() {
        let group = groups.last_mut().expect("never empty");
        if line.trim().is_empty() {
            if !group.is_empty() {
                groups.push(Vec::new());
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = group.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            group.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    groups.retain(|group| !group.is_empty());
    groups
}
