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
mod service_levels;

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
        .routes(routes!(list_responders, create_responder))
        .routes(routes!(
            get_responder,
            replace_responder,
            patch_responder,
            delete_responder
        ))
        .routes(routes!(put_status))
        .routes(routes!(list_conversations))
        .routes(routes!(get_conversation, erase_conversation))
        .routes(routes!(block_initiator_route, unblock_initiator_route))
        .routes(routes!(service_levels::get_service_levels))
        .routes(routes!(list_dead_letters))
        .routes(routes!(retry_dead_letter))
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

// ---- request bodies ---------------------------------------------------------------------

/// A responder as a request body. Mirrors [`Responder`] with every field optional (what is
/// required depends on the method) and refuses unknown fields, so a typo such as
/// `"max_concurent"` is an error naming it rather than a silently ignored setting.
///
/// In the OpenAPI document every member is optional and none but `pseudonym` may be `null`:
/// `POST` needs `id` and `display_name`, `PUT` needs `display_name`, `PATCH` nothing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ResponderRequest)]
struct ResponderBody {
    /// Required by `POST`; elsewhere, if given, the path's.
    #[schema(nullable = false)]
    id: Option<String>,
    #[schema(nullable = false)]
    display_name: Option<String>,
    /// `null` removes the pseudonym.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pseudonym: Option<Option<String>>,
    #[schema(nullable = false)]
    topics: Option<Vec<String>>,
    #[schema(nullable = false)]
    languages: Option<Vec<String>>,
    #[schema(nullable = false)]
    timezone: Option<String>,
    #[schema(nullable = false, inline)]
    hours: Option<WeeklyHours>,
    #[schema(nullable = false)]
    max_concurrent: Option<i64>,
    #[schema(nullable = false)]
    status: Option<ResponderStatus>,
    #[schema(nullable = false)]
    contacts: Option<Vec<ContactBody>>,
}

/// One way to reach a responder.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ContactRequest)]
struct ContactBody {
    /// A platform Switchboard has a connector for: `matrix`, `telegram`, `discord`, `email`.
    platform: String,
    /// The address there, in that platform's form.
    address: String,
}

/// Tells "given as null" (`Some(None)`) from "absent" (`None`, through `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Fields that may be `null` in a body (meaning "none").
const NULLABLE_FIELDS: &[&str] = &["pseudonym"];

impl ResponderBody {
    /// Checks that the body's `id`, if given, is the one in the path.
    fn check_id(&self, path_id: &str) -> Result<(), AdminError> {
        match &self.id {
            Some(id) if id != path_id => Err(AdminError::field(
                "M_INVALID_PARAM",
                "id",
                format!(
                    "does not match the responder in the path ({path_id:?}); ids cannot be changed"
                ),
            )),
            _ => Ok(()),
        }
    }

    fn required_display_name(&self) -> Result<&str, AdminError> {
        self.display_name
            .as_deref()
            .ok_or_else(|| AdminError::field("M_BAD_JSON", "display_name", "missing field"))
    }

    /// Overwrites the fields this body gives.
    fn apply_to(self, r: &mut Responder) {
        if let Some(v) = self.display_name {
            r.display_name = v;
        }
        if let Some(v) = self.pseudonym {
            r.pseudonym = v;
        }
        if let Some(v) = self.topics {
            r.topics = v;
        }
        if let Some(v) = self.languages {
            r.languages = v;
        }
        if let Some(v) = self.timezone {
            r.timezone = v;
        }
        if let Some(v) = self.hours {
            r.hours = v;
        }
        if let Some(v) = self.max_concurrent {
            r.max_concurrent = v;
        }
        if let Some(v) = self.status {
            r.status = v;
        }
        if let Some(v) = self.contacts {
            r.contacts = v
                .into_iter()
                .map(|c| Contact {
                    platform: c.platform,
                    address: c.address,
                })
                .collect();
        }
    }
}

/// A responder's new status.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StatusRequest)]
struct StatusBody {
    status: ResponderStatus,
}

/// Parses a JSON object body into `T`, and when it does not fit, names the top-level field at
/// fault. serde's messages name unknown and missing fields but not the field whose value has
/// the wrong type, nor the top-level field a nested error sits in; so the culprit is the
/// member whose removal changes the error (serde stops at the first bad member).
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        AdminError::new(
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
            format!("Body is not JSON: {e}"),
        )
    })?;
    let Value::Object(members) = &value else {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "Expected a JSON object",
        ));
    };
    if let Some((name, _)) = members
        .iter()
        .find(|(k, v)| v.is_null() && !NULLABLE_FIELDS.contains(&k.as_str()))
    {
        return Err(AdminError::field("M_BAD_JSON", name, "may not be null"));
    }
    T::deserialize(&value).map_err(|e| {
        let message = e.to_string();
        let culprit = members.keys().find(|&k| {
            let mut others = members.clone();
            others.remove(k);
            T::deserialize(&Value::Object(others))
                .map_or_else(|e| e.to_string() != message, |_| true)
        });
        // Otherwise a required top-level field is absent: "missing field `status`".
        let field = culprit.cloned().or_else(|| {
            let rest = message.strip_prefix("missing field `")?;
            Some(rest.split('`').next()?.to_owned())
        });
        match field {
            Some(field) => AdminError::field("M_BAD_JSON", &field, message),
            None => AdminError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message),
        }
    })
}

/// A responder with the register's defaults (time zone UTC, three conversations at once,
/// available, no topics, no hours, no contacts) for everything but its id and name.
pub fn responder_with_defaults(id: &str, display_name: &str) -> Responder {
    // Through serde so the defaults are the model's own, written once in `responder.rs`.
    serde_json::from_value(json!({ "id": id, "display_name": display_name }))
        .expect("id and display_name are the only required fields of Responder")
}

/// Any answer of this API as indented JSON: what the CLI prints.
pub fn pretty_json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).expect("API views serialize to JSON")
}

// ---- responders ---------------------------------------------------------------------------

/// Every responder in the register.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResponderList {
    /// By id.
    pub responders: Vec<Responder>,
}

/// List the responders.
#[utoipa::path(
    get,
    path = "/admin/v1/responders",
    tag = "responders",
    responses((status = 200, description = "Every responder, by id.", body = ResponderList))
)]
async fn list_responders(
    State(state): State<AdminState>,
) -> Result<Json<ResponderList>, AdminError> {
    let responders = state.store.list_responders().await?;
    Ok(Json(ResponderList { responders }))
}

/// Add a responder.
///
/// `id` and `display_name` are required; the rest takes the register's defaults (time zone
/// UTC, three conversations at once, available, no topics, any hours, no contacts).
#[utoipa::path(
    post,
    path = "/admin/v1/responders",
    tag = "responders",
    request_body = ResponderBody,
    responses(
        (status = 201, description = "The responder as stored.", body = Responder),
        (status = 400, description = "A member is missing, unknown, of the wrong type or not valid; `field` names it.", body = ErrorBody),
        (status = 409, description = "The id is taken (`M_EXISTS`).", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB (`M_TOO_LARGE`).", body = ErrorBody),
    )
)]
async fn create_responder(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Responder>), AdminError> {
    let body: ResponderBody = parse_body(&body?)?;
    let id = body
        .id
        .clone()
        .ok_or_else(|| AdminError::field("M_BAD_JSON", "id", "missing field"))?;
    let mut responder = responder_with_defaults(&id, body.required_display_name()?);
    body.apply_to(&mut responder);
    state.validate(&responder)?;
    if !state
        .store
        .insert_responder(&responder, SOURCE_ADMIN)
        .await?
    {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            "M_EXISTS",
            format!("A responder with id {id:?} already exists"),
        ));
    }
    tracing::info!(responder = %id, "admin API: responder created");
    state.changed.notify_one();
    Ok((StatusCode::CREATED, Json(responder)))
}

/// Show one responder.
#[utoipa::path(
    get,
    path = "/admin/v1/responders/{id}",
    tag = "responders",
    params(("id" = String, Path, description = "The responder's id.")),
    responses(
        (status = 200, description = "The responder.", body = Responder),
        (status = 404, description = "No such responder.", body = ErrorBody),
    )
)]
async fn get_responder(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Responder>, AdminError> {
    let responder = state.store.responder(&id).await?;
    responder
        .map(Json)
        .ok_or_else(|| AdminError::not_found("responder"))
}

/// Replace a responder.
///
/// Full replacement: members left out take their defaults. The body's `id` may be left out;
/// if given it must be the path's.
#[utoipa::path(
    put,
    path = "/admin/v1/responders/{id}",
    tag = "responders",
    params(("id" = String, Path, description = "The responder's id.")),
    request_body = ResponderBody,
    responses(
        (status = 200, description = "The responder as stored.", body = Responder),
        (status = 400, description = "A member is missing, unknown, of the wrong type or not valid; `field` names it.", body = ErrorBody),
        (status = 404, description = "No such responder.", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB (`M_TOO_LARGE`).", body = ErrorBody),
    )
)]
async fn replace_responder(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Responder>, AdminError> {
    let body: ResponderBody = parse_body(&body?)?;
    body.check_id(&id)?;
    let mut responder = responder_with_defaults(&id, body.required_display_name()?);
    body.apply_to(&mut responder);
    save(&state, responder).await
}

/// Change some of a responder's members.
///
/// Changes the top-level members the body gives and keeps the others; `"pseudonym": null`
/// removes the pseudonym. Lists (topics, contacts, ...) are replaced whole.
#[utoipa::path(
    patch,
    path = "/admin/v1/responders/{id}",
    tag = "responders",
    params(("id" = String, Path, description = "The responder's id.")),
    request_body = ResponderBody,
    responses(
        (status = 200, description = "The responder as stored.", body = Responder),
        (status = 400, description = "A member is unknown, of the wrong type or not valid; `field` names it.", body = ErrorBody),
        (status = 404, description = "No such responder.", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB (`M_TOO_LARGE`).", body = ErrorBody),
    )
)]
async fn patch_responder(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Responder>, AdminError> {
    let body: ResponderBody = parse_body(&body?)?;
    body.check_id(&id)?;
    let mut responder = state
        .store
        .responder(&id)
        .await?
        .ok_or_else(|| AdminError::not_found("responder"))?;
    body.apply_to(&mut responder);
    save(&state, responder).await
}

/// Validates and stores an edited responder (PUT, PATCH); 404 if it does not exist.
async fn save(state: &AdminState, responder: Responder) -> Result<Json<Responder>, AdminError> {
    state.validate(&responder)?;
    if !state.store.update_responder(&responder).await? {
        return Err(AdminError::not_found("responder"));
    }
    tracing::info!(responder = %responder.id, "admin API: responder updated");
    state.changed.notify_one();
    Ok(Json(responder))
}

/// Remove a responder.
///
/// Conversations the responder holds stay theirs until they end.
#[utoipa::path(
    delete,
    path = "/admin/v1/responders/{id}",
    tag = "responders",
    params(("id" = String, Path, description = "The responder's id.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "No such responder.", body = ErrorBody),
    )
)]
async fn delete_responder(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    if !state.store.remove_responder(&id).await? {
        return Err(AdminError::not_found("responder"));
    }
    tracing::info!(responder = %id, "admin API: responder removed");
    state.changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// Set a responder's status.
#[utoipa::path(
    put,
    path = "/admin/v1/responders/{id}/status",
    tag = "responders",
    params(("id" = String, Path, description = "The responder's id.")),
    request_body = StatusBody,
    responses(
        (status = 200, description = "The responder with its new status.", body = Responder),
        (status = 400, description = "No status, or not one of the three; `field` says so.", body = ErrorBody),
        (status = 404, description = "No such responder.", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB (`M_TOO_LARGE`).", body = ErrorBody),
    )
)]
async fn put_status(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Responder>, AdminError> {
    let StatusBody { status } = parse_body(&body?)?;
    if !state.store.set_responder_status(&id, status).await? {
        return Err(AdminError::not_found("responder"));
    }
    tracing::info!(responder = %id, status = status.as_str(), "admin API: responder status set");
    state.changed.notify_one();
    let responder = state.store.responder(&id).await?;
    // Removed between the two statements: report it as gone.
    responder
        .map(Json)
        .ok_or_else(|| AdminError::not_found("responder"))
}

// ---- conversations ------------------------------------------------------------------------

/// A conversation in a list. Deliberately without the visitor's Matrix ID: lists are glanced
/// at and screenshotted; the ID is shown only with the transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConversationSummary {
    pub room_id: String,
    pub topic: String,
    pub state: ConversationState,
    pub visitor_alias: String,
    pub created_at: i64,
}

impl From<Conversation> for ConversationSummary {
    fn from(c: Conversation) -> Self {
        Self {
            room_id: c.room_id,
            topic: c.topic,
            state: c.state,
            visitor_alias: c.visitor_alias,
            created_at: c.created_at,
        }
    }
}

/// Who held (or holds) a conversation, on which platform, through which ghost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AssignmentView {
    pub responder_id: String,
    pub platform: String,
    pub address: String,
    pub ghost_user_id: String,
    /// `active`, `transferred` or `ended`.
    pub state: String,
    /// When they took the conversation (unix ms).
    pub started_at: i64,
    /// When they handed it over or it ended; absent while they hold it.
    pub ended_at: Option<i64>,
    /// Why it moved on: the hand-off reason (e.g. "no first reply in time"), or
    /// "ended by the responder" / "ended by the visitor".
    pub end_reason: Option<String>,
}

/// One conversation in full: the conversation (visitor's Matrix ID included), everyone
/// assigned to it, and its transcript in order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationDetail {
    pub conversation: Conversation,
    pub assignments: Vec<AssignmentView>,
    pub transcript: Vec<Message>,
}

/// Conversations, oldest first, optionally only those in one state.
pub async fn conversation_summaries(
    store: &Store,
    state: Option<ConversationState>,
) -> Result<Vec<ConversationSummary>, StoreError> {
    Ok(store
        .list_conversations()
        .await?
        .into_iter()
        .filter(|c| state.is_none_or(|s| c.state == s))
        .map(ConversationSummary::from)
        .collect())
}

/// A conversation with its assignments and transcript; None if there is no such room.
pub async fn conversation_detail(
    store: &Store,
    room_id: &str,
) -> Result<Option<ConversationDetail>, StoreError> {
    let Some(conversation) = store.conversation(room_id).await? else {
        return Ok(None);
    };
    let assignments = store
        .assignment_history(room_id)
        .await?
        .into_iter()
        .map(|h| AssignmentView {
            responder_id: h.assignment.responder_id,
            platform: h.assignment.platform,
            address: h.assignment.address,
            ghost_user_id: h.assignment.ghost_user_id,
            state: h.assignment.state,
            started_at: h.started_at,
            ended_at: h.ended_at,
            end_reason: h.end_reason,
        })
        .collect();
    let transcript = store.messages(room_id).await?;
    Ok(Some(ConversationDetail {
        conversation,
        assignments,
        transcript,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ConversationQuery {
    /// Only conversations in this state.
    #[param(value_type = Option<ConversationState>)]
    state: Option<String>,
}

/// Conversations, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationList {
    pub conversations: Vec<ConversationSummary>,
}

/// List conversations.
///
/// Oldest first, without visitors' Matrix IDs (lists are glanced at and screenshotted).
#[utoipa::path(
    get,
    path = "/admin/v1/conversations",
    tag = "conversations",
    params(ConversationQuery),
    responses(
        (status = 200, description = "The conversations, oldest first.", body = ConversationList),
        (status = 400, description = "`state` is not a state (`M_INVALID_PARAM`).", body = ErrorBody),
    )
)]
async fn list_conversations(
    State(state): State<AdminState>,
    query: Result<Query<ConversationQuery>, QueryRejection>,
) -> Result<Json<ConversationList>, AdminError> {
    let Query(query) = query
        .map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", e.body_text()))?;
    let filter = match query.state.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<ConversationState>().map_err(|()| {
            AdminError::field(
                "M_INVALID_PARAM",
                "state",
                format!("{s:?} is not one of queued, offered, active, transferring, closed"),
            )
        })?),
    };
    let conversations = conversation_summaries(&state.store, filter).await?;
    Ok(Json(ConversationList { conversations }))
}

/// Show one conversation in full.
///
/// The conversation (with the visitor's Matrix ID), its assignments and its transcript.
#[utoipa::path(
    get,
    path = "/admin/v1/conversations/{room_id}",
    tag = "conversations",
    params(("room_id" = String, Path, description = "The conversation's room ID, e.g. `!abc:example.org`.")),
    responses(
        (status = 200, description = "The conversation, who held it, and its transcript.", body = ConversationDetail),
        (status = 404, description = "No such conversation.", body = ErrorBody),
    )
)]
async fn get_conversation(
    State(state): State<AdminState>,
    Path(room_id): Path<String>,
) -> Result<Json<ConversationDetail>, AdminError> {
    let detail = conversation_detail(&state.store, &room_id).await?;
    detail
        .map(Json)
        .ok_or_else(|| AdminError::not_found("conversation"))
}

impl From<EraseFailure> for AdminError {
    fn from(e: EraseFailure) -> Self {
        match e {
            EraseFailure::NotFound => AdminError::not_found("conversation"),
            EraseFailure::Open(_) => {
                AdminError::new(StatusCode::CONFLICT, "M_CONVERSATION_OPEN", e.to_string())
            }
            EraseFailure::Homeserver(ref inner) => {
                // The homeserver's own words may name users or rooms: logged, not answered.
                tracing::error!(error = %inner, "admin API: erasing on the homeserver failed");
                AdminError::new(
                    StatusCode::BAD_GATEWAY,
                    "M_UNKNOWN",
                    "The homeserver failed; nothing was erased. Try again; see the service log",
                )
            }
            EraseFailure::Platform {
                ref platform,
                ref error,
            } => {
                tracing::error!(platform, error, "admin API: erasing on a platform failed");
                AdminError::new(
                    StatusCode::BAD_GATEWAY,
                    "M_UNKNOWN",
                    format!(
                        "{platform} failed; nothing was erased. Try again; see the service log"
                    ),
                )
            }
            EraseFailure::Store(e) => e.into(),
        }
    }
}

/// Erase a closed conversation.
///
/// Its room's messages on the homeserver (purged through Synapse's admin API with
/// `[retention] homeserver_admin_token`, else redacted by the bot, whose users then leave),
/// then every row the store holds about it.
#[utoipa::path(
    delete,
    path = "/admin/v1/conversations/{room_id}",
    tag = "conversations",
    params(("room_id" = String, Path, description = "The conversation's room ID.")),
    responses(
        (status = 200, description = "Erased: what happened on the homeserver, and the rows deleted by table.", body = Erasure),
        (status = 404, description = "No such conversation, or erased already.", body = ErrorBody),
        (status = 409, description = "The conversation is not closed (`M_CONVERSATION_OPEN`).", body = ErrorBody),
        (status = 502, description = "The homeserver or a platform failed; nothing was erased.", body = ErrorBody),
    )
)]
async fn erase_conversation(
    State(state): State<AdminState>,
    Path(room_id): Path<String>,
) -> Result<Json<Erasure>, AdminError> {
    let erasure = match &state.eraser {
        Some(eraser) => eraser.erase_conversation(&room_id).await?,
        None => Eraser::erase_store_only(&state.store, &room_id).await?,
    };
    tracing::info!(
        room_id,
        rows = erasure.rows_deleted.total(),
        "admin API: conversation erased"
    );
    Ok(Json(erasure))
}

/// Blocks (or, with `block` false, unblocks) the person who started the conversation in
/// `room_id` from a platform from starting more: by the keyed hash of their address stored
/// with the conversation, so the operator names them by the conversation alone and learns
/// nothing the pseudonym does not show. `None`: no such conversation, or one not started
/// from a platform. `Some(changed)`: whether the block list changed.
pub async fn set_initiator_block(
    store: &Store,
    room_id: &str,
    block: bool,
) -> Result<Option<bool>, StoreError> {
    let Some(initiator) = store.initiator_of(room_id).await? else {
        return Ok(None);
    };
    let changed = if block {
        store.block_initiator(&initiator.address_key).await?
    } else {
        store.unblock_initiator(&initiator.address_key).await?
    };
    tracing::info!(room_id, block, changed, "initiator block changed");
    Ok(Some(changed))
}

/// Whether the conversation's initiator is blocked now, and whether this request changed it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InitiatorBlock {
    pub blocked: bool,
    pub changed: bool,
}

async fn initiator_block(
    state: &AdminState,
    room_id: &str,
    block: bool,
) -> Result<Json<InitiatorBlock>, AdminError> {
    let changed = set_initiator_block(&state.store, room_id, block)
        .await?
        .ok_or_else(|| AdminError::not_found("conversation started from a platform"))?;
    Ok(Json(InitiatorBlock {
        blocked: block,
        changed,
    }))
}

/// Block a conversation's initiator.
///
/// The person who started this conversation from a platform may start no more (their open
/// conversations go on). They are named by the conversation alone.
#[utoipa::path(
    post,
    path = "/admin/v1/conversations/{room_id}/initiator-block",
    tag = "conversations",
    params(("room_id" = String, Path, description = "The conversation's room ID.")),
    responses(
        (status = 200, description = "Blocked.", body = InitiatorBlock),
        (status = 404, description = "No conversation started from a platform has that room.", body = ErrorBody),
    )
)]
async fn block_initiator_route(
    State(state): State<AdminState>,
    Path(room_id): Path<String>,
) -> Result<Json<InitiatorBlock>, AdminError> {
    initiator_block(&state, &room_id, true).await
}

/// Lift a block on a conversation's initiator.
#[utoipa::path(
    delete,
    path = "/admin/v1/conversations/{room_id}/initiator-block",
    tag = "conversations",
    params(("room_id" = String, Path, description = "The conversation's room ID.")),
    responses(
        (status = 200, description = "Not blocked.", body = InitiatorBlock),
        (status = 404, description = "No conversation started from a platform has that room.", body = ErrorBody),
    )
)]
async fn unblock_initiator_route(
    State(state): State<AdminState>,
    Path(room_id): Path<String>,
) -> Result<Json<InitiatorBlock>, AdminError> {
    initiator_block(&state, &room_id, false).await
}

// ---- dead letters ------------------------------------------------------------------------

/// How many dead letters a list shows unless `?limit=` says otherwise, and at most.
pub const DEAD_LETTER_LIMIT: i64 = 100;
const MAX_DEAD_LETTER_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeadLetterQuery {
    /// How many to show at most (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Dead letters, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetter>,
}

/// List dead letters.
///
/// Work set aside because it failed in a way retrying would not mend, newest first. `reason`
/// is the error, never the work's content.
#[utoipa::path(
    get,
    path = "/admin/v1/dead-letters",
    tag = "dead letters",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "The dead letters, newest first.", body = DeadLetterList),
        (status = 400, description = "`limit` is not a number from 1 to 1000 (`M_INVALID_PARAM`).", body = ErrorBody),
    )
)]
async fn list_dead_letters(
    State(state): State<AdminState>,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Result<Json<DeadLetterList>, AdminError> {
    let Query(query) = query
        .map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", e.body_text()))?;
    let limit = query.limit.unwrap_or(DEAD_LETTER_LIMIT);
    if !(1..=MAX_DEAD_LETTER_LIMIT).contains(&limit) {
        return Err(AdminError::field(
            "M_INVALID_PARAM",
            "limit",
            format!("{limit} is not between 1 and {MAX_DEAD_LETTER_LIMIT}"),
        ));
    }
    let dead_letters = state.store.dead_letters(limit).await?;
    Ok(Json(DeadLetterList { dead_letters }))
}

/// Retry a dead letter.
///
/// Removes the dead letter and puts its work back in its queue; the worker is woken to take
/// it up at once. A delivery resumes where it stopped: parts already sent are not sent again.
#[utoipa::path(
    post,
    path = "/admin/v1/dead-letters/{id}/retry",
    tag = "dead letters",
    params(("id" = i64, Path, description = "The dead letter's id.")),
    responses(
        (status = 200, description = "The dead letter as it was; its work is queued again.", body = DeadLetter),
        (status = 400, description = "`id` is not a number (`M_INVALID_PARAM`).", body = ErrorBody),
        (status = 404, description = "No such dead letter.", body = ErrorBody),
    )
)]
async fn retry_dead_letter(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<DeadLetter>, AdminError> {
    let id: i64 = id.parse().map_err(|_| {
        AdminError::field("M_INVALID_PARAM", "id", format!("{id:?} is not a number"))
    })?;
    let letter = state
        .store
        .retry_dead_letter(id)
        .await?
        .ok_or_else(|| AdminError::not_found("dead letter"))?;
    tracing::info!(
        dead_letter = id,
        source = %letter.source,
        seq = letter.source_seq,
        "admin API: dead letter retried"
    );
    if let Some(wake) = &state.wake {
        wake();
    }
    Ok(Json(letter))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: AdminError) -> (String, Option<String>) {
        (e.errcode.to_owned(), e.field)
    }

    #[test]
    fn a_wrongly_typed_member_is_named() {
        let e = parse_body::<ResponderBody>(br#"{"id":"a","max_concurrent":"three"}"#).unwrap_err();
        assert_eq!(
            field_of(e),
            ("M_BAD_JSON".into(), Some("max_concurrent".into()))
        );
    }

    #[test]
    fn an_unknown_member_is_named_even_nested() {
        let e = parse_body::<ResponderBody>(br#"{"id":"a","max_concurent":3}"#).unwrap_err();
        assert_eq!(
            field_of(e),
            ("M_BAD_JSON".into(), Some("max_concurent".into()))
        );
        let e = parse_body::<ResponderBody>(
            br#"{"contacts":[{"platform":"telegram","address":"1","extra":true}]}"#,
        )
        .unwrap_err();
        assert_eq!(field_of(e), ("M_BAD_JSON".into(), Some("contacts".into())));
        let e = parse_body::<ResponderBody>(br#"{"id":"a","contacts":[{"platform":"telegram"}]}"#)
            .unwrap_err();
        assert_eq!(field_of(e), ("M_BAD_JSON".into(), Some("contacts".into())));
    }

    #[test]
    fn a_missing_member_is_named() {
        let e = parse_body::<StatusBody>(b"{}").unwrap_err();
        assert_eq!(field_of(e), ("M_BAD_JSON".into(), Some("status".into())));
        let e = parse_body::<StatusBody>(br#"{"status":"busy"}"#).unwrap_err();
        assert_eq!(field_of(e), ("M_BAD_JSON".into(), Some("status".into())));
    }

    #[test]
    fn null_only_clears_nullable_fields() {
        let body = parse_body::<ResponderBody>(br#"{"pseudonym":null}"#).unwrap();
        assert_eq!(body.pseudonym, Some(None));
        let body = parse_body::<ResponderBody>(b"{}").unwrap();
        assert_eq!(body.pseudonym, None);
        let e = parse_body::<ResponderBody>(br#"{"topics":null}"#).unwrap_err();
        assert_eq!(field_of(e), ("M_BAD_JSON".into(), Some("topics".into())));
    }

    #[test]
    fn not_json_and_not_an_object_are_told_apart() {
        assert_eq!(
            parse_body::<StatusBody>(b"{nope").unwrap_err().errcode,
            "M_NOT_JSON"
        );
        assert_eq!(
            parse_body::<StatusBody>(b"[]").unwrap_err().errcode,
            "M_BAD_JSON"
        );
    }

    #[test]
    fn defaults_are_the_models() {
        let r = responder_with_defaults("alex", "Alex");
        assert_eq!(
            (r.timezone.as_str(), r.max_concurrent, r.status),
            ("UTC", 3, ResponderStatus::Available)
        );
    }
}
