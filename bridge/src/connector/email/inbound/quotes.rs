//! Where the new text of a reply ends, read line by line.
//!
//! Used on plain text bodies, and on the lines of an HTML body once the quotes its client
//! marked are gone (an Outlook desktop reply marks nothing: its "From: … Sent: …" block
//! is only text). A reply is assumed to be written on top, as nearly every client does;
//! an inline reply (answers between `>` lines) is kept whole but for its trailing quote.

/// A line of a body, and whether it is quoted (`>` in plain text, inside a `<blockquote>`
/// in HTML).
#[derive(Clone, Copy, Debug)]
pub(super) struct Line<'a> {
    pub text: &'a str,
    pub quoted: bool,
}

/// `text` without quoted history and signature: cut at an attribution line ("On … wrote:",
/// also wrapped over two lines, and its German, French, Spanish and Dutch forms) followed
/// only by quoted lines, at `-----Original Message-----`, at Outlook's "From: / Sent: /
/// To: / Subject:" block, at the `-- ` signature separator or a "Sent from my phone" line,
/// and without the `>` lines at the end. Always a trimmed slice of `text`; empty when
/// the mail held nothing new.
pub fn strip_plain_quotes(text: &str) -> &str {
    let mut starts = Vec::new();
    let mut lines = Vec::new();
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        starts.push(offset);
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        lines.push(Line {
            text: line,
            quoted: line.trim_start().starts_with('>'),
        });
    }
    let end = new_lines_end(&lines);
    let end_offset = starts.get(end).copied().unwrap_or(text.len());
    text[..end_offset].trim()
}

/// The index of the first line that is not new text (`lines.len()` when all are).
pub(super) fn new_lines_end(lines: &[Line<'_>]) -> usize {
    let mut end = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.quoted {
            continue;
        }
        if let Some(cut) = cut_at(lines, i) {
            end = cut;
            break;
        }
    }
    // The quote a reply ends with, and the blank lines around it.
    while end > 0 && (lines[end - 1].quoted || lines[end - 1].text.trim().is_empty()) {
        end -= 1;
    }
    if end > 0 && is_phone_signature(lines[end - 1].text) {
        end -= 1;
    }
    end
}

/// Where to cut if line `i` starts what is not new text.
fn cut_at(lines: &[Line<'_>], i: usize) -> Option<usize> {
    let line = lines[i].text.trim();
    if line == "--" || is_original_message(line) {
        return Some(i);
    }
    if is_header_block(lines, i) {
        // Outlook draws a line of underscores above the block.
        let above = (0..i).rev().find(|&j| !lines[j].text.trim().is_empty());
        return Some(match above {
            Some(j) if is_rule(lines[j].text) => j,
            _ => i,
        });
    }
    let attribution_end = if is_attribution(line) {
        Some(i + 1)
    } else {
        let next = lines.get(i + 1).filter(|next| !next.quoted)?;
        let joined = format!("{line} {}", next.text.trim());
        is_attribution(&joined).then_some(i + 2)
    }?;
    // Only a quote may follow (and the signature some clients put below it); answers
    // between quoted lines make it an inline reply, kept.
    lines[attribution_end..]
        .iter()
        .take_while(|l| l.quoted || l.text.trim() != "--")
        .all(|l| l.quoted || l.text.trim().is_empty())
        .then_some(i)
}

/// "On <date>, <name> wrote:" and its translations.
fn is_attribution(line: &str) -> bool {
    const FORMS: &[(&str, &str, &str)] = &[
        // (starts with, contains, ends with)
        ("on ", "", "wrote:"),
        ("am ", "schrieb", ":"),
        ("le ", "", "a écrit :"),
        ("le ", "", "a écrit:"),
        ("el ", "", "escribió:"),
        ("op ", "schreef", ":"),
    ];
    let line = line.trim();
    // An attribution is a date and a name; anything longer is a sentence that happens
    // to match.
    if line.chars().count() > 250 {
        return false;
    }
    let lower = line.to_lowercase();
    FORMS.iter().any(|(start, contains, end)| {
        lower.starts_with(start) && lower.contains(contains) && lower.ends_with(end)
    })
}

fn is_original_message(line: &str) -> bool {
    const NAMES: &[&str] = &[
        "original message",
        "ursprüngliche nachricht",
        "message d'origine",
        "mensaje original",
        "oorspronkelijk bericht",
    ];
    let lower = line.to_lowercase();
    let inner = lower.trim_matches(|c: char| c == '-' || c.is_whitespace());
    lower.starts_with("--") && lower.ends_with("--") && NAMES.contains(&inner)
}

/// Outlook's header block: a "From:" line with "Sent:"/"Date:" and "To:"/"Subject:"
/// lines (or their translations) among the next few.
fn is_header_block(lines: &[Line<'_>], i: usize) -> bool {
    const FROM: &[&str] = &["from:", "von:", "de:", "de :", "van:"];
    const SENT: &[&str] = &[
        "sent:",
        "date:",
        "gesendet:",
        "datum:",
        "envoyé :",
        "envoyé:",
        "enviado:",
        "fecha:",
        "verzonden:",
        "verstuurd:",
    ];
    const TO: &[&str] = &[
        "to:",
        "subject:",
        "an:",
        "betreff:",
        "à :",
        "à:",
        "objet :",
        "objet:",
        "para:",
        "asunto:",
        "aan:",
        "onderwerp:",
    ];
    let starts = |line: &str, names: &[&str]| {
        // Plain text made from Outlook's HTML writes the names in bold: `*From:*`.
        let lower = line
            .trim()
            .trim_start_matches('*')
            .to_lowercase()
            .replace(":*", ":");
        names.iter().any(|name| lower.starts_with(name))
    };
    if !starts(lines[i].text, FROM) {
        return false;
    }
    let next = &lines[i + 1..lines.len().min(i + 7)];
    next.iter().any(|l| starts(l.text, SENT)) && next.iter().any(|l| starts(l.text, TO))
}

fn is_rule(line: &str) -> bool {
    let line = line.trim();
    line.len() >= 10 && line.chars().all(|c| c == '_')
}

/// The line phone clients add under every mail.
fn is_phone_signature(line: &str) -> bool {
    const STARTS: &[&str] = &[
        "sent from my ",
        "sent from mail for windows",
        "get outlook for ",
        "von meinem ",
        "envoyé de mon ",
        "enviado desde mi ",
        "verzonden vanaf mijn ",
    ];
    let lower = line.trim().to_lowercase();
    lower.chars().count() <= 80 && STARTS.iter().any(|start| lower.starts_with(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attribution_followed_only_by_quotes_ends_the_new_text() {
        let text = "Sure, tomorrow works.\n\nOn Mon, 3 Mar 2025 at 10:00, Visitor <v@example.org> wrote:\n> Can we talk?\n>\n> Thanks\n";
        assert_eq!(strip_plain_quotes(text), "Sure, tomorrow works.");
    }

    #[test]
    fn an_attribution_wrapped_over_two_lines_is_found() {
        let text = "Yes.\r\n\r\nOn Mon, 3 Mar 2025 at 10:00, Some Visitor Name\r\n<visitor@example.org> wrote:\r\n> question\r\n";
        assert_eq!(strip_plain_quotes(text), "Yes.");
    }

    #[test]
    fn translated_attributions_are_found() {
        for attribution in [
            "Am 03.03.2025 um 10:00 schrieb Besucher <v@example.org>:",
            "Le lun. 3 mars 2025 à 10:00, Visiteur <v@example.org> a écrit :",
            "El lun, 3 mar 2025 a las 10:00, Visitante (<v@example.org>) escribió:",
            "Op ma 3 mrt 2025 om 10:00 schreef Bezoeker <v@example.org>:",
        ] {
            let text = format!("Neu.\n\n{attribution}\n> alt\n");
            assert_eq!(strip_plain_quotes(&text), "Neu.", "{attribution}");
        }
    }

    #[test]
    fn an_inline_reply_keeps_its_answers_and_loses_only_the_trailing_quote() {
        let text = "On Mon, Visitor wrote:\n> Price?\n10 euros.\n> When?\nToday.\n>\n> Thanks, V\n";
        assert_eq!(
            strip_plain_quotes(text),
            "On Mon, Visitor wrote:\n> Price?\n10 euros.\n> When?\nToday."
        );
    }

    #[test]
    fn a_signature_below_the_quote_does_not_hide_the_attribution() {
        let text = "Yes.\n\nAm 03.03.25 um 10:02 schrieb Switchboard:\n> Passt?\n\n-- \nDave\n";
        assert_eq!(strip_plain_quotes(text), "Yes.");
    }

    #[test]
    fn a_sentence_starting_with_on_is_not_an_attribution() {
        let text = "On Monday I will call you.\nSee you then.";
        assert_eq!(strip_plain_quotes(text), text);
    }

    #[test]
    fn outlook_header_block_and_the_rule_above_it_are_cut() {
        let text = "Done.\n\n________________________________\nFrom: Switchboard <reply+abc@example.org>\nSent: Monday, March 3, 2025 10:00 AM\nTo: Alice <alice@example.com>\nSubject: New conversation\n\nA visitor asks…\n";
        assert_eq!(strip_plain_quotes(text), "Done.");
        let german = "Erledigt.\n\nVon: Switchboard <reply+abc@example.org>\nGesendet: Montag, 3. März 2025 10:00\nAn: Alice\nBetreff: Neues Gespräch\n\nText";
        assert_eq!(strip_plain_quotes(german), "Erledigt.");
    }

    #[test]
    fn a_from_line_alone_is_new_text() {
        let text = "From: the sales team, with thanks.\nTo be continued.";
        assert_eq!(strip_plain_quotes(text), text);
    }

    #[test]
    fn original_message_separator_and_signature_end_the_new_text() {
        assert_eq!(
            strip_plain_quotes("Ok.\n-----Original Message-----\nFrom: x\nold"),
            "Ok."
        );
        assert_eq!(strip_plain_quotes("Ok.\n-- \nAlice\nACME Ltd"), "Ok.");
        assert_eq!(strip_plain_quotes("Ok.\n\nSent from my iPhone"), "Ok.");
    }

    #[test]
    fn only_quoted_content_gives_nothing() {
        assert_eq!(
            strip_plain_quotes("\nOn Mon, Visitor wrote:\n> hello\n> there\n"),
            ""
        );
    }
}
