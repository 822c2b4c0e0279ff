//! The stand-in refuses and succeeds like the Telegram Bot API does, seen from a plain HTTP
//! client (and, at the end, from teloxide itself).

mod files;
mod limits;
mod messages;
mod requests;
mod updates;
mod with_teloxide;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use telegram_standin::StandIn;
use tokio::sync::mpsc;

const TOKEN: &str = "123456789:AAE-test_token";

/// A stand-in plus an HTTP client that calls it the way bots do.
struct Api {
    tg: StandIn,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Api {
        let tg = StandIn::start(TOKEN).await.expect("stand-in starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Api { tg, http }
    }

    fn url(&self, method: &str) -> String {
        format!("{}bot{}/{}", self.tg.api_url(), TOKEN, method)
    }

    /// POSTs JSON parameters; returns the HTTP status and the envelope.
    async fn call(&self, method: &str, params: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(method))
            .json(&params)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON envelope"))
    }

    /// Calls a method that must succeed; returns `result`.
    async fn ok(&self, method: &str, params: Value) -> Value {
        let (status, body) = self.call(method, params).await;
        assert_eq!(
            (status, &body["ok"]),
            (200, &json!(true)),
            "{method} failed: {body}"
        );
        body["result"].clone()
    }

    /// Calls a method that must fail; checks the envelope agrees with the HTTP status and
    /// returns (status, description).
    async fn err(&self, method: &str, params: Value) -> (u16, String) {
        let (status, body) = self.call(method, params).await;
        assert_eq!(
            body["ok"],
            json!(false),
            "{method} unexpectedly succeeded: {body}"
        );
        assert_eq!(
            body["error_code"],
            json!(status),
            "error_code matches the HTTP status"
        );
        (
            status,
            body["description"]
                .as_str()
                .expect("description")
                .to_owned(),
        )
    }
}

/// Just enough of a PNG for its dimensions to be read.
fn tiny_png() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&4u32.to_be_bytes());
    png.extend_from_slice(&3u32.to_be_bytes());
    png.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    png
}
