//! The bodies of our mails, written twice: `text/plain` and `text/html`.
//!
//! The HTML is generated, never copied: a visitor's Matrix HTML is sanitised and laid out by
//! the shared reader ([`from_matrix_message`], ammonia underneath) into a [`StyledText`],
//! and written again from its styles with every piece of text escaped; our own lines
//! (labels, links) are escaped the same way. So no tag, attribute or URL scheme reaches the
//! responder's mail client unless we wrote it.

use std::borrow::Cow;

use crate::format::render_html::escape_attribute;
use crate::format::{
    HtmlDialect, Open, Style, StyledText, Target, from_matrix_message, render_html,
};

/// URL schemes a visitor's link keeps in a mail; others keep their text only.
const EMAIL_LINK_SCHEMES: &[&str] = &["http", "https", "mailto"];

/// What a mail can show: HTML mail renders nearly everything, but nothing is read inside
/// code and a link never holds another link or a block.
const EMAIL: Target = Target {
    link_schemes: EMAIL_LINK_SCHEMES,
    may_open: email_may_open,
};

fn email_may_open(style: &Style, open: Open) -> bool {
    if open.verbatim > 0 {
        return false;
    }
    match style {
        Style::Link { .. } | Style::Pre { .. } | Style::Blockquote { .. } => open.links == 0,
        _ => true,
    }
}

/// HTML as mail clients render it: newlines are `<br>` outside `<pre>`.
struct EmailHtml;

impl HtmlDialect for EmailHtml {
    fn tags(&self, style: &Style) -> (Cow<'static, str>, &'static str) {
        let fixed = |open: &'static str, close| (Cow::Borrowed(open), close);
        match style {
            Style::Bold => fixed("<strong>", "</strong>"),
            Style::Italic => fixed("<em>", "</em>"),
            Style::Underline => fixed("<u>", "</u>"),
            Style::Strikethrough => fixed("<del>", "</del>"),
            // Mail clients strip the styles and scripts a hidden spoiler would need; the
            // text is shown, which is what the visitor wanted the responder to read.
            Style::Spoiler => fixed("<span>", "</span>"),
            Style::Code => fixed("<code>", "</code>"),
            Style::Pre { .. } => fixed("<pre>", "</pre>"),
            Style::Link { href } => (
                Cow::Owned(format!("<a href=\"{}\">", escape_attribute(href))),
                "</a>",
            ),
            Style::Blockquote { .. } => fixed("<blockquote>", "</blockquote>"),
        }
    }

    fn newline_is_br(&self) -> bool {
        true
    }
}

/// `text` as a mail body line may carry it: line breaks as `\n` (lettre writes CRLF), tabs
/// kept, every other control character dropped (a terminal escape or NUL means nothing to a
/// reader and some servers reject NUL).
pub(super) fn body_text(text: &str) -> String {
    StyledText::plain(text).map_chars(body_char).text
}

/// One character of [`body_text`]: `next` is the character after it.
fn body_char(c: char, next: Option<char>) -> Option<char> {
    match c {
        '\r' if next == Some('\n') => None,
        '\r' => Some('\n'),
        '\n' | '\t' => Some(c),
        c if c.is_control() => None,
        c => Some(c),
    }
}

/// A visitor's message (plain `body`, optional Matrix HTML) laid out for a mail. Cleaned
/// after reading, as HTML can write a control character as a reference (`&#x1f;`), and with
/// the styles moved along: cleaning the text alone once left a style past its end.
pub(super) fn visitor_styled(body: &str, html: Option<&str>) -> StyledText {
    from_matrix_message(body, html, &EMAIL)
        .map_chars(body_char)
        .trimmed()
}

/// The plain-text form of styled text: a link whose text is not its target is followed by
/// the target in angle brackets, so the plain part loses no link.
fn plain_with_links(styled: &StyledText) -> String {
    let mut inserts: Vec<(usize, String)> = styled
        .spans
        .iter()
        .filter_map(|span| match &span.style {
            Style::Link { href } if styled.text[span.start..span.end].trim() != href => {
                Some((span.end, format!(" <{href}>")))
            }
            _ => None,
        })
        .collect();
    inserts.sort_by_key(|(at, _)| *at);
    let mut text = styled.text.clone();
    for (at, insert) in inserts.into_iter().rev() {
        text.insert_str(at, &insert);
    }
    text
}

/// A body being written in both forms at once, so the two always say the same.
#[derive(Default)]
pub(super) struct Body {
    text: String,
    html: String,
}

impl Body {
    /// A paragraph of our own or caller-given plain text.
    pub fn paragraph(&mut self, text: &str) {
        self.push_text(text);
        self.html.push_str("<p>");
        self.html.push_str(&escape(text));
        self.html.push_str("</p>\n");
    }

    /// `label: value` on a line of its own.
    pub fn field(&mut self, label: &str, value: &str) {
        self.text.push_str(&format!("{label}: {value}\n"));
        self.html.push_str(&format!(
            "<div><strong>{}:</strong> {}</div>\n",
            escape(label),
            escape(value)
        ));
    }

    /// Ends a run of [`Body::field`]s.
    pub fn end_fields(&mut self) {
        self.text.push('\n');
    }

    /// A heading line above quoted plain text (a first message, a summary).
    pub fn quoted(&mut self, heading: &str, quote: &str) {
        let quote = body_text(quote);
        let quote = quote.trim();
        self.text.push_str(heading);
        self.text.push('\n');
        for line in quote.lines() {
            self.text.push_str(if line.is_empty() { ">" } else { "> " });
            self.text.push_str(line);
            self.text.push('\n');
        }
        self.text.push('\n');
        self.html.push_str(&format!(
            "<p>{}</p>\n<blockquote>{}</blockquote>\n",
            escape(heading),
            escape(quote)
        ));
    }

    /// A link the caller gave, checked to be http(s).
    pub fn link(&mut self, label: &str, url: &str) {
        self.text.push_str(&format!("{label}: {url}\n"));
        self.html.push_str(&format!(
            "<p><a href=\"{}\">{}</a></p>\n",
            escape_attribute(url),
            escape(label)
        ));
    }

    /// A visitor's message, laid out.
    pub fn message(&mut self, styled: &StyledText) {
        self.push_text(&plain_with_links(styled));
        self.html.push_str("<div>");
        self.html.push_str(&render_html(styled, &EmailHtml));
        self.html.push_str("</div>\n<br>\n");
    }

    fn push_text(&mut self, text: &str) {
        self.text.push_str(text);
        self.text.push_str("\n\n");
    }

    /// The `text/plain` and the `text/html` body.
    pub fn finish(self) -> (String, String) {
        let html = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n{}</body></html>\n",
            self.html
        );
        (self.text.trim_end().to_owned() + "\n", html)
    }
}

/// Plain text as HTML text: escaped, line breaks as `<br>`.
fn escape(text: &str) -> String {
    render_html(&StyledText::plain(text), &EmailHtml)
}

/// A size for people: "12.3 MB".
pub(super) fn human_size(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["bytes", "kB", "MB", "GB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}
