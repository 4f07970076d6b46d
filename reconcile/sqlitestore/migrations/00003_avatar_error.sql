-- +goose Up
-- Why the last sync could not refresh the member's avatar, for the status page.
ALTER TABLE sync_status ADD COLUMN avatar_error TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE sync_status DROP COLUMN avatar_error;
