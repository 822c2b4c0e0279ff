//! Discord's REST API, with its rate limits kept as Discord reports them.
//!
//! serenity's HTTP client either runs its own rate limiter (and then ignores a configured
//! base URL, going to the real Discord) or runs none and turns a 429 into an error without its
//! `retry_after`. Neither lets the bridge do what its connector contract asks: never wait a
//! limit out inside the connector, return [`ConnectorError::RetryAfter`] with the time
//! Discord named, and let the lane try again then. So requests go through this small client
//! (reqwest), in production and in tests alike, and the answers are read into serenity's
//! model types.
//!
//! Rate limits, as Discord documents them: every answer names its bucket
//! (`X-RateLimit-Bucket`, shared by routes Discord chooses) and what is left in it
//! (`X-RateLimit-Remaining`, `X-RateLimit-Reset-After`); buckets are per major parameter (the
//! channel, guild or webhook in the path). Nothing is hard-coded: a bucket is known only once
//! Discord named it, and a request into a bucket with nothing left is not sent at all but
//! answered `RetryAfter` at once. A 429 names its wait (`retry_after`) and whether it is
//! global; a global one holds every request. 401 and 403 are never retried: Discord bans
//! clients that keep sending invalid requests.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::connector::ConnectorError;

/// Discord's API version, in every REST path.
pub const API_VERSION: &str = "v10";

/// One request's place in Discord's rate limits: the route's template (what buckets are
/// named for) and its major parameter.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    /// The path below `/api/v10`, e.g. `/channels/1234/messages`.
    pub path: String,
    /// The path with its IDs as placeholders, e.g. `/channels/{}/messages`.
    pub template: &'static str,
    /// The ID of the channel, guild or webhook the request is about ("" for none).
    pub major: String,
}

impl Route {
    pub fn new(method: Method, template: &'static str, path: String, major: impl ToString) -> Self {
        Route {
            method,
            path,
            template,
            major: major.to_string(),
        }
    }

    /// What the route is called before Discord names its bucket.
    fn key(&self) -> String {
        format!("{} {}", self.method, self.template)
    }
}

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// Wait this long: Discord said so, or a bucket it named has nothing left.
    #[error("rate limited for {0:?}")]
    RateLimited(Duration),
    /// The network, a timeout or a 5xx: worth trying again later.
    #[error("Discord is unavailable: {0}")]
    Unavailable(String),
    /// Discord refused the request (4xx other than 429), with its JSON error code.
    #[error("Discord refused the request ({status}, code {code}): {message}")]
    Refused {
        status: u16,
        code: i64,
        message: String,
    },
    /// A success whose body was not what Discord documents.
    #[error("unexpected answer from Discord: {0}")]
    Unreadable(String),
}

impl RestError {
    /// Discord's JSON error code, if Discord refused the request.
    pub fn code(&self) -> Option<i64> {
        match self {
            RestError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<RestError> for ConnectorError {
    fn from(e: RestError) -> Self {
        match e {
            RestError::RateLimited(wait) => ConnectorError::RetryAfter(wait),
            RestError::Refused { status: 413, .. } => ConnectorError::FileTooLarge(e.to_string()),
            RestError::Unavailable(_) => ConnectorError::Transient(e.to_string()),
            RestError::Refused { .. } | RestError::Unreadable(_) => {
                ConnectorError::Permanent(e.to_string())
            }
        }
    }
}

/// Discord's JSON error codes the connector acts on.
pub mod codes {
    /// The channel (or thread) is gone or was never there.
    pub const UNKNOWN_CHANNEL: i64 = 10003;
    /// The message is gone.
    pub const UNKNOWN_MESSAGE: i64 = 10008;
    /// The user does not accept direct messages from the bot.
    pub const CANNOT_DM: i64 = 50007;
    /// The guild has as many active threads as it may.
    pub const TOO_MANY_THREADS: i64 = 160006;
}

/// Added to a bucket's reset time and to a 429's wait: Discord counts from when it answered,
/// we from when the answer arrived, and a request that arrives a moment early is a 429 (an
/// invalid request, which Discord counts against the bot).
const RESET_MARGIN: Duration = Duration::from_millis(50);

/// What is known of Discord's rate limits so far.
#[derive(Default)]
struct Limits {
    /// Route key (method and template) → the bucket Discord named for it.
    bucket_of: HashMap<String, String>,
    /// (bucket, major parameter) → when a bucket with nothing left fills again.
    exhausted: HashMap<(String, String), Instant>,
    /// Until when a global limit holds every request.
    global_until: Option<Instant>,
}

impl Limits {
    fn bucket(&self, route: &Route) -> (String, String) {
        let key = route.key();
        let bucket = self.bucket_of.get(&key).cloned().unwrap_or(key);
        (bucket, route.major.clone())
    }

    /// How long `route` must wait before it may be sent, if at all.
    fn wait(&mut self, route: &Route, now: Instant) -> Option<Duration> {
        if let Some(until) = self.global_until {
            if until > now {
                return Some(until - now);
            }
            self.global_until = None;
        }
        let bucket = self.bucket(route);
        match self.exhausted.get(&bucket) {
            Some(&until) if until > now => Some(until - now),
            Some(_) => {
                self.exhausted.remove(&bucket);
                None
            }
            None => None,
        }
    }

    /// Learns from an answer's headers.
    fn learn(&mut self, route: &Route, headers: &HeaderMap, now: Instant) {
        if let Some(bucket) = header_str(headers, "x-ratelimit-bucket") {
            self.bucket_of.insert(route.key(), bucket.to_owned());
        }
        let bucket = self.bucket(route);
        let remaining =
            header_str(headers, "x-ratelimit-remaining").and_then(|v| v.parse::<u64>().ok());
        let reset_after = header_secs(headers, "x-ratelimit-reset-after");
        match (remaining, reset_after) {
            (Some(0), Some(after)) => {
                self.exhausted.insert(bucket, now + after + RESET_MARGIN);
            }
            (Some(_), _) => {
                self.exhausted.remove(&bucket);
            }
            _ => {}
        }
    }

    /// Learns from a 429: the wait it names holds the bucket, or everything if global.
    fn limited(&mut self, route: &Route, wait: Duration, global: bool, now: Instant) {
        let until = now + wait + RESET_MARGIN;
        if global {
            self.global_until = Some(until);
        } else {
            let bucket = self.bucket(route);
            self.exhausted.insert(bucket, until);
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A header holding seconds as a decimal number (`"1.337"`).
fn header_secs(headers: &HeaderMap, name: &str) -> Option<Duration> {
    header_str(headers, name)
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// The body of a 429.
#[derive(serde::Deserialize)]
struct RateLimitBody {
    retry_after: f64,
    #[serde(default)]
    global: bool,
}

/// The body of any other error.
#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

/// A client of Discord's REST API as the bot.
pub struct Rest {
    http: reqwest::Client,
    /// `https://discord.com/api/v10`, or a stand-in's.
    api: String,
    /// `Bot <token>`; never logged (reqwest's errors name the URL, never the headers).
    authorization: String,
    limits: Mutex<Limits>,
}

/// What a request carries.
pub enum Body {
    None,
    Json(serde_json::Value),
    /// `payload_json` and one file (`files[0]`), as Discord takes uploads.
    WithFile {
        payload: serde_json::Value,
        filename: String,
        mimetype: Option<String>,
        bytes: Vec<u8>,
    },
}

impl Rest {
    /// `base`: `https://discord.com` (or a stand-in's address); `timeout`: the longest one
    /// request may take.
    pub fn new(base: &str, token: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!(
                "DiscordBot (https://github.com/switchboard, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Rest {
            http,
            api: format!("{}/api/{API_VERSION}", base.trim_end_matches('/')),
            authorization: format!("Bot {token}"),
            limits: Mutex::new(Limits::default()),
        })
    }

    /// The API's address (`https://discord.com/api/v10`), for messages: it holds no token.
    pub fn api(&self) -> &str {
        &self.api
    }

    /// Downloads an attachment from Discord's CDN (its URL needs no token). The answer may be
    /// as large as Discord allows an upload; the bridge checks the size against its own
    /// limits before passing the file on.
    pub async fn download(&self, url: &str) -> Result<Vec<u8>, RestError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| RestError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(RestError::Unavailable(format!("HTTP {status}")));
        }
        if !status.is_success() {
            return Err(RestError::Refused {
                status: status.as_u16(),
                code: 0,
                message: "the attachment could not be downloaded".into(),
            });
        }
        Ok(response
            .bytes()
            .await
            .map_err(|e| RestError::Unavailable(e.without_url().to_string()))?
            .to_vec())
    }

    /// Sends a request and reads its answer as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        route: Route,
        body: Body,
    ) -> Result<T, RestError> {
        let bytes = self.send(route, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| RestError::Unreadable(e.to_string()))
    }

    /// Sends a request whose answer has no body worth reading (204).
    pub async fn call_empty(&self, route: Route, body: Body) -> Result<(), RestError> {
        self.send(route, body).await.map(|_| ())
    }

    async fn send(&self, route: Route, body: Body) -> Result<Vec<u8>, RestError> {
        if let Some(wait) = self
            .limits
            .lock()
            .expect("limits")
            .wait(&route, Instant::now())
        {
            return Err(RestError::RateLimited(wait));
        }
        let url = format!("{}{}", self.api, route.path);
        let mut request = self
            .http
            .request(route.method.clone(), &url)
            .header(reqwest::header::AUTHORIZATION, &self.authorization);
        request = match body {
            Body::None => request,
            Body::Json(json) => request.json(&json),
            Body::WithFile {
                payload,
                filename,
                mimetype,
                bytes,
            } => {
                let mut file = reqwest::multipart::Part::bytes(bytes).file_name(filename);
                if let Some(mime) = mimetype {
                    file = file
                        .mime_str(&mime)
                        .map_err(|e| RestError::Unreadable(format!("file type: {e}")))?;
                }
                let form = reqwest::multipart::Form::new()
                    .text("payload_json", payload.to_string())
                    .part("files[0]", file);
                request.multipart(form)
            }
        };
        // Webhook and interaction URLs hold their tokens: errors never name the URL.
        let response = request
            .send()
            .await
            .map_err(|e| RestError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RestError::Unavailable(e.without_url().to_string()))?
            .to_vec();
        let now = Instant::now();
        let mut limits = self.limits.lock().expect("limits");
        limits.learn(&route, &headers, now);
        if status.is_success() {
            return Ok(bytes);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let (wait, global) = match serde_json::from_slice::<RateLimitBody>(&bytes) {
                Ok(b) => (
                    Duration::try_from_secs_f64(b.retry_after).unwrap_or(Duration::from_secs(1)),
                    b.global,
                ),
                // A 429 from something in front of Discord (Cloudflare) has no JSON body.
                Err(_) => (
                    header_secs(&headers, "retry-after").unwrap_or(Duration::from_secs(1)),
                    false,
                ),
            };
            let global = global || header_str(&headers, "x-ratelimit-global") == Some("true");
            limits.limited(&route, wait, global, now);
            tracing::warn!(
                route = route.template,
                wait_ms = wait.as_millis() as u64,
                global,
                "discord: rate limited"
            );
            return Err(RestError::RateLimited(wait + RESET_MARGIN));
        }
        drop(limits);
        if status.is_server_error() {
            return Err(RestError::Unavailable(format!("HTTP {status}")));
        }
        let error = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or(ErrorBody {
            code: 0,
            message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        });
        Err(RestError::Refused {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn route(channel: u64) -> Route {
        Route::new(
            Method::POST,
            "/channels/{}/messages",
            format!("/channels/{channel}/messages"),
            channel,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_exhausted_bucket_holds_its_major_parameter_only_until_it_resets() {
        let mut limits = Limits::default();
        let now = Instant::now();
        let h = headers(&[
            ("x-ratelimit-bucket", "abcd"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "2.5"),
        ]);
        limits.learn(&route(1), &h, now);
        assert_eq!(
            limits.wait(&route(1), now),
            Some(Duration::from_millis(2550))
        );
        assert_eq!(
            limits.wait(&route(2), now),
            None,
            "another channel, another bucket"
        );
        assert_eq!(limits.wait(&route(1), now + Duration::from_secs(3)), None);
        // Requests left: nothing holds.
        let h = headers(&[
            ("x-ratelimit-bucket", "abcd"),
            ("x-ratelimit-remaining", "4"),
        ]);
        limits.learn(&route(1), &h, now);
        assert_eq!(limits.wait(&route(1), now), None);
    }

    #[test]
    fn routes_discord_puts_in_one_bucket_share_its_limit() {
        let mut limits = Limits::default();
        let now = Instant::now();
        let edit = Route::new(
            Method::PATCH,
            "/channels/{}/messages/{}",
            "/channels/1/messages/9".into(),
            1,
        );
        let shared = |remaining: &str| {
            headers(&[
                ("x-ratelimit-bucket", "same"),
                ("x-ratelimit-remaining", remaining),
                ("x-ratelimit-reset-after", "1"),
            ])
        };
        limits.learn(&edit, &shared("3"), now);
        limits.learn(&route(1), &shared("0"), now);
        assert!(
            limits.wait(&edit, now).is_some(),
            "Discord named one bucket for both"
        );
    }

    #[test]
    fn a_global_limit_holds_every_route() {
        let mut limits = Limits::default();
        let now = Instant::now();
        limits.limited(&route(1), Duration::from_secs(1), true, now);
        assert!(limits.wait(&route(7), now).is_some());
        assert_eq!(limits.wait(&route(7), now + Duration::from_secs(2)), None);
    }

    #[test]
    fn refusals_never_come_back_as_retryable() {
        let refused = RestError::Refused {
            status: 403,
            code: codes::CANNOT_DM,
            message: "Cannot send messages to this user".into(),
        };
        assert!(matches!(
            ConnectorError::from(refused),
            ConnectorError::Permanent(_)
        ));
        assert!(matches!(
            ConnectorError::from(RestError::RateLimited(Duration::from_secs(2))),
            ConnectorError::RetryAfter(d) if d == Duration::from_secs(2)
        ));
        assert!(matches!(
            ConnectorError::from(RestError::Unavailable("502".into())),
            ConnectorError::Transient(_)
        ));
    }
}
