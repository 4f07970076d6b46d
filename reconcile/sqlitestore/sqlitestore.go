// Package sqlitestore keeps the bridge's sync status and audit log in an embedded SQLite file
// (modernc.org/sqlite, no cgo), with schema migrations applied at open.
package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/discord-authentik-bridge/bridge/reconcile"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Sync results arrive with every webhook call, thousands a second under load. They are
// written in batches by one goroutine so a call never waits for the disk; audit entries, which
// are rare and must not be lost, are written before RecordChanges returns.
const (
	batchSize     = 256
	flushInterval = 100 * time.Millisecond
)

// Store is a reconcile.Store backed by one SQLite file.
type Store struct {
	db  *sql.DB
	log *slog.Logger

	pending chan reconcile.SyncRecord
	flushed chan chan struct{} // a request to write out what is pending, answered when done
	done    chan struct{}
	closeMu sync.Once
	wg      sync.WaitGroup
}

var _ reconcile.Store = (*Store)(nil)

// Open opens or creates the database at path and brings its schema up to date.
func Open(ctx context.Context, path string, log *slog.Logger) (*Store, error) {
	// WAL lets the status page read while a batch is written; busy_timeout makes a second
	// writer wait instead of failing with SQLITE_BUSY.
	dsn := "file:" + path +
		"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)" +
		"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// One connection serialises writers inside the process, which SQLite needs anyway.
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := migrate(ctx, db, log); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{
		db:      db,
		log:     log,
		pending: make(chan reconcile.SyncRecord, 4*batchSize),
		flushed: make(chan chan struct{}),
		done:    make(chan struct{}),
	}
	s.wg.Add(1)
	go s.writeLoop()
	return s, nil
}

func migrate(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub)
	if err != nil {
		return fmt.Errorf("prepare migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}
	for _, r := range results {
		log.Info("applied database migration", "version", r.Source.Version)
	}
	return nil
}

// RecordSync queues r for the next batch. When the queue is full it waits, so a stalled disk
// slows callers down rather than dropping records.
func (s *Store) RecordSync(ctx context.Context, r reconcile.SyncRecord) error {
	select {
	case s.pending <- r:
		return nil
	case <-s.done:
		return errors.New("store closed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush writes every queued sync record before it returns.
func (s *Store) Flush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case s.flushed <- ack:
	case <-s.done:
		return errors.New("store closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) writeLoop() {
	defer s.wg.Done()
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	batch := make([]reconcile.SyncRecord, 0, batchSize)
	write := func() {
		if len(batch) == 0 {
			return
		}
		if err := s.writeSyncs(batch); err != nil {
			// The records describe state that the next sync derives again, so losing a
			// batch loses history, not correctness.
			s.log.Error("write sync status", "records", len(batch), "err", err)
		}
		batch = batch[:0]
	}
	for {
		select {
		case r := <-s.pending:
			batch = append(batch, r)
			if len(batch) >= batchSize {
				write()
			}
		case <-t.C:
			write()
		case ack := <-s.flushed:
			s.drain(&batch)
			write()
			close(ack)
		case <-s.done:
			s.drain(&batch)
			write()
			return
		}
	}
}

func (s *Store) drain(batch *[]reconcile.SyncRecord) {
	for {
		select {
		case r := <-s.pending:
			*batch = append(*batch, r)
		default:
			return
		}
	}
}

func (s *Store) writeSyncs(batch []reconcile.SyncRecord) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `
		INSERT INTO sync_status
			(discord_id, user_pks, membership, trigger, result, error, changes, at, duration_us,
			 avatar_error)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (discord_id) DO UPDATE SET
			user_pks = excluded.user_pks, membership = excluded.membership,
			trigger = excluded.trigger, result = excluded.result, error = excluded.error,
			avatar_error = excluded.avatar_error,
			changes = excluded.changes, at = excluded.at, duration_us = excluded.duration_us
		WHERE excluded.at >= sync_status.at`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, r := range batch {
		pks, _ := json.Marshal(r.UserPKs)
		if r.UserPKs == nil {
			pks = []byte("[]")
		}
		if _, err := stmt.ExecContext(ctx, r.DiscordID, string(pks), r.Membership, r.Trigger,
			string(r.Result), r.Error, r.Changes, r.At.UnixMilli(),
			r.Duration.Microseconds(), r.AvatarError); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// LastSync returns the newest recorded outcome for discordID, after writing out any queued one.
func (s *Store) LastSync(ctx context.Context, discordID string) (reconcile.SyncRecord, bool, error) {
	if err := s.Flush(ctx); err != nil {
		return reconcile.SyncRecord{}, false, err
	}
	var (
		r      reconcile.SyncRecord
		pks    string
		result string
		at, us int64
	)
	err := s.db.QueryRowContext(ctx, `
		SELECT discord_id, user_pks, membership, trigger, result, error, changes, at, duration_us,
			avatar_error
		FROM sync_status WHERE discord_id = ?`, discordID).
		Scan(&r.DiscordID, &pks, &r.Membership, &r.Trigger, &result, &r.Error, &r.Changes,
			&at, &us, &r.AvatarError)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("read sync status of %s: %w", discordID, err)
	}
	if err := json.Unmarshal([]byte(pks), &r.UserPKs); err != nil {
		return r, false, fmt.Errorf("read sync status of %s: user pks: %w", discordID, err)
	}
	r.Result = reconcile.Result(result)
	r.At = time.UnixMilli(at).UTC()
	r.Duration = time.Duration(us) * time.Microsecond
	return r, true, nil
}

// RecordChanges appends cs to the audit log in one transaction.
func (s *Store) RecordChanges(ctx context.Context, cs []reconcile.Change) error {
	if len(cs) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record changes: %w", err)
	}
	defer tx.Rollback()
	for _, c := range cs {
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO audit
				(at, trigger, discord_id, user_pk, username, kind, target, before, after, reason)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			c.At.UnixMilli(), c.Trigger, c.DiscordID, c.UserPK, c.Username, string(c.Kind),
			c.Target, c.Before, c.After, c.Reason); err != nil {
			return fmt.Errorf("record changes: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("record changes: %w", err)
	}
	return nil
}

// Changes returns audit entries matching f, newest first.
func (s *Store) Changes(ctx context.Context, f reconcile.ChangeFilter) ([]reconcile.Change, error) {
	var (
		where []string
		args  []any
	)
	if f.DiscordID != "" {
		where = append(where, "discord_id = ?")
		args = append(args, f.DiscordID)
	}
	if f.UserPK != 0 {
		where = append(where, "user_pk = ?")
		args = append(args, f.UserPK)
	}
	if f.Kind != "" {
		where = append(where, "kind = ?")
		args = append(args, string(f.Kind))
	}
	if f.Before > 0 {
		where = append(where, "id < ?")
		args = append(args, f.Before)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	q := `SELECT id, at, trigger, discord_id, user_pk, username, kind, target, before, after, reason
		FROM audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)

	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	var out []reconcile.Change
	for rows.Next() {
		var (
			c    reconcile.Change
			at   int64
			kind string
		)
		if err := rows.Scan(&c.ID, &at, &c.Trigger, &c.DiscordID, &c.UserPK, &c.Username,
			&kind, &c.Target, &c.Before, &c.After, &c.Reason); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		c.At = time.UnixMilli(at).UTC()
		c.Kind = reconcile.ChangeKind(kind)
		out = append(out, c)
	}
	return out, rows.Err()
}

// Close writes out queued records and closes the database.
func (s *Store) Close() error {
	s.closeMu.Do(func() { close(s.done) })
	s.wg.Wait()
	return s.db.Close()
}

// UserState returns the remembered state of user pk.
func (s *Store) UserState(ctx context.Context, pk int32) (reconcile.UserState, bool, error) {
	row := s.db.QueryRowContext(ctx, userStateSelect+` WHERE user_pk = ?`, pk)
	st, err := scanUserState(row)
	if errors.Is(err, sql.ErrNoRows) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("read state of user %d: %w", pk, err)
	}
	return st, true, nil
}

// UserStates returns the remembered state of every user.
func (s *Store) UserStates(ctx context.Context) (map[int32]reconcile.UserState, error) {
	rows, err := s.db.QueryContext(ctx, userStateSelect)
	if err != nil {
		return nil, fmt.Errorf("read user states: %w", err)
	}
	defer rows.Close()
	out := map[int32]reconcile.UserState{}
	for rows.Next() {
		st, err := scanUserState(rows)
		if err != nil {
			return nil, fmt.Errorf("read user states: %w", err)
		}
		out[st.UserPK] = st
	}
	return out, rows.Err()
}

// PutUserState stores st.
func (s *Store) PutUserState(ctx context.Context, st reconcile.UserState) error {
	return s.putUserStates(ctx, []reconcile.UserState{st}, `
		ON CONFLICT (user_pk) DO UPDATE SET
			discord_id = excluded.discord_id, attr_hash = excluded.attr_hash,
			avatar_key = excluded.avatar_key, absent_since = excluded.absent_since,
			deactivated_by_bridge = excluded.deactivated_by_bridge,
			updated_at = excluded.updated_at`)
}

// AddUserStates stores the states of sts whose users have none yet, in one transaction.
func (s *Store) AddUserStates(ctx context.Context, sts []reconcile.UserState) error {
	return s.putUserStates(ctx, sts, `ON CONFLICT (user_pk) DO NOTHING`)
}

func (s *Store) putUserStates(ctx context.Context, sts []reconcile.UserState,
	onConflict string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store user states: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `
		INSERT INTO user_state
			(user_pk, discord_id, attr_hash, avatar_key, absent_since, deactivated_by_bridge, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) `+onConflict)
	if err != nil {
		return fmt.Errorf("store user states: %w", err)
	}
	defer stmt.Close()
	for _, st := range sts {
		var absent int64
		if !st.AbsentSince.IsZero() {
			absent = st.AbsentSince.UnixMilli()
		}
		if _, err := stmt.ExecContext(ctx, st.UserPK, st.DiscordID, st.AttrHash, st.AvatarKey,
			absent, st.DeactivatedByBridge, st.UpdatedAt.UnixMilli()); err != nil {
			return fmt.Errorf("store state of user %d: %w", st.UserPK, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store user states: %w", err)
	}
	return nil
}

const userStateSelect = `SELECT user_pk, discord_id, attr_hash, avatar_key, absent_since,
	deactivated_by_bridge, updated_at FROM user_state`

func scanUserState(row interface{ Scan(...any) error }) (reconcile.UserState, error) {
	var (
		st              reconcile.UserState
		absent, updated int64
	)
	err := row.Scan(&st.UserPK, &st.DiscordID, &st.AttrHash, &st.AvatarKey, &absent,
		&st.DeactivatedByBridge, &updated)
	if absent != 0 {
		st.AbsentSince = time.UnixMilli(absent).UTC()
	}
	st.UpdatedAt = time.UnixMilli(updated).UTC()
	return st, err
}
