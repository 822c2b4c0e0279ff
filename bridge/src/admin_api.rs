//! The operators' HTTP API: the responder register (create, edit, set status, remove), a
//! view of conversations with their transcripts, erasing a closed conversation, and the dead
//! letters (work set aside because it never succeeded), which can be listed and retried.
//!
//! Every route requires `Authorization: Bearer <admin token>`. The token is operator-grade:
//! it reads every transcript, so it is compared in constant time, never accepted in the query
//! string (URLs end up in proxy logs) and never logged; an address that keeps presenting wrong
//! tokens is locked out for a while (`auth.rs`). After any change to a responder the
//! bridge is woken through `changed`, so conversations still waiting are routed again with the
//! new register.
//!
//! The shapes answered here are also what `switchboard responders …` / `conversations …`
//! print: the CLI calls [`conversation_summaries`], [`conversation_detail`] and [`pretty_json`]
//! so both views stay the same.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, Path, Query, State,
        rejection::{BytesRejection, QueryRejection},
    },
    http::{HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::sync::Notify;
use utoipa::{IntoParams, OpenApi as _, ToSchema, openapi::OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    Store, StoreError,
    conversation::{Conversation, ConversationState, Message},
    openapi::{self as doc, ErrorBody},
    responder::{Contact, Responder, ResponderStatus, WeeklyHours},
    retention::{EraseConversation, EraseFailure, Eraser, Erasure},
    routing::{FieldError, validate_responder},
    store::{DeadLetter, SOURCE_ADMIN},
};

mod auth;
mod conversations;
mod dead_letters;
mod responders;
mod service_levels;

pub use conversations::{
    AssignmentView, ConversationDetail, ConversationList, ConversationSummary, InitiatorBlock,
    conversation_detail, conversation_summaries, set_initiator_block,
};
pub use dead_letters::{DEAD_LETTER_LIMIT, DeadLetterList};
use responders::{ResponderBody, StatusBody, parse_body};
pub use responders::{ResponderList, responder_with_defaults};

/// Where the admin API's OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/admin/v1/openapi.json";

use auth::{FailedLogins, require_admin_token};
pub use service_levels::levels as service_levels;

/// A responder body is a few hundred bytes; anything near this is a mistake or an attack.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// State of the admin routes.
#[derive(Clone)]
pub struct AdminState {
    store: Store,
    token: Arc<str>,
    changed: Arc<Notify>,
    known_platforms: Arc<[String]>,
    /// Makes the running worker look at its queues (after a dead letter was retried).
    wake: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Wrong tokens per address, and the addresses locked out for them.
    failed_logins: Arc<FailedLogins>,
    /// The topics' first-reply targets, for the service-level report.
    targets: Arc<std::collections::BTreeMap<String, u64>>,
    /// Erases a conversation on the homeserver and in the store (the service passes its
    /// bridge); without it, an erasure is the store's only.
    eraser: Option<Arc<dyn EraseConversation>>,
}

/// The admin API was configured without a token. Serving it would hand every transcript and
/// the whole register to anyone who can reach the listener.
#[derive(Debug, thiserror::Error)]
#[error(
    "the admin API needs a non-empty token: set `token` in the [admin] section of the configuration (or SWITCHBOARD_ADMIN__TOKEN)"
)]
pub struct EmptyAdminToken;

impl AdminState {
    /// `changed` is notified after every change to a responder; `known_platforms` are the
    /// platforms a contact may name (those with a connector, e.g. `matrix`, `telegram`).
    pub fn new(
        store: Store,
        token: impl Into<Arc<str>>,
        changed: Arc<Notify>,
        known_platforms: Vec<String>,
    ) -> Result<Self, EmptyAdminToken> {
        let token = token.into();
        if token.trim().is_empty() {
            return Err(EmptyAdminToken);
        }
        Ok(Self {
            store,
            token,
            changed,
            known_platforms: known_platforms.into(),
            wake: None,
            failed_logins: Arc::new(FailedLogins::new(false)),
            targets: Arc::default(),
            eraser: None,
        })
    }

    /// `eraser` erases conversations on the homeserver as well as in the store (the service
    /// passes its `Bridge`, which holds the room's lock meanwhile).
    pub fn with_eraser(mut self, eraser: Arc<dyn EraseConversation>) -> Self {
        self.eraser = Some(eraser);
        self
    }

    /// `wake` is called after a dead letter was retried, so the worker takes the work up at
    /// once (the service passes `Bridge::wake`); without it, at the worker's next look.
    pub fn with_wake(mut self, wake: impl Fn() + Send + Sync + 'static) -> Self {
        self.wake = Some(Arc::new(wake));
        self
    }

    /// Behind a reverse proxy: the last `X-Forwarded-For` hop, not the peer, is the address
    /// whose wrong tokens are counted (otherwise one guesser would lock out every operator).
    pub fn with_trusted_forwarded_for(mut self, trust: bool) -> Self {
        self.failed_logins = Arc::new(FailedLogins::new(trust));
        self
    }

    /// The topics' first-reply targets (`first_reply_target_secs`), which the service-level
    /// report measures against.
    pub fn with_service_level_targets(
        mut self,
        targets: std::collections::BTreeMap<String, u64>,
    ) -> Self {
        self.targets = Arc::new(targets);
        self
    }

    fn validate(&self, r: &Responder) -> Result<(), AdminError> {
        let known: Vec<&str> = self.known_platforms.iter().map(String::as_str).collect();
        validate_responder(r, &known).map_err(AdminError::from)
    }
}

/// An error as an operator's client sees it: a Matrix-style body, plus `field` when one field
/// of the request is to blame. Internal error text (SQL) is logged, never sent.
#[derive(Debug)]
pub struct AdminError {
    status: StatusCode,
    errcode: &'static str,
    message: String,
    field: Option<String>,
}

impl AdminError {
    fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            field: None,
        }
    }

    /// A 400 naming the field at fault; the message reads `<field>: <what is wrong>`.
    fn field(errcode: &'static str, field: &str, message: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            errcode,
            message: format!("{field}: {message}"),
            field: Some(field.to_owned()),
        }
    }

    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
            format!("No such {what}"),
        )
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut body = ErrorBody::new(self.errcode, self.message);
        body.field = self.field;
        (self.status, Json(body)).into_response()
    }
}

/// A body that could not be read: too large (413 `M_TOO_LARGE`) or cut off.
impl From<BytesRejection> for AdminError {
    fn from(e: BytesRejection) -> Self {
        let errcode = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "M_TOO_LARGE"
        } else {
            "M_BAD_JSON"
        };
        AdminError::new(e.status(), errcode, e.body_text())
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "admin API: store failed");
        AdminError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal error; see the service log",
        )
    }
}

impl From<FieldError> for AdminError {
    fn from(e: FieldError) -> Self {
        AdminError::field("M_INVALID_PARAM", &e.field, &e.message)
    }
}

/// The admin API's description: its title and version, the token every route needs, and the
/// answers any route can give (the token check's, and a store failure).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchboard admin API",
        description = "The responder register, conversations with their transcripts, erasure, \
            the service-level report and dead letters. See docs/admin-api.md."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "responders", description = "The responder register"),
        (name = "conversations", description = "Conversations, transcripts, erasure, blocks"),
        (name = "service levels", description = "First-reply times against each topic's target"),
        (name = "dead letters", description = "Work set aside because it never succeeded"),
    )
)]
struct AdminDocument;

/// Every admin route, each registered with its description.
fn routes() -> OpenApiRouter<AdminState> {
    let mut document = AdminDocument::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    OpenApiRouter::with_openapi(document)
        .routes(routes!(
            responders::list_responders,
            responders::create_responder
        ))
        .routes(routes!(
            responders::get_responder,
            responders::replace_responder,
            responders::patch_responder,
            responders::delete_responder
        ))
        .routes(routes!(responders::put_status))
        .routes(routes!(conversations::list_conversations))
        .routes(routes!(
            conversations::get_conversation,
            conversations::erase_conversation
        ))
        .routes(routes!(
            conversations::block_initiator_route,
            conversations::unblock_initiator_route
        ))
        .routes(routes!(service_levels::get_service_levels))
        .routes(routes!(dead_letters::list_dead_letters))
        .routes(routes!(dead_letters::retry_dead_letter))
}

/// The admin API's OpenAPI 3.1 document, as served at [`OPENAPI_PATH`].
pub fn openapi() -> OpenApi {
    let (_, mut document) = routes().split_for_parts();
    complete(&mut document);
    document
}

/// Adds what every route shares to the handlers' own descriptions.
fn complete(document: &mut OpenApi) {
    let every = |_: &str, _| true;
    doc::require_bearer(
        document,
        "admin_token",
        "The admin token (`[admin] token`), as `Authorization: Bearer <token>`.",
        every,
    );
    doc::answer_everywhere(
        document,
        "401",
        doc::error_answer("No admin token (`M_MISSING_TOKEN`)."),
        every,
    );
    doc::answer_everywhere(
        document,
        "403",
        doc::error_answer("A wrong admin token (`M_FORBIDDEN`)."),
        every,
    );
    doc::answer_everywhere(
        document,
        "429",
        doc::too_many_answer(
            "Too many wrong tokens from this address: locked out for a while, right token \
             included (`M_LIMIT_EXCEEDED`).",
        ),
        every,
    );
    doc::answer_everywhere(
        document,
        "500",
        doc::error_answer("The store failed; the service log says why (`M_UNKNOWN`)."),
        every,
    );
}

/// The admin routes, all behind the admin token check, and the API's OpenAPI document.
pub fn router(state: AdminState) -> Router {
    let (routes, mut document) = routes().split_for_parts();
    complete(&mut document);
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_admin_token,
        ))
        // A description of the routes, nobody's data: served without the token.
        .route(OPENAPI_PATH, doc::serve(&document))
        // Answers carry transcripts and the register: no cache may keep them.
        .layer(middleware::map_response(|mut response: Response| async {
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }))
        .with_state(state)
}

/// Any answer of this API as indented JSON: what the CLI prints.
pub fn pretty_json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).expect("API views serialize to JSON")
}

/// For `crate::fuzzing`: the bodies an operator's client sends, read as the handlers read
/// them, and an accepted responder body applied and validated as a creation would.
#[doc(hidden)]
pub(crate) mod fuzz_support {
    use super::*;

    pub(crate) fn bodies(data: &[u8]) {
        match parse_body::<ResponderBody>(data) {
            Ok(body) => {
                let mut responder = responder_with_defaults("fuzz", "Fuzz");
                body.apply_to(&mut responder);
                let _ = validate_responder(&responder, &["matrix", "telegram", "discord", "email"]);
            }
            Err(e) => assert!(e.status == StatusCode::BAD_REQUEST, "{e:?}"),
        }
        let _ = parse_body::<StatusBody>(data);
    }
}
