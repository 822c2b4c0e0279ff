//! The stand-in refuses and succeeds like Discord does, seen from a plain HTTP client, a raw
//! WebSocket client (`gateway` below), and serenity itself (`serenity_client` below).

mod components;
mod gateway;
mod limits;
mod messages;
mod serenity_client;
mod threads;

use std::time::Duration;

use discord_standin::{DiscordStandIn, Fault, Route};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub const TOKEN: &str = "MTEyMzQ1Njc4OTAxMjM0NTY3OA.test.bot-token";

/// A stand-in plus an HTTP client that calls it the way bots do.
pub struct Api {
    pub dc: DiscordStandIn,
    pub http: reqwest::Client,
}

/// An answer: status, headers and JSON body (`Null` for empty bodies).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Api {
    pub async fn start() -> Api {
        let dc = DiscordStandIn::start(TOKEN).await.expect("stand-in starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Api { dc, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v10{path}", self.dc.base_url())
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A request with the bot's `Authorization` header.
    pub async fn call(&self, method: &str, path: impl Into<String>, body: Option<Value>) -> Answer {
        self.send(method, path, body, Some(&format!("Bot {TOKEN}")))
            .await
    }

    pub async fn send(
        &self,
        method: &str,
        path: impl Into<String>,
        body: Option<Value>,
        auth: Option<&str>,
    ) -> Answer {
        let path: String = path.into();
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.url(&path));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::answer(request.send().await.expect("request")).await
    }

    /// A request that must succeed with 200; returns the body.
    pub async fn ok(&self, method: &str, path: impl Into<String>, body: Value) -> Value {
        let path: String = path.into();
        let answer = self.call(method, &path, Some(body)).await;
        assert_eq!(answer.status, 200, "{method} {path}: {}", answer.body);
        answer.body
    }

    pub async fn post_message(&self, channel: u64, body: Value) -> Answer {
        self.call("POST", format!("/channels/{channel}/messages"), Some(body))
            .await
    }

    pub async fn open_dm(&self, user: u64) -> u64 {
        let dm = self
            .ok(
                "POST",
                "/users/@me/channels",
                json!({"recipient_id": user.to_string()}),
            )
            .await;
        dm["id"].as_str().unwrap().parse().unwrap()
    }
}

fn id(value: &Value) -> u64 {
    value["id"]
        .as_str()
        .expect("id is a string snowflake")
        .parse()
        .expect("snowflake")
}
