//! A visitor as the widget is one: a guest account, its room, its sync; and what it sees
//! of a ghost's typing.

use super::*;

/// A timeline message as the widget sees it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub event_id: String,
    pub sender: String,
    pub msgtype: String,
    pub body: String,
    pub formatted_body: Option<String>,
    /// `content["m.relates_to"]`, `Null` when absent.
    pub relates_to: Value,
    /// `content["url"]` of a file or image, empty otherwise.
    pub url: String,
}

/// A visitor doing over HTTP exactly what `web-widget/switchboard-widget.js` does.
#[derive(Default)]
pub struct Visitor {
    http: reqwest::Client,
    pub hs: String,
    pub switchboard: String,
    pub user_id: String,
    pub token: String,
    pub room_id: Option<String>,
    since: Option<String>,
    pub seen: Vec<Seen>,
    /// Contents of the `org.switchboard.conversation` state events seen, in order.
    pub states: Vec<Value>,
    /// The events redactions seen named, in order.
    pub redacted: Vec<String>,
    txn: u32,
}

impl Visitor {
    /// Registers a guest and sets a neutral display name, as the widget does.
    pub async fn guest(env: &TestEnv, switchboard: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let r: Value = http
            .post(format!(
                "{}/_matrix/client/v3/register?kind=guest",
                env.hs_url
            ))
            .json(&json!({}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let v = Self {
            http,
            hs: env.hs_url.clone(),
            switchboard: switchboard.to_owned(),
            user_id: r["user_id"].as_str().context("user_id")?.to_owned(),
            token: r["access_token"]
                .as_str()
                .context("access_token")?
                .to_owned(),
            room_id: None,
            since: None,
            seen: vec![],
            states: vec![],
            redacted: vec![],
            txn: 0,
        };
        let _ = v
            .http
            .put(format!(
                "{}/_matrix/client/v3/profile/{}/displayname",
                v.hs, v.user_id
            ))
            .bearer_auth(&v.token)
            .json(&json!({"displayname": "Visitor"}))
            .send()
            .await?;
        Ok(v)
    }

    /// Asks Switchboard for a visitor account (`POST /api/v1/visitors`), as the widget does
    /// when the homeserver has no guests (`visitor_mode: "accounts"`). Switchboard names it.
    pub async fn account(env: &TestEnv, switchboard: &str) -> anyhow::Result<Self> {
        let (status, body) = request_visitor_account(switchboard).await?;
        anyhow::ensure!(
            status == 201,
            "POST /api/v1/visitors answered {status}: {body}"
        );
        Ok(Self::signed_in(
            env,
            switchboard,
            body["user_id"].as_str().context("user_id")?,
            body["access_token"].as_str().context("access_token")?,
        ))
    }

    /// A visitor who already has a user and token (from wherever the test got them).
    pub fn signed_in(env: &TestEnv, switchboard: &str, user_id: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            hs: env.hs_url.clone(),
            switchboard: switchboard.to_owned(),
            user_id: user_id.to_owned(),
            token: token.to_owned(),
            ..Self::default()
        }
    }

    pub async fn config(&self) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/api/v1/config", self.switchboard))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// `POST /api/v1/conversations`; returns the status and body, whatever they are.
    pub async fn request_conversation(
        &self,
        topic: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}/api/v1/conversations", self.switchboard))
            .json(&json!({"topic": topic}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// Starts a conversation and joins its room, as the widget does.
    pub async fn start(&mut self, topic: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .request_conversation(topic, Some(&self.token.clone()))
            .await?;
        anyhow::ensure!(
            status == 201,
            "starting a conversation answered {status}: {body}"
        );
        let room = body["conversation_id"]
            .as_str()
            .context("conversation_id")?
            .to_owned();
        anyhow::ensure!(
            body["room_id"] == body["conversation_id"],
            "conversation ID is not the room ID: {body}"
        );
        let (status, body) = self.join(&room).await?;
        anyhow::ensure!(status == 200, "joining answered {status}: {body}");
        self.room_id = Some(room.clone());
        Ok(room)
    }

    pub async fn join(&self, room: &str) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!(
                "{}/_matrix/client/v3/join/{}",
                self.hs,
                urlencode(room)
            ))
            .bearer_auth(&self.token)
            .json(&json!({}))
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .get(format!("{}{}", self.hs, path))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn send(&mut self, text: &str) -> anyhow::Result<String> {
        self.send_content(json!({"msgtype": "m.text", "body": text}))
            .await
    }

    pub async fn send_html(&mut self, text: &str, html: &str) -> anyhow::Result<String> {
        self.send_content(
            json!({"msgtype": "m.text", "body": text, "format": "org.matrix.custom.html", "formatted_body": html}),
        )
        .await
    }

    pub async fn send_content(&mut self, content: Value) -> anyhow::Result<String> {
        self.put_in_room("send/m.room.message/sbw-test", content)
            .await
    }

    /// `PUT /rooms/{room}/{what}-{txn}` with `body` as the visitor; the event ID it made.
    async fn put_in_room(&mut self, what: &str, body: Value) -> anyhow::Result<String> {
        self.txn += 1;
        let room = self.room_id.clone().context("no conversation yet")?;
        let r: Value = self
            .http
            .put(format!(
                "{}/_matrix/client/v3/rooms/{}/{what}-{}",
                self.hs,
                urlencode(&room),
                self.txn
            ))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(r["event_id"].as_str().context("event_id")?.to_owned())
    }

    /// Replaces the text of the visitor's message `original` (`m.replace`), as a Matrix
    /// client edits.
    pub async fn edit(&mut self, original: &str, text: &str) -> anyhow::Result<String> {
        self.send_content(json!({
            "msgtype": "m.text",
            "body": format!("* {text}"),
            "m.new_content": {"msgtype": "m.text", "body": text},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        }))
        .await
    }

    /// Redacts the visitor's event `event` (not open to guests: Synapse refuses them).
    pub async fn redact(&mut self, event: &str) -> anyhow::Result<String> {
        let what = format!("redact/{}/sbw-redact", urlencode(event));
        self.put_in_room(&what, json!({"reason": "typo"})).await
    }

    /// Long-polls `/sync` for the conversation room until `done` holds for what was seen.
    pub async fn sync_until(
        &mut self,
        what: &str,
        done: impl Fn(&[Seen]) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while !done(&self.seen) {
            if Instant::now() > deadline {
                bail!("visitor did not see {what} in time; saw {:#?}", self.seen);
            }
            self.sync_once().await?;
        }
        Ok(())
    }

    /// Long-polls `/sync` until a redaction of `event` was seen.
    pub async fn wait_for_redaction(&mut self, event: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while !self.redacted.iter().any(|r| r == event) {
            if Instant::now() > deadline {
                bail!(
                    "visitor saw no redaction of {event}; saw {:?}",
                    self.redacted
                );
            }
            self.sync_once().await?;
        }
        Ok(())
    }

    /// One `/sync` long poll (up to five seconds) of the conversation room.
    async fn sync_once(&mut self) -> anyhow::Result<()> {
        let room = self.room_id.clone().context("no conversation yet")?;
        let filter = json!({"room": {"rooms": [room], "timeline": {"limit": 50}}}).to_string();
        let mut req = self
            .http
            .get(format!("{}/_matrix/client/v3/sync", self.hs))
            .bearer_auth(&self.token)
            .query(&[("timeout", "5000"), ("filter", filter.as_str())]);
        if let Some(since) = &self.since {
            req = req.query(&[("since", since.as_str())]);
        }
        let r: Value = req.send().await?.error_for_status()?.json().await?;
        self.since = r["next_batch"].as_str().map(str::to_owned);
        let events = r["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for e in events {
            if e["type"] == "org.switchboard.conversation" {
                self.states.push(e["content"].clone());
                continue;
            }
            if e["type"] == "m.room.redaction" {
                let of = e["redacts"].as_str().or(e["content"]["redacts"].as_str());
                self.redacted.extend(of.map(str::to_owned));
                continue;
            }
            if e["type"] != "m.room.message" {
                continue;
            }
            let event_id = e["event_id"].as_str().unwrap_or_default().to_owned();
            if self.seen.iter().any(|s| s.event_id == event_id) {
                continue;
            }
            self.seen.push(Seen {
                event_id,
                sender: e["sender"].as_str().unwrap_or_default().to_owned(),
                msgtype: e["content"]["msgtype"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body: e["content"]["body"].as_str().unwrap_or_default().to_owned(),
                formatted_body: e["content"]["formatted_body"].as_str().map(str::to_owned),
                relates_to: e["content"]["m.relates_to"].clone(),
                url: e["content"]["url"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(())
    }

    /// The same visitor after a page reload: the widget keeps the token and room in
    /// sessionStorage and syncs again from scratch.
    pub fn reloaded(&self) -> Self {
        Self {
            http: reqwest::Client::new(),
            hs: self.hs.clone(),
            switchboard: self.switchboard.clone(),
            user_id: self.user_id.clone(),
            token: self.token.clone(),
            room_id: self.room_id.clone(),
            since: None,
            seen: vec![],
            states: vec![],
            redacted: vec![],
            txn: self.txn + 1000,
        }
    }

    pub fn bodies_from(&self, sender: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|s| s.sender == sender)
            .map(|s| s.body.clone())
            .collect()
    }
}

/// `POST /api/v1/visitors` with no credentials, as the widget sends it; the status and body.
pub async fn request_visitor_account(switchboard: &str) -> anyhow::Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .post(format!("{switchboard}/api/v1/visitors"))
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// Every `m.room.message` event of `room` that `token` may read, oldest first (`/messages`,
/// a page of 500 at a time).
pub async fn room_messages(
    http: &reqwest::Client,
    hs: &str,
    token: &str,
    room: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut req = http
            .get(format!(
                "{hs}/_matrix/client/v3/rooms/{}/messages",
                urlencode(room)
            ))
            .bearer_auth(token)
            .query(&[("dir", "b"), ("limit", "500")]);
        if let Some(f) = &from {
            req = req.query(&[("from", f.as_str())]);
        }
        let page: Value = req.send().await?.error_for_status()?.json().await?;
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        events.extend(
            chunk
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .cloned(),
        );
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    events.reverse();
    Ok(events)
}

/// Long-polls the visitor's sync until the room's `m.typing` lists `ghost`, for up to WAIT.
pub async fn ghost_typing_seen(visitor: &Visitor, room: &str, ghost: &str) -> anyhow::Result<bool> {
    typing_seen(&visitor.hs, &visitor.token, room, ghost).await
}

/// Long-polls the sync of the account with `token` on `hs` until the room's `m.typing`
/// lists `user`, for up to WAIT.
pub async fn typing_seen(hs: &str, token: &str, room: &str, user: &str) -> anyhow::Result<bool> {
    let ghost = user;
    let filter =
        serde_json::json!({"room": {"rooms": [room], "timeline": {"limit": 1}}}).to_string();
    let deadline = std::time::Instant::now() + WAIT;
    let mut since: Option<String> = None;
    while std::time::Instant::now() < deadline {
        let mut req = reqwest::Client::new()
            .get(format!("{hs}/_matrix/client/v3/sync"))
            .bearer_auth(token)
            .query(&[("timeout", "2000"), ("filter", filter.as_str())]);
        if let Some(s) = &since {
            req = req.query(&[("since", s.as_str())]);
        }
        let r: serde_json::Value = req.send().await?.error_for_status()?.json().await?;
        since = r["next_batch"].as_str().map(str::to_owned);
        let typing = r["rooms"]["join"][room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.typing")
            .any(|e| {
                e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|id| id == ghost))
            });
        if typing {
            return Ok(true);
        }
    }
    Ok(false)
}
