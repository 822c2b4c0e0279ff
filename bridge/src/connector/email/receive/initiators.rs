//! Mail from someone who is not a responder, where `[email] initiators = true`: the start or
//! the continuation of a conversation of their own (issue 14).
//!
//! - A **new mail** (not a reply to one of ours) opens a thread: a fresh token, remembered
//!   as an initiator's thread ([`Thread::initiator`]) with their address and subject. If the
//!   address it was sent to names a topic (`support+billing@`, or one of
//!   `topic_addresses`), the topic is picked with it ([`RemoteEvent::TopicChosen`], before
//!   the message, so the message goes into that conversation); else the bridge keeps the
//!   message and asks them by mail, and their reply naming a topic picks it.
//! - A **reply** in their thread (its `reply+TOKEN`, or `In-Reply-To` one of our mails there)
//!   continues it, only from the address the thread belongs to.
//!
//! Their text, files and commands (`/end`, `/new`) become events like a responder's, with the
//! thread's token as the event's thread: the bridge sends answers there. The events are
//! recorded before the mail is acknowledged, under keys made of its Message-ID, so a mail
//! handled twice counts once. (A mail handled twice may leave a second, unused thread
//! behind: the events recorded first name the thread that is used.)

use super::super::compose::{MessageId, header_text};
use super::super::threads::{Thread, new_token};
use super::{HandlerError, InboundMail, Receiver, inbound};
use crate::connector::RemoteEvent;

/// Longest subject kept to title the thread.
const MAX_SUBJECT_CHARS: usize = 150;

/// What the connector needs to take initiators' mail.
#[derive(Debug, Clone, Default)]
pub struct InitiatorSetup {
    /// The configured topics, (ID, name).
    pub topics: Vec<(String, String)>,
    /// (topic ID, address), addresses lower-cased: a mail to one is about that topic.
    pub topic_addresses: Vec<(String, String)>,
    /// Domains where `LOCAL+TOPIC@domain` names a topic (ours, and that of our From address).
    pub domains: Vec<String>,
}

impl InitiatorSetup {
    /// The topic the addresses a mail went to name: one of `topic_addresses`, else a
    /// `+TOPIC` tag at one of our domains naming a configured topic's ID (case aside).
    pub fn topic_of<'a>(&self, addresses: impl Iterator<Item = &'a str> + Clone) -> Option<String> {
        let plain = |a: &'a str| {
            a.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_ascii_lowercase()
        };
        for address in addresses.clone() {
            let address = plain(address);
            if let Some((topic, _)) = self.topic_addresses.iter().find(|(_, a)| *a == address) {
                return Some(topic.clone());
            }
        }
        addresses.map(plain).find_map(|address| {
            let (local, domain) = address.rsplit_once('@')?;
            if !self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
                return None;
            }
            let (_, tag) = local.split_once('+')?;
            self.topics
                .iter()
                .find(|(id, _)| id.eq_ignore_ascii_case(tag))
                .map(|(id, _)| id.clone())
        })
    }

    /// The name of the topic `id`.
    pub fn topic_name(&self, id: &str) -> Option<&str> {
        self.topics
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, name)| name.as_str())
    }
}

impl Receiver {
    /// See the module's doc. `content` is the mail's new content (quotes and signature
    /// gone).
    pub(super) async fn initiator_mail(
        &self,
        setup: &InitiatorSetup,
        mail: &InboundMail,
        mut content: inbound::NewContent,
        key: &str,
        rcpts: &[&str],
    ) -> Result<(), HandlerError> {
        let from = mail.from.clone();
        let mut events = Vec::new();
        let token = match self.initiator_thread(mail, rcpts).await? {
            Some(token) => token,
            None => {
                let addresses = rcpts
                    .iter()
                    .copied()
                    .chain(mail.recipients.iter().map(String::as_str));
                let topic = setup.topic_of(addresses);
                let subject = mail
                    .subject
                    .as_deref()
                    .map(|s| header_text(s, MAX_SUBJECT_CHARS))
                    .filter(|s| !s.trim().is_empty());
                let token = new_token();
                self.threads
                    .start(
                        &token,
                        &Thread {
                            address: from.clone(),
                            topic: topic
                                .as_deref()
                                .and_then(|t| setup.topic_name(t))
                                .unwrap_or_default()
                                .to_owned(),
                            pseudonym: String::new(),
                            ids: Vec::new(),
                            initiator: true,
                            subject: subject.clone(),
                        },
                    )
                    .await?;
                if let Some(topic) = topic {
                    events.push((
                        format!("{key}/topic"),
                        RemoteEvent::TopicChosen {
                            address: from.clone(),
                            topic,
                            thread: Some(token.clone()),
                            language: None,
                        },
                    ));
                }
                // The subject is what a new mail is about: it goes along as its first line.
                if let Some(subject) = subject.filter(|_| !content.text.is_empty()) {
                    content.text = format!("{subject}\n\n{}", content.text);
                    content.html = content.html.map(|html| {
                        format!(
                            "<p><strong>{}</strong></p>{html}",
                            crate::format::render_html::escape_attribute(&subject)
                        )
                    });
                }
                token
            }
        };
        // Their mail is part of the thread: our answer threads under it.
        if let Some(id) = MessageId::parse(&format!("<{}>", mail.id.as_str())) {
            self.threads.received(&token, &id).await?;
        }
        self.content_events(
            mail,
            &content,
            key,
            (&from, ""),
            Some(token.clone()),
            &mut events,
        )
        .await?;
        if events.is_empty() {
            return Err(HandlerError::Permanent(
                "an initiator's mail with nothing in it; not passed on".into(),
            ));
        }
        self.record(&events).await?;
        tracing::info!(events = events.len(), "an initiator's mail was recorded");
        Ok(())
    }

    /// The initiator's thread a mail continues: the one its `reply+TOKEN` names, else the one
    /// of the mail of ours it answers, if that thread is an initiator's and theirs.
    async fn initiator_thread(
        &self,
        mail: &InboundMail,
        rcpts: &[&str],
    ) -> Result<Option<String>, HandlerError> {
        for token in self.thread_tokens(mail, rcpts).await? {
            if let Some(thread) = self.threads.get(&token).await?
                && thread.initiator
                && thread.address.eq_ignore_ascii_case(&mail.from)
            {
                return Ok(Some(token));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> InitiatorSetup {
        InitiatorSetup {
            topics: vec![
                ("support".into(), "General support".into()),
                ("billing".into(), "Billing".into()),
            ],
            topic_addresses: vec![("billing".into(), "invoices@example.org".into())],
            domains: vec!["mail.example.org".into(), "example.org".into()],
        }
    }

    #[test]
    fn a_topic_is_named_by_a_plus_tag_or_an_address_of_its_own() {
        let s = setup();
        let topic = |addresses: &[&str]| s.topic_of(addresses.iter().copied());
        assert_eq!(
            topic(&["support+billing@example.org"]),
            Some("billing".into())
        );
        assert_eq!(
            topic(&["<Support+BILLING@Mail.Example.Org>"]),
            Some("billing".into())
        );
        assert_eq!(topic(&["Invoices@example.org"]), Some("billing".into()));
        // The address of its own wins over a tag anywhere in the list.
        assert_eq!(
            topic(&["support+support@example.org", "invoices@example.org"]),
            Some("billing".into())
        );
        // No tag, an unknown topic, another domain: none (they are asked).
        assert_eq!(topic(&["support@example.org"]), None);
        assert_eq!(topic(&["support+sales@example.org"]), None);
        assert_eq!(topic(&["support+billing@elsewhere.test"]), None);
        assert_eq!(s.topic_name("billing"), Some("Billing"));
    }
}
