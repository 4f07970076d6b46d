-- +goose Up
-- What the bridge last wrote for each Authentik user, so that a full pass can tell whether a
-- user's owned attributes are current without reading every user, and when a member was first
-- seen absent, for the leave grace period.
CREATE TABLE user_state (
    user_pk               INTEGER PRIMARY KEY,
    discord_id            TEXT NOT NULL,
    attr_hash             TEXT NOT NULL DEFAULT '',
    avatar_key            TEXT NOT NULL DEFAULT '',
    absent_since          INTEGER NOT NULL DEFAULT 0, -- unix ms, 0 while a member
    deactivated_by_bridge INTEGER NOT NULL DEFAULT 0,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX user_state_discord_id ON user_state (discord_id);

-- +goose Down
DROP TABLE user_state;
