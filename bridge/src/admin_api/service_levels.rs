//! `GET /admin/v1/service-levels`: the first-reply report per topic and platform over a
//! window (`crate::service_levels`), the same figures `switchboard service-levels` prints.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AdminError, AdminState};
use crate::{Store, StoreError, openapi::ErrorBody, service_levels};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct Window {
    /// RFC 3339, e.g. `2026-11-01T00:00:00Z`. Default: a week before `to`.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339. Default: now.
    #[param(format = DateTime)]
    to: Option<String>,
}

/// The report over a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceLevels {
    /// The window's start (RFC 3339, UTC).
    pub from: String,
    /// The window's end, not included.
    pub to: String,
    /// One entry per topic and platform of the conversations started in the window.
    pub levels: Vec<service_levels::LevelRow>,
}

/// Report first-reply times per topic and platform.
///
/// Over the conversations started in the window: how many were answered, the share that met
/// the topic's `first_reply_target_secs`, and the median and 90th percentile wait, counting
/// only the working hours of the responder who accepted.
#[utoipa::path(
    get,
    path = "/admin/v1/service-levels",
    tag = "service levels",
    params(Window),
    responses(
        (status = 200, description = "The report.", body = ServiceLevels),
        (status = 400, description = "`from` or `to` is not RFC 3339, or `from` is not before `to` (`M_INVALID_PARAM`).", body = ErrorBody),
    )
)]
pub(super) async fn get_service_levels(
    State(state): State<AdminState>,
    query: Result<Query<Window>, QueryRejection>,
) -> Result<Json<ServiceLevels>, AdminError> {
    let Query(window) = query
        .map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", e.body_text()))?;
    let now = state.store.now_ms();
    let (from, to) = service_levels::window(window.from.as_deref(), window.to.as_deref(), now)
        .map_err(|(field, message)| AdminError::field("M_INVALID_PARAM", field, message))?;
    let levels = levels(&state.store, &state.targets, from, to, now).await?;
    Ok(Json(ServiceLevels {
        from: service_levels::rfc3339(from),
        to: service_levels::rfc3339(to),
        levels,
    }))
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
