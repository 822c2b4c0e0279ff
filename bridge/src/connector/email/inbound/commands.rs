//! Commands a responder writes in a reply, as they would type them on Telegram.

/// The commands a reply may carry. Others stay text: a line like `/etc/hosts` or
/// `/shrug` is what the responder wanted the visitor to read.
pub const COMMANDS: &[&str] = &[
    "end",
    "transfer",
    "conversations",
    "available",
    "away",
    "offline",
    "help",
];

/// A command written alone on a line of the new text: `/end`, `/transfer sales`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Lower-cased, without the slash: one of [`COMMANDS`].
    pub name: String,
    /// The rest of the line, trimmed (a topic or a responder's name); may be empty.
    pub args: String,
}

/// The command `line` is, if it is one alone.
pub(super) fn command(line: &str) -> Option<Command> {
    let rest = line.trim().strip_prefix('/')?;
    let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let name = name.to_lowercase();
    COMMANDS.contains(&name.as_str()).then(|| Command {
        name,
        args: args.trim().to_owned(),
    })
}

/// The commands among the lines of `text`, and the text without their lines.
pub(super) fn take_commands(text: &str) -> (Vec<Command>, String) {
    let mut commands = Vec::new();
    let mut rest = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match command(line) {
            Some(found) => commands.push(found),
            None => rest.push_str(line),
        }
    }
    (commands, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_taken_out_of_the_text() {
        let (commands, text) = take_commands("Thanks, goodbye!\n/END\nsee /end above\n");
        assert_eq!(
            commands,
            vec![Command {
                name: "end".into(),
                args: String::new()
            }]
        );
        assert_eq!(text, "Thanks, goodbye!\nsee /end above\n");
    }

    #[test]
    fn transfer_keeps_its_target_and_unknown_commands_stay_text() {
        assert_eq!(
            command("  /transfer  Alice Martin "),
            Some(Command {
                name: "transfer".into(),
                args: "Alice Martin".into()
            })
        );
        assert_eq!(command("/etc/hosts"), None);
        assert_eq!(command("/endless"), None);
        assert_eq!(command("> /end"), None);
    }
}
