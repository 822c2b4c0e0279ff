//! Responders on Discord, through a bot (serenity's gateway, our own REST client).

pub mod format;
