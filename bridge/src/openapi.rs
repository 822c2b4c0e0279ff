//! What the admin API and the visitor API share in their OpenAPI 3.1 documents: the error body,
//! the bearer schemes, the answers every route can give, and serving a document.
//!
//! Each API registers its routes through `utoipa_axum::OpenApiRouter`, so a route and its
//! description are one registration: a handler cannot be served without being described, and
//! the document is generated from the handlers' own `#[utoipa::path]` annotations and the
//! types they answer with. The tests check every request and answer against the document
//! (`bridge/tests/admin_api/`, `tests/e2e_openapi.rs`).

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get},
};
use serde::Serialize;
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        HttpMethod, OpenApi, Ref, RefOr, ResponseBuilder,
        header::HeaderBuilder,
        path::Operation,
        response::Response as Answer,
        security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme},
    },
};

/// An error as either API answers it: a Matrix-style code and a sentence a person can read,
/// plus the request field at fault, or the wait before trying again, when there is one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A Matrix-style error code, e.g. `M_NOT_FOUND`, `M_BAD_JSON`, `M_LIMIT_EXCEEDED`.
    pub errcode: String,
    /// What went wrong, in words.
    pub error: String,
    /// The top-level request field at fault (admin API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `M_LIMIT_EXCEEDED`: milliseconds until a retry may succeed (also sent, in whole
    /// seconds, as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorBody {
    pub fn new(errcode: &str, error: impl Into<String>) -> Self {
        Self {
            errcode: errcode.to_owned(),
            error: error.into(),
            field: None,
            retry_after_ms: None,
        }
    }
}

/// The operations of `doc` that `applies` picks require the bearer token `scheme`
/// (described by `description`).
pub(crate) fn require_bearer(
    doc: &mut OpenApi,
    scheme: &str,
    description: &str,
    applies: impl Fn(&str, HttpMethod) -> bool,
) {
    let components = doc.components.get_or_insert_with(Default::default);
    let mut http = Http::new(HttpAuthScheme::Bearer);
    http.description = Some(description.to_owned());
    components.add_security_scheme(scheme, SecurityScheme::Http(http));
    let requirement = SecurityRequirement::new(scheme, Vec::<String>::new());
    for_each_operation(doc, |path, method, op| {
        if applies(path, method) {
            op.security
                .get_or_insert_with(Vec::new)
                .push(requirement.clone());
        }
    });
}

/// An error answer with `description`, its body an [`ErrorBody`].
pub(crate) fn error_answer(description: &str) -> Answer {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build()
}

/// [`error_answer`] for a 429, with its `Retry-After` header.
pub(crate) fn too_many_answer(description: &str) -> Answer {
    let mut answer = error_answer(description);
    answer.headers.insert(
        "Retry-After".to_owned(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(u64::schema()))
                .description(Some("Whole seconds until a retry may succeed."))
                .build(),
        ),
    );
    answer
}

/// Adds `answer` under `status` to every operation `applies` picks that does not describe
/// that status itself.
pub(crate) fn answer_everywhere(
    doc: &mut OpenApi,
    status: &str,
    answer: Answer,
    applies: impl Fn(&str, HttpMethod) -> bool,
) {
    for_each_operation(doc, |path, method, op| {
        if applies(path, method) {
            op.responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| RefOr::T(answer.clone()));
        }
    });
}

fn for_each_operation(doc: &mut OpenApi, mut f: impl FnMut(&str, HttpMethod, &mut Operation)) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let methods = [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Delete, &mut item.delete),
            (HttpMethod::Patch, &mut item.patch),
            (HttpMethod::Head, &mut item.head),
            (HttpMethod::Options, &mut item.options),
            (HttpMethod::Trace, &mut item.trace),
        ];
        for (method, op) in methods {
            if let Some(op) = op {
                f(path, method, op);
            }
        }
    }
}

/// A `GET` route answering `doc` as JSON, serialised once. A description of routes, not of
/// anyone's data, so it needs no token (code generators and API browsers fetch it as is).
pub(crate) fn serve<S: Clone + Send + Sync + 'static>(doc: &OpenApi) -> MethodRouter<S> {
    let json = doc
        .to_json()
        .expect("an OpenAPI document serialises to JSON");
    get(move || {
        let json = json.clone();
        async move {
            let mut response: Response = json.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    })
}
