//! The new part of an HTML reply, found by the marks mail clients leave on their quotes.
//!
//! The body is parsed by ammonia (html5ever's tree builder, so a client's unclosed tags
//! are nested as a browser would), keeping the tags and the `class`, `id` and `type`
//! attributes that mark quotes; the well-formed HTML it writes is read back with
//! html5ever's tokenizer into a small tree (as `format::matrix_html` does: ammonia's own
//! tree is not public). On that tree:
//! 1. Outlook's quote containers (`#appendonsend`, `#divRplyFwdMsg`, `hr#stopSpelling`,
//!    new Outlook's `#mail-editor-reference-message-container`) end the new part: they and
//!    everything after them go;
//! 2. the elements other clients mark as quote, attribution or signature go (Gmail's
//!    `gmail_quote`/`gmail_attr`/`gmail_signature`, Thunderbird's `moz-cite-prefix`,
//!    `moz-signature` and `blockquote[type=cite]`, Apple Mail's `blockquote[type=cite]`
//!    and `#AppleMailSignature`, Yahoo's `yahoo_quoted`);
//! 3. the remaining text is read as lines and cut where the plain text rules cut
//!    ([`super::quotes`]): Outlook desktop's "From: … Sent: …" block, an attribution left
//!    above a removed quote (Apple Mail), a `-- ` signature;
//! 4. command lines are taken out, and what is left is reduced to the Matrix allow-list.

use std::cell::RefCell;
use std::sync::LazyLock;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::{
    BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

use super::NewContent;
use super::commands::command;
use super::quotes::{Line, new_lines_end};
use crate::format::matrix_html::READ_LINK_SCHEMES;
use crate::format::{Target, from_matrix_html, sanitise_matrix_html};

/// Ids whose element starts the quoted part in Outlook (Outlook on the web prefixes ids
/// of a forwarded body with `x_`).
const CUT_IDS: &[&str] = &[
    "appendonsend",
    "divrplyfwdmsg",
    "stopspelling",
    "mail-editor-reference-message-container",
];
/// Classes of quotes, attributions and signatures.
const QUOTE_CLASSES: &[&str] = &[
    "gmail_quote",
    "gmail_quote_container",
    "gmail_attr",
    "gmail_signature",
    "gmail_signature_prefix",
    "moz-cite-prefix",
    "moz-signature",
    "yahoo_quoted",
];
const QUOTE_IDS: &[&str] = &["applemailsignature"];

const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];
/// Elements that start and end a line of text.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "blockquote",
    "center",
    "dd",
    "div",
    "dl",
    "dt",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "td",
    "th",
    "tr",
    "ul",
];

/// The first pass: a real HTML parse, keeping what marks quotes. Everything it lets
/// through is sanitised again by the Matrix allow-list at the end.
static PARSER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    builder
        .add_tags(["font", "center"])
        .add_generic_attributes(["class", "id", "type"])
        .add_clean_content_tags(["title", "head"])
        .link_rel(None);
    builder
});

/// A target that keeps everything: only the text of the layout is used.
const ANYTHING: Target = Target {
    link_schemes: READ_LINK_SCHEMES,
    may_open: |_, _| true,
};

#[derive(Debug)]
enum Node {
    Element(Element),
    Text(String),
}

#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn id(&self) -> Option<String> {
        let id = self.attr("id")?.to_ascii_lowercase();
        let mut id = id.as_str();
        while let Some(rest) = id.strip_prefix("x_") {
            id = rest;
        }
        Some(id.to_owned())
    }

    fn has_class(&self, classes: &[&str]) -> bool {
        self.attr("class")
            .is_some_and(|c| c.split_ascii_whitespace().any(|c| classes.contains(&c)))
    }

    fn starts_quote(&self) -> bool {
        self.id().is_some_and(|id| CUT_IDS.contains(&id.as_str()))
    }

    fn is_quote(&self) -> bool {
        self.has_class(QUOTE_CLASSES)
            || self.attr("data-smartmail") == Some("gmail_signature")
            || (self.name == "blockquote"
                && self
                    .attr("type")
                    .is_some_and(|t| t.eq_ignore_ascii_case("cite")))
            || self.id().is_some_and(|id| QUOTE_IDS.contains(&id.as_str()))
    }

    fn child(&self, path: &[usize]) -> Option<&Node> {
        let (first, rest) = path.split_first()?;
        let node = self.children.get(*first)?;
        match (node, rest.is_empty()) {
            (_, true) => Some(node),
            (Node::Element(element), false) => element.child(rest),
            (Node::Text(_), false) => None,
        }
    }
}

/// See the module documentation.
pub(super) fn new_content(html: &str) -> NewContent {
    let mut root = parse(html);
    if let Some(path) = find_path(&root, &mut Vec::new(), &|e| e.starts_quote()) {
        truncate_from(&mut root, &path);
    }
    remove_quotes(&mut root);
    let lines = lines(&root);
    let line_views: Vec<Line<'_>> = lines
        .iter()
        .map(|l| Line {
            text: &l.text,
            quoted: l.quoted,
        })
        .collect();
    let end = new_lines_end(&line_views);
    let mut commands = Vec::new();
    let mut command_nodes = Vec::new();
    for line in &lines[..end] {
        if let Some(found) = command(&line.text).filter(|_| !line.quoted) {
            commands.push(found);
            command_nodes.extend(line.nodes.iter().cloned());
        }
    }
    let cut = lines[end..]
        .iter()
        .find_map(|line| line.nodes.first())
        .cloned();
    for path in &command_nodes {
        if let Some(Node::Text(text)) = node_mut(&mut root, path) {
            text.clear();
        }
    }
    if let Some(path) = cut {
        let path = hoisted(&root, path);
        truncate_from(&mut root, &path);
    }
    let mut serialised = String::new();
    for child in &root.children {
        serialise(child, &mut serialised);
    }
    let html = sanitise_matrix_html(&serialised);
    let text = from_matrix_html(&html, &ANYTHING).text.trim().to_owned();
    NewContent {
        html: (!text.is_empty()).then_some(html),
        text,
        commands,
    }
}

fn parse(html: &str) -> Element {
    let clean = PARSER.clean(html).to_string();
    let input = BufferQueue::default();
    input.push_back(StrTendril::from(clean));
    let tokenizer = Tokenizer::new(
        TreeSink(RefCell::new(vec![Element::default()])),
        TokenizerOpts {
            discard_bom: false,
            ..TokenizerOpts::default()
        },
    );
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let mut stack = tokenizer.sink.0.into_inner();
    while stack.len() > 1 {
        close(&mut stack);
    }
    stack.pop().unwrap_or_default()
}

/// Builds the tree from the tokens of ammonia's (well-formed) output.
struct TreeSink(RefCell<Vec<Element>>);

impl TokenSink for TreeSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line_number: u64) -> TokenSinkResult<()> {
        let mut stack = self.0.borrow_mut();
        match token {
            Token::CharacterTokens(text) => {
                let parent = stack.last_mut().expect("the root is never closed");
                match parent.children.last_mut() {
                    Some(Node::Text(previous)) => previous.push_str(&text),
                    _ => parent.children.push(Node::Text(text.to_string())),
                }
            }
            Token::TagToken(tag) => match tag.kind {
                TagKind::StartTag => {
                    stack.push(Element {
                        name: tag.name.to_string(),
                        attrs: tag
                            .attrs
                            .iter()
                            .map(|a| (a.name.local.to_string(), a.value.to_string()))
                            .collect(),
                        children: Vec::new(),
                    });
                    if tag.self_closing || VOID.contains(&&*tag.name) {
                        close(&mut stack);
                    }
                }
                TagKind::EndTag => {
                    // ammonia's output closes every element it opens; an end tag that
                    // matches nothing open is ignored.
                    if let Some(depth) = stack.iter().rposition(|e| *e.name == *tag.name)
                        && depth > 0
                    {
                        while stack.len() > depth {
                            close(&mut stack);
                        }
                    }
                }
            },
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

fn close(stack: &mut Vec<Element>) {
    if stack.len() > 1
        && let Some(element) = stack.pop()
    {
        let parent = stack.last_mut().expect("checked above");
        parent.children.push(Node::Element(element));
    }
}

/// The path (child indices from the root) of the first element, in document order, that
/// `wanted` accepts.
fn find_path(
    element: &Element,
    path: &mut Vec<usize>,
    wanted: &dyn Fn(&Element) -> bool,
) -> Option<Vec<usize>> {
    for (i, child) in element.children.iter().enumerate() {
        if let Node::Element(child) = child {
            path.push(i);
            if wanted(child) {
                return Some(path.clone());
            }
            if let Some(found) = find_path(child, path, wanted) {
                return Some(found);
            }
            path.pop();
        }
    }
    None
}

/// Removes the node at `path` and everything after it in document order.
fn truncate_from(element: &mut Element, path: &[usize]) {
    let Some((&first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        element.children.truncate(first);
        return;
    }
    element.children.truncate(first + 1);
    if let Some(Node::Element(child)) = element.children.get_mut(first) {
        truncate_from(child, rest);
    }
}

/// The outermost element that `path`'s node begins: cutting there leaves no empty shell
/// (a `<div>` holding only the start of a removed header block) behind.
fn hoisted(root: &Element, mut path: Vec<usize>) -> Vec<usize> {
    while path.len() > 1 {
        let (last, parent_path) = path.split_last().expect("len > 1");
        let Some(Node::Element(parent)) = root.child(parent_path) else {
            break;
        };
        let first_in_parent = parent.children[..*last].iter().all(is_blank);
        if !first_in_parent {
            break;
        }
        path.pop();
    }
    path
}

fn is_blank(node: &Node) -> bool {
    match node {
        Node::Text(text) => text.trim().is_empty(),
        Node::Element(element) => {
            element.name != "img" && element.name != "br" && element.children.iter().all(is_blank)
        }
    }
}

fn node_mut<'a>(element: &'a mut Element, path: &[usize]) -> Option<&'a mut Node> {
    let (first, rest) = path.split_first()?;
    let node = element.children.get_mut(*first)?;
    if rest.is_empty() {
        return Some(node);
    }
    match node {
        Node::Element(child) => node_mut(child, rest),
        Node::Text(_) => None,
    }
}

/// Removes every quote. A removed quote still ends the line it was on: the text before it
/// and after it are two lines, not one run-together word.
fn remove_quotes(element: &mut Element) {
    for child in &mut element.children {
        if matches!(child, Node::Element(e) if e.is_quote()) {
            *child = Node::Element(Element {
                name: "br".to_owned(),
                attrs: Vec::new(),
                children: Vec::new(),
            });
        }
    }
    for child in &mut element.children {
        if let Node::Element(child) = child {
            remove_quotes(child);
        }
    }
}

/// A line of the body as a reader sees it.
struct TextLine {
    /// Whitespace collapsed, trimmed.
    text: String,
    quoted: bool,
    /// Paths of the text nodes it is made of.
    nodes: Vec<Vec<usize>>,
}

fn lines(root: &Element) -> Vec<TextLine> {
    let mut lines = Vec::new();
    let mut current = TextLine {
        text: String::new(),
        quoted: false,
        nodes: Vec::new(),
    };
    collect_lines(root, &mut Vec::new(), 0, &mut current, &mut lines);
    end_line(&mut current, &mut lines, false);
    lines
}

fn end_line(current: &mut TextLine, lines: &mut Vec<TextLine>, quoted_next: bool) {
    let finished = std::mem::replace(
        current,
        TextLine {
            text: String::new(),
            quoted: quoted_next,
            nodes: Vec::new(),
        },
    );
    if !finished.nodes.is_empty() {
        lines.push(TextLine {
            text: finished
                .text
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            ..finished
        });
    }
}

fn collect_lines(
    element: &Element,
    path: &mut Vec<usize>,
    quotes: usize,
    current: &mut TextLine,
    lines: &mut Vec<TextLine>,
) {
    for (i, child) in element.children.iter().enumerate() {
        path.push(i);
        match child {
            Node::Text(text) => {
                current.text.push_str(text);
                current.nodes.push(path.clone());
            }
            Node::Element(child) => {
                let quotes = quotes + usize::from(child.name == "blockquote");
                let block = BLOCKS.contains(&child.name.as_str());
                if block || child.name == "br" {
                    end_line(current, lines, quotes > 0);
                }
                collect_lines(child, path, quotes, current, lines);
                if block {
                    end_line(current, lines, element_quoted(quotes, child));
                }
            }
        }
        path.pop();
    }
}

/// Whether the text after `child` closes is still inside a quote.
fn element_quoted(quotes: usize, child: &Element) -> bool {
    quotes - usize::from(child.name == "blockquote") > 0
}

fn serialise(node: &Node, out: &mut String) {
    match node {
        Node::Text(text) => escape(text, false, out),
        Node::Element(element) => {
            out.push('<');
            out.push_str(&element.name);
            for (name, value) in &element.attrs {
                out.push(' ');
                out.push_str(name);
                out.push_str("=\"");
                escape(value, true, out);
                out.push('"');
            }
            out.push('>');
            if VOID.contains(&element.name.as_str()) {
                return;
            }
            for child in &element.children {
                serialise(child, out);
            }
            out.push_str("</");
            out.push_str(&element.name);
            out.push('>');
        }
    }
}

fn escape(text: &str, attribute: bool, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\u{a0}' => out.push_str("&nbsp;"),
            c => out.push(c),
        }
    }
}
