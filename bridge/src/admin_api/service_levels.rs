//! `GET /admin/v1/service-levels`: the first-reply report per topic and platform over a
//! window (`crate::service_levels`), the same figures `switchboard service-levels` prints.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminError, AdminState};
use crate::{Store, StoreError, service_levels};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Window {
    /// RFC 3339, e.g. `2026-11-01T00:00:00Z`. Default: a week before `to`.
    from: Option<String>,
    /// RFC 3339. Default: now.
    to: Option<String>,
}

/// # `GET /admin/v1/service-levels`
///
/// `?from=…&to=…` (RFC 3339, optional). Answers `{"from", "to", "levels": [...]}`: one entry
/// per topic and platform of the conversations started in the window.
pub(super) async fn get_service_levels(
    State(state): State<AdminState>,
    query: Result<Query<Window>, QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let Query(window) = query
        .map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", e.body_text()))?;
    let now = state.store.now_ms();
    let (from, to) = service_levels::window(window.from.as_deref(), window.to.as_deref(), now)
        .map_err(|(field, message)| AdminError::field("M_INVALID_PARAM", field, message))?;
    let levels = levels(&state.store, &state.targets, from, to, now).await?;
    Ok(Json(json!({
        "from": service_levels::rfc3339(from),
        "to": service_levels::rfc3339(to),
        "levels": levels,
    })))
}

/// The report over `[from, to)` at `now` (all unix ms), with the register as it is now.
pub async fn levels(
    store: &Store,
    targets: &std::collections::BTreeMap<String, u64>,
    from: i64,
    to: i64,
    now: i64,
) -> Result<Vec<service_levels::LevelRow>, StoreError> {
    let inputs = store.level_inputs(from, to).await?;
    let responders: HashMap<_, _> = store
        .list_responders()
        .await?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    Ok(service_levels::report(&inputs, targets, &responders, now))
}
