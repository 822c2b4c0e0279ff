//! [`StyledText`] → HTML, in the dialect of the platform it is for.
//!
//! The walk over the spans is shared; a dialect only says how each style is written and
//! what a newline becomes. [`MatrixHtml`] (`org.matrix.custom.html`) is here; a platform
//! with an HTML dialect of its own brings its own (`connector/telegram/format.rs`).

use std::borrow::Cow;
use std::cmp::Reverse;

use super::{Span, Style, StyledText};

/// How styled text is written in one HTML dialect.
pub trait HtmlDialect {
    /// The opening and closing markup of `style`. Attribute values must be escaped here
    /// ([`escape_attribute`]); they were validated when the `Style` was built.
    fn tags(&self, style: &Style) -> (Cow<'static, str>, &'static str);

    /// Whether a newline outside `pre` is written as `<br>` (and dropped where it touches
    /// the edge of a block, which starts its own line anyway); otherwise newlines are
    /// written as they are.
    fn newline_is_br(&self) -> bool;
}

/// Matrix `org.matrix.custom.html`: newlines are `<br>` outside `<pre>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatrixHtml;

impl HtmlDialect for MatrixHtml {
    fn tags(&self, style: &Style) -> (Cow<'static, str>, &'static str) {
        let fixed = |open: &'static str, close| (Cow::Borrowed(open), close);
        match style {
            Style::Bold => fixed("<strong>", "</strong>"),
            Style::Italic => fixed("<em>", "</em>"),
            Style::Underline => fixed("<u>", "</u>"),
            Style::Strikethrough => fixed("<del>", "</del>"),
            Style::Spoiler => fixed("<span data-mx-spoiler>", "</span>"),
            Style::Code => fixed("<code>", "</code>"),
            Style::Pre {
                language: Some(language),
            } => (
                Cow::Owned(format!(
                    "<pre><code class=\"language-{}\">",
                    escape_attribute(language)
                )),
                "</code></pre>",
            ),
            // Matrix clients style code blocks written as `<pre><code>`.
            Style::Pre { language: None } => fixed("<pre><code>", "</code></pre>"),
            Style::Link { href } => (
                Cow::Owned(format!("<a href=\"{}\">", escape_attribute(href))),
                "</a>",
            ),
            // Matrix has no collapsed quotes; the content matters more than the folding.
            Style::Blockquote { .. } => fixed("<blockquote>", "</blockquote>"),
        }
    }

    fn newline_is_br(&self) -> bool {
        true
    }
}

/// Styled text as Matrix HTML (`formatted_body`).
pub fn to_matrix_html(styled: &StyledText) -> String {
    render_html(styled, &MatrixHtml)
}

/// Writes styled text as HTML. Spans that overlap without nesting are closed and
/// reopened around each other, so the output is always well formed.
pub fn render_html(styled: &StyledText, dialect: &impl HtmlDialect) -> String {
    let text = styled.text.as_str();
    let br = dialect.newline_is_br();
    let mut spans: Vec<&Span> = styled
        .spans
        .iter()
        .filter(|span| span.start < span.end)
        .collect();
    // Outer spans first: earlier start, then longer, then block before inline.
    spans.sort_by_key(|span| (span.start, Reverse(span.end), span.style.nesting_rank()));

    let mut points: Vec<usize> = spans
        .iter()
        .flat_map(|span| [span.start, span.end])
        .collect();
    points.extend([0, text.len()]);
    points.sort_unstable();
    points.dedup();

    // Where a block (pre, blockquote) starts or ends; only `<br>` dialects need it.
    let mut block_edges: Vec<usize> = spans
        .iter()
        .filter(|span| br && span.style.is_block())
        .flat_map(|span| [span.start, span.end])
        .collect();
    block_edges.sort_unstable();

    let mut html = String::with_capacity(text.len() + text.len() / 4);
    let mut open: Vec<&Span> = Vec::new();
    let mut next_span = 0;
    for (k, &pos) in points.iter().enumerate() {
        // Close spans ending here, and re-open the spans that were inside them but go on.
        if let Some(first) = open.iter().position(|span| span.end <= pos) {
            for span in open[first..].iter().rev() {
                html.push_str(dialect.tags(&span.style).1);
            }
            let continuing: Vec<&Span> =
                open.drain(first..).filter(|span| span.end > pos).collect();
            for span in continuing {
                html.push_str(&dialect.tags(&span.style).0);
                open.push(span);
            }
        }
        while let Some(&span) = spans.get(next_span).filter(|span| span.start == pos) {
            html.push_str(&dialect.tags(&span.style).0);
            open.push(span);
            next_span += 1;
        }
        if let Some(&next) = points.get(k + 1) {
            let in_pre = open
                .iter()
                .any(|span| matches!(span.style, Style::Pre { .. }));
            let mut piece = &text[pos..next];
            if br && !in_pre {
                // In HTML a block element already starts on a new line; a `<br>` for the
                // newline beside it would add an empty line the sender did not write.
                let block_at = |at: usize| block_edges.binary_search(&at).is_ok();
                if block_at(pos) {
                    piece = piece.strip_prefix('\n').unwrap_or(piece);
                }
                if block_at(next) {
                    piece = piece.strip_suffix('\n').unwrap_or(piece);
                }
            }
            escape_text(piece, br && !in_pre, &mut html);
        }
    }
    debug_assert!(
        open.is_empty(),
        "every span ends at or before the end of the text"
    );
    html
}

/// Escapes text content; with `br`, newlines become `<br>`.
fn escape_text(text: &str, br: bool, html: &mut String) {
    for c in text.chars() {
        match c {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '\n' if br => html.push_str("<br>"),
            c => html.push(c),
        }
    }
}

/// Escapes a value for a double-quoted attribute.
pub fn escape_attribute(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    escaped
}
