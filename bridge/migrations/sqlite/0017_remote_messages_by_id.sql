-- A deleted message is named by its ID alone on some platforms (Discord's MESSAGE_DELETE
-- has no author), so its chat is looked up by platform and message ID.
CREATE INDEX remote_messages_by_id ON remote_messages (platform, message_id);
