//! Checks HTTP exchanges against an OpenAPI 3.1 document, so an API and its description cannot
//! drift: every request a test makes, and every answer, is held to the document the service
//! itself serves. Used by `bridge/tests/admin_api/` (every admin test's calls) and
//! `tests/e2e_openapi.rs` (the visitor API against a real Synapse).
//!
//! For each exchange:
//! - the route (method and path) must be in the document;
//! - the request is judged against it: query and path parameters, the body against its schema,
//!   the bearer token where the operation requires one. A request the document rejects must
//!   be refused with a 4xx: the server enforces what the document promises;
//! - the answer's status must be one the operation documents, and its body must match that
//!   answer's schema (or be empty where none is documented), with the documented headers.
//!
//! Schemas are validated with the `jsonschema` crate (JSON Schema 2020-12, OpenAPI 3.1's
//! dialect), each resolved inside the whole document so `#/components/schemas/…` references
//! hold.

#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};

/// One request and its answer, as seen on the wire.
pub struct Exchange<'a> {
    pub method: &'a str,
    /// Path and query, as sent (percent-encoded).
    pub uri: &'a str,
    pub authorization: bool,
    pub request_body: Option<&'a [u8]>,
    pub status: u16,
    /// Header names (lowercase) and values of the answer.
    pub response_headers: Vec<(String, String)>,
    pub response_body: &'a [u8],
}

/// A document, and which of its operations were exercised.
#[derive(Clone)]
pub struct Contract {
    doc: Arc<Value>,
    called: Arc<Mutex<BTreeSet<(String, String, u16)>>>,
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

impl Contract {
    pub fn new(doc: Value) -> Self {
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(
            version.starts_with("3.1"),
            "an OpenAPI 3.1 document, not {version:?}"
        );
        assert!(
            doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()),
            "the document has a title"
        );
        Self {
            doc: Arc::new(doc),
            called: Arc::default(),
        }
    }

    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// Every operation of the document: (METHOD, path template).
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut all = Vec::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for method in METHODS {
                if item.get(method).is_some() {
                    all.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        all
    }

    /// The operations that answered each of their documented statuses at least once… and
    /// those that were not called at all.
    pub fn never_called(&self) -> Vec<(String, String)> {
        let called = self.called.lock().unwrap();
        self.operations()
            .into_iter()
            .filter(|(m, p)| !called.iter().any(|(cm, cp, _)| cm == m && cp == p))
            .collect()
    }

    /// The successful (2xx) answers each operation documents and that were never seen.
    pub fn successes_never_seen(&self) -> Vec<String> {
        let called = self.called.lock().unwrap();
        let mut missing = Vec::new();
        for (method, path) in self.operations() {
            let op = &self.doc["paths"][&path][method.to_lowercase()];
            for status in op["responses"].as_object().expect("responses").keys() {
                let Ok(code) = status.parse::<u16>() else {
                    continue;
                };
                if (200..300).contains(&code)
                    && !called.contains(&(method.clone(), path.clone(), code))
                {
                    missing.push(format!("{method} {path} → {code}"));
                }
            }
        }
        missing
    }

    /// Checks one exchange; panics with what is wrong. Answers the path template it matched.
    pub fn check(&self, x: &Exchange<'_>) -> String {
        let (path, query) = x.uri.split_once('?').unwrap_or((x.uri, ""));
        let method = x.method.to_lowercase();
        let (template, params) = self
            .route(path)
            .unwrap_or_else(|| panic!("{} {path}: no such path in the document", x.method));
        let op = self.doc["paths"][&template]
            .get(&method)
            .unwrap_or_else(|| {
                panic!("{} {template}: no such operation in the document", x.method)
            });
        let context = format!("{} {} → {}", x.method, x.uri, x.status);

        let mut refusals = self.request_refusals(op, &params, query, x);
        refusals.retain(|r| !r.is_empty());
        if !refusals.is_empty() {
            assert!(
                (400..500).contains(&x.status),
                "{context}: the document refuses this request ({refusals:?}) but it was answered {}",
                x.status
            );
        }

        let responses = &op["responses"];
        let answer = responses
            .get(x.status.to_string())
            .or_else(|| responses.get("default"))
            .unwrap_or_else(|| {
                panic!(
                    "{context}: status {} is not documented (documented: {:?})",
                    x.status,
                    responses.as_object().map(|o| o.keys().collect::<Vec<_>>())
                )
            });
        let answer = self.resolve(answer);
        self.check_answer(&context, &answer, x);
        self.called
            .lock()
            .unwrap()
            .insert((x.method.to_uppercase(), template.clone(), x.status));
        template
    }

    /// The path template `path` matches, and its parameters' values (still encoded).
    fn route(&self, path: &str) -> Option<(String, Vec<(String, String)>)> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.doc["paths"].as_object()?.keys().find_map(|template| {
            let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut params = Vec::new();
            for (part, segment) in parts.iter().zip(&segments) {
                match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(name) if !segment.is_empty() => {
                        params.push((name.to_owned(), (*segment).to_owned()))
                    }
                    Some(_) => return None,
                    None if part == segment => {}
                    None => return None,
                }
            }
            Some((template.clone(), params))
        })
    }

    /// Why the document would refuse this request (empty when it would not).
    fn request_refusals(
        &self,
        op: &Value,
        path_params: &[(String, String)],
        query: &str,
        x: &Exchange<'_>,
    ) -> Vec<String> {
        let mut refusals = Vec::new();
        let declared: Vec<Value> = op["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| self.resolve(p))
            .collect();
        let param = |name: &str, place: &str| {
            declared
                .iter()
                .find(|p| p["name"] == name && p["in"] == place)
                .cloned()
        };
        for (name, value) in path_params {
            let p = param(name, "path")
                .unwrap_or_else(|| panic!("path parameter {name} is not documented"));
            refusals.push(self.parameter_refusal(&p, value));
        }
        let mut given = BTreeSet::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            given.insert(name.to_string());
            match param(&name, "query") {
                Some(p) => refusals.push(self.parameter_value_refusal(&p, &value)),
                None => refusals.push(format!("query parameter {name:?} is not documented")),
            }
        }
        for p in &declared {
            if p["required"] == true
                && p["in"] == "query"
                && !given.contains(p["name"].as_str().unwrap_or_default())
            {
                refusals.push(format!("required query parameter {} missing", p["name"]));
            }
        }
        if op.get("security").is_some_and(|s| {
            s.as_array().is_some_and(|a| {
                !a.iter()
                    .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
            })
        }) && !x.authorization
        {
            refusals.push("no bearer token".into());
        }
        if let Some(body_spec) = op.get("requestBody") {
            let body_spec = self.resolve(body_spec);
            let schema = &body_spec["content"]["application/json"]["schema"];
            match x.request_body.filter(|b| !b.is_empty()) {
                None if body_spec["required"] == true => refusals.push("no body".into()),
                None => {}
                Some(bytes) => match serde_json::from_slice::<Value>(bytes) {
                    Err(e) => refusals.push(format!("body is not JSON: {e}")),
                    Ok(body) => refusals.push(self.schema_errors(schema, &body)),
                },
            }
        }
        refusals
    }

    /// Whether a parameter's percent-encoded value fits its schema.
    fn parameter_refusal(&self, p: &Value, raw: &str) -> String {
        self.parameter_value_refusal(p, &percent_decode(raw))
    }

    /// Whether a parameter's value fits its schema (numbers are read as numbers).
    fn parameter_value_refusal(&self, p: &Value, decoded: &str) -> String {
        let schema = &p["schema"];
        let wants_number = schema_types(schema)
            .iter()
            .any(|t| t == "integer" || t == "number");
        let value = if wants_number {
            match decoded.parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => return format!("{} = {decoded:?} is not a number", p["name"]),
            }
        } else {
            json!(decoded)
        };
        let errors = self.schema_errors(schema, &value);
        if errors.is_empty() {
            String::new()
        } else {
            format!("{}: {errors}", p["name"])
        }
    }

    fn check_answer(&self, context: &str, answer: &Value, x: &Exchange<'_>) {
        let header = |name: &str| {
            x.response_headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        for (name, spec) in answer["headers"].as_object().cloned().unwrap_or_default() {
            let spec = self.resolve(&spec);
            let value = header(&name)
                .unwrap_or_else(|| panic!("{context}: documented header {name} is missing"));
            let refusal = self
                .parameter_value_refusal(&json!({"name": name, "schema": spec["schema"]}), value);
            assert!(refusal.is_empty(), "{context}: header {refusal}");
        }
        match answer["content"].as_object() {
            None => assert!(
                x.response_body.is_empty(),
                "{context}: the document says no body, but there is one: {}",
                String::from_utf8_lossy(x.response_body)
            ),
            Some(content) => {
                let (media, spec) = content.iter().next().expect("a documented content type");
                let content_type = header("content-type").unwrap_or_default();
                assert!(
                    content_type.starts_with(media.as_str()),
                    "{context}: answered as {content_type:?}, documented as {media}"
                );
                let body: Value = serde_json::from_slice(x.response_body).unwrap_or_else(|e| {
                    panic!(
                        "{context}: the body is not JSON ({e}): {}",
                        String::from_utf8_lossy(x.response_body)
                    )
                });
                let errors = self.answer_errors(&spec["schema"], &body);
                assert!(
                    errors.is_empty(),
                    "{context}: the body does not match the document: {errors}\nbody: {body}"
                );
            }
        }
    }

    /// The schema's complaints about `value`, joined (empty: it fits).
    fn schema_errors(&self, schema: &Value, value: &Value) -> String {
        self.errors_in(self.doc["components"].clone(), schema, value)
    }

    /// Like [`Self::schema_errors`] for an answer, with every object closed: a member the
    /// document does not describe is an error too, so a field added to an answer without
    /// its description fails here. (Requests keep the document's own rule: a client may not
    /// know that a server would accept more.)
    fn answer_errors(&self, schema: &Value, value: &Value) -> String {
        let mut components = self.doc["components"].clone();
        close_objects(&mut components);
        let mut schema = schema.clone();
        close_objects(&mut schema);
        self.errors_in(components, &schema, value)
    }

    fn errors_in(&self, components: Value, schema: &Value, value: &Value) -> String {
        // The schema inside the whole document, so `#/components/…` references resolve.
        let mut root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": components,
            "allOf": [schema],
        });
        if root["components"].is_null() {
            root.as_object_mut().unwrap().remove("components");
        }
        let validator = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("the document's schema {schema} does not compile: {e}"));
        validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Follows a `$ref` to a component (responses, parameters, request bodies, headers).
    fn resolve(&self, v: &Value) -> Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(pointer) => {
                let target = self
                    .doc
                    .pointer(pointer.trim_start_matches('#'))
                    .unwrap_or_else(|| panic!("dangling reference {pointer}"));
                self.resolve(target)
            }
            None => v.clone(),
        }
    }
}

/// Sets `additionalProperties: false` on every object schema that lists its properties and
/// says nothing about others.
fn close_objects(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for child in map.values_mut() {
                close_objects(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

fn schema_types(schema: &Value) -> Vec<String> {
    match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
