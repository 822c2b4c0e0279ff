//! Files on their way to a platform: fetched from the media repository and uploaded where the
//! platform takes them, sent as a link where it does not (or not at that size), and refused
//! with a word to both sides where no link can be made.

use switchboard_appservice::ruma::OwnedMxcUri;

use super::super::Bridge;
use crate::connector::{Attachment, Connector, ConnectorError, Delivery, MediaRef};
use crate::media_links::LINK_LIFETIME;

impl Bridge {
    /// One part of an outbox row to its platform: text as text; a file fetched from the media
    /// repository first (a failing download is worth retrying, like a failing send). A file
    /// the platform does not carry, or larger than it takes (its declared
    /// `Capabilities::files`), is not sent: an upload the platform must refuse would only be
    /// retried or, refused for good, make the responder look unreachable.
    pub(super) async fn deliver_one(
        &self,
        connector: &dyn Connector,
        delivery: &Delivery,
        index: usize,
        part: &str,
        address: &str,
    ) -> Result<PartSent, ConnectorError> {
        let Some(media) = &delivery.media else {
            return connector
                .deliver(delivery, index, part, address)
                .await
                .map(PartSent::Message);
        };
        let Some(limits) = connector.capabilities().files else {
            return self
                .deliver_link(connector, delivery, media, None, index, address)
                .await
                .unwrap_or(Ok(PartSent::FileRefused(FileRefusal::NotCarried)));
        };
        let uri = OwnedMxcUri::from(media.mxc.as_str());
        let (mimetype, bytes) = self.client.download_media(&uri).await.map_err(|e| {
            if e.is_transient() {
                ConnectorError::Transient(e.to_string())
            } else {
                ConnectorError::Permanent(e.to_string())
            }
        })?;
        let size = bytes.len() as u64;
        if size > limits.max_bytes {
            let refusal = FileRefusal::TooLarge {
                size,
                max: limits.max_bytes,
            };
            return self
                .deliver_link(connector, delivery, media, Some(size), index, address)
                .await
                .unwrap_or(Ok(PartSent::FileRefused(refusal)));
        }
        let attachment = Attachment {
            bytes,
            mimetype: media.mimetype.clone().or(mimetype),
            filename: media.filename.clone(),
            kind: media.kind,
        };
        match connector
            .deliver_file(delivery, part, attachment, address)
            .await
        {
            Err(ConnectorError::FileTooLarge(why)) => {
                // Smaller than the platform declared it takes, yet refused for its size.
                tracing::warn!(platform = connector.platform().as_str(), size, %why, "the platform refused a file for its size (413)");
                let refusal = FileRefusal::TooLarge {
                    size,
                    max: limits.max_bytes.min(size.saturating_sub(1)),
                };
                self.deliver_link(connector, delivery, media, Some(size), index, address)
                    .await
                    .unwrap_or(Ok(PartSent::FileRefused(refusal)))
            }
            other => other.map(PartSent::Message),
        }
    }

    /// A file the platform does not take, sent as a message with a link to it through
    /// Switchboard (`media_links.rs`) in its place, headed like the visitor's messages and
    /// with their caption; `None` where no link can be made (no public address configured),
    /// so the file is refused as before.
    async fn deliver_link(
        &self,
        connector: &dyn Connector,
        delivery: &Delivery,
        media: &MediaRef,
        size: Option<u64>,
        index: usize,
        address: &str,
    ) -> Option<Result<PartSent, ConnectorError>> {
        let expires = (self.now_ms() / 1000).max(0) as u64 + LINK_LIFETIME.as_secs();
        let url = self
            .media_links
            .as_ref()?
            .link(&media.mxc, &media.filename, expires)?;
        // Caption and name are cut so the whole text fits one message on any platform
        // (Discord's 2000 characters being the least): one part, with the link at its end.
        let caption = crate::format::truncate_chars(&delivery.body, 1000);
        let filename = crate::format::truncate_chars(&media.filename, 100);
        let mut body = if caption.trim() == media.filename.trim() {
            String::new()
        } else {
            format!("{caption}\n")
        };
        let size = size
            .map(|s| format!(" ({})", human_size(s)))
            .unwrap_or_default();
        body.push_str(&format!(
            "{filename}{size} is too large to attach on {}; download it here (the link works for {} days): {url}",
            connector.platform().display_name(),
            LINK_LIFETIME.as_secs() / 86_400,
        ));
        let text = Delivery {
            body,
            formatted_body: None,
            media: None,
            ..delivery.clone()
        };
        let part = connector.render(&text).swap_remove(0);
        Some(
            connector
                .deliver(&text, index, &part, address)
                .await
                .map(PartSent::Message),
        )
    }
}

/// What became of one part the platform answered for.
pub(super) enum PartSent {
    /// The platform took it as this message.
    Message(String),
    /// A file the platform does not take: not sent (see `deliver_one`).
    FileRefused(FileRefusal),
}

/// Why a visitor's file is not relayed to the responder's platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileRefusal {
    /// The platform carries no files (`Capabilities::files` is `None`).
    NotCarried,
    /// Larger than the platform's `max_bytes`.
    TooLarge { size: u64, max: u64 },
}

impl FileRefusal {
    /// What the visitor is told in their room; the responder's platform is not named.
    pub(super) fn to_visitor(self, filename: &str) -> String {
        match self {
            Self::NotCarried => format!(
                "Your file {filename} was not passed on: the responder cannot receive files here. Please describe it in a message instead."
            ),
            Self::TooLarge { size, max } => format!(
                "Your file {filename} was not passed on: it is {}, more than the {} the responder can receive.",
                human_size(size),
                human_size(max)
            ),
        }
    }

    /// What the responder is told where the file would have arrived.
    pub(super) fn to_responder(self, alias: &str, filename: &str, platform: &str) -> String {
        match self {
            Self::NotCarried => format!(
                "{alias} sent a file, {filename}, which cannot be sent on {platform}; it was not passed on."
            ),
            Self::TooLarge { size, max } => format!(
                "{alias} sent a file, {filename} ({}), larger than {platform} takes ({}); it was not passed on.",
                human_size(size),
                human_size(max)
            ),
        }
    }
}

/// A size for people: bytes below a KiB, else KB or MB (of 1024), one decimal where needed.
fn human_size(bytes: u64) -> String {
    let scaled = |unit: f64, name: &str| {
        let n = bytes as f64 / unit;
        let text = format!("{n:.1}");
        format!("{} {name}", text.strip_suffix(".0").unwrap_or(&text))
    };
    match bytes {
        1 => "1 byte".into(),
        0..1024 => format!("{bytes} bytes"),
        1024..1_048_576 => scaled(1024.0, "KB"),
        _ => scaled(1_048_576.0, "MB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sizes_read_as_people_write_them() {
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(2), "2 bytes");
        assert_eq!(human_size(1536), "1.5 KB");
        assert_eq!(human_size(50 * 1024 * 1024), "50 MB");
        assert_eq!(human_size(60 * 1024 * 1024 + 300 * 1024), "60.3 MB");
    }
}
