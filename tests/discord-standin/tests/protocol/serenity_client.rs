//! serenity 0.12 as the bot: the real check that every object and event the stand-in sends
//! has the shape Discord documents (serenity drops events it cannot deserialize, and its REST
//! calls fail on objects it cannot read), and that its gateway client identifies, heartbeats
//! and resumes against the stand-in.

use std::time::Duration;

use serenity::all::{
    ChannelId, ChannelType, Client, ClientBuilder, Command, Context, CreateActionRow,
    CreateAllowedMentions, CreateButton, CreateCommand, CreateInteractionResponse,
    CreateInteractionResponseMessage, CreateMessage, CreateThread, CreateWebhook, EventHandler,
    ExecuteWebhook, GatewayIntents, GetMessages, Guild, GuildChannel, HttpBuilder, Interaction,
    Message, MessageUpdateEvent, Ready, ResumedEvent, TypingStartEvent,
};
use tokio::sync::mpsc;

use super::{Api, TOKEN};

#[derive(Debug)]
enum Seen {
    Ready(Box<Ready>),
    Guild(Box<Guild>),
    Message(Box<Message>),
    Updated(Box<MessageUpdateEvent>),
    Typing(Box<TypingStartEvent>),
    Interaction(Box<Interaction>),
    Thread(Box<GuildChannel>),
    Resumed,
}

struct Handler {
    seen: mpsc::UnboundedSender<Seen>,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _: Context, ready: Ready) {
        let _ = self.seen.send(Seen::Ready(Box::new(ready)));
    }

    async fn guild_create(&self, _: Context, guild: Guild, _: Option<bool>) {
        let _ = self.seen.send(Seen::Guild(Box::new(guild)));
    }

    async fn message(&self, _: Context, message: Message) {
        let _ = self.seen.send(Seen::Message(Box::new(message)));
    }

    async fn message_update(
        &self,
        _: Context,
        _: Option<Message>,
        _: Option<Message>,
        event: MessageUpdateEvent,
    ) {
        let _ = self.seen.send(Seen::Updated(Box::new(event)));
    }

    async fn typing_start(&self, _: Context, event: TypingStartEvent) {
        let _ = self.seen.send(Seen::Typing(Box::new(event)));
    }

    async fn thread_create(&self, _: Context, thread: GuildChannel) {
        let _ = self.seen.send(Seen::Thread(Box::new(thread)));
    }

    async fn resume(&self, _: Context, _: ResumedEvent) {
        let _ = self.seen.send(Seen::Resumed);
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let answer = match &interaction {
            Interaction::Component(press) => {
                let update = CreateInteractionResponseMessage::new()
                    .content("taken")
                    .components(vec![]);
                press
                    .create_response(&ctx.http, CreateInteractionResponse::UpdateMessage(update))
                    .await
            }
            Interaction::Command(command) => {
                let reply = CreateInteractionResponseMessage::new()
                    .content("ran")
                    .ephemeral(true);
                command
                    .create_response(&ctx.http, CreateInteractionResponse::Message(reply))
                    .await
            }
            _ => Ok(()),
        };
        answer.expect("the interaction callback is accepted");
        let _ = self.seen.send(Seen::Interaction(Box::new(interaction)));
    }
}

struct Events(mpsc::UnboundedReceiver<Seen>);

impl Events {
    /// The next event `pick` accepts, skipping others; panics after 10 s.
    async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(Seen) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = tokio::time::timeout_at(deadline, self.0.recv())
                .await
                .unwrap_or_else(|_| panic!("serenity did not see {what} within 10 s"))
                .expect("client running");
            if let Some(found) = pick(seen) {
                return found;
            }
        }
    }

    async fn message(&mut self, content: &str) -> Message {
        self.expect(&format!("MESSAGE_CREATE {content:?}"), |s| match s {
            Seen::Message(m) if m.content == content => Some(*m),
            _ => None,
        })
        .await
    }
}

#[tokio::test]
async fn serenity_reads_every_object_and_resumes_after_a_drop() {
    let api = Api::start().await;
    let dc = &api.dc;
    let channel = dc.create_text_channel("general");
    let visitor = dc.user("visitor");
    let dm = dc.user_opens_dm(&visitor);

    let http = HttpBuilder::new(TOKEN)
        .proxy(dc.base_url())
        .ratelimiter_disabled(true)
        .build();
    let intents = GatewayIntents::GUILDS
        | GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
        | GatewayIntents::GUILD_MESSAGE_TYPING;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut client: Client = ClientBuilder::new_with_http(http, intents)
        .event_handler(Handler { seen: tx })
        .await
        .expect("client builds");
    let http = client.http.clone();
    let runner = tokio::spawn(async move { client.start().await });
    let mut events = Events(rx);

    let ready = events
        .expect("READY", |s| match s {
            Seen::Ready(r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(ready.user.id.get(), dc.bot_user_id());
    assert_eq!(ready.application.id.get(), dc.application_id());
    let guild = events
        .expect("GUILD_CREATE", |s| match s {
            Seen::Guild(g) => Some(g),
            _ => None,
        })
        .await;
    assert_eq!(guild.id.get(), dc.guild_id());
    assert!(guild.channels.contains_key(&ChannelId::new(channel)));

    // Gateway events from users.
    dc.user_sends(&visitor, channel, "hello from the guild");
    let message = events.message("hello from the guild").await;
    assert_eq!(message.guild_id.map(|g| g.get()), Some(dc.guild_id()));
    assert_eq!(message.author.id.get(), visitor.id);
    dc.user_sends(&visitor, dm, "hello in private");
    assert!(events.message("hello in private").await.guild_id.is_none());
    let first = dc.messages(channel)[0].id;
    dc.user_replies(&visitor, channel, "a reply", first);
    let reply = events.message("a reply").await;
    assert_eq!(
        reply.referenced_message.map(|m| m.content),
        Some("hello from the guild".into())
    );
    dc.user_sends_file(
        &visitor,
        channel,
        "a file",
        "a.txt",
        "text/plain",
        b"abc".to_vec(),
    );
    assert_eq!(events.message("a file").await.attachments[0].size, 3);
    dc.user_edits(&visitor, channel, first, "hello, edited");
    let edit = events
        .expect("MESSAGE_UPDATE", |s| match s {
            Seen::Updated(e) => Some(e),
            _ => None,
        })
        .await;
    assert_eq!(edit.content.as_deref(), Some("hello, edited"));
    dc.user_types(&visitor, channel);
    events
        .expect("TYPING_START", |s| match s {
            Seen::Typing(t) => Some(t),
            _ => None,
        })
        .await;

    // REST objects through serenity's models.
    let offer = ChannelId::new(channel)
        .send_message(
            &http,
            CreateMessage::new()
                .content("@everyone new visitor")
                .allowed_mentions(CreateAllowedMentions::new())
                .components(vec![CreateActionRow::Buttons(vec![
                    CreateButton::new("take").label("Take"),
                ])]),
        )
        .await
        .expect("serenity reads the created message");
    assert!(
        !offer.mention_everyone,
        "serenity's empty allowed_mentions pings nobody"
    );
    events.message("@everyone new visitor").await;
    let me = http.get_current_user().await.expect("current user");
    assert!(me.bot);
    http.get_current_application_info()
        .await
        .expect("application");
    http.get_bot_gateway().await.expect("gateway/bot");
    http.get_channel(ChannelId::new(channel))
        .await
        .expect("guild channel")
        .guild()
        .expect("is a guild channel");
    http.get_channel(ChannelId::new(dm))
        .await
        .expect("DM channel")
        .private()
        .expect("is a DM");
    let history = ChannelId::new(channel)
        .messages(&http, GetMessages::new().limit(10))
        .await
        .expect("history");
    assert_eq!(history[0].id, offer.id, "newest first");
    let thread = ChannelId::new(channel)
        .create_thread(
            &http,
            CreateThread::new("visitor 1").kind(ChannelType::PrivateThread),
        )
        .await
        .expect("thread");
    let announced = events
        .expect("THREAD_CREATE", |s| match s {
            Seen::Thread(t) => Some(t),
            _ => None,
        })
        .await;
    assert_eq!(announced.id, thread.id);
    let webhook = ChannelId::new(channel)
        .create_webhook(&http, CreateWebhook::new("Relay"))
        .await
        .expect("webhook");
    let relayed = webhook
        .execute(
            &http,
            true,
            ExecuteWebhook::new()
                .content("relayed")
                .username("Visitor")
                .in_thread(thread.id),
        )
        .await
        .expect("webhook message")
        .expect("wait=true returns it");
    assert_eq!(relayed.channel_id, thread.id);
    Command::set_global_commands(
        &http,
        vec![CreateCommand::new("take").description("Take a conversation")],
    )
    .await
    .expect("commands");

    // Interactions answered by serenity.
    let press = dc.user_presses(&visitor, channel, offer.id.get(), "take");
    let answer = dc
        .wait_for_interaction_response(&press, Duration::from_secs(5))
        .await;
    assert_eq!(answer.expect("answered")["type"], 7);
    events
        .expect("INTERACTION_CREATE (component)", |s| match s {
            Seen::Interaction(i) => i.message_component(),
            _ => None,
        })
        .await;
    assert_eq!(
        dc.messages(channel)
            .iter()
            .find(|m| m.id == offer.id.get())
            .unwrap()
            .content,
        "taken"
    );
    let run = dc.user_runs_command(&visitor, dm, "take", serde_json::json!({}));
    let answer = dc
        .wait_for_interaction_response(&run, Duration::from_secs(5))
        .await;
    assert_eq!(answer.expect("answered")["data"]["flags"], 64);
    events
        .expect("INTERACTION_CREATE (command)", |s| match s {
            Seen::Interaction(i) => i.command(),
            _ => None,
        })
        .await;

    // A dropped connection is resumed, and what happened meanwhile arrives.
    dc.drop_gateway();
    dc.user_sends(&visitor, channel, "while you were away");
    events.message("while you were away").await;
    events
        .expect("RESUMED", |s| matches!(s, Seen::Resumed).then_some(()))
        .await;
    assert_eq!((dc.identify_count(), dc.resume_count()), (1, 1));
    runner.abort();
}
