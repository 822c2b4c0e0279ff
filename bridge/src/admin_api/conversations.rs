//! Conversations: the list (without visitors' Matrix IDs), one in full with its transcript,
//! erasure, and blocking the person who started one from a platform.

use super::*;

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
pub(super) struct ConversationQuery {
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
pub(super) async fn list_conversations(
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
pub(super) async fn get_conversation(
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
pub(super) async fn erase_conversation(
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

pub(super) async fn initiator_block(
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
pub(super) async fn block_initiator_route(
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
pub(super) async fn unblock_initiator_route(
    State(state): State<AdminState>,
    Path(room_id): Path<String>,
) -> Result<Json<InitiatorBlock>, AdminError> {
    initiator_block(&state, &room_id, false).await
}
