//! Method parameters, gathered the four ways the Bot API accepts them: the query string,
//! `application/json`, `application/x-www-form-urlencoded` and `multipart/form-data`.
//!
//! In JSON bodies a parameter keeps its JSON type; in the other encodings every value is a
//! string and JSON-typed parameters (`reply_markup`, `entities`, `reply_parameters`, ...) are
//! JSON documents inside that string. The accessors below accept both shapes, as the real
//! server does.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{Request, header};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// A file sent inside a multipart request.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// One parameter as it arrived.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    /// From a JSON body: any JSON value.
    Json(Value),
    /// From the query string, a urlencoded form, or a multipart text field.
    Text(String),
    /// A multipart part that carried a file name (an upload).
    File(Upload),
}

/// Where an `InputFile` parameter points.
#[derive(Debug, Clone)]
pub(crate) enum InputFile {
    /// Bytes uploaded in this request (directly, or through `attach://name`).
    Upload(Upload),
    /// A string: a `file_id` of a file the server knows, or an HTTP URL.
    Reference(String),
}

/// All parameters of one call, by name.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params {
    map: HashMap<String, Param>,
}

impl Params {
    /// Gathers parameters from the query string and the body. Body values win over query values.
    pub async fn parse(
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> ApiResult<Params> {
        let mut params = Params::default();
        if let Some(query) = query {
            for (k, v) in parse_urlencoded(query) {
                params.map.insert(k, Param::Text(v));
            }
        }
        let mime = content_type
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        match mime.as_str() {
            "application/json" if !body.is_empty() => {
                let value: Value = serde_json::from_slice(body)
                    .map_err(|_| ApiError::bad_request("can't parse JSON encoded request"))?;
                // A JSON body that is not an object carries no parameters.
                if let Value::Object(fields) = value {
                    for (k, v) in fields {
                        params.map.insert(k, Param::Json(v));
                    }
                }
            }
            "application/x-www-form-urlencoded" => {
                let text = std::str::from_utf8(body)
                    .map_err(|_| ApiError::bad_request("request must be encoded in UTF-8"))?;
                for (k, v) in parse_urlencoded(text) {
                    params.map.insert(k, Param::Text(v));
                }
            }
            "multipart/form-data" => {
                params
                    .parse_multipart(content_type.unwrap_or(""), body)
                    .await?
            }
            _ => {}
        }
        Ok(params)
    }

    async fn parse_multipart(&mut self, content_type: &str, body: &[u8]) -> ApiResult<()> {
        // Re-wrap the already-read body (it was read once so that it could be recorded raw)
        // into a request, so axum's multipart parser can be reused.
        let request = Request::builder()
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_vec()))
            .expect("a request built from a valid header value");
        let malformed = |_| ApiError::bad_request("can't parse multipart/form-data request");
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|_| ApiError::bad_request("can't parse multipart/form-data request"))?;
        while let Some(field) = multipart.next_field().await.map_err(malformed)? {
            let Some(name) = field.name().map(str::to_owned) else {
                continue;
            };
            let filename = field.file_name().map(str::to_owned);
            let part_type = field.content_type().map(str::to_owned);
            let bytes = field.bytes().await.map_err(malformed)?.to_vec();
            // A part is a file if it says so (a filename), or if it cannot be text: clients
            // differ in whether they name in-memory uploads.
            let binary_type = part_type
                .as_deref()
                .is_some_and(|t| !t.starts_with("text/"));
            let param = match (filename, String::from_utf8(bytes)) {
                (None, Ok(text)) if !binary_type => Param::Text(text),
                (filename, bytes) => Param::File(Upload {
                    filename: filename.filter(|f| !f.is_empty()),
                    content_type: part_type,
                    bytes: bytes
                        .map(String::into_bytes)
                        .unwrap_or_else(|e| e.into_bytes()),
                }),
            };
            self.map.insert(name, param);
        }
        Ok(())
    }

    /// Whether the parameter was given at all.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// A string parameter. JSON numbers and booleans are accepted and written out, as the real
    /// server converts them.
    pub fn str(&self, name: &str) -> Option<String> {
        match self.map.get(name)? {
            Param::Json(Value::String(s)) | Param::Text(s) => Some(s.clone()),
            Param::Json(Value::Null) => None,
            Param::Json(Value::Number(n)) => Some(n.to_string()),
            Param::Json(Value::Bool(b)) => Some(b.to_string()),
            Param::Json(other) => Some(other.to_string()),
            Param::File(_) => None,
        }
    }

    /// An integer parameter; a present but non-integer value is refused.
    pub fn i64(&self, name: &str) -> ApiResult<Option<i64>> {
        let invalid =
            || ApiError::bad_request(format!("invalid parameter \"{name}\": Number expected"));
        match self.map.get(name) {
            None | Some(Param::Json(Value::Null)) => Ok(None),
            Some(Param::Json(Value::Number(n))) => n.as_i64().map(Some).ok_or_else(invalid),
            Some(Param::Json(Value::String(s))) | Some(Param::Text(s)) => {
                if s.trim().is_empty() {
                    Ok(None)
                } else {
                    s.trim().parse().map(Some).map_err(|_| invalid())
                }
            }
            Some(_) => Err(invalid()),
        }
    }

    /// A boolean parameter (`true`/`false`, `1`/`0`); absent or unparseable counts as false,
    /// which is how the real server treats flags.
    pub fn bool(&self, name: &str) -> bool {
        match self.map.get(name) {
            Some(Param::Json(Value::Bool(b))) => *b,
            Some(Param::Json(Value::Number(n))) => n.as_i64().unwrap_or(0) != 0,
            Some(Param::Json(Value::String(s))) | Some(Param::Text(s)) => {
                matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1")
            }
            _ => false,
        }
    }

    /// A JSON-typed parameter: a JSON value in a JSON body, or a JSON document in a string.
    /// `Err(())` when a string is not valid JSON; the caller picks the documented message.
    pub fn json(&self, name: &str) -> Result<Option<Value>, ()> {
        match self.map.get(name) {
            None | Some(Param::Json(Value::Null)) => Ok(None),
            Some(Param::Json(Value::String(s))) | Some(Param::Text(s)) => {
                if s.trim().is_empty() {
                    Ok(None)
                } else {
                    serde_json::from_str(s).map(Some).map_err(|_| ())
                }
            }
            Some(Param::Json(v)) => Ok(Some(v.clone())),
            Some(Param::File(_)) => Err(()),
        }
    }

    /// An `InputFile` parameter: an uploaded part, `attach://<part name>`, or a string that
    /// names a file_id or URL.
    pub fn input_file(&self, name: &str) -> Option<InputFile> {
        match self.map.get(name)? {
            Param::File(upload) => Some(InputFile::Upload(upload.clone())),
            Param::Json(Value::String(s)) | Param::Text(s) => match s.strip_prefix("attach://") {
                Some(part) => match self.map.get(part)? {
                    Param::File(upload) => Some(InputFile::Upload(upload.clone())),
                    _ => None,
                },
                None if s.is_empty() => None,
                None => Some(InputFile::Reference(s.clone())),
            },
            _ => None,
        }
    }
}

/// Splits `a=1&b=x%20y` into decoded pairs.
pub(crate) fn parse_urlencoded(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space in form encoding). Invalid escapes are kept as
/// they are, and invalid UTF-8 is replaced, rather than failing the whole request.
pub(crate) fn percent_decode(input: &str, plus_is_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes_and_plus() {
        assert_eq!(percent_decode("a%20b+c%2Fd", true), "a b c/d");
        assert_eq!(percent_decode("a+b%", false), "a+b%");
        assert_eq!(percent_decode("%e2%9c%93", false), "✓");
    }

    #[test]
    fn splits_form_pairs() {
        assert_eq!(
            parse_urlencoded("chat_id=5&text=hi%21&flag"),
            vec![
                ("chat_id".into(), "5".into()),
                ("text".into(), "hi!".into()),
                ("flag".into(), "".into())
            ]
        );
    }
}
