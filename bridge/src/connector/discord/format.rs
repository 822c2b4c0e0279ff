//! Discord's markdown: what we send (a visitor's Matrix message) and what we receive (a
//! responder's reply).
//!
//! Both directions go through the shared model in [`crate::format`]. Out: Matrix HTML is
//! read into a [`StyledText`] within what Discord can show ([`DISCORD`]), split within
//! [`DISCORD_MAX_TEXT`] characters *after* markup, and written as Discord markdown with
//! every markup character of the visitor's text escaped ([`writer`]). In: Discord
//! markdown is read into a [`StyledText`] ([`reader`]) and written as Matrix HTML by the
//! shared renderer, so the HTML is generated, never copied from the message.
//!
//! Why a hand-written reader rather than a CommonMark parser such as pulldown-cmark:
//! Discord's dialect differs from CommonMark almost everywhere it matters here. Single
//! newlines are line breaks, four spaces do not make code, `__x__` is underline (strong in
//! CommonMark), `||x||`, `>>> ` and `-# ` exist, HTML and entity references are text
//! (`&amp;` shows as typed), there are no setext headings, reference links, hard-break
//! spaces or `***` rules, and emphasis pairs with the first closing delimiter instead of
//! by delimiter runs. Adapting a CommonMark event stream would mean undoing most of it;
//! the rules Discord does have are few and are written out in [`reader`].
//!
//! Everything here is pure: no I/O, no logging, no clock.

mod reader;
mod writer;

pub use reader::Mention;

use crate::format::{Open, Span, Style, StyledText, Target, from_matrix_message, to_matrix_html};

/// Discord's limit on a message's `content`, in characters (Unicode scalar values),
/// markup included.
pub const DISCORD_MAX_TEXT: usize = 2000;

/// URL schemes Discord shows as masked links (`[text](url)`); links to anything else keep
/// their text and lose the link.
pub const DISCORD_LINK_SCHEMES: &[&str] = &["http", "https"];

/// What Discord can show, for reading Matrix HTML: no block inside a link, no code block
/// or quote inside a quote (Discord's quotes do not nest, and a code block inside one is
/// written as quoted text), nothing inside code.
pub const DISCORD: Target = Target {
    link_schemes: DISCORD_LINK_SCHEMES,
    may_open: discord_may_open,
};

fn discord_may_open(style: &Style, open: Open) -> bool {
    if open.verbatim > 0 {
        return false;
    }
    match style {
        Style::Bold
        | Style::Italic
        | Style::Underline
        | Style::Strikethrough
        | Style::Spoiler
        | Style::Code => true,
        Style::Link { .. } => open.links == 0,
        Style::Pre { .. } | Style::Blockquote { .. } => open.links == 0 && open.quotes == 0,
    }
}

/// A Matrix message (plain `body`, optional `formatted_body` HTML) → Discord message
/// contents, each at most [`DISCORD_MAX_TEXT`] characters and none empty; `header`, if
/// given, is the first line of the first part, in bold.
///
/// - Bold `**x**`, italic `*x*`, underline `__x__`, strikethrough `~~x~~`, spoiler
///   `||x||`, inline code `` `x` `` (``` `` x`y `` ``` when the code has a backtick), code
///   blocks ```` ```lang ```` (language checked with [`crate::format::is_valid_language`]),
///   quotes `> ` on each line, links `[text](<url>)` for http and https. A link whose
///   text is a URL, and a URL written in the text, are sent as `<url>`; other links keep
///   their text only. Headings are bold lines, lists are the shared layout's `• `/`1. `
///   lines, as for Telegram.
/// - Every character of the visitor's text that Discord could read as markup is escaped
///   (`\ * _ ~ | ` < > # - + [ ]`, a `:` before `//`, the `.` of a number starting a
///   line), so it shows exactly as written and cannot make formatting, links, mentions
///   (`<@123>` shows as typed) or headings the visitor did not write. `@everyone` is left
///   as text: the connector sends `allowed_mentions: {parse: []}`, so it pings nobody.
/// - Parts are cut at a paragraph, line or word break by the shared splitter and every
///   style is closed at the end of a line and of a part, so no part depends on another.
/// - Returns an empty `Vec` when there is nothing visible to send.
pub fn to_discord(body: &str, formatted_body: Option<&str>, header: Option<&str>) -> Vec<String> {
    let styled = from_matrix_message(body, formatted_body, &DISCORD).trimmed();
    let styled = match header.map(str::trim).filter(|header| !header.is_empty()) {
        Some(header) => with_header(header, styled),
        None => styled,
    };
    render_discord(&styled)
}

/// Styled text (trimmed) → Discord message contents within [`DISCORD_MAX_TEXT`]
/// characters each.
pub fn render_discord(styled: &StyledText) -> Vec<String> {
    writer::render_parts(styled)
}

/// `header` in bold on a line of its own above `styled`.
fn with_header(header: &str, styled: StyledText) -> StyledText {
    let offset = header.len() + 1;
    let mut spans = vec![Span {
        style: Style::Bold,
        start: 0,
        end: header.len(),
    }];
    spans.extend(styled.spans.into_iter().map(|span| Span {
        start: span.start + offset,
        end: span.end + offset,
        ..span
    }));
    let text = if styled.text.is_empty() {
        header.to_owned()
    } else {
        format!("{header}\n{}", styled.text)
    };
    StyledText { text, spans }.trimmed()
}

/// A Discord message's `content` → Matrix `(body, Some(formatted_body))`, or
/// `(body, None)` when it has no formatting.
///
/// `body` is the text as a Discord user sees it: markup removed, escapes resolved, list
/// markers as `• `. Mentions and custom emoji become `@user`, `@role`, `#channel`,
/// `:name:`, slash commands `/name`, timestamps `2023-11-14 22:13 UTC`: never a Matrix
/// pill, and no Discord ID reaches the room. Use [`from_discord_with_names`] to show
/// names the connector knows.
///
/// Bold, italic, underline, strikethrough, spoiler (`<span data-mx-spoiler>`), code,
/// code blocks (`<pre><code class="language-x">`), quotes and http(s) links (masked,
/// `<url>` or written out) map to Matrix HTML; headings are bold, subtext (`-# `) plain.
pub fn from_discord(content: &str) -> (String, Option<String>) {
    from_discord_with_names(content, &|_| None)
}

/// [`from_discord`], showing `names(mention)` for the mentions it knows (e.g. the
/// display names of the users in the message's `mentions`); the others fall back to
/// [`Mention::fallback`].
pub fn from_discord_with_names(
    content: &str,
    names: &dyn Fn(&Mention<'_>) -> Option<String>,
) -> (String, Option<String>) {
    let styled = discord_to_styled(content, names);
    let html = (!styled.spans.is_empty()).then(|| to_matrix_html(&styled));
    (styled.text, html)
}

/// Discord markdown as styled text (the reader behind [`from_discord`]).
pub fn discord_to_styled(
    content: &str,
    names: &dyn Fn(&Mention<'_>) -> Option<String>,
) -> StyledText {
    let mut reader = reader::Reader::new(names);
    reader.blocks(content, false);
    reader.finish()
}

#[cfg(test)]
mod tests;
