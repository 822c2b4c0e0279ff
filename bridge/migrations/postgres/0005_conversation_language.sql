-- The visitor's language, if the widget told us (routing matches it against responders').
ALTER TABLE conversations ADD COLUMN language TEXT;
