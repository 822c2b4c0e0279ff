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
    extract::{DefaultBodyLimit, Path, Query, State, rejection::QueryRejection},
    http::{HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{
    Store, StoreError,
    conversation::{Conversation, ConversationState, Message},
    responder::{Contact, Responder, ResponderStatus, WeeklyHours},
    retention::{EraseConversation, EraseFailure, Eraser, Erasure},
    routing::{FieldError, validate_responder},
    store::{DeadLetter, SOURCE_ADMIN},
};

mod auth;
mod service_levels;

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
        let mut body = json!({ "errcode": self.errcode, "error": self.message });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        (self.status, Json(body)).into_response()
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

/// The admin routes, all behind the admin token check.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/admin/v1/responders",
            get(list_responders).post(create_responder),
        )
        .route(
            "/admin/v1/responders/{id}",
            get(get_responder)
                .put(replace_responder)
                .patch(patch_responder)
                .delete(delete_responder),
        )
        .route("/admin/v1/responders/{id}/status", put(put_status))
        .route("/admin/v1/conversations", get(list_conversations))
        .route(
            "/admin/v1/conversations/{room_id}",
            get(get_conversation).delete(erase_conversation),
        )
        .route(
            "/admin/v1/conversations/{room_id}/initiator-block",
            post(block_initiator_route).delete(unblock_initiator_route),
        )
        .route(
            "/admin/v1/service-levels",
            get(service_levels::get_service_levels),
        )
        .route("/admin/v1/dead-letters", get(list_dead_letters))
        .route("/admin/v1/dead-letters/{id}/retry", post(retry_dead_letter))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_admin_token,
        ))
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponderBody {
    id: Option<String>,
    display_name: Option<String>,
    /// `Some(None)`: explicitly `null`, which removes the pseudonym.
    #[serde(default, deserialize_with = "present")]
    pseudonym: Option<Option<String>>,
    topics: Option<Vec<String>>,
    languages: Option<Vec<String>>,
    timezone: Option<String>,
    hours: Option<WeeklyHours>,
    max_concurrent: Option<i64>,
    status: Option<ResponderStatus>,
    contacts: Option<Vec<ContactBody>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactBody {
    platform: String,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// # `GET /admin/v1/responders`
///
/// Every responder, by id: `{"responders": [...]}`.
async fn list_responders(State(state): State<AdminState>) -> Result<Json<Value>, AdminError> {
    let responders = state.store.list_responders().await?;
    Ok(Json(json!({ "responders": responders })))
}

/// # `POST /admin/v1/responders`
///
/// Body: a responder (`id` and `display_name` required, the rest defaulted). Answers 201 with
/// the responder as stored, or 409 `M_EXISTS` if the id is taken.
async fn create_responder(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Responder>), AdminError> {
    let body: ResponderBody = parse_body(&body)?;
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

/// # `GET /admin/v1/responders/{id}`
async fn get_responder(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Responder>, AdminError> {
    let responder = state.store.responder(&id).await?;
    responder
        .map(Json)
        .ok_or_else(|| AdminError::not_found("responder"))
}

/// # `PUT /admin/v1/responders/{id}`
///
/// Full replacement: fields left out take their defaults. The body's `id` may be left out;
/// if given it must be the path's.
async fn replace_responder(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Responder>, AdminError> {
    let body: ResponderBody = parse_body(&body)?;
    body.check_id(&id)?;
    let mut responder = responder_with_defaults(&id, body.required_display_name()?);
    body.apply_to(&mut responder);
    save(&state, responder).await
}

/// # `PATCH /admin/v1/responders/{id}`
///
/// Changes the top-level fields the body gives and keeps the others; `"pseudonym": null`
/// removes the pseudonym. Lists (topics, contacts, ...) are replaced whole.
async fn patch_responder(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Responder>, AdminError> {
    let body: ResponderBody = parse_body(&body)?;
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

/// # `DELETE /admin/v1/responders/{id}`
///
/// Answers 204. Conversations the responder holds stay theirs until they end.
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

/// # `PUT /admin/v1/responders/{id}/status`
///
/// Body `{"status": "available" | "away" | "offline"}`; answers with the responder.
async fn put_status(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Responder>, AdminError> {
    let StatusBody { status } = parse_body(&body)?;
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Deserialize)]
struct ConversationQuery {
    state: Option<String>,
}

/// # `GET /admin/v1/conversations`
///
/// `?state=queued|offered|active|transferring|closed` optional. Answers `{"conversations": [...]}`, oldest first,
/// without visitors' Matrix IDs.
async fn list_conversations(
    State(state): State<AdminState>,
    query: Result<Query<ConversationQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
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
    Ok(Json(json!({ "conversations": conversations })))
}

/// # `GET /admin/v1/conversations/{room_id}`
///
/// The conversation (with the visitor's Matrix ID), its assignments and its transcript.
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

/// # `DELETE /admin/v1/conversations/{room_id}`
///
/// Erases a closed conversation: its room's messages on the homeserver (purged through
/// Synapse's admin API with `[retention] homeserver_admin_token`, else redacted by the bot,
/// whose users then leave), then every row the store holds about it. Answers
/// `{"room_id", "homeserver": {"method": …}, "rows_deleted": {table: n}}`; 404 for no such
/// conversation (or one erased already), 409 `M_CONVERSATION_OPEN` while it is not closed,
/// 502 when the homeserver failed (the store is then untouched).
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

async fn initiator_block(
    state: &AdminState,
    room_id: &str,
    block: bool,
) -> Result<Json<Value>, AdminError> {
    let changed = set_initiator_block(&state.store, room_id, block)
        .await?
        .ok_or_else(|| AdminError::not_found("conversation started from a platform"))?;
    Ok(Json(json!({ "blocked": block, "changed": changed })))
}

/// # `POST /admin/v1/conversations/{room_id}/initiator-block`
///
/// The person who started this conversation from a platform may start no more (their open
/// conversations go on). Answers `{"blocked": true, "changed": bool}`, or 404 for a
/// conversation started from the widget or none at all.
async fn block_initiator_route(
    State(state): State<AdminState>,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    initiator_block(&state, &room_id, true).await
}

/// # `DELETE /admin/v1/conversations/{room_id}/initiator-block`
///
/// Lifts that block. Answers `{"blocked": false, "changed": bool}`, or 404.
async fn unblock_initiator_route(
    State(state): State<AdminState>,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    initiator_block(&state, &room_id, false).await
}

// ---- dead letters ------------------------------------------------------------------------

/// How many dead letters a list shows unless `?limit=` says otherwise, and at most.
pub const DEAD_LETTER_LIMIT: i64 = 100;
const MAX_DEAD_LETTER_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize)]
struct DeadLetterQuery {
    limit: Option<i64>,
}

/// # `GET /admin/v1/dead-letters`
///
/// `?limit=N` optional (1-1000, default 100). Answers `{"dead_letters": [...]}`, newest first.
async fn list_dead_letters(
    State(state): State<AdminState>,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
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
    Ok(Json(json!({ "dead_letters": dead_letters })))
}

/// # `POST /admin/v1/dead-letters/{id}/retry`
///
/// Removes the dead letter and puts its work back in its queue; answers the dead letter as it
/// was, or 404. The worker is woken to take the work up at once.
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
