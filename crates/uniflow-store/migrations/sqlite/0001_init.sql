-- Resources of every kind, as the JSON text of `to_value()`. The row id orders them by
-- insertion: an upsert updates its row in place and keeps it.
CREATE TABLE uniflow_resources (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id),
    UNIQUE (kind, namespace, name)
);

-- One row per changed resource, in commit order (writers hold the write lock from BEGIN
-- IMMEDIATE to COMMIT); watchers read it by `seq > last`. AUTOINCREMENT: a seq is never
-- reused, even after the newest rows are trimmed.
CREATE TABLE uniflow_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    op TEXT NOT NULL,
    id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT
);

-- The highest seq trimmed from `uniflow_changes`: a watcher behind it has lost events.
CREATE TABLE uniflow_changes_trimmed (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    seq INTEGER NOT NULL
);
INSERT INTO uniflow_changes_trimmed (one, seq) VALUES (1, 0);
