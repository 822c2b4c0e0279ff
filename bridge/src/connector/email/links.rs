//! The Accept and Decline links of an offer mail, and the small page they open.
//!
//! Mail scanners and link previews open every link in a mail, so opening one decides
//! nothing: `GET` shows a page with one button, and only its `POST` accepts or declines. Each
//! link has its own token, 128 random bits, stored with the offer, the address and what it
//! does; it expires after [`LINK_LIFETIME_MS`] and is used once (the `POST` records the
//! answer, keyed by the token, then takes the token away, so two presses record one answer
//! and a third finds the link used). Whether the answer still counts (the offer may have been
//! taken meanwhile) is the bridge's to say, as for any platform's Accept button; the page
//! says the answer was passed on and what the responder will get by mail.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};

use super::threads::{Threads, new_token};
use crate::clock::SharedClock;
use crate::connector::{ConnectorError, RemoteEvent, RemoteSink};
use crate::format::render_html::escape_attribute;

/// How long an offer's links work: a day is longer than any offer stays open, and short
/// enough that an old mail found later does nothing.
pub const LINK_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;

/// The path of a link's page, under Switchboard's public address.
pub const LINK_PATH: &str = "/email/v1/offers";

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Accept,
    Decline,
}

#[derive(Debug, Serialize, Deserialize)]
struct Link {
    offer_id: i64,
    address: String,
    answer: Answer,
    expires_at: i64,
}

/// Mints and reads the links.
#[derive(Clone)]
pub struct Links {
    threads: Threads,
    clock: SharedClock,
    base: String,
}

impl Links {
    /// `public_url`: Switchboard's address as browsers reach it.
    pub fn new(threads: Threads, clock: SharedClock, public_url: &str) -> Self {
        Links {
            threads,
            clock,
            base: public_url.trim_end_matches('/').to_owned(),
        }
    }

    /// A new link answering `offer_id` for `address`; its URL.
    pub async fn mint(
        &self,
        offer_id: i64,
        address: &str,
        answer: Answer,
    ) -> Result<String, ConnectorError> {
        let token = new_token();
        let link = Link {
            offer_id,
            address: address.to_owned(),
            answer,
            expires_at: self.clock.now_ms() + LINK_LIFETIME_MS,
        };
        self.threads
            .state()
            .put(
                self.threads.platform(),
                &key(&token),
                &serde_json::to_string(&link).expect("a link serialises"),
            )
            .await?;
        Ok(format!("{}{LINK_PATH}/{token}", self.base))
    }

    /// The link `token` names, if it exists and has not expired.
    async fn find(&self, token: &str) -> Result<Option<Link>, ConnectorError> {
        if !is_token(token) {
            return Ok(None);
        }
        let Some(json) = self
            .threads
            .state()
            .get(self.threads.platform(), &key(token))
            .await?
        else {
            return Ok(None);
        };
        Ok(serde_json::from_str::<Link>(&json)
            .ok()
            .filter(|link| link.expires_at > self.clock.now_ms()))
    }

    /// The page's routes.
    pub fn router(self, sink: Arc<dyn RemoteSink>) -> Router {
        let state = Arc::new((self, sink));
        Router::new()
            .route(&format!("{LINK_PATH}/{{token}}"), get(show).post(answer))
            .with_state(state)
    }
}

fn key(token: &str) -> String {
    format!("link:{token}")
}

fn is_token(token: &str) -> bool {
    token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

type Shared = Arc<(Links, Arc<dyn RemoteSink>)>;

async fn show(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    let (links, _) = &*state;
    match links.find(&token).await {
        Ok(Some(link)) => {
            let (title, button) = match link.answer {
                Answer::Accept => ("Accept this conversation?", "Accept"),
                Answer::Decline => ("Decline this conversation?", "Decline"),
            };
            // The form posts to this same URL: relative, so it works behind any proxy path.
            page(
                StatusCode::OK,
                title,
                &format!(
                    "<form method=\"post\" action=\"{}\"><button type=\"submit\">{button}</button></form>",
                    escape_attribute(&token)
                ),
            )
        }
        Ok(None) => gone(),
        Err(e) => unavailable(e),
    }
}

async fn answer(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    let (links, sink) = &*state;
    let link = match links.find(&token).await {
        Ok(Some(link)) => link,
        Ok(None) => return gone(),
        Err(e) => return unavailable(e),
    };
    let event = match link.answer {
        Answer::Accept => RemoteEvent::Accept {
            offer_id: link.offer_id,
            address: link.address.clone(),
            display_name: super::RESPONDER_NAME.to_owned(),
        },
        Answer::Decline => RemoteEvent::Decline {
            offer_id: link.offer_id,
            address: link.address.clone(),
        },
    };
    // Recorded under the token first, then the token goes: a press that races this one
    // records the same key (once), and a crash between the two leaves a link that records
    // nothing new if pressed again.
    if let Err(e) = sink
        .record_remote(links.threads.platform(), &key(&token), &event)
        .await
    {
        return unavailable(e);
    }
    if let Err(e) = links
        .threads
        .state()
        .take(links.threads.platform(), &key(&token))
        .await
    {
        tracing::warn!(error = %e, "a used offer link was not removed");
    }
    let (title, text) = match link.answer {
        Answer::Accept => (
            "Accepted",
            "Unless someone else was quicker, the conversation is yours: the visitor's \
             messages will come to you by mail, and your replies reach them.",
        ),
        Answer::Decline => (
            "Declined",
            "The conversation will be offered to someone else.",
        ),
    };
    page(StatusCode::OK, title, &format!("<p>{text}</p>"))
}

fn gone() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "This link no longer works",
        "<p>It was used already, or it expired. Reply to the offer mail instead, or wait for \
         the next one.</p>",
    )
}

fn unavailable(e: ConnectorError) -> Response {
    tracing::warn!(error = %e, "an offer link could not be handled");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "<p>Switchboard could not take your answer just now. Try again in a minute.</p>",
    )
}

/// A page of our own text only (`body` is ours, escaped where it holds a value).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>{title}</title></head>\
         <body style=\"font-family: sans-serif; max-width: 32em; margin: 3em auto;\">\
         <h1>{title}</h1>{body}</body></html>\n"
    );
    (
        status,
        [
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
            (
                "content-security-policy",
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            ),
        ],
        Html(html),
    )
        .into_response()
}
