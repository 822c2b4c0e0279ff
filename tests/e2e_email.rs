//! Email responders end to end, over real mail servers: visitor → real Synapse → Switchboard
//! → SMTP (aiosmtpd in front of Dovecot, `scripts/mail.sh`) → the responder's mailbox, read
//! over IMAP → a reply sent over SMTP → Switchboard's own mailbox, read with IMAP IDLE → the
//! visitor sees the responder's ghost.
//!
//! Switchboard's mail domain in each test is `<fresh>.catchall.test`: the test mail server
//! delivers every address there (`reply+TOKEN@`, `bounce+ID@`, `support@`) to `inbox@` that
//! domain, the mailbox Switchboard reads, as an operator's catch-all alias would.

mod common;
mod mail_thread;
mod mailbox;

use std::time::Duration;

use anyhow::Context;
use common::*;
use lettre::message::{Mailbox, header::ContentType};
use mail_parser::MessageParser;
use mail_thread::{Mail, Received, send_raw};
use mailbox::{fresh, fresh_address};

const TOPICS: &str = "[[topics]]\nid = \"support\"\nname = \"General support\"\n\n";

/// One test's Switchboard on `slot`, with Alice answering `support` by email at `alice` and
/// `extra` configured besides (the topics, and whatever else the test needs).
struct World {
    mail: Mail,
    env: TestEnv,
    slot: Slot,
    sb: Switchboard,
    alice: String,
}

impl World {
    /// `None` outside scripts/test.sh (no mail server: the test says it skipped).
    async fn start(
        name: &str,
        slot: u32,
        alice: String,
        extra: &str,
    ) -> anyhow::Result<Option<Self>> {
        let Some(mail) = Mail::new(name) else {
            return Ok(None);
        };
        let env = TestEnv::from_env();
        let slot = Slot::load(&env, slot)?;
        // A batch window of 5 s: the three quick lines below must all be written within it,
        // and with 2 s one CI run (eleven tests and Synapse sharing two cores) saw the first
        // line go out alone.
        let config = format!(
            "{}{extra}{}",
            mail.section(&slot, 5),
            email_responder("alice", "Alice", &alice)
        );
        let sb = Switchboard::start(&env, &slot, &config).await?;
        Ok(Some(World {
            mail,
            env,
            slot,
            sb,
            alice,
        }))
    }

    /// A visitor on `support` who wrote `first`, their room, and the offer mail quoting it.
    async fn offered(&self, first: &str) -> anyhow::Result<(Visitor, String, Received)> {
        self.offered_with(first, first).await
    }

    /// The same, the offer found by `hint` (a part of `first` that reads the same in a mail).
    async fn offered_with(
        &self,
        first: &str,
        hint: &str,
    ) -> anyhow::Result<(Visitor, String, Received)> {
        let mut visitor = Visitor::guest(&self.env, &self.sb.base).await?;
        let room = visitor.start("support").await?;
        visitor.send(first).await?;
        let offer = self
            .mail
            .wait_mail(&self.alice, "the offer", |m| m.text.contains(hint))
            .await?;
        Ok((visitor, room, offer))
    }

    /// The same, held by Alice: she replied `answer` to the offer.
    async fn held(&self, first: &str, answer: &str) -> anyhow::Result<(Visitor, String, Received)> {
        let (visitor, room, offer) = self.offered(first).await?;
        self.mail
            .reply(&self.alice, &offer.reply_to, Some(&offer), answer)
            .await?;
        ghost_of(&self.sb, &room).await?;
        Ok((visitor, room, offer))
    }
}

fn email_responder(id: &str, pseudonym: &str, address: &str) -> String {
    format!(
        "[[responders]]\nid = \"{id}\"\ndisplay_name = \"{pseudonym}\"\npseudonym = \"{pseudonym}\"\n\
         topics = [\"support\"]\nmax_concurrent = 5\ncontacts = [{{ platform = \"email\", address = \"{address}\" }}]\n\n"
    )
}

async fn alias_of(sb: &Switchboard, room: &str) -> anyhow::Result<String> {
    Ok(sb
        .store()
        .await?
        .conversation(room)
        .await?
        .context("stored")?
        .visitor_alias)
}

async fn ghost_of(sb: &Switchboard, room: &str) -> anyhow::Result<String> {
    wait_for("the responder's assignment", || async {
        Ok(sb
            .store()
            .await?
            .active_assignments_for_room(room)
            .await?
            .first()
            .map(|a| a.ghost_user_id.clone()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_the_offer_accepts_and_the_thread_goes_both_ways() -> anyhow::Result<()> {
    let Some(w) = World::start("offer", 0, fresh_address("alice"), TOPICS).await? else {
        return Ok(());
    };

    // --- the offer: who, what, links; nothing that identifies the visitor -------------------
    let (mut visitor, room, offer) = w.offered("My parcel 4711 never arrived").await?;
    let alias = alias_of(&w.sb, &room).await?;
    assert_eq!(offer.from, format!("support@{}", w.mail.domain));
    let headers = offer.header_block();
    assert!(
        headers.contains("General support via Switchboard"),
        "{headers}"
    );
    assert!(offer.subject.contains(&alias), "{}", offer.subject);
    let token = offer
        .reply_to
        .strip_prefix("reply+")
        .and_then(|r| r.strip_suffix(&format!("@{}", w.mail.domain)))
        .context("Reply-To is reply+TOKEN@domain")?;
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{token}"
    );
    let raw = String::from_utf8_lossy(&offer.raw);
    for secret in [&visitor.user_id, &room, &visitor.token] {
        assert!(
            !raw.contains(secret.as_str()),
            "{secret} leaked into the offer mail"
        );
    }
    assert!(offer.link("Accept").is_some() && offer.link("Decline").is_some());

    // --- replying accepts; only the new text reaches the visitor, as the ghost ---------------
    let quoted = format!(
        "Hello! I am looking into it right now.\n\nOn Mon, 30 Nov 2026, {} wrote:\n> {}\n",
        offer.from, "My parcel 4711 never arrived"
    );
    w.mail
        .reply(&w.alice, &offer.reply_to, Some(&offer), &quoted)
        .await?;
    let ghost = ghost_of(&w.sb, &room).await?;
    visitor
        .sync_until("the emailed answer", |seen| {
            seen.iter().any(|s| s.body.contains("looking into it"))
        })
        .await?;
    let answer = visitor
        .seen
        .iter()
        .find(|s| s.body.contains("looking into it"))
        .unwrap()
        .clone();
    assert_eq!(answer.sender, ghost);
    assert_eq!(answer.body, "Hello! I am looking into it right now.");

    // --- three quick lines from the visitor: one mail, threaded under the offer --------------
    for line in [
        "It was sent on Monday",
        "Tracking says delivered",
        "But nothing here",
    ] {
        visitor.send(line).await?;
    }
    let follow = w
        .mail
        .wait_mail(&w.alice, "the visitor's lines", |m| {
            m.text.contains("Tracking says delivered")
        })
        .await?;
    for line in ["It was sent on Monday", "But nothing here"] {
        assert!(
            follow.text.contains(line),
            "one mail for all three: {}",
            follow.text
        );
    }
    // Threaded: it answers the latest mail of the conversation, and its References start
    // with the offer.
    let all: Vec<Received> = w
        .mail
        .inbox(&w.alice)
        .await?
        .into_iter()
        .map(Received::new)
        .collect();
    let parent = follow.in_reply_to.first().context("In-Reply-To")?;
    assert!(
        all.iter().any(|m| m.message_id == format!("<{parent}>")),
        "In-Reply-To names one of our earlier mails: {parent}"
    );
    let references = follow
        .header_block()
        .lines()
        .find_map(|l| l.strip_prefix("References: "))
        .context("References")?
        .to_owned();
    assert!(references.starts_with(&offer.message_id), "{references}");
    assert_eq!(
        follow.reply_to, offer.reply_to,
        "one reply address per conversation"
    );
    let carrying = all
        .iter()
        .filter(|m| m.text.contains("It was sent on Monday") || m.text.contains("But nothing here"))
        .count();
    assert_eq!(carrying, 1, "one mail for three lines");

    // --- a reply that lost the reply address lands by In-Reply-To; /end ends it --------------
    w.mail
        .reply(
            &w.alice,
            &format!("support@{}", w.mail.domain),
            Some(&follow),
            "Found it at your neighbour's.\n/end\n-- \nAlice, Support team\n",
        )
        .await?;
    visitor
        .sync_until("the second answer", |seen| {
            seen.iter().any(|s| s.body.contains("neighbour"))
        })
        .await?;
    let second = visitor
        .seen
        .iter()
        .find(|s| s.body.contains("neighbour"))
        .unwrap();
    assert_eq!(
        second.body, "Found it at your neighbour's.",
        "signature and command stripped"
    );
    wait_for("the conversation to end", || async {
        let active =
            w.sb.store()
                .await?
                .active_assignments_for_room(&room)
                .await?;
        Ok(active.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_page_accepts_and_declines_with_a_post_only() -> anyhow::Result<()> {
    let Some(w) = World::start("links", 1, fresh_address("alice"), TOPICS).await? else {
        return Ok(());
    };
    let http = reqwest::Client::new();
    let (_v1, room1, offer1) = w.offered("first visitor here").await?;

    let accept = offer1.link("Accept").context("Accept link")?;
    // Opening the link (what a mail scanner does) decides nothing.
    let page = http.get(&accept).send().await?;
    assert_eq!(page.status(), 200);
    let html = page.text().await?;
    assert!(html.contains("<form method=\"post\""), "{html}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        w.sb.store()
            .await?
            .active_assignments_for_room(&room1)
            .await?
            .is_empty(),
        "a GET must not accept"
    );
    let pressed = http.post(&accept).send().await?;
    assert_eq!(pressed.status(), 200);
    ghost_of(&w.sb, &room1).await?;
    // Used once: a second press finds the link gone.
    assert_eq!(http.post(&accept).send().await?.status(), 404);
    assert_eq!(http.get(&accept).send().await?.status(), 404);

    let mut v2 = Visitor::guest(&w.env, &w.sb.base).await?;
    let room2 = v2.start("support").await?;
    v2.send("second visitor here").await?;
    let offer2 = w
        .mail
        .wait_mail(&w.alice, "the second offer", |m| {
            m.text.contains("second visitor")
        })
        .await?;
    let decline = offer2.link("Decline").context("Decline link")?;
    assert_eq!(http.post(&decline).send().await?.status(), 200);
    wait_for("the offer to be declined", || async {
        let offers = w.sb.store().await?.offers_for_room(&room2).await?;
        Ok(offers.iter().any(|o| o.state == "declined").then_some(()))
    })
    .await?;
    // Declined: a later reply to that offer does not take the conversation.
    w.mail
        .reply(
            &w.alice,
            &offer2.reply_to,
            Some(&offer2),
            "Actually, I can take it",
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        w.sb.store()
            .await?
            .active_assignments_for_room(&room2)
            .await?
            .is_empty(),
        "a declined offer stays declined"
    );
    // A link that was never minted is refused the same way.
    let forged = format!("{}/email/v1/offers/{}", w.sb.base, "0".repeat(32));
    assert_eq!(http.post(&forged).send().await?.status(), 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_conversations_replies_land_in_their_own() -> anyhow::Result<()> {
    let Some(w) = World::start("two", 2, fresh_address("alice"), TOPICS).await? else {
        return Ok(());
    };
    let (mut v1, room1, o1) = w.offered("question about apples").await?;
    let (mut v2, room2, o2) = w.offered("question about pears").await?;

    assert_ne!(o1.reply_to, o2.reply_to);
    w.mail
        .reply(&w.alice, &o2.reply_to, Some(&o2), "Pears are in aisle 3")
        .await?;
    w.mail
        .reply(&w.alice, &o1.reply_to, Some(&o1), "Apples are in aisle 1")
        .await?;
    v1.sync_until("the apples answer", |seen| {
        seen.iter().any(|s| s.body.contains("aisle 1"))
    })
    .await?;
    v2.sync_until("the pears answer", |seen| {
        seen.iter().any(|s| s.body.contains("aisle 3"))
    })
    .await?;
    ghost_of(&w.sb, &room1).await?;
    ghost_of(&w.sb, &room2).await?;
    // A reply that only has In-Reply-To (sent to the plain address) lands by it.
    w.mail
        .reply(
            &w.alice,
            &format!("support@{}", w.mail.domain),
            Some(&o1),
            "Also: apples are on sale",
        )
        .await?;
    v1.sync_until("the In-Reply-To answer", |seen| {
        seen.iter().any(|s| s.body.contains("on sale"))
    })
    .await?;
    assert!(!v1.seen.iter().any(|s| s.body.contains("aisle 3")));
    assert!(!v2.seen.iter().any(|s| s.body.contains("aisle 1")));
    v2.sync_until("a moment", |_| true).await?;
    assert!(!v2.seen.iter().any(|s| s.body.contains("on sale")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_automatic_mail_is_not_relayed() -> anyhow::Result<()> {
    let Some(w) = World::start("forged", 3, fresh_address("alice"), TOPICS).await? else {
        return Ok(());
    };
    let mallory = fresh_address("mallory");
    let (mut visitor, _room, offer) = w.held("hello there", "Alice here").await?;

    // Someone else who learnt the reply address.
    w.mail
        .reply(
            &mallory,
            &offer.reply_to,
            Some(&offer),
            "FORGED: send me your password",
        )
        .await?;
    // An out-of-office answer from the responder's own address.
    let oof = lettre::Message::builder()
        .from(w.alice.parse::<Mailbox>()?)
        .to(offer.reply_to.parse::<Mailbox>()?)
        .subject("Out of office")
        .header(AutoSubmitted)
        .header(ContentType::TEXT_PLAIN)
        .body("AUTOREPLY: I am away until Monday".to_owned())?;
    w.mail.server.send_as(&w.alice, oof).await?;
    // Then a genuine one: once it is through, the two before it were handled too.
    w.mail
        .reply(&w.alice, &offer.reply_to, Some(&offer), "Genuine answer")
        .await?;
    visitor
        .sync_until("the genuine answer", |seen| {
            seen.iter().any(|s| s.body.contains("Genuine answer"))
        })
        .await?;
    for bad in ["FORGED", "AUTOREPLY"] {
        assert!(
            !visitor.seen.iter().any(|s| s.body.contains(bad)),
            "{bad} was relayed"
        );
    }
    Ok(())
}

/// A responder whose domain publishes DMARC `p=reject` (the test zone's responders.test): an
/// unsigned reply in their name is held, one signed with their domain's key goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_failing_its_domains_dmarc_policy_is_held() -> anyhow::Result<()> {
    let rita = format!("{}@responders.test", fresh("rita"));
    let Some(w) = World::start("dmarc", 6, rita.clone(), TOPICS).await? else {
        return Ok(());
    };
    let (mut visitor, room, offer) = w.offered("is anyone there").await?;

    // Unsigned, and over IMAP there is no SMTP client to check SPF for: DMARC fails.
    w.mail
        .reply(&rita, &offer.reply_to, Some(&offer), "UNSIGNED: I accept")
        .await?;
    let signed = signed_reply(&rita, &offer, "Signed: I accept")?;
    w.mail.server.send_as(&rita, signed).await?;
    visitor
        .sync_until("the signed answer", |seen| {
            seen.iter().any(|s| s.body.contains("Signed: I accept"))
        })
        .await?;
    assert!(
        !visitor.seen.iter().any(|s| s.body.contains("UNSIGNED")),
        "a mail failing DMARC p=reject was relayed"
    );
    ghost_of(&w.sb, &room).await?;
    let log = w.sb.log_text();
    assert!(log.contains("dmarc=fail"), "the refusal is logged with why");
    Ok(())
}

/// A reply DKIM-signed with the test zone's responders.test key (selector `sb`).
fn signed_reply(from: &str, parent: &Received, text: &str) -> anyhow::Result<lettre::Message> {
    use lettre::message::dkim::{
        DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
        DkimSigningKey,
    };
    let key = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bridge/src/connector/email/auth/testdata/dkim-responders-test-rsa.pem"
    ))?;
    let key = DkimSigningKey::new(key.trim(), DkimSigningAlgorithm::Rsa)?;
    let config = DkimConfig::new(
        "sb".to_owned(),
        "responders.test".to_owned(),
        key,
        vec![
            lettre::message::header::HeaderName::new_from_ascii_str("From"),
            lettre::message::header::HeaderName::new_from_ascii_str("Subject"),
            lettre::message::header::HeaderName::new_from_ascii_str("To"),
        ],
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    );
    let mut message = lettre::Message::builder()
        .from(from.parse::<Mailbox>()?)
        .to(parent.reply_to.parse::<Mailbox>()?)
        .subject("Re: your conversation")
        .in_reply_to(parent.message_id.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(text.to_owned())?;
    message.sign(&config);
    Ok(message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_ways_in_take_a_reply_once() -> anyhow::Result<()> {
    let smtp_port = free_port()?;
    let token = "http-inbound-token-0123456789";
    let extra = format!(
        "[email.listener]\naddress = \"127.0.0.1:{smtp_port}\"\n\n[email.http]\ntoken = {token:?}\n\n{TOPICS}"
    );
    let Some(mut w) = World::start("ways", 7, fresh_address("alice"), &extra).await? else {
        return Ok(());
    };
    let (mut visitor, _room, offer) = w.held("three ways in", "By IMAP").await?;

    // Straight to the SMTP listener (as an MX would deliver it).
    let by_smtp = raw_reply(&w.alice, &offer, "By the SMTP listener", &fresh("smtp"));
    let listener =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(smtp_port)
            .build();
    let envelope =
        lettre::address::Envelope::new(Some(w.alice.parse()?), vec![offer.reply_to.parse()?])?;
    use lettre::AsyncTransport;
    listener.send_raw(&envelope, by_smtp.as_bytes()).await?;
    // The same mail again (a sender retrying after a lost 250): recorded once.
    listener.send_raw(&envelope, by_smtp.as_bytes()).await?;

    // Posted over HTTP, twice, and once without the token.
    let by_http = raw_reply(&w.alice, &offer, "By HTTP", &fresh("http"));
    let http = reqwest::Client::new();
    let url = format!("{}/email/v1/inbound", w.sb.base);
    let refused = http.post(&url).body(by_http.clone()).send().await?;
    assert_eq!(refused.status(), 401);
    for _ in 0..2 {
        let posted = http
            .post(&url)
            .bearer_auth(token)
            .body(by_http.clone())
            .send()
            .await?;
        assert_eq!(posted.status(), 204);
    }
    let junk = http
        .post(&url)
        .bearer_auth(token)
        .body("no mail")
        .send()
        .await?;
    assert_eq!(junk.status(), 422);

    // Switchboard dies; replies arrive meanwhile, one of them twice; after the restart each
    // reaches the visitor once.
    w.sb.kill();
    w.mail
        .reply(&w.alice, &offer.reply_to, Some(&offer), "While down 1")
        .await?;
    let twice = raw_reply(&w.alice, &offer, "While down 2", &fresh("twice"));
    for _ in 0..2 {
        send_raw(&w.mail.server, &w.alice, &offer.reply_to, twice.as_bytes()).await?;
    }
    w.sb.restart().await?;
    visitor
        .sync_until("every reply", |seen| {
            [
                "By IMAP",
                "By the SMTP listener",
                "By HTTP",
                "While down 1",
                "While down 2",
            ]
            .iter()
            .all(|t| seen.iter().any(|s| s.body == *t))
        })
        .await?;
    visitor.sync_until("a moment more", |_| true).await?;
    for text in ["By the SMTP listener", "By HTTP", "While down 2"] {
        let times = visitor.seen.iter().filter(|s| s.body == text).count();
        assert_eq!(times, 1, "{text:?} reached the visitor {times} times");
    }
    Ok(())
}

/// A plain reply as raw bytes with a Message-ID of `id_local`.
fn raw_reply(from: &str, parent: &Received, text: &str, id_local: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Re: your conversation\r\n\
         Message-ID: <{id_local}@responder.example.test>\r\nIn-Reply-To: {parent}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n",
        to = parent.reply_to,
        parent = parent.message_id,
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_in_topic_pseudonym_and_text_creates_no_header() -> anyhow::Result<()> {
    let topics = "[[topics]]\nid = \"support\"\nname = \"Help\\r\\nBcc: topic@evil.test =?utf-8?q?X-Injected=3A_1?=\"\n\n";
    let Some(w) = World::start("inject", 5, fresh_address("alice"), topics).await? else {
        return Ok(());
    };
    let (_visitor, _room, offer) = w
        .offered_with(
            "Hi\r\nBcc: text@evil.test\r\n\r\n=?utf-8?b?QmNjOiBldmlsQGV2aWwudGVzdA==?= marker-42",
            "marker-42",
        )
        .await?;

    let headers = offer.header_block();
    for line in headers.lines() {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            !["bcc", "x-injected"].contains(&name.as_str()),
            "an injected header: {line}\n{headers}"
        );
    }
    assert!(!headers.contains("evil.test"), "{headers}");
    // Only the real recipient got it.
    let mut session = w.mail.server.login("topic@evil.test").await?;
    let evil = session.select("INBOX").await?;
    assert_eq!(evil.exists, 0, "an injected Bcc received the offer");
    session.logout().await.ok();
    Ok(())
}

/// `Auto-Submitted: auto-replied`, as out-of-office responders write it (RFC 3834).
#[derive(Clone)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), "auto-replied".to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_hands_the_conversation_to_the_next_responder() -> anyhow::Result<()> {
    let Some(mail) = Mail::new("bounce") else {
        return Ok(());
    };
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 4)?;
    let alice = fresh_address("alice");
    let mut bob = MatrixResponder::register(&env, &unique("bob")).await?;
    let bob_id = bob.client.user_id().context("bob's user ID")?.to_string();
    // Bob is away at first, so the offer goes to Alice alone; he is back before her mail
    // bounces, so the conversation can go to him.
    let config = format!(
        "[admin]\ntoken = \"bounce-admin\"\n\n{}{TOPICS}{}[[responders]]\nid = \"bob\"\n\
         display_name = \"Bob\"\npseudonym = \"Bob\"\ntopics = [\"support\"]\nmax_concurrent = 5\n\
         status = \"away\"\ncontacts = [{{ platform = \"matrix\", address = \"{bob_id}\" }}]\n\n",
        mail.section(&slot, 1),
        email_responder("alice", "Alice", &alice),
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("please help with my invoice").await?;
    let offer = mail
        .wait_mail(&alice, "the offer", |m| m.text.contains("invoice"))
        .await?;
    mail.reply(&alice, &offer.reply_to, Some(&offer), "On it")
        .await?;
    ghost_of(&sb, &room).await?;
    visitor.send("the invoice number is 99").await?;
    let follow = mail
        .wait_mail(&alice, "the visitor's message", |m| {
            m.text.contains("number is 99")
        })
        .await?;
    let back = reqwest::Client::new()
        .put(format!("{}/admin/v1/responders/bob/status", sb.base))
        .bearer_auth("bounce-admin")
        .json(&serde_json::json!({"status": "available"}))
        .send()
        .await?;
    assert_eq!(back.status(), 200);
    // A later hop refuses it for good, and reports back to its return path.
    mail.bounce(&follow, &alice).await?;
    // The conversation goes to Bob, on Matrix, with what was said so far.
    let relay = relay_room_of(&sb.store().await?, &room, "bob").await?;
    bob.accept_invite(&relay).await?;
    let bot = format!("@sbt4bot:{}", env.server_name);
    bob.wait_for_text(&relay, &bot, "invoice").await?;
    wait_for("Alice to lose the conversation", || async {
        let active = sb.store().await?.active_assignments_for_room(&room).await?;
        Ok((!active.iter().any(|a| a.responder_id == "alice")).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_both_ways() -> anyhow::Result<()> {
    let Some(w) = World::start("files", 8, fresh_address("alice"), TOPICS).await? else {
        return Ok(());
    };
    let (mut visitor, _room, offer) = w.held("I have a file for you", "Send it over").await?;

    // Visitor → responder: an attachment with the same bytes.
    let notes: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mxc = upload_media(&w.env, &w.slot, "notes.txt", "text/plain", &notes).await?;
    visitor
        .send_content(serde_json::json!({"msgtype": "m.file", "body": "notes.txt", "url": mxc, "info": {"mimetype": "text/plain"}}))
        .await?;
    let with_file = w
        .mail
        .wait_mail(&w.alice, "the visitor's file", |m| {
            String::from_utf8_lossy(&m.raw).contains("notes.txt")
        })
        .await?;
    let parsed = MessageParser::default()
        .parse(&with_file.raw)
        .context("a mail")?;
    let attached = parsed
        .attachments()
        .find(|a| mail_parser::MimeHeaders::attachment_name(*a) == Some("notes.txt"))
        .context("notes.txt attached")?;
    assert_eq!(attached.contents(), notes.as_slice());

    // Responder → visitor: a mailed picture arrives as an image from the ghost.
    let png: &[u8] = b"\x89PNG\r\n\x1a\n-not-really-a-png-but-bytes-are-bytes";
    let reply = lettre::Message::builder()
        .from(w.alice.parse::<Mailbox>()?)
        .to(offer.reply_to.parse::<Mailbox>()?)
        .subject("Re: file")
        .in_reply_to(offer.message_id.clone())
        .multipart(
            lettre::message::MultiPart::mixed()
                .singlepart(lettre::message::SinglePart::plain(
                    "Here is the map".to_owned(),
                ))
                .singlepart(
                    lettre::message::Attachment::new("map.png".to_owned())
                        .body(png.to_vec(), ContentType::parse("image/png")?),
                ),
        )?;
    w.mail.server.send_as(&w.alice, reply).await?;
    visitor
        .sync_until("the mailed picture", |seen| {
            seen.iter()
                .any(|s| s.body == "map.png" && !s.url.is_empty())
        })
        .await?;
    let picture = visitor
        .seen
        .iter()
        .find(|s| s.body == "map.png")
        .unwrap()
        .clone();
    assert_eq!(picture.msgtype, "m.image");
    let bytes = download_media(&w.env, &visitor.token, &picture.url).await?;
    assert_eq!(bytes, png);
    assert!(visitor.seen.iter().any(|s| s.body == "Here is the map"));
    Ok(())
}
