//! The one error type of the stand-in, turned into the Bot API's error envelope only at the
//! HTTP edge (`server.rs`).

use serde_json::{Value, json};

/// A refusal, shaped like the Bot API's: `{"ok":false,"error_code":N,"description":"...",
/// "parameters":{...}}`. The HTTP status of the answer equals `code`, as with the real server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub code: u16,
    pub description: String,
    /// `ResponseParameters` (`retry_after`, `migrate_to_chat_id`) when the error carries them.
    pub parameters: Option<Value>,
}

impl ApiError {
    /// Any error with a code and a full description (used by `fail_next`).
    pub fn new(code: u16, description: impl Into<String>) -> Self {
        ApiError {
            code,
            description: description.into(),
            parameters: None,
        }
    }

    /// 400 `Bad Request: {detail}`, the answer to almost every invalid parameter.
    pub fn bad_request(detail: impl AsRef<str>) -> Self {
        Self::new(400, format!("Bad Request: {}", detail.as_ref()))
    }

    /// 400 `Bad Request: can't parse entities: {detail}`, for HTML / MarkdownV2 mistakes.
    pub fn cant_parse_entities(detail: impl AsRef<str>) -> Self {
        Self::bad_request(format!("can't parse entities: {}", detail.as_ref()))
    }

    /// 401 for a token this server does not know.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized")
    }

    /// 404 for a method name the Bot API does not have.
    pub fn not_found() -> Self {
        Self::new(404, "Not Found")
    }

    /// 409 `Conflict: {detail}`.
    pub fn conflict(detail: &str) -> Self {
        Self::new(409, format!("Conflict: {detail}"))
    }

    /// 429 with `parameters.retry_after`, as Telegram's flood control answers.
    pub fn too_many_requests(retry_after: u32) -> Self {
        ApiError {
            code: 429,
            description: format!("Too Many Requests: retry after {retry_after}"),
            parameters: Some(json!({ "retry_after": retry_after })),
        }
    }

    /// The JSON envelope the client receives.
    pub fn to_envelope(&self) -> Value {
        let mut body = json!({
            "ok": false,
            "error_code": self.code,
            "description": self.description,
        });
        if let Some(parameters) = &self.parameters {
            body["parameters"] = parameters.clone();
        }
        body
    }
}

/// Shorthand for handler results.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
