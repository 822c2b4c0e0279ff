//! Files through the homeserver's media repository.

use super::*;

/// A valid 2x1 PNG (the Telegram stand-in reads image headers as Telegram does).
pub const PNG: &[u8] = &[
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 2, 0, 0, 0, 1, 8, 2, 0,
    0, 0, 123, 64, 232, 221, 0, 0, 0, 13, 73, 68, 65, 84, 120, 156, 99, 248, 207, 0, 4, 255, 1, 7,
    0, 1, 255, 226, 35, 158, 89, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
];

/// Puts `bytes` in the homeserver's media repository as the slot's bot and returns its
/// `mxc://` URI. Synapse lets no guest upload media, so a visitor's file is put there this
/// way and their message refers to it, as a visitor account's upload would.
pub async fn upload_media(
    env: &TestEnv,
    slot: &Slot,
    filename: &str,
    mimetype: &str,
    bytes: &[u8],
) -> anyhow::Result<String> {
    let upload: Value = reqwest::Client::new()
        .post(format!(
            "{}/_matrix/media/v3/upload?filename={}",
            env.hs_url,
            urlencode(filename)
        ))
        .bearer_auth(&slot.as_token)
        .header("content-type", mimetype)
        .body(bytes.to_vec())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(upload["content_uri"]
        .as_str()
        .context("content_uri")?
        .to_owned())
}

/// Downloads `mxc` from the media repository with `token`.
pub async fn download_media(env: &TestEnv, token: &str, mxc: &str) -> anyhow::Result<Vec<u8>> {
    let (server, media_id) = mxc
        .trim_start_matches("mxc://")
        .split_once('/')
        .context("not an mxc URI")?;
    Ok(reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{server}/{media_id}",
            env.hs_url
        ))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?
        .to_vec())
}
