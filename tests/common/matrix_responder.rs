//! A responder using an ordinary Matrix client (matrix-sdk), and their relay rooms.

use super::*;

/// A responder using an ordinary Matrix client.
pub struct MatrixResponder {
    pub client: Client,
    /// (room, sender, body) of every message their client receives, in order.
    messages: mpsc::UnboundedReceiver<(String, String, String)>,
    received: Vec<(String, String, String)>,
}

impl MatrixResponder {
    pub async fn register(env: &TestEnv, localpart: &str) -> anyhow::Result<Self> {
        let client = Client::builder()
            .homeserver_url(&env.hs_url)
            .build()
            .await?;
        let mut request = register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.password = Some("correct horse battery staple".to_owned());
        request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
        client
            .matrix_auth()
            .register(request)
            .await
            .context("registering the responder")?;
        let (tx, messages) = mpsc::unbounded_channel();
        client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent, room: Room| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((
                    room.room_id().to_string(),
                    ev.sender.to_string(),
                    ev.content.body().to_owned(),
                ));
            }
        });
        let syncing = client.clone();
        tokio::spawn(async move {
            let _ = syncing
                .sync(SyncSettings::default().timeout(Duration::from_secs(5)))
                .await;
        });
        Ok(Self {
            client,
            messages,
            received: vec![],
        })
    }

    pub async fn accept_invite(&self, room: &str) -> anyhow::Result<Room> {
        let room_id = OwnedRoomId::try_from(room)?;
        wait_for("the responder's invite", || async {
            Ok(self
                .client
                .invited_rooms()
                .into_iter()
                .any(|r| r.room_id() == room_id)
                .then_some(()))
        })
        .await?;
        Ok(self.client.join_room_by_id(&room_id).await?)
    }

    /// Opens a direct chat with `bot` (Switchboard's bot user, which joins it for a registered
    /// responder) and waits until the bot is in it; `!` commands there set their status.
    pub async fn direct_chat_with(&self, bot: &matrix_sdk::ruma::UserId) -> anyhow::Result<Room> {
        let mut request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
        request.invite = vec![bot.to_owned()];
        request.is_direct = true;
        let dm = self.client.create_room(request).await?;
        wait_for("the bot to join the direct chat", || async {
            let members = dm
                .members_no_sync(matrix_sdk::RoomMemberships::JOIN)
                .await?;
            Ok(members.iter().any(|m| m.user_id() == bot).then_some(()))
        })
        .await?;
        Ok(dm)
    }

    /// Waits until the responder's client has received `bodies` in `room` from `sender`.
    pub async fn wait_for_messages(
        &mut self,
        room: &str,
        sender: &str,
        bodies: &[&str],
    ) -> anyhow::Result<()> {
        self.wait_until(
            room,
            sender,
            |got| bodies.iter().all(|b| got.contains(b)),
            &format!("{bodies:?}"),
        )
        .await
    }

    /// Waits until some message in `room` from `sender` contains `needle`.
    pub async fn wait_for_text(
        &mut self,
        room: &str,
        sender: &str,
        needle: &str,
    ) -> anyhow::Result<()> {
        self.wait_until(
            room,
            sender,
            |got| got.iter().any(|b| b.contains(needle)),
            needle,
        )
        .await
    }

    async fn wait_until(
        &mut self,
        room: &str,
        sender: &str,
        done: impl Fn(&[&str]) -> bool,
        what: &str,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got: Vec<&str> = self
                .received
                .iter()
                .filter(|(r, s, _)| r == room && s == sender)
                .map(|(_, _, b)| b.as_str())
                .collect();
            if done(&got) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(m)) => self.received.push(m),
                _ => anyhow::bail!("responder did not receive {what}; got {got:?}"),
            }
        }
    }

    /// Everything their client received, in any room.
    pub fn all_bodies(&self) -> Vec<String> {
        self.received.iter().map(|(_, _, b)| b.clone()).collect()
    }

    pub fn bodies(&self, room: &str, sender: &str) -> Vec<String> {
        self.received
            .iter()
            .filter(|(r, s, _)| r == room && s == sender)
            .map(|(_, _, b)| b.clone())
            .collect()
    }
}

/// The relay room a Matrix responder was offered a conversation in (their offer's handle).
pub async fn relay_room_of(
    store: &switchboard_bridge::Store,
    room: &str,
    responder_id: &str,
) -> anyhow::Result<String> {
    wait_for("the Matrix offer", || async {
        Ok(store
            .offers_for_room(room)
            .await?
            .into_iter()
            .find(|o| o.platform == "matrix" && o.responder_id == responder_id)
            .and_then(|o| o.remote_message_id))
    })
    .await
}
