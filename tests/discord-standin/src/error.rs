//! The one error type of the REST side, turned into Discord's JSON error body only at the HTTP
//! edge (`rest.rs`).

use serde_json::{Map, Value, json};

/// A refusal: the HTTP status and Discord's body, `{"code": N, "message": "...", "errors": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub body: Value,
}

impl ApiError {
    /// An error with Discord's JSON error code and message.
    pub fn new(status: u16, code: u64, message: &str) -> ApiError {
        ApiError {
            status,
            body: json!({ "code": code, "message": message }),
        }
    }

    /// 401 as Discord answers a missing or wrong `Authorization` header.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, 0, "401: Unauthorized")
    }

    /// 404 for a path Discord has no route for.
    pub fn not_found() -> ApiError {
        ApiError::new(404, 0, "404: Not Found")
    }

    /// 405 for a known path with a method it does not take.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(405, 0, "405: Method Not Allowed")
    }

    pub fn unknown_channel() -> ApiError {
        ApiError::new(404, 10003, "Unknown Channel")
    }

    pub fn unknown_message() -> ApiError {
        ApiError::new(404, 10008, "Unknown Message")
    }

    pub fn unknown_user() -> ApiError {
        ApiError::new(404, 10013, "Unknown User")
    }

    pub fn unknown_member() -> ApiError {
        ApiError::new(404, 10007, "Unknown Member")
    }

    pub fn unknown_webhook() -> ApiError {
        ApiError::new(404, 10015, "Unknown Webhook")
    }

    pub fn unknown_interaction() -> ApiError {
        ApiError::new(404, 10062, "Unknown interaction")
    }

    pub fn missing_access() -> ApiError {
        ApiError::new(403, 50001, "Missing Access")
    }

    pub fn wrong_channel_type() -> ApiError {
        ApiError::new(400, 50024, "Cannot execute action on this channel type")
    }

    pub fn archived_thread() -> ApiError {
        ApiError::new(400, 50083, "Thread is archived")
    }

    /// 400 50109, Discord's answer to a body that is not JSON.
    pub fn invalid_json() -> ApiError {
        ApiError::new(400, 50109, "The request body contains invalid JSON.")
    }

    /// 400 50035 `Invalid Form Body` with the `errors` tree naming the fields.
    pub fn form(errors: FormErrors) -> ApiError {
        ApiError {
            status: 400,
            body: json!({ "code": 50035, "errors": errors.tree, "message": "Invalid Form Body" }),
        }
    }

    /// 400 50035 for a single field: `path` is the field's place in the body (`["components",
    /// "0", "components", "1", "custom_id"]`).
    pub fn field(path: &[&str], code: &str, message: &str) -> ApiError {
        let mut errors = FormErrors::default();
        errors.add(path, code, message);
        ApiError::form(errors)
    }

    #[cfg(test)]
    pub fn code(&self) -> u64 {
        self.body["code"].as_u64().unwrap_or(0)
    }
}

/// The `errors` tree of a 50035 answer: nested objects keyed by field name or array index,
/// with `_errors: [{code, message}]` at the leaves.
#[derive(Debug, Default, Clone)]
pub(crate) struct FormErrors {
    tree: Map<String, Value>,
}

impl FormErrors {
    pub fn add(&mut self, path: &[&str], code: &str, message: &str) {
        let mut node = &mut self.tree;
        for key in path {
            let entry = node
                .entry((*key).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            node = entry.as_object_mut().expect("error tree nodes are objects");
        }
        let leaf = node
            .entry("_errors")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = leaf {
            list.push(json!({ "code": code, "message": message }));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// `Err(ApiError::form(..))` if any error was added.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::form(self))
        }
    }
}

/// Shorthand for handler results.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_errors_nest_by_path() {
        let mut errors = FormErrors::default();
        errors.add(
            &["content"],
            "BASE_TYPE_MAX_LENGTH",
            "Must be 2000 or fewer in length.",
        );
        errors.add(&["components", "0", "type"], "X", "y");
        let body = ApiError::form(errors).body;
        assert_eq!(
            body,
            json!({"code": 50035, "message": "Invalid Form Body", "errors": {
                "content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]},
                "components": {"0": {"type": {"_errors": [{"code": "X", "message": "y"}]}}}
            }})
        );
    }
}
