//! Links to visitors' files that are too large for a responder's platform (Discord takes
//! 10 MiB from a bot, Telegram 50 MB): instead of refusing the file, the responder gets a
//! link to Switchboard, which fetches it from the homeserver's (authenticated) media
//! repository when the link is opened.
//!
//! A link is a capability: it names the file and when it stops working, signed with a key
//! derived from the appservice's `as_token`, so no table is needed, every instance beside
//! the same homeserver accepts the links of the others, and nobody can make one for another
//! file or a longer time. It carries nothing about the visitor (no room, no user: the media
//! ID is random), so it may travel to any platform.

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use std::{sync::Arc, time::Duration};
use switchboard_appservice::ruma::OwnedMxcUri;

use crate::bridge::Bridge;

/// How long a link works: long enough for a responder to open it later in the day or after
/// a weekend, short enough that a link forwarded by mistake soon stops working.
pub const LINK_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The route a link points to.
const ROUTE: &str = "/media/v1/{server}/{media_id}/{expires}/{signature}/{filename}";

type HmacSha256 = Hmac<Sha256>;

/// Makes and checks links, for one public address.
#[derive(Clone)]
pub struct MediaLinks {
    key: [u8; 32],
    /// Switchboard's address as responders' browsers reach it, without a trailing slash.
    base: String,
}

/// Why a link is not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Not one we made (or altered).
    Forged,
    /// It worked until then.
    Expired,
}

impl MediaLinks {
    /// `secret`: the appservice's `as_token` (the key is derived from it, never it);
    /// `public_url`: Switchboard's address as browsers reach it.
    pub fn new(secret: &str, public_url: &str) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(b"switchboard media links v1");
        Self {
            key: mac.finalize().into_bytes().into(),
            base: public_url.trim_end_matches('/').to_owned(),
        }
    }

    fn signature(&self, server: &str, media_id: &str, expires: u64, filename: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        // Lengths first, so no two different tuples sign the same bytes.
        for part in [server, media_id, &expires.to_string(), filename] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// A link to `mxc` under `filename` that works until `expires` (unix seconds); `None`
    /// for something that is not an `mxc://server/id` URI.
    pub fn link(&self, mxc: &str, filename: &str, expires: u64) -> Option<String> {
        let (server, media_id) = mxc.strip_prefix("mxc://")?.split_once('/')?;
        if server.is_empty() || media_id.is_empty() || media_id.contains('/') {
            return None;
        }
        let filename = clean_filename(filename);
        let signature = URL_SAFE_NO_PAD.encode(
            self.signature(server, media_id, expires, &filename)
                .finalize()
                .into_bytes(),
        );
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        Some(format!(
            "{}/media/v1/{}/{}/{expires}/{signature}/{}",
            self.base,
            enc(server),
            enc(media_id),
            enc(&filename)
        ))
    }

    /// Whether a link's parts are ours and still good at `now` (unix seconds). The
    /// signature is compared in constant time.
    pub fn check(
        &self,
        server: &str,
        media_id: &str,
        expires: u64,
        signature: &str,
        filename: &str,
        now: u64,
    ) -> Result<(), LinkError> {
        let given = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| LinkError::Forged)?;
        self.signature(server, media_id, expires, filename)
            .verify_slice(&given)
            .map_err(|_| LinkError::Forged)?;
        if now > expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

/// A file name fit for a URL and a `Content-Disposition` header: no path, no control
/// characters (so no CR/LF can reach a header), at most 100 characters, never empty.
fn clean_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(100)
        .collect();
    let clean = clean.trim();
    if clean.is_empty() || clean == "." || clean == ".." {
        "file".to_owned()
    } else {
        clean.to_owned()
    }
}

/// `GET /media/v1/…`: the file, fetched from the homeserver as the bot, if the link is good.
pub fn router(bridge: Arc<Bridge>) -> Router {
    Router::new().route(ROUTE, get(serve)).with_state(bridge)
}

async fn serve(
    State(bridge): State<Arc<Bridge>>,
    Path((server, media_id, expires, signature, filename)): Path<(
        String,
        String,
        u64,
        String,
        String,
    )>,
) -> Response {
    let Some(links) = bridge.media_links() else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let now = (bridge.clock().now_ms() / 1000).max(0) as u64;
    match links.check(&server, &media_id, expires, &signature, &filename, now) {
        Ok(()) => {}
        // The same answer as for a file that does not exist: a forged link learns nothing.
        Err(LinkError::Forged) => return (StatusCode::NOT_FOUND, "no such file").into_response(),
        Err(LinkError::Expired) => {
            return (
                StatusCode::GONE,
                "This link has expired. Ask the visitor to send the file again.",
            )
                .into_response();
        }
    }
    let mxc = OwnedMxcUri::from(format!("mxc://{server}/{media_id}"));
    let (mimetype, bytes) = match bridge.download_media(&mxc).await {
        Ok(file) => file,
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "a linked file could not be fetched from the homeserver");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "The file cannot be fetched just now; try again in a moment.",
            )
                .into_response();
        }
        Err(e) => {
            tracing::info!(error = %e, "a linked file is gone from the homeserver");
            return (StatusCode::NOT_FOUND, "no such file").into_response();
        }
    };
    let disposition = format!(
        "attachment; filename*=UTF-8''{}",
        utf8_percent_encode(&filename, NON_ALPHANUMERIC)
    );
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    let content_type = mimetype
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    // Whatever the file is, a browser must never run it as part of our origin.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn parts(link: &str) -> Vec<String> {
        link.trim_start_matches("https://chat.example.org/media/v1/")
            .split('/')
            .map(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            })
            .collect()
    }

    fn check(links: &MediaLinks, p: &[String], now: u64) -> Result<(), LinkError> {
        links.check(&p[0], &p[1], p[2].parse().unwrap(), &p[3], &p[4], now)
    }

    #[test]
    fn a_link_works_until_it_expires_and_only_as_made() {
        let links = MediaLinks::new("as-token", "https://chat.example.org/");
        let link = links
            .link("mxc://example.org/AbC123", "report 2026.pdf", NOW + 60)
            .unwrap();
        assert!(link.starts_with("https://chat.example.org/media/v1/example%2Eorg/AbC123/"));
        assert!(link.ends_with("/report%202026%2Epdf"), "{link}");
        let p = parts(&link);
        assert_eq!(check(&links, &p, NOW), Ok(()));
        assert_eq!(check(&links, &p, NOW + 61), Err(LinkError::Expired));
        // Another file, a longer life, another name, or another instance's key: refused.
        for (i, forged) in ["evil.org", "XyZ", "999999999999", "", "report.exe"]
            .iter()
            .enumerate()
        {
            let mut q = p.clone();
            q[i] = if i == 3 {
                URL_SAFE_NO_PAD.encode([0u8; 32])
            } else {
                forged.to_string()
            };
            assert_eq!(check(&links, &q, NOW), Err(LinkError::Forged), "{q:?}");
        }
        let other = MediaLinks::new("another-token", "https://chat.example.org");
        assert_eq!(check(&other, &p, NOW), Err(LinkError::Forged));
    }

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(
            clean_filename("a\r\nSet-Cookie: x.txt"),
            "aSet-Cookie: x.txt"
        );
        assert_eq!(clean_filename("C:\\temp\\x\".png"), "x.png");
        assert_eq!(clean_filename(""), "file");
        assert_eq!(clean_filename(".."), "file");
        assert_eq!(clean_filename(&"é".repeat(300)).chars().count(), 100);
    }

    #[test]
    fn only_mxc_uris_make_links() {
        let links = MediaLinks::new("t", "https://chat.example.org");
        for bad in [
            "https://x/y",
            "mxc://",
            "mxc://server",
            "mxc:///id",
            "mxc://s/a/b",
        ] {
            assert_eq!(links.link(bad, "f", NOW), None, "{bad}");
        }
    }
}
