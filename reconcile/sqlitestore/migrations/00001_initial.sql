-- +goose Up
CREATE TABLE sync_status (
    discord_id  TEXT PRIMARY KEY,
    user_pks    TEXT NOT NULL,          -- JSON array of Authentik user pks
    membership  TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    result      TEXT NOT NULL,
    error       TEXT NOT NULL DEFAULT '',
    changes     INTEGER NOT NULL DEFAULT 0,
    at          INTEGER NOT NULL,       -- unix milliseconds
    duration_us INTEGER NOT NULL
);

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    trigger    TEXT NOT NULL,
    discord_id TEXT NOT NULL,
    user_pk    INTEGER NOT NULL,
    username   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    target     TEXT NOT NULL,
    before     TEXT NOT NULL,
    after      TEXT NOT NULL,
    reason     TEXT NOT NULL
);
CREATE INDEX audit_discord_id ON audit (discord_id, id);
CREATE INDEX audit_user_pk ON audit (user_pk, id);

-- +goose Down
DROP TABLE audit;
DROP TABLE sync_status;
