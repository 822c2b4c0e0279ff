//! The responder register's routes: list, create, read, replace, patch, remove, set status;
//! and how their bodies are read (unknown, mistyped and misplaced members named).

use super::*;

/// A responder as a request body. Mirrors [`Responder`] with every field optional (what is
/// required depends on the method) and refuses unknown fields, so a typo such as
/// `"max_concurent"` is an error naming it rather than a silently ignored setting.
///
/// In the OpenAPI document every member is optional and none but `pseudonym` may be `null`:
/// `POST` needs `id` and `display_name`, `PUT` needs `display_name`, `PATCH` nothing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ResponderRequest)]
pub(super) struct ResponderBody {
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
    pub(super) fn apply_to(self, r: &mut Responder) {
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
pub(super) struct StatusBody {
    status: ResponderStatus,
}

/// Parses a JSON object body into `T`, and when it does not fit, names the top-level field at
/// fault. serde's messages name unknown and missing fields but not the field whose value has
/// the wrong type, nor the top-level field a nested error sits in; so the culprit is the
/// member whose removal changes the error (serde stops at the first bad member).
pub(super) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
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
pub(super) async fn list_responders(
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
pub(super) async fn create_responder(
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
pub(super) async fn get_responder(
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
pub(super) async fn replace_responder(
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
pub(super) async fn patch_responder(
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
pub(super) async fn save(
    state: &AdminState,
    responder: Responder,
) -> Result<Json<Responder>, AdminError> {
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
pub(super) async fn delete_responder(
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
pub(super) async fn put_status(
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
