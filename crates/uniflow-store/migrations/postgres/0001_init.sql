-- Resources of every kind, as the JSON text of `to_value()`; `pos` orders them by insertion
-- (an upsert updates its row and keeps it).
CREATE TABLE uniflow_resources (
    pos BIGINT GENERATED ALWAYS AS IDENTITY,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id),
    CONSTRAINT uniflow_resources_kind_namespace_name_key UNIQUE (kind, namespace, name)
);
CREATE INDEX uniflow_resources_kind_pos ON uniflow_resources (kind, pos);

-- One row per changed resource. Writers take a transaction-scoped advisory lock before they
-- write, so seqs are handed out in commit order and a watcher reading `seq > last` never
-- skips a row that commits later. A rolled-back writer leaves a gap, which means nothing.
CREATE TABLE uniflow_changes (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    op TEXT NOT NULL,
    id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT
);

-- The highest seq trimmed from `uniflow_changes`: a watcher behind it has lost events.
CREATE TABLE uniflow_changes_trimmed (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    seq BIGINT NOT NULL
);
INSERT INTO uniflow_changes_trimmed (one, seq) VALUES (1, 0);
