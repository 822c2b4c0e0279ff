//! Conversations started or answered by mail across platforms (issue 14), over the real mail
//! server (`scripts/mail.sh`), the real Synapse and the platforms' stand-ins:
//!
//! - someone writes to `support+billing@` and a responder on Telegram answers: the answers
//!   arrive as mails in the thread the initiator started, their replies reach the responder;
//! - someone starts on Discord and a responder answers by mail.
//!
//! Each time the responder learns nothing of who the initiator is on their platform.

mod common;
mod mail_thread;
mod mailbox;

use common::*;
use discord_standin::{DcMessage, DiscordStandIn};
use mail_thread::{Mail, Received};
use mailbox::fresh_address;
use switchboard_bridge::conversation::ConversationState;
use telegram_standin::{SentMessage, StandIn, TgUser};

const TG_TOKEN: &str = "8585:email-initiators-token";
const DC_TOKEN: &str = "MTA.email-initiators.bot-token";

const TOPICS: &str = "[[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"broadcast\"\n\n\
     [[topics]]\nid = \"billing\"\nname = \"Billing\"\nstrategy = \"broadcast\"\n\n";

/// The `[email]` section (and `[visitors]`) for `slot`, taking initiators.
fn email_section(mail: &Mail, slot: &Slot, batch_window_secs: u64) -> String {
    let batch = format!("batch_window_secs = {batch_window_secs}\n");
    mail.section(slot, batch_window_secs).replacen(
        &batch,
        &format!("{batch}initiators = true\n"),
        1,
    )
}

/// Switchboard taking mail from initiators (lines within `batch_window_secs` sent as one
/// mail), with Mia answering `topic` on Telegram.
fn with_mia(
    mail: &Mail,
    slot: &Slot,
    tg: &StandIn,
    mia: &TgUser,
    topic: &str,
    batch: u64,
) -> String {
    format!(
        "{email}[telegram]\ntoken = {TG_TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n{TOPICS}\
         [[responders]]\nid = \"mia\"\ndisplay_name = \"Mia Example\"\npseudonym = \"Mia\"\n\
         topics = [{topic:?}]\nmax_concurrent = 5\n\
         contacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n",
        email = email_section(mail, slot, batch),
        api = tg.api_url(),
        chat = mia.id,
    )
}

fn texts(sent: &[SentMessage]) -> Vec<String> {
    sent.iter().filter_map(|m| m.text.clone()).collect()
}

/// Every mail in `who`'s inbox from Switchboard's domain, oldest first.
async fn mails_from_us(mail: &Mail, who: &str) -> anyhow::Result<Vec<Received>> {
    Ok(mail
        .inbox(who)
        .await?
        .into_iter()
        .map(Received::new)
        .filter(|m| m.from.ends_with(&mail.domain))
        .collect())
}

/// Waits until the mails Switchboard sent `who` hold every one of `wanted`; returns them.
async fn mails_holding(mail: &Mail, who: &str, wanted: &[&str]) -> anyhow::Result<Vec<Received>> {
    wait_for(&format!("mails holding {wanted:?}"), || async {
        let mails = mails_from_us(mail, who).await?;
        let all: String = mails.iter().map(|m| m.text.as_str()).collect();
        Ok(wanted.iter().all(|w| all.contains(w)).then_some(mails))
    })
    .await
}

/// How often `needle` occurs in the texts of `mails`, read in order.
fn occurrences(mails: &[Received], needle: &str) -> usize {
    mails.iter().map(|m| m.text.matches(needle).count()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_initiator_is_answered_by_a_telegram_responder() -> anyhow::Result<()> {
    let Some(mail) = Mail::new("initiator") else {
        return Ok(());
    };
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 0)?;
    let tg = StandIn::start(TG_TOKEN).await?;
    let mia = tg.user(74_001, "Mia", None);
    let carol = fresh_address("carol");
    let config = with_mia(&mail, &slot, &tg, &mia, "billing", 1);
    let mut sb = Switchboard::start(&env, &slot, &config).await?;
    let store = sb.store().await?;

    // --- Carol mails support+billing@: the address names the topic ------------------------------
    let first_id = mail
        .write(
            &carol,
            &format!("support+billing@{}", mail.domain),
            "Charged twice",
            None,
            "I was charged twice for order 77.",
        )
        .await?;
    let conversation = initiator_conversation(&store, "email", &carol).await?;
    assert_eq!(conversation.topic, "billing");
    let room = conversation.room_id.clone();
    assert!(conversation.visitor_user_id.contains("visitor-"));

    // --- Mia is offered it on Telegram, with the subject and the text, and takes it ---------------
    let offer = telegram_offer(&tg, &mia).await?;
    assert!(
        offer.contains("Charged twice") && offer.contains("charged twice for order 77"),
        "{offer}"
    );
    accept_open_offer(&tg, &mia);
    let mails = mails_holding(&mail, &carol, &["You are now talking with Mia."]).await?;
    let told = mails
        .iter()
        .find(|m| m.text.contains("You are now talking with Mia."))
        .unwrap();
    // An answer in her thread: from the topic, "Re:" her subject, under her mail, with a
    // reply address of that thread.
    assert_eq!(told.from, format!("support@{}", mail.domain));
    assert!(
        told.header_block().contains("Billing"),
        "{}",
        told.header_block()
    );
    assert_eq!(told.subject, "Re: Charged twice");
    let first_inner = first_id.trim_matches(['<', '>']);
    assert!(
        told.header_block().contains(first_inner),
        "her mail is in References: {}",
        told.header_block()
    );
    assert!(told.reply_to.starts_with("reply+"), "{}", told.reply_to);

    // --- both ways, in order --------------------------------------------------------------------
    for i in 1..=3 {
        tg.user_sends(&mia, &format!("answer {i}"));
    }
    let mails = mails_holding(&mail, &carol, &["answer 1", "answer 2", "answer 3"]).await?;
    let all: String = mails.iter().map(|m| m.text.as_str()).collect();
    let at = |w: &str| all.find(w).unwrap();
    assert!(
        at("answer 1") < at("answer 2") && at("answer 2") < at("answer 3"),
        "{all}"
    );
    let last = mails.last().unwrap().clone();
    let quoted = format!(
        "Thanks! What about the refund?\n\nOn Mon, 30 Nov 2026, Billing wrote:\n> answer 3\n> {}\n",
        "answer 1"
    );
    mail.reply(&carol, &last.reply_to, Some(&last), &quoted)
        .await?;
    let sent = tg
        .wait_for_sent(
            mia.id,
            |s| {
                texts(s)
                    .iter()
                    .any(|t| t.contains("What about the refund?"))
            },
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    let refund = texts(&sent)
        .into_iter()
        .find(|t| t.contains("What about the refund?"))
        .unwrap();
    assert!(
        !refund.contains("wrote:") && !refund.contains("answer 1"),
        "only her new text reaches Mia: {refund}"
    );

    // --- a restart mid-conversation loses and doubles nothing ------------------------------------
    // Killed once what went out is recorded as sent: a kill between Telegram taking a message
    // and the store recording it sends it again (Telegram has no idempotency key).
    wait_for("the outbox recorded as sent", || async {
        Ok(store.pending_outbox(10).await?.is_empty().then_some(()))
    })
    .await?;
    sb.kill();
    mail.reply(
        &carol,
        &last.reply_to,
        Some(&last),
        "Sent while it was down",
    )
    .await?;
    tg.user_sends(&mia, "Answered while it was down");
    sb.restart().await?;
    let sent = tg
        .wait_for_sent(
            mia.id,
            |s| {
                texts(s)
                    .iter()
                    .any(|t| t.contains("Sent while it was down"))
            },
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    let mails = mails_holding(&mail, &carol, &["Answered while it was down"]).await?;
    tg.user_sends(&mia, "after the restart");
    let mails_after = mails_holding(&mail, &carol, &["after the restart"]).await?;
    let sent_after = tg.sent(mia.id);
    for (what, n) in [
        (
            "Sent while it was down",
            texts(&sent_after)
                .iter()
                .filter(|t| t.contains("Sent while it was down"))
                .count(),
        ),
        ("What about the refund?", {
            texts(&sent_after)
                .iter()
                .filter(|t| t.contains("What about the refund?"))
                .count()
        }),
        (
            "Answered while it was down",
            occurrences(&mails_after, "Answered while it was down"),
        ),
        ("answer 2", occurrences(&mails_after, "answer 2")),
    ] {
        assert_eq!(
            n,
            1,
            "{what:?} arrived {n} times; to Mia: {:?}",
            texts(&sent_after)
        );
    }
    drop((sent, mails));

    // --- nothing of who Carol is reaches Mia ----------------------------------------------------
    let (carol_local, _) = carol.split_once('@').unwrap();
    let first_local = first_id
        .trim_matches(['<', '>'])
        .split_once('@')
        .unwrap()
        .0
        .to_owned();
    for request in tg.requests() {
        let bytes = String::from_utf8_lossy(&request.body).into_owned()
            + request.query.as_deref().unwrap_or_default();
        for secret in [carol.as_str(), carol_local, first_local.as_str()] {
            assert!(
                !bytes.contains(secret),
                "{} to Telegram held {secret:?}: {bytes}",
                request.method
            );
        }
    }

    // --- /end by mail ends it for both -------------------------------------------------------------
    let last = mails_after.last().unwrap().clone();
    mail.reply(&carol, &last.reply_to, Some(&last), "/end")
        .await?;
    tg.wait_for_sent(
        mia.id,
        |s| texts(s).iter().any(|t| t.contains("ended")),
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    mails_holding(&mail, &carol, &["The conversation has ended."]).await?;
    wait_for("the conversation closed", || async {
        Ok(store
            .conversation(&room)
            .await?
            .filter(|c| c.state == ConversationState::Closed))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_to_the_plain_address_is_asked_its_topic_and_a_bounce_ends_it() -> anyhow::Result<()>
{
    let Some(mail) = Mail::new("ask") else {
        return Ok(());
    };
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 1)?;
    let tg = StandIn::start(TG_TOKEN).await?;
    let mia = tg.user(74_002, "Mia", None);
    let dave = fresh_address("dave");
    let config = with_mia(&mail, &slot, &tg, &mia, "support", 0);
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let store = sb.store().await?;

    // --- no topic in the address: the question comes back in her thread -------------------------
    mail.write(
        &dave,
        &format!("support@{}", mail.domain),
        "Printer",
        None,
        "My printer prints only blank pages.",
    )
    .await?;
    let mails = mails_holding(&mail, &dave, &["What would you like to talk about?"]).await?;
    let question = mails.last().unwrap().clone();
    assert!(
        question.text.contains("1. General support"),
        "{}",
        question.text
    );
    assert_eq!(question.subject, "Re: Printer");
    assert!(
        store
            .open_initiator_conversations("email", &dave)
            .await?
            .is_empty(),
        "no conversation before a topic"
    );
    mail.reply(
        &dave,
        &question.reply_to,
        Some(&question),
        "1\n\n> What would you like",
    )
    .await?;

    // --- her answer picks it; what she wrote first is offered ------------------------------------
    let conversation = initiator_conversation(&store, "email", &dave).await?;
    assert_eq!(conversation.topic, "support");
    let offer = telegram_offer(&tg, &mia).await?;
    assert!(offer.contains("prints only blank pages"), "{offer}");
    accept_open_offer(&tg, &mia);
    tg.user_sends(&mia, "Is there toner in it?");
    let mails = mails_holding(&mail, &dave, &["Is there toner in it?"]).await?;
    let answer = mails
        .iter()
        .find(|m| m.text.contains("Is there toner in it?"))
        .unwrap();
    // Still the one thread she started.
    assert_eq!(answer.reply_to, question.reply_to);
    assert_eq!(answer.subject, "Re: Printer");

    // --- her address stops taking mail: the answer bounces, and the conversation ends ------------
    let room = conversation.room_id.clone();
    mail.bounce(answer, &dave).await?;
    tg.wait_for_sent(
        mia.id,
        |s| texts(s).iter().any(|t| t.contains("ended")),
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    wait_for("the conversation closed", || async {
        Ok(store
            .conversation(&room)
            .await?
            .filter(|c| c.state == ConversationState::Closed))
    })
    .await?;
    Ok(())
}

fn has_text(messages: &[DcMessage], text: &str) -> bool {
    messages.iter().any(|m| m.content.contains(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_initiator_is_answered_by_an_email_responder() -> anyhow::Result<()> {
    let Some(mail) = Mail::new("dc-initiator") else {
        return Ok(());
    };
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 2)?;
    let dc = DiscordStandIn::start(DC_TOKEN).await?;
    let dora = dc.user("dora_secret_handle_52");
    let alice = fresh_address("alice");
    let config = format!(
        "{email}{discord}{TOPICS}\
         [[responders]]\nid = \"alice\"\ndisplay_name = \"Alice Example\"\npseudonym = \"Alice\"\n\
         topics = [\"support\"]\nmax_concurrent = 5\n\
         contacts = [{{ platform = \"email\", address = {alice:?} }}]\n",
        email = mail.section(&slot, 1),
        discord = discord_config(&dc, DC_TOKEN, "initiators = true\n"),
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let store = sb.store().await?;
    discord_gateway_up(&dc).await?;

    // --- Dora writes to the bot on Discord and picks a topic ---------------------------------------
    let (dm, menu) = discord_topic_menu(&dc, &dora, "Hi, my parcel 5521 is lost").await?;
    dc.user_selects(&dora, dm, menu.id, "topic", &["support"]);
    let room = wait_for("Dora's conversation", || async {
        Ok(store
            .open_initiator_conversations("discord", &dora.id.to_string())
            .await?
            .into_iter()
            .next())
    })
    .await?
    .room_id;

    // --- Alice is offered it by mail and accepts by replying -------------------------------------
    let offer = mail
        .wait_mail(&alice, "the offer", |m| m.text.contains("parcel 5521"))
        .await?;
    mail.reply(
        &alice,
        &offer.reply_to,
        Some(&offer),
        "Hello! I am looking for it.",
    )
    .await?;
    discord_messages(&dc, dm, "Alice's answer", |m| {
        has_text(m, "You are now talking with Alice.") && has_text(m, "I am looking for it.")
    })
    .await?;

    // --- both ways in order ----------------------------------------------------------------------
    for i in 1..=3 {
        dc.user_sends(&dora, dm, &format!("more {i}"));
    }
    let mails = mails_holding(&mail, &alice, &["more 1", "more 2", "more 3"]).await?;
    let all: String = mails.iter().map(|m| m.text.as_str()).collect();
    let at = |w: &str| all.find(w).unwrap();
    assert!(
        at("more 1") < at("more 2") && at("more 2") < at("more 3"),
        "{all}"
    );
    let last = mails.last().unwrap().clone();
    mail.reply(
        &alice,
        &last.reply_to,
        Some(&last),
        "Found it: it is at the depot.",
    )
    .await?;
    discord_messages(&dc, dm, "the second answer", |m| {
        has_text(m, "it is at the depot")
    })
    .await?;
    assert_eq!(
        store.active_assignments_for_room(&room).await?.len(),
        1,
        "Alice holds it"
    );

    // --- nothing of who Dora is on Discord reaches Alice's mailbox --------------------------------
    let everything: String = mail
        .inbox(&alice)
        .await?
        .iter()
        .map(|raw| String::from_utf8_lossy(raw).into_owned())
        .collect();
    for secret in [dora.id.to_string(), dora.username.clone(), dm.to_string()] {
        assert!(
            !everything.contains(&secret),
            "Alice's mail held {secret:?}"
        );
    }
    Ok(())
}
