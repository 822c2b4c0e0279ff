-- The file a message carries (a MediaRef as JSON), so a file the visitor sent before anyone
-- accepted reaches the responder as the file, not just its name.
ALTER TABLE messages ADD COLUMN media_json TEXT;
