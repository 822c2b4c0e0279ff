//! What a platform is and declares it can do: its name, its text limits (and the unit they are
//! counted in), its files, pacing, edits and how commands are written there.

use std::time::Duration;

use super::registry;

/// A platform responders can be reached on: the name of a registered platform
/// (`registry::PLATFORMS`). A thin name, so adding a platform touches nothing here; what the
/// bridge needs to know about it comes from the platform's [`registry::PlatformSpec`] or its
/// running connector's [`Capabilities`], never from matching on the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Platform(pub(super) &'static str);

impl Platform {
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The registered platform called `s`, if there is one.
    pub fn parse(s: &str) -> Option<Self> {
        registry::spec(s).map(registry::PlatformSpec::platform)
    }

    /// What the platform's module declares about it.
    pub fn spec(self) -> &'static registry::PlatformSpec {
        registry::spec(self.0).expect("a Platform is only made from a registered spec")
    }

    /// The platform's name as people write it.
    pub fn display_name(self) -> &'static str {
        self.spec().display_name
    }
}

/// How long a platform call may take unless the connector declares otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// In what a platform counts the length of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextUnit {
    /// UTF-16 code units (Telegram).
    Utf16,
    /// Unicode scalar values (`char`s).
    Chars,
    /// UTF-8 bytes (Matrix events are limited in bytes).
    Bytes,
}

impl TextUnit {
    /// How many units this character counts for (the measure `format::split` takes).
    pub fn of(self) -> fn(char) -> usize {
        match self {
            TextUnit::Utf16 => char::len_utf16,
            TextUnit::Chars => |_| 1,
            TextUnit::Bytes => char::len_utf8,
        }
    }

    /// The length of `text` in this unit.
    pub fn len(self, text: &str) -> usize {
        match self {
            TextUnit::Utf16 => text.encode_utf16().count(),
            TextUnit::Chars => text.chars().count(),
            TextUnit::Bytes => text.len(),
        }
    }
}

/// The longest text one message may carry on a platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimit {
    pub max: usize,
    pub unit: TextUnit,
}

/// Whether and how big files a platform carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// The largest file the bridge may send there, in bytes.
    pub max_bytes: u64,
}

/// What a connector can do, declared up front.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// The longest text of one message, in the platform's unit (after rendering: Telegram
    /// counts the text without its HTML tags). Longer texts are split by the connector's
    /// `render` into parts within this.
    pub max_text_len: TextLimit,
    /// The files the platform carries; `None`: none at all. Kept by the bridge: a visitor's
    /// file the platform does not carry, or larger than `max_bytes`, never reaches
    /// `deliver_file`; the responder gets a notice in its place and the visitor is told.
    pub files: Option<FileLimits>,
    /// Whether a responder's edits of their messages reach Switchboard (as
    /// [`RemoteEvent::Edit`]) and offers can be edited in place. Kept by the bridge: where
    /// `false` it never calls `offer_accepted` or `close_offer`; why an offer closed goes out
    /// as a new message (`notify`) naming the conversation instead.
    pub edits: bool,
    /// Whether a visitor's edit or deletion changes the messages the responder was already
    /// sent ([`Connector::edit_delivered`], [`Connector::delete_delivered`]). Where `false`
    /// an edit goes out as a new message marked as edited, and a deletion as a short note.
    pub revises_deliveries: bool,
    /// How often a typing indicator must be sent again to stay on (Telegram's chat action
    /// lasts about five seconds); `None`: once is enough (it lasts until turned off).
    pub typing_renewal: Option<Duration>,
    /// The responder is a member of the conversation room itself, so the homeserver already
    /// delivers every message both ways and the bridge must not relay them.
    pub shares_room: bool,
    /// How a command starts on this platform (`/end` on Telegram, `!end` in a Matrix room),
    /// so what Switchboard tells responders names commands as they type them.
    pub command_prefix: char,
    /// The least time between two messages the bridge sends to one address (chat) on this
    /// platform: every message counts, the parts of a long one, notices, offers and edits of
    /// offers. `Duration::ZERO`: no pacing.
    pub min_interval_per_chat: Duration,
    /// How many messages per second the platform accepts from the bridge across all
    /// addresses; `None`: no limit.
    pub max_messages_per_second: Option<u32>,
    /// Whether deliveries that keep failing for a transient reason make the responder count as
    /// unreachable, handing the conversation to someone else. `false` where the platform is
    /// the homeserver itself (Matrix): every responder there is as unreachable as this one,
    /// so delivery waits, however long, for it to come back.
    pub unreachable_hands_over: bool,
    /// The longest one call to the platform may take (a send, an edit, a file upload)
    /// before it counts as a transient failure and is retried later. Every call the bridge
    /// makes through a connector is cut off at this (see `timed.rs`), so a platform that
    /// hangs holds up only the lane that called it, for at most this long.
    pub call_timeout: Duration,
    /// How long a visitor message waits for the next ones before it goes out, so several
    /// lines written in a row become one platform message (email: one mail, not ten).
    /// Where it is above zero the bridge sends text messages through
    /// [`Connector::deliver_batch`], each run of one conversation's messages queued within
    /// the window together; files and changes still go one by one. `Duration::ZERO`: every
    /// message at once, on its own.
    pub batch_window: Duration,
    /// Whether sending the same part of the same delivery again is answered with the message
    /// first sent, never a second one (Matrix: the send is keyed by a transaction ID made
    /// from the visitor's event and the part). Where `true` the record of a part sent needs
    /// no disk flush of its own: should a power cut lose it, the part is sent again and the
    /// platform folds the two. Elsewhere the record is flushed before the next part goes, so
    /// nothing is sent twice.
    pub idempotent_sends: bool,
}

impl Capabilities {
    /// A platform with no sending limits that does not share the conversation room, whose
    /// commands start with `command_prefix`.
    /// Texts of up to 4096 characters, no files, no edits, typing shown once.
    pub const fn unpaced(command_prefix: char) -> Capabilities {
        Capabilities {
            max_text_len: TextLimit {
                max: 4096,
                unit: TextUnit::Chars,
            },
            files: None,
            edits: false,
            revises_deliveries: false,
            typing_renewal: None,
            shares_room: false,
            command_prefix,
            min_interval_per_chat: Duration::ZERO,
            max_messages_per_second: None,
            unreachable_hands_over: true,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            batch_window: Duration::ZERO,
            idempotent_sends: false,
        }
    }
}
