//! The email responders of a crash burst: a mailbox on the test mail server each (Dovecot
//! behind its SMTP front, `scripts/mail.sh`), read over IMAP and written to over SMTP, as a
//! mail client does. What a kill of Switchboard, Synapse or PostgreSQL does to the mail both
//! ways is what is counted, and, among the platform faults, what the mail server's own
//! faults do (its SMTP front refusing, dropping or hanging on Switchboard's mail, the whole
//! server away for a while).

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::mail_thread::{Mail, Received};
use crate::mailbox::fresh_address;

/// A responder who answers by mail.
pub struct EmailResponder {
    pub address: String,
    /// The offer they took: every reply of theirs answers it, as a mail client's "Reply" to
    /// the conversation's first mail does (its `Reply-To` names the conversation).
    pub offer: Received,
}

/// A mailbox nobody else uses, for the responder of conversation `i`.
pub fn address(i: usize) -> String {
    fresh_address(&format!("chaos{i}r"))
}

/// Waits for the offer quoting `hint` in `address`'s INBOX and takes it by replying to it.
pub async fn accept(mail: &Mail, address: &str, hint: &str) -> anyhow::Result<EmailResponder> {
    let offer = mail
        .wait_mail(address, "the offer mail", |m| m.text.contains(hint))
        .await?;
    mail.reply(address, &offer.reply_to, Some(&offer), "I take this one.")
        .await
        .context("replying to the offer")?;
    Ok(EmailResponder {
        address: address.to_owned(),
        offer,
    })
}

/// Sends `text` as a reply in the conversation, again until the mail server takes it, as a
/// mail client keeps a reply in its outbox: at once unless the server is away (the platform
/// faults take it away for up to a minute) or the machine overloaded.
pub async fn send(mail: &Mail, responder: &EmailResponder, text: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match mail
            .reply(
                &responder.address,
                &responder.offer.reply_to,
                Some(&responder.offer),
                text,
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.context("SMTP never took it")),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The text of every mail in the responder's INBOX, in the order Dovecot delivered them (the
/// order Switchboard sent them in: one chat's mails go out one after another), as a mail
/// client that folds copies of one Message-ID shows them (Gmail does); and how many copies
/// were folded. A mail sent again after Switchboard was killed between the SMTP server's 250
/// and the record of the send carries the first one's ID.
pub async fn received(
    mail: &Mail,
    responder: &EmailResponder,
) -> anyhow::Result<(Vec<String>, usize)> {
    let mut seen = std::collections::HashSet::new();
    let mails: Vec<Received> = mail
        .inbox(&responder.address)
        .await?
        .into_iter()
        .map(Received::new)
        .collect();
    let total = mails.len();
    let texts: Vec<String> = mails
        .into_iter()
        .filter(|m| seen.insert(m.message_id.clone()))
        .map(|m| m.text)
        .collect();
    let folded = total - texts.len();
    Ok((texts, folded))
}
