//! Photos and documents: uploads (multipart, directly or via `attach://`), re-sending by
//! file_id, `getFile`, and downloads from `/file/bot<token>/<file_path>`.

use std::sync::Arc;

use serde_json::json;

use super::messages::{Field, formatted_input, reply_markup, reply_target, store_bot_message};
use super::{Success, chat_id, check_send_interval, require_chat};
use crate::error::{ApiError, ApiResult};
use crate::params::{InputFile, Params, Upload};
use crate::state::{FileKind, Shared, StoredMessage, World, unix_now, unix_now_ms};

/// # `sendPhoto`
pub(crate) fn send_photo(shared: &Arc<Shared>, params: &Params) -> ApiResult<Success> {
    send_media(shared, params, FileKind::Photo)
}

/// # `sendDocument`
pub(crate) fn send_document(shared: &Arc<Shared>, params: &Params) -> ApiResult<Success> {
    send_media(shared, params, FileKind::Document)
}

fn send_media(shared: &Arc<Shared>, params: &Params, kind: FileKind) -> ApiResult<Success> {
    let chat = chat_id(params)?;
    let field = match kind {
        FileKind::Photo => "photo",
        FileKind::Document => "document",
    };
    let input = params
        .input_file(field)
        .ok_or_else(|| ApiError::bad_request(format!("there is no {field} in the request")))?;
    let mut world = shared.world();
    let (caption, parse_mode) = formatted_input(&world, params, Field::Caption)?;
    let markup = reply_markup(params)?;
    require_chat(&world, chat)?;
    let file_id = resolve_file(&mut world, input, kind)?;
    let reply_to = reply_target(&world, chat, params)?;
    let sent_at = check_send_interval(&world, chat)?;
    let message = StoredMessage {
        message_id: 0,
        from_bot: true,
        date: unix_now(),
        edit_date: None,
        received_at_ms: unix_now_ms(),
        edited_at_ms: None,
        body: caption,
        parse_mode,
        file_id: Some(file_id),
        reply_to,
        reply_markup: markup,
    };
    let json = store_bot_message(&mut world, chat, sent_at, message);
    drop(world);
    shared.notify_sent();
    Ok(json.into())
}

/// Turns an `InputFile` into the file_id of a stored file, storing uploads.
fn resolve_file(world: &mut World, input: InputFile, kind: FileKind) -> ApiResult<String> {
    match input {
        InputFile::Reference(reference) => {
            if reference.starts_with("http://") || reference.starts_with("https://") {
                // The real server would download it; this machine has no outside network.
                return Err(ApiError::bad_request("failed to get HTTP URL content"));
            }
            match world.files.get(&reference) {
                Some(file) if file.kind == kind => Ok(reference),
                Some(_) => Err(ApiError::bad_request("type of file mismatch")),
                None => Err(ApiError::bad_request(
                    "wrong file identifier/HTTP URL specified",
                )),
            }
        }
        InputFile::Upload(upload) => store_upload(world, upload, kind),
    }
}

/// Stores uploaded bytes; a photo must really be an image.
pub(crate) fn store_upload(world: &mut World, upload: Upload, kind: FileKind) -> ApiResult<String> {
    if upload.bytes.is_empty() {
        return Err(ApiError::bad_request("file must be non-empty"));
    }
    match kind {
        FileKind::Photo => {
            let size = image_size(&upload.bytes)
                .ok_or_else(|| ApiError::bad_request("IMAGE_PROCESS_FAILED"))?;
            Ok(world.store_file(kind, upload.bytes, size, None, None))
        }
        FileKind::Document => {
            let mime = upload.content_type.filter(|c| !c.is_empty()).or_else(|| {
                upload
                    .filename
                    .as_deref()
                    .map(guess_mime)
                    .map(str::to_owned)
            });
            Ok(world.store_file(kind, upload.bytes, (0, 0), upload.filename, mime))
        }
    }
}

/// # `getFile`
pub(crate) fn get_file(shared: &Arc<Shared>, params: &Params) -> ApiResult<Success> {
    let id = params.str("file_id").unwrap_or_default();
    let world = shared.world();
    let file = world
        .files
        .get(&id)
        .ok_or_else(|| ApiError::bad_request("invalid file_id"))?;
    Ok(json!({
        "file_id": file.file_id,
        "file_unique_id": file.file_unique_id,
        "file_size": file.bytes.len(),
        "file_path": file.file_path,
    })
    .into())
}

/// # `GET /file/bot<token>/<file_path>`
///
/// `rest` is the path after `/file/`, still percent-encoded (teloxide encodes the `/` inside
/// file_path as `%2F`). Returns the HTTP status and body.
pub(crate) fn download(shared: &Shared, rest: &str) -> (u16, Vec<u8>, &'static str) {
    let not_found = |code: u16, description: &str| {
        let body = json!({ "ok": false, "error_code": code, "description": description });
        (code, body.to_string().into_bytes(), "application/json")
    };
    let decoded = crate::params::percent_decode(rest, false);
    let Some((bot, path)) = decoded.split_once('/') else {
        return not_found(404, "Not Found");
    };
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return not_found(401, "Unauthorized");
    }
    match shared.world().file_by_path(path) {
        Some(file) => (200, file.bytes.clone(), "application/octet-stream"),
        None => not_found(404, "Not Found"),
    }
}

/// Width and height of a PNG, GIF or JPEG image, read from its header.
pub(crate) fn image_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let be16 = |b: &[u8]| u32::from(u16::from_be_bytes([b[0], b[1]]));
    if bytes.len() >= 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
        let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
        return (w > 0 && h > 0).then_some((w, h));
    }
    if bytes.len() >= 10 && (bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a")) {
        let w = u32::from(u16::from_le_bytes([bytes[6], bytes[7]]));
        let h = u32::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        return (w > 0 && h > 0).then_some((w, h));
    }
    if bytes.starts_with(&[0xFF, 0xD8]) {
        // Walk the JPEG segments to the first start-of-frame marker.
        let mut i = 2;
        while i + 9 < bytes.len() {
            if bytes[i] != 0xFF {
                return None;
            }
            let marker = bytes[i + 1];
            let length = be16(&bytes[i + 2..i + 4]) as usize;
            let is_sof = (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
            if is_sof {
                let h = be16(&bytes[i + 5..i + 7]);
                let w = be16(&bytes[i + 7..i + 9]);
                return (w > 0 && h > 0).then_some((w, h));
            }
            i += 2 + length;
        }
    }
    None
}

fn guess_mime(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "json" => "application/json",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_image_sizes() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&3u32.to_be_bytes());
        png.extend_from_slice(&2u32.to_be_bytes());
        assert_eq!(image_size(&png), Some((3, 2)));
        assert_eq!(image_size(b"GIF89a\x05\x00\x04\x00"), Some((5, 4)));
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 11, 8, 0, 7, 0, 9, 3, 0, 0,
        ];
        assert_eq!(image_size(&jpeg), Some((9, 7)));
        assert_eq!(image_size(b"not an image"), None);
    }
}
