//! The Matrix spec's HTML allow-list, for formatted text that came from elsewhere.
//!
//! A remote responder's message (a Telegram entity rendering, or a Matrix responder's own
//! `formatted_body` copied out of their relay room) is posted into the visitor's room;
//! whatever the visitor's client renders must be what the spec lets clients render. In
//! particular no image from a remote server: an `<img src="https://…">` would make the
//! visitor's browser fetch it and tell that server the visitor's address.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use super::{MATRIX_LINK_SCHEMES, code_language};

/// The tags the client-server spec lists for `org.matrix.custom.html` (`m.room.message`
/// msgtypes, "HTML"), without the deprecated `mx-reply`.
/// The elements the Matrix spec allows in `formatted_body`.
pub(crate) const MATRIX_TAGS: &[&str] = &[
    "font",
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "img",
    "details",
    "summary",
];

/// The spec's attributes per tag; values are checked further in [`keep_attribute`].
const MATRIX_ATTRIBUTES: &[(&str, &[&str])] = &[
    ("font", &["data-mx-bg-color", "data-mx-color", "color"]),
    (
        "span",
        &[
            "data-mx-bg-color",
            "data-mx-color",
            "data-mx-spoiler",
            "data-mx-maths",
        ],
    ),
    ("a", &["target", "href"]),
    ("img", &["width", "height", "alt", "title", "src"]),
    ("ol", &["start"]),
    ("code", &["class"]),
    ("div", &["data-mx-maths"]),
];

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let tag_attributes: HashMap<&str, HashSet<&str>> = MATRIX_ATTRIBUTES
        .iter()
        .map(|(tag, attributes)| (*tag, attributes.iter().copied().collect()))
        .collect();
    // ammonia checks every URL attribute (`href`, `src`) against one scheme list;
    // `keep_attribute` then allows `mxc` only in `src` and the others only in `href`.
    let mut schemes: HashSet<&str> = MATRIX_LINK_SCHEMES.iter().copied().collect();
    schemes.insert("mxc");
    let mut builder = ammonia::Builder::empty();
    builder
        .tags(MATRIX_TAGS.iter().copied().collect())
        // A reply fallback would quote the relay room the responder replied in (its ID
        // and the bot's); the reply relation itself is not carried over either.
        .clean_content_tags(["script", "style", "mx-reply"].into_iter().collect())
        .tag_attributes(tag_attributes)
        .generic_attributes(HashSet::new())
        .url_schemes(schemes)
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(None)
        .strip_comments(true)
        .attribute_filter(keep_attribute);
    builder
});

/// `html` reduced to the Matrix spec's allow-list of tags and attributes: other elements
/// are unwrapped to their text (`script`, `style` and `mx-reply` removed with it), event
/// handlers and styles dropped, links kept only with the spec's schemes (`http`, `https`,
/// `ftp`, `mailto`, `magnet`), images only with an `mxc://` source, colours only as
/// `#rrggbb`, code classes only as `language-…`.
pub fn sanitise_matrix_html(html: &str) -> String {
    SANITIZER.clean(html).to_string()
}

/// The value an allowed attribute keeps, or `None` to drop it.
fn keep_attribute<'v>(element: &str, attribute: &str, value: &'v str) -> Option<Cow<'v, str>> {
    let keep = match (element, attribute) {
        ("img", "src") => is_mxc_uri(value),
        ("a", "href") => scheme_is(value, MATRIX_LINK_SCHEMES),
        ("a", "target") => value == "_blank",
        (_, "data-mx-color" | "data-mx-bg-color") => is_hex_colour(value),
        ("font", "color") => is_hex_colour(value) || value.chars().all(|c| c.is_ascii_alphabetic()),
        ("img", "width" | "height") => {
            !value.is_empty() && value.chars().all(|c| c.is_ascii_digit())
        }
        ("ol", "start") => value.trim().parse::<u32>().is_ok(),
        ("code", "class") => {
            return code_language(value).map(|lang| Cow::Owned(format!("language-{lang}")));
        }
        _ => true,
    };
    keep.then_some(Cow::Borrowed(value))
}

/// `mxc://<server name>/<media ID>`, the only image source the spec allows: what a client
/// fetches through its own homeserver. An opaque `mxc:…` that a URL parser accepts (found
/// by fuzzing: `mxc:'/x/y`) is not one.
fn is_mxc_uri(value: &str) -> bool {
    let Some((server, media)) = value
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
    else {
        return false;
    };
    !server.is_empty()
        && server
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        && !media.is_empty()
        && media
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
}

/// Whether `url` is a URL of one of `schemes`, written as such: it begins with its scheme.
/// A URL parser, a browser's too, skips leading control characters and spaces and removes
/// tabs and line breaks anywhere, so `\u{16}https://…` or `ht\ttps://…` parse as `https`
/// while the text a client is handed says otherwise (found by fuzzing); such a link is
/// dropped rather than passed on in a form each reader may read differently.
fn scheme_is(url: &str, schemes: &[&str]) -> bool {
    ammonia::Url::parse(url).is_ok_and(|parsed| {
        let scheme = parsed.scheme();
        schemes.contains(&scheme)
            && url
                .get(..scheme.len() + 1)
                .is_some_and(|head| head.eq_ignore_ascii_case(&format!("{scheme}:")))
    })
}

fn is_hex_colour(value: &str) -> bool {
    value.len() == 7 && value.starts_with('#') && value[1..].chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_keep_only_an_mxc_source() {
        assert_eq!(
            sanitise_matrix_html(r#"<img src="https://tracker.example/p.png" alt="x">"#),
            r#"<img alt="x">"#
        );
        assert_eq!(
            sanitise_matrix_html(r#"<img src="//tracker.example/p.png"><img src="p.png">"#),
            "<img><img>"
        );
        assert_eq!(
            sanitise_matrix_html(
                r#"<img src="mxc://example.org/abc" width="32" height="x" alt=":cat:" title="cat" onerror="alert(1)">"#
            ),
            // (ammonia may reorder the attributes it filtered.)
            r#"<img src="mxc://example.org/abc" width="32" title="cat" alt=":cat:">"#
        );
        // Opaque or malformed `mxc` sources are not media on a homeserver (the first was a
        // fuzzing finding: a URL parser accepts it with the scheme `mxc`).
        for src in [
            "mxc:'/x/y",
            "mxc:/x/y",
            "mxc://example.org",
            "mxc:///abc",
            "mxc://a/b/c",
            "mxc://a/b c",
        ] {
            assert_eq!(
                sanitise_matrix_html(&format!("<img src=\"{src}\">")),
                "<img>",
                "{src}"
            );
        }
    }

    #[test]
    fn scripts_styles_and_event_handlers_are_removed() {
        assert_eq!(
            sanitise_matrix_html(
                r#"<p onclick="x()" style="color:red">hi<script>alert(1)</script><style>p{}</style></p>"#
            ),
            "<p>hi</p>"
        );
    }

    #[test]
    fn links_keep_only_the_spec_schemes() {
        assert_eq!(
            sanitise_matrix_html(
                r#"<a href="javascript:alert(1)">a</a> <a href="mxc://e/x">b</a> <a href="https://e.example/" target="_blank" rel="opener">c</a> <a href="tg://resolve" target="frame">d</a>"#
            ),
            r#"<a>a</a> <a>b</a> <a href="https://e.example/" target="_blank">c</a> <a>d</a>"#
        );
    }

    #[test]
    fn a_link_must_begin_with_its_scheme() {
        // What a URL parser skips or removes before reading the scheme is not let through.
        assert_eq!(
            sanitise_matrix_html("<a href=\"\u{16}https://e.example/\">a</a>"),
            "<a>a</a>"
        );
        assert_eq!(
            sanitise_matrix_html(
                "<a href=\" javascript:alert(1)\">b</a> <a href=\"ht\ttps://e.example/\">c</a>"
            ),
            "<a>b</a> <a>c</a>"
        );
        // The scheme's case is the writer's.
        assert_eq!(
            sanitise_matrix_html(r#"<a href="HTTPS://e.example/">d</a>"#),
            r#"<a href="HTTPS://e.example/">d</a>"#
        );
    }

    #[test]
    fn the_spec_elements_and_attributes_are_kept() {
        let html = concat!(
            r#"<h1>T</h1><details><summary>s</summary><table><tr><td><sup>1</sup></td></tr></table></details>"#,
            r##"<font data-mx-color="#ff0000" color="red">r</font><span data-mx-spoiler="why">s</span>"##,
            r#"<ol start="3"><li><code class="language-rust">x</code></li></ol><s>old</s><hr>"#,
        );
        // The parser adds the `<tbody>` a table row implies.
        assert_eq!(
            sanitise_matrix_html(html),
            html.replace("<table><tr>", "<table><tbody><tr>")
                .replace("</tr></table>", "</tr></tbody></table>")
        );
    }

    #[test]
    fn other_elements_and_bad_values_are_dropped() {
        assert_eq!(
            sanitise_matrix_html(
                r#"<marquee>m</marquee><iframe src="https://e.example/"></iframe><font color="red;x:y" data-mx-bg-color="url(x)">f</font><code class="lang x">c</code>"#
            ),
            "m<font>f</font><code>c</code>"
        );
    }

    #[test]
    fn reply_fallbacks_are_removed_with_their_content() {
        assert_eq!(
            sanitise_matrix_html(
                r#"<mx-reply><blockquote><a href="https://matrix.to/#/!relay:e/$ev">In reply to</a></blockquote></mx-reply>answer"#
            ),
            "answer"
        );
    }
}
