//! Matrix HTML → [`StyledText`]: sanitised by ammonia, then laid out the way a browser
//! would show it, within what the target platform can display.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::{
    BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

use super::{Span, Style, StyledText, checked_link, code_language};

/// What the platform a Matrix message is read for can show; the layout keeps to it, so
/// the renderer never meets a style it cannot write.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// URL schemes a link may use (the platform rejects or mistreats others). A link with
    /// another scheme loses its link and keeps its text. At most the schemes in
    /// [`READ_LINK_SCHEMES`].
    pub link_schemes: &'static [&'static str],
    /// Whether `style` may open where the styles counted in `open` are open. A style that
    /// may not open leaves its text in place, unstyled.
    pub may_open: fn(style: &Style, open: Open) -> bool,
}

/// How many styles of each kind are open at a point of the layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Open {
    /// `code` and `pre`: content shown verbatim.
    pub verbatim: usize,
    pub links: usize,
    pub quotes: usize,
}

/// URL schemes a link in Matrix HTML may keep while it is read; each [`Target`] then
/// keeps its own subset. (The Matrix spec's five, plus `tg`, which Telegram users write.)
pub const READ_LINK_SCHEMES: &[&str] = &["http", "https", "ftp", "mailto", "magnet", "tg"];

/// A Matrix message (plain `body`, optional `formatted_body` HTML) as styled text for
/// `target`: the laid-out HTML, or `body` when there is no HTML or nothing in it is
/// visible (e.g. only an image without alt text; then `body` is used without its plain
/// reply fallback, if the HTML carried an `<mx-reply>`). Not trimmed.
pub fn from_matrix_message(
    body: &str,
    formatted_body: Option<&str>,
    target: &Target,
) -> StyledText {
    match formatted_body {
        Some(html) => {
            let styled = from_matrix_html(html, target);
            if styled.text.is_empty() {
                // Nothing visible survived sanitising: the plain body is the sender's own
                // description of the message.
                let body = if contains_reply_fallback(html) {
                    strip_plain_reply_fallback(body)
                } else {
                    body
                };
                StyledText::plain(body)
            } else {
                styled
            }
        }
        None => StyledText::plain(body),
    }
}

/// The sanitiser for incoming Matrix HTML. Built once: the configuration is fixed.
///
/// It keeps the formatting a [`Style`] can express plus the structural elements we turn
/// into text layout (paragraphs, lists, headings, tables); everything else is unwrapped to
/// its text by ammonia, or removed with its content for `script`, `style` and `mx-reply`
/// (Matrix reply fallbacks must not be relayed).
static MATRIX_SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let tags: HashSet<&str> = [
        // Formatting a `Style` expresses.
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "code",
        "pre",
        "a",
        "blockquote",
        "tg-spoiler",
        "span",
        // Structure we lay out as text.
        "p",
        "div",
        "br",
        "hr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "ul",
        "ol",
        "li",
        "img",
        "table",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "th",
        "td",
        "caption",
    ]
    .into_iter()
    .collect();
    let tag_attributes: HashMap<&str, HashSet<&str>> = [
        ("a", ["href"].into_iter().collect()),
        ("code", ["class"].into_iter().collect()),
        ("ol", ["start"].into_iter().collect()),
        // Matrix custom emoji are images whose alt text is the shortcode; the source
        // (an mxc:// URL) is useless elsewhere and is not kept.
        ("img", ["alt"].into_iter().collect()),
        ("span", ["data-mx-spoiler"].into_iter().collect()),
    ]
    .into_iter()
    .collect();
    let mut builder = ammonia::Builder::empty();
    builder
        .tags(tags)
        .clean_content_tags(["script", "style", "mx-reply"].into_iter().collect())
        .tag_attributes(tag_attributes)
        .generic_attributes(HashSet::new())
        .url_schemes(READ_LINK_SCHEMES.iter().copied().collect())
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(None)
        .attribute_filter(|element, attribute, value| match (element, attribute) {
            ("code", "class") => {
                code_language(value).map(|lang| Cow::Owned(format!("language-{lang}")))
            }
            ("ol", "start") => value
                .trim()
                .parse::<u32>()
                .ok()
                .map(|n| Cow::Owned(n.to_string())),
            _ => Some(Cow::Borrowed(value)),
        });
    builder
});

/// Sanitises Matrix HTML and lays it out as styled text `target` can show.
///
/// ammonia parses the input with html5ever and writes the sanitised tree back out as
/// HTML; that is read again with html5ever's own tokenizer, so every character reference,
/// quoting style and comment ammonia may write is read by the parser that matches it.
/// (ammonia's parsed tree itself is only public behind its `ammonia_unstable` cfg.)
pub fn from_matrix_html(html: &str, target: &Target) -> StyledText {
    let clean = MATRIX_SANITIZER.clean(html).to_string();
    let input = BufferQueue::default();
    input.push_back(StrTendril::from(clean));
    let tokenizer = Tokenizer::new(
        LayoutSink {
            layout: RefCell::new(Layout::new(target)),
            text: RefCell::new(String::new()),
        },
        TokenizerOpts {
            // A U+FEFF at the start of ammonia's output is text, not a byte-order mark.
            discard_bom: false,
            ..TokenizerOpts::default()
        },
    );
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let sink = tokenizer.sink;
    sink.flush_text();
    sink.layout.into_inner().finish()
}

/// Hands the tokens of sanitised HTML to the layout.
struct LayoutSink {
    layout: RefCell<Layout>,
    /// Text not yet handed over: the tokenizer cuts text at newlines and references, and
    /// the layout must see, for instance, the start of a `<pre>`'s text in one piece.
    text: RefCell<String>,
}

impl LayoutSink {
    fn flush_text(&self) {
        let text = std::mem::take(&mut *self.text.borrow_mut());
        if !text.is_empty() {
            self.layout.borrow_mut().text(&text);
        }
    }
}

impl TokenSink for LayoutSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line_number: u64) -> TokenSinkResult<()> {
        match token {
            Token::CharacterTokens(text) => self.text.borrow_mut().push_str(&text),
            Token::TagToken(tag) => {
                self.flush_text();
                let mut layout = self.layout.borrow_mut();
                match tag.kind {
                    TagKind::StartTag => {
                        let attrs: Vec<(String, String)> = tag
                            .attrs
                            .iter()
                            .map(|attr| (attr.name.local.to_string(), attr.value.to_string()))
                            .collect();
                        layout.start_element(&tag.name, &attrs);
                    }
                    TagKind::EndTag => layout.end_element(&tag.name),
                }
            }
            // Comments, doctypes, NUL (never in ammonia's output) and parse errors.
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

/// An element open during layout.
#[derive(Debug)]
struct Frame {
    name: String,
    /// Index into the output spans of the style this element opened, if any.
    span: Option<usize>,
    /// Line breaks wanted after the element (1 = new line, 2 = blank line).
    breaks_after: usize,
    /// A `<pre>`: whitespace inside is kept as written.
    preformatted: bool,
    /// Whether any text has been written inside this element yet.
    has_text: bool,
    /// A `<ul>`/`<ol>`: pop the list counter on close.
    list: bool,
}

#[derive(Debug)]
struct ListState {
    /// `Some(next number)` for `<ol>`, `None` for `<ul>`.
    next_number: Option<u64>,
}

/// Turns the token stream of *sanitised* HTML into styled text, doing what a browser's
/// layout would do with whitespace and block elements.
///
/// Line breaks and spaces are not written when an element asks for them but when the next
/// visible text (or styled element) arrives: that way a paragraph break before a blockquote
/// ends up outside the quote, runs of block boundaries produce one blank line rather than
/// several, and nothing dangles at the end.
#[derive(Debug)]
struct Layout {
    target: Target,
    out: StyledText,
    frames: Vec<Frame>,
    lists: Vec<ListState>,
    /// Collapsed whitespace waiting to become a single space.
    pending_space: bool,
    /// Newlines the text should end with before anything else is written.
    pending_breaks: usize,
    /// Just wrote a list marker: block breaks inside the item (`<li><p>`) must not push
    /// its text away from the marker.
    after_list_marker: bool,
    /// Cells seen so far in the current table row.
    row_cells: usize,
    /// Open `<pre>` elements (whitespace is kept inside them).
    pre_depth: usize,
    /// Open spans by kind, for the target's nesting rules.
    open: Open,
}

impl Layout {
    fn new(target: &Target) -> Self {
        Layout {
            target: *target,
            out: StyledText::default(),
            frames: Vec::new(),
            lists: Vec::new(),
            pending_space: false,
            pending_breaks: 0,
            after_list_marker: false,
            row_cells: 0,
            pre_depth: 0,
            open: Open::default(),
        }
    }

    fn start_element(&mut self, name: &str, attrs: &[(String, String)]) {
        let attr = |wanted: &str| {
            attrs
                .iter()
                .find(|(key, _)| key == wanted)
                .map(|(_, value)| value.as_str())
        };

        // Void elements: they have no end tag and open no frame.
        match name {
            "br" => {
                self.flush_breaks();
                self.pending_space = false;
                self.push_raw("\n");
                return;
            }
            "hr" => {
                self.request_breaks(2);
                return;
            }
            "img" => {
                if let Some(alt) = attr("alt") {
                    self.text(alt);
                }
                return;
            }
            _ => {}
        }

        let mut frame = Frame {
            name: name.to_owned(),
            span: None,
            breaks_after: 0,
            preformatted: false,
            has_text: false,
            list: false,
        };
        let style = match name {
            "b" | "strong" => Some(Style::Bold),
            "i" | "em" => Some(Style::Italic),
            "u" | "ins" => Some(Style::Underline),
            "s" | "strike" | "del" => Some(Style::Strikethrough),
            "tg-spoiler" => Some(Style::Spoiler),
            "span" => match attr("data-mx-spoiler") {
                Some(reason) => {
                    // Spoilers elsewhere carry no reason; show it the way Matrix clients
                    // do, in front of the hidden text.
                    let reason = reason.trim();
                    if !reason.is_empty() {
                        self.text(&format!("({reason}) "));
                    }
                    Some(Style::Spoiler)
                }
                None => None,
            },
            "code" => {
                if self.set_pre_language(attr("class")) {
                    None
                } else {
                    Some(Style::Code)
                }
            }
            "a" => attr("href")
                .and_then(|href| checked_link(href, self.target.link_schemes))
                .map(|href| Style::Link { href }),
            "p" | "table" => {
                self.block(&mut frame, 2);
                None
            }
            "div" | "tr" | "caption" | "thead" | "tbody" | "tfoot" => {
                if name == "tr" {
                    self.row_cells = 0;
                }
                self.block(&mut frame, 1);
                None
            }
            "td" | "th" => {
                if self.row_cells > 0 {
                    self.text(" | ");
                }
                self.row_cells += 1;
                None
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.block(&mut frame, 2);
                Some(Style::Bold)
            }
            "blockquote" => {
                self.block(&mut frame, 2);
                Some(Style::Blockquote { expandable: false })
            }
            "pre" => {
                self.block(&mut frame, 2);
                frame.preformatted = true;
                Some(Style::Pre { language: None })
            }
            "ul" | "ol" => {
                // A nested list continues its parent item on the next line; a top-level
                // list is a block of its own.
                let breaks = if self.lists.is_empty() { 2 } else { 1 };
                self.block(&mut frame, breaks);
                frame.list = true;
                let next_number =
                    (name == "ol").then(|| attr("start").and_then(|s| s.parse().ok()).unwrap_or(1));
                self.lists.push(ListState { next_number });
                None
            }
            "li" => {
                self.list_marker();
                frame.breaks_after = 1;
                None
            }
            // `span` without a spoiler, and anything else ammonia let through: transparent.
            _ => None,
        };
        if frame.preformatted {
            self.pre_depth += 1;
        }
        if let Some(style) = style
            && self.may_open(&style)
        {
            self.flush_breaks();
            self.flush_space();
            self.count_open(&style, 1);
            frame.span = Some(self.out.spans.len());
            let start = self.out.text.len();
            // The end is set when the element closes.
            self.out.spans.push(Span {
                style,
                start,
                end: usize::MAX,
            });
        }
        self.frames.push(frame);
    }

    fn end_element(&mut self, name: &str) {
        // Sanitised HTML is well formed, so this is normally the top frame; closing
        // everything above it keeps the span stack consistent regardless.
        let Some(position) = self.frames.iter().rposition(|frame| frame.name == name) else {
            return;
        };
        while self.frames.len() > position {
            let frame = self.frames.pop().expect("frames.len() > position >= 0");
            self.close(frame);
        }
    }

    fn close(&mut self, frame: Frame) {
        if let Some(index) = frame.span {
            if frame.preformatted {
                // Code blocks written in Markdown end with a newline that is not part
                // of the code; it would show as an empty last line.
                let start = self.out.spans[index].start;
                let kept = self.out.text[start..].trim_end_matches('\n').len();
                self.out.text.truncate(start + kept);
                // Only spans opened after this one can reach into the removed text.
                let len = self.out.text.len();
                for span in &mut self.out.spans[index..] {
                    span.start = span.start.min(len);
                    if span.end != usize::MAX {
                        span.end = span.end.min(len);
                    }
                }
            }
            self.out.spans[index].end = self.out.text.len();
            let style = self.out.spans[index].style.clone();
            self.count_open(&style, -1);
        }
        if frame.preformatted {
            self.pre_depth -= 1;
        }
        if frame.list {
            self.lists.pop();
        }
        self.request_breaks(frame.breaks_after);
    }

    fn finish(mut self) -> StyledText {
        while let Some(frame) = self.frames.pop() {
            self.close(frame);
        }
        self.out.spans.retain(|span| span.start < span.end);
        self.out
    }

    /// Writes text content: collapsed like HTML outside `<pre>`, verbatim inside.
    fn text(&mut self, text: &str) {
        if self.pre_depth > 0 {
            let mut text = text;
            // HTML drops a newline directly after `<pre>` (and serialisers add one back
            // when the content starts with a newline).
            if let Some(top) = self.frames.last()
                && top.preformatted
                && !top.has_text
            {
                text = text.strip_prefix('\n').unwrap_or(text);
            }
            if text.is_empty() {
                return;
            }
            self.flush_breaks();
            self.flush_space();
            self.push_raw(text);
            return;
        }
        for c in text.chars() {
            if is_html_whitespace(c) {
                self.pending_space = true;
            } else {
                self.flush_breaks();
                self.flush_space();
                let mut buf = [0; 4];
                self.push_raw(c.encode_utf8(&mut buf));
            }
        }
    }

    /// Appends to the output as is, marking the open elements as non-empty.
    fn push_raw(&mut self, text: &str) {
        self.out.text.push_str(text);
        self.after_list_marker = false;
        // A frame with text implies its ancestors have text too, so stop at the first
        // marked one: this keeps deeply nested input linear.
        for frame in self.frames.iter_mut().rev() {
            if frame.has_text {
                break;
            }
            frame.has_text = true;
        }
    }

    /// Starts a block element that wants `breaks` newlines before and after it.
    fn block(&mut self, frame: &mut Frame, breaks: usize) {
        self.request_breaks(breaks);
        frame.breaks_after = breaks;
    }

    fn request_breaks(&mut self, breaks: usize) {
        self.pending_breaks = self.pending_breaks.max(breaks);
    }

    /// Makes the text end with the pending number of newlines (never at the very start,
    /// and not between a list marker and its item's text).
    fn flush_breaks(&mut self) {
        if self.pending_breaks == 0 {
            return;
        }
        let wanted = std::mem::take(&mut self.pending_breaks);
        self.pending_space = false;
        if self.after_list_marker || self.out.text.is_empty() {
            return;
        }
        let present = self
            .out
            .text
            .chars()
            .rev()
            .take_while(|&c| c == '\n')
            .count();
        for _ in present..wanted {
            self.out.text.push('\n');
        }
    }

    /// Writes the pending collapsed space, unless the text is empty or already ends with
    /// collapsible whitespace (a space, or a newline). A no-break space is not collapsible:
    /// as in a browser, a space after one is kept.
    fn flush_space(&mut self) {
        if std::mem::take(&mut self.pending_space)
            && self
                .out
                .text
                .chars()
                .next_back()
                .is_some_and(|c| !is_html_whitespace(c))
        {
            self.push_raw(" ");
        }
    }

    /// Starts a list item on its own line with its bullet or number, indented by depth.
    fn list_marker(&mut self) {
        self.after_list_marker = false;
        self.request_breaks(1);
        self.flush_breaks();
        let depth = self.lists.len().max(1);
        let marker = match self
            .lists
            .last_mut()
            .and_then(|list| list.next_number.as_mut())
        {
            Some(number) => {
                let marker = format!("{number}. ");
                *number += 1;
                marker
            }
            None => "• ".to_owned(),
        };
        let indent = "  ".repeat(depth - 1);
        self.push_raw(&format!("{indent}{marker}"));
        self.after_list_marker = true;
    }

    /// `<code class="language-x">` directly inside a `<pre>` that has no text yet gives
    /// the block its language (the `<pre><code class>` convention of Matrix and Telegram). Returns
    /// whether this `<code>` belongs to a `<pre>` and so must not open a style of its own.
    fn set_pre_language(&mut self, class: Option<&str>) -> bool {
        let Some(top) = self.frames.last() else {
            return false;
        };
        if !top.preformatted {
            // `code` deeper inside a `pre` opens nothing either, via `may_open`.
            return false;
        }
        if let (false, Some(index), Some(language)) =
            (top.has_text, top.span, class.and_then(code_language))
        {
            self.out.spans[index].style = Style::Pre {
                language: Some(language.to_owned()),
            };
        }
        true
    }

    /// Whether the target lets `style` open here.
    fn may_open(&self, style: &Style) -> bool {
        (self.target.may_open)(style, self.open)
    }

    /// Keeps the per-kind counts of open spans that `may_open` consults.
    fn count_open(&mut self, style: &Style, delta: isize) {
        let counter = match style {
            // Code and pre show their content verbatim.
            Style::Code | Style::Pre { .. } => &mut self.open.verbatim,
            Style::Link { .. } => &mut self.open.links,
            Style::Blockquote { .. } => &mut self.open.quotes,
            _ => return,
        };
        *counter = counter.saturating_add_signed(delta);
    }
}

/// Whitespace that HTML collapses (not U+00A0, which is meant to stay).
fn is_html_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0C')
}

pub fn contains_reply_fallback(html: &str) -> bool {
    html.to_ascii_lowercase().contains("<mx-reply")
}

/// `body` without its reply fallback: the leading `> ` quote lines and the blank line after.
pub fn strip_plain_reply_fallback(body: &str) -> &str {
    if !body.starts_with('>') {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        rest = rest.split_once('\n').map_or("", |(_, tail)| tail);
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}
