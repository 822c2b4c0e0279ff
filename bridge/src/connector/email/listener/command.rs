//! SMTP command lines read into [`Command`]s (RFC 5321 §4.1): pure functions, no I/O and no
//! session state, so every odd input is tested here without a socket.

/// One command line, understood.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Command {
    Ehlo(String),
    Helo(String),
    /// `MAIL FROM:<path>`; the address is `""` for the null reverse-path `<>` (a bounce).
    Mail {
        from: String,
        size: Option<u64>,
    },
    /// `RCPT TO:<path>`; `Postmaster` (no domain) is allowed here, and only here.
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    /// A command SMTP defines that this listener does not offer (`EXPN`, `STARTTLS`, `AUTH`,
    /// `BDAT`, ...): answered 502, unlike a word that is no command at all (500).
    NotImplemented,
}

/// Why a line is not a command we can act on; each maps to one reply.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SyntaxError {
    /// Not a command at all, or bytes no command holds (500 5.5.2).
    Unrecognized,
    /// A known command with arguments it does not take, or without those it needs (501 5.5.4).
    Arguments,
    /// The reverse-path of `MAIL` is malformed (501 5.1.7).
    Sender,
    /// The forward-path of `RCPT` is malformed (501 5.1.3).
    Recipient,
    /// A `MAIL`/`RCPT` parameter we did not advertise, or a bad value for one (555 5.5.4).
    Parameter,
}

/// Reads one command line, its line end (CRLF or a bare LF) already removed.
pub(super) fn parse(line: &[u8]) -> Result<Command, SyntaxError> {
    // Commands are ASCII (no SMTPUTF8 is advertised); a control character (NUL, a bare CR)
    // is never part of one.
    if !line
        .iter()
        .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
    {
        return Err(SyntaxError::Unrecognized);
    }
    let line = std::str::from_utf8(line).map_err(|_| SyntaxError::Unrecognized)?;
    let (verb, args) = match line.split_once(' ') {
        Some((verb, args)) => (verb, args.trim()),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let none = |command: Command| {
        if args.is_empty() {
            Ok(command)
        } else {
            Err(SyntaxError::Arguments)
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" => {
            // RFC 5321 asks for a domain or address literal; many clients send a bare name,
            // so any single word is taken, but a greeting without one is refused.
            if args.is_empty() || args.contains(char::is_whitespace) {
                return Err(SyntaxError::Arguments);
            }
            Ok(if verb == "EHLO" {
                Command::Ehlo(args.to_owned())
            } else {
                Command::Helo(args.to_owned())
            })
        }
        "MAIL" => parse_mail(args),
        "RCPT" => parse_rcpt(args),
        "DATA" => none(Command::Data),
        "RSET" => none(Command::Rset),
        "QUIT" => none(Command::Quit),
        // NOOP and HELP may carry an argument, which is ignored.
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" if args.is_empty() => Err(SyntaxError::Arguments),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" | "STARTTLS" | "AUTH" | "BDAT" | "ETRN" | "ATRN" | "TURN" | "SEND" | "SOML"
        | "SAML" => Ok(Command::NotImplemented),
        _ => Err(SyntaxError::Unrecognized),
    }
}

fn parse_mail(args: &str) -> Result<Command, SyntaxError> {
    let rest = strip_prefix_ignore_case(args, "FROM:").ok_or(SyntaxError::Arguments)?;
    // "MAIL FROM: <a@b>" breaks RFC 5321 but is common; the space is forgiven.
    let (path, params) = split_path(rest.trim_start()).ok_or(SyntaxError::Sender)?;
    let from = match path {
        "" => String::new(),
        path => mailbox(strip_source_route(path)).ok_or(SyntaxError::Sender)?,
    };
    let mut size = None;
    for param in params.split_ascii_whitespace() {
        let (keyword, value) = match param.split_once('=') {
            Some((keyword, value)) => (keyword, Some(value)),
            None => (param, None),
        };
        if keyword.eq_ignore_ascii_case("SIZE") {
            // RFC 1870: the size in octets, at most 20 digits; a bound a u64 holds.
            let value = value.filter(|v| (1..=20).contains(&v.len()));
            let value = value.filter(|v| v.bytes().all(|b| b.is_ascii_digit()));
            size = Some(
                value
                    .and_then(|v| v.parse().ok())
                    .ok_or(SyntaxError::Parameter)?,
            );
        } else if keyword.eq_ignore_ascii_case("BODY") {
            // Both are taken as they are: the bytes are handed over untouched either way.
            match value {
                Some(v) if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {
                }
                _ => return Err(SyntaxError::Parameter),
            }
        } else {
            return Err(SyntaxError::Parameter);
        }
    }
    Ok(Command::Mail { from, size })
}

fn parse_rcpt(args: &str) -> Result<Command, SyntaxError> {
    let rest = strip_prefix_ignore_case(args, "TO:").ok_or(SyntaxError::Arguments)?;
    let (path, params) = split_path(rest.trim_start()).ok_or(SyntaxError::Recipient)?;
    if !params.trim().is_empty() {
        // No RCPT parameter is advertised (no DSN).
        return Err(SyntaxError::Parameter);
    }
    if path.eq_ignore_ascii_case("postmaster") {
        return Ok(Command::Rcpt {
            to: path.to_owned(),
        });
    }
    let to = mailbox(strip_source_route(path)).ok_or(SyntaxError::Recipient)?;
    Ok(Command::Rcpt { to })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits `<path> params` into what is between the angle brackets and what follows; a `>`
/// inside a quoted local part (`<"a>b"@example.org>`) does not end the path.
fn split_path(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('<')?;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let rest = &inner[i + 1..];
                // Parameters are separated from the path by a space.
                if !rest.is_empty() && !rest.starts_with(' ') {
                    return None;
                }
                return Some((&inner[..i], rest));
            }
            _ => {}
        }
    }
    None
}

/// `@relay1,@relay2:user@example.org` -> `user@example.org`: source routes are obsolete and
/// must be accepted and ignored (RFC 5321 §4.1.2, §C).
fn strip_source_route(path: &str) -> &str {
    if path.starts_with('@') {
        path.split_once(':').map_or(path, |(_, mailbox)| mailbox)
    } else {
        path
    }
}

/// Checks `local@domain` (RFC 5321 §4.1.2 `Mailbox`) and returns it as written: the local
/// part is case-sensitive (it may hold our reply tokens).
fn mailbox(s: &str) -> Option<String> {
    let (local, domain) = s.rsplit_once('@')?;
    let local_ok = match local.strip_prefix('"') {
        Some(quoted) => quoted_string_ok(quoted.strip_suffix('"')?),
        None => {
            !local.is_empty()
                && !local.starts_with('.')
                && !local.ends_with('.')
                && !local.contains("..")
                && local.chars().all(|c| c == '.' || is_atext(c))
        }
    };
    let domain_ok = if let Some(literal) = domain.strip_prefix('[') {
        literal.strip_suffix(']').is_some_and(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| ('!'..='~').contains(&c) && c != '[' && c != ']' && c != '\\')
        })
    } else {
        !domain.is_empty()
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    };
    (local_ok && domain_ok).then(|| s.to_owned())
}

/// The inside of a quoted local part: printable ASCII, `"` and `\\` only escaped.
fn quoted_string_ok(body: &str) -> bool {
    let printable = |c: char| (' '..='~').contains(&c);
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        let ok = match c {
            '\\' => chars.next().is_some_and(printable),
            '"' => false,
            c => printable(c),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// RFC 5322 `atext`: the characters of an unquoted local part other than the dot.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(from: &str, size: Option<u64>) -> Result<Command, SyntaxError> {
        Ok(Command::Mail {
            from: from.into(),
            size,
        })
    }

    #[test]
    fn verbs_are_read_whatever_their_case() {
        assert_eq!(
            parse(b"ehlo client.test"),
            Ok(Command::Ehlo("client.test".into()))
        );
        assert_eq!(parse(b"HeLo client"), Ok(Command::Helo("client".into())));
        assert_eq!(parse(b"data"), Ok(Command::Data));
        assert_eq!(parse(b"Quit"), Ok(Command::Quit));
        assert_eq!(parse(b"NOOP anything"), Ok(Command::Noop));
        assert_eq!(parse(b"HELP MAIL"), Ok(Command::Help));
        assert_eq!(parse(b"VRFY someone"), Ok(Command::Vrfy));
    }

    #[test]
    fn a_greeting_needs_exactly_one_name() {
        assert_eq!(parse(b"EHLO"), Err(SyntaxError::Arguments));
        assert_eq!(parse(b"HELO a b"), Err(SyntaxError::Arguments));
    }

    #[test]
    fn commands_without_arguments_refuse_them() {
        assert_eq!(parse(b"DATA now"), Err(SyntaxError::Arguments));
        assert_eq!(parse(b"RSET x"), Err(SyntaxError::Arguments));
        assert_eq!(parse(b"QUIT x"), Err(SyntaxError::Arguments));
        assert_eq!(parse(b"VRFY"), Err(SyntaxError::Arguments));
    }

    #[test]
    fn unknown_words_and_unoffered_commands_differ() {
        assert_eq!(parse(b"HELLO there"), Err(SyntaxError::Unrecognized));
        assert_eq!(parse(b""), Err(SyntaxError::Unrecognized));
        assert_eq!(parse(b"STARTTLS"), Ok(Command::NotImplemented));
        assert_eq!(parse(b"EXPN list"), Ok(Command::NotImplemented));
    }

    #[test]
    fn control_characters_and_non_ascii_are_not_commands() {
        assert_eq!(parse(b"NOOP\0"), Err(SyntaxError::Unrecognized));
        assert_eq!(parse(b"NOOP\rQUIT"), Err(SyntaxError::Unrecognized));
        assert_eq!(
            parse("MAIL FROM:<jö@example.org>".as_bytes()),
            Err(SyntaxError::Unrecognized)
        );
    }

    #[test]
    fn the_null_reverse_path_is_an_empty_sender() {
        assert_eq!(parse(b"MAIL FROM:<>"), mail("", None));
        assert_eq!(parse(b"mail from:<> SIZE=10"), mail("", Some(10)));
    }

    #[test]
    fn a_sender_is_kept_as_written() {
        assert_eq!(
            parse(b"MAIL FROM:<Ann.Lee@Example.org>"),
            mail("Ann.Lee@Example.org", None)
        );
        assert_eq!(
            parse(b"MAIL FROM: <a@b.example>"),
            mail("a@b.example", None)
        );
        assert_eq!(
            parse(b"MAIL FROM:<\"odd > name\"@example.org>"),
            mail("\"odd > name\"@example.org", None)
        );
        assert_eq!(
            parse(b"MAIL FROM:<@relay.example,@r2.example:a@example.org>"),
            mail("a@example.org", None)
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@[192.0.2.1]>"),
            mail("a@[192.0.2.1]", None)
        );
    }

    #[test]
    fn malformed_senders_are_refused() {
        for line in [
            "MAIL FROM:a@example.org",
            "MAIL FROM:<a@example.org",
            "MAIL FROM:<a@example.org>SIZE=1",
            "MAIL FROM:<a>",
            "MAIL FROM:<@example.org>",
            "MAIL FROM:<a@>",
            "MAIL FROM:<a b@example.org>",
            "MAIL FROM:<a..b@example.org>",
            "MAIL FROM:<a@exa_mple.org>",
            "MAIL FROM:<a@-example.org>",
        ] {
            assert_eq!(parse(line.as_bytes()), Err(SyntaxError::Sender), "{line}");
        }
        assert_eq!(
            parse(b"MAIL TO:<a@example.org>"),
            Err(SyntaxError::Arguments)
        );
        assert_eq!(parse(b"MAIL"), Err(SyntaxError::Arguments));
    }

    #[test]
    fn size_and_body_parameters_are_read_and_others_refused() {
        assert_eq!(
            parse(b"MAIL FROM:<a@b.c> SIZE=1234 BODY=8BITMIME"),
            mail("a@b.c", Some(1234))
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@b.c> body=7bit size=0"),
            mail("a@b.c", Some(0))
        );
        for line in [
            "MAIL FROM:<a@b.c> SIZE=",
            "MAIL FROM:<a@b.c> SIZE=-1",
            "MAIL FROM:<a@b.c> SIZE=12ab",
            "MAIL FROM:<a@b.c> SIZE=123456789012345678901",
            "MAIL FROM:<a@b.c> BODY=BINARYMIME",
            "MAIL FROM:<a@b.c> SMTPUTF8",
            "MAIL FROM:<a@b.c> RET=HDRS",
        ] {
            assert_eq!(
                parse(line.as_bytes()),
                Err(SyntaxError::Parameter),
                "{line}"
            );
        }
    }

    #[test]
    fn recipients_are_read_with_postmaster_allowed_bare() {
        assert_eq!(
            parse(b"RCPT TO:<Token.AbC@Support.Example>"),
            Ok(Command::Rcpt {
                to: "Token.AbC@Support.Example".into()
            })
        );
        assert_eq!(
            parse(b"rcpt to:<Postmaster>"),
            Ok(Command::Rcpt {
                to: "Postmaster".into()
            })
        );
        assert_eq!(parse(b"RCPT TO:<>"), Err(SyntaxError::Recipient));
        assert_eq!(parse(b"RCPT TO:<someone>"), Err(SyntaxError::Recipient));
        assert_eq!(
            parse(b"RCPT TO:<a@b.c> NOTIFY=NEVER"),
            Err(SyntaxError::Parameter)
        );
        assert_eq!(parse(b"RCPT FROM:<a@b.c>"), Err(SyntaxError::Arguments));
    }

    proptest::proptest! {
        /// Any bytes, however broken, get an answer and never a panic.
        #[test]
        fn any_line_is_parsed_without_panicking(
            line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            verb in "(MAIL FROM:|RCPT TO:|EHLO |)",
        ) {
            let _ = parse(&[verb.as_bytes(), &line].concat());
        }
    }
}
