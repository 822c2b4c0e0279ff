//! Dead letters: work set aside because it never succeeded, listed and retried.

use super::*;

/// How many dead letters a list shows unless `?limit=` says otherwise, and at most.
pub const DEAD_LETTER_LIMIT: i64 = 100;
const MAX_DEAD_LETTER_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeadLetterQuery {
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
pub(super) async fn list_dead_letters(
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
pub(super) async fn retry_dead_letter(
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
