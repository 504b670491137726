-- When each change was written, by the writer's clock (microseconds since the Unix epoch), so
-- a watcher can tell how far behind the store it runs. Rows logged before this column have
-- none.
ALTER TABLE uniflow_changes ADD COLUMN written_us BIGINT;
