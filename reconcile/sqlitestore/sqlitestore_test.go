package sqlitestore

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discord-authentik-bridge/bridge/reconcile"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestStore_SyncStatusSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	s := open(t, path)
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	want := reconcile.SyncRecord{
		DiscordID: "1187654321098765431", UserPKs: []int32{7, 9}, Membership: "member",
		Trigger: "hook", Result: reconcile.ResultChanged, Changes: 2, At: at,
		Duration: 1500 * time.Microsecond,
	}
	if err := s.RecordSync(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	// An older record arriving late must not replace the newer one.
	older := want
	older.At, older.Result = at.Add(-time.Minute), reconcile.ResultError
	if err := s.RecordSync(t.Context(), older); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path)
	defer s.Close()
	got, ok, err := s.LastSync(t.Context(), want.DiscordID)
	if err != nil || !ok {
		t.Fatalf("LastSync = %v, %v", ok, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LastSync mismatch (-want +got):\n%s", diff)
	}
	if _, ok, _ := s.LastSync(t.Context(), "1"); ok {
		t.Error("LastSync of an unknown user reported a record")
	}
}

func TestStore_ChangesFilterAndPage(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "bridge.db"))
	defer s.Close()
	base := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	var cs []reconcile.Change
	for i := range 5 {
		cs = append(cs, reconcile.Change{
			At: base.Add(time.Duration(i) * time.Second), Trigger: "hook",
			DiscordID: "100", UserPK: 7, Username: "nelly", Kind: reconcile.KindGroupAdd,
			Target: "g" + string(rune('a'+i)), Before: "not a member", After: "member",
			Reason: "member has discord role 1",
		})
	}
	cs[4].DiscordID, cs[4].UserPK, cs[4].Kind = "200", 8, reconcile.KindGroupRemove
	if err := s.RecordChanges(t.Context(), cs); err != nil {
		t.Fatal(err)
	}

	page1, err := s.Changes(t.Context(), reconcile.ChangeFilter{DiscordID: "100", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(page1) != 2 || page1[0].Target != "gd" || page1[1].Target != "gc" {
		t.Fatalf("first page = %+v, want gd then gc", page1)
	}
	page2, err := s.Changes(t.Context(),
		reconcile.ChangeFilter{DiscordID: "100", Limit: 2, Before: page1[1].ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(page2) != 2 || page2[0].Target != "gb" || page2[1].Target != "ga" {
		t.Fatalf("second page = %+v, want gb then ga", page2)
	}
	removed, err := s.Changes(t.Context(), reconcile.ChangeFilter{Kind: reconcile.KindGroupRemove})
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].UserPK != 8 || !removed[0].At.Equal(cs[4].At) {
		t.Fatalf("removals = %+v, want the one of user 8", removed)
	}
}

func TestStore_MigratesOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	open(t, path).Close()
	open(t, path).Close()

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(context.Background(),
		`SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	files, err := migrations.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	if n != len(files) {
		t.Errorf("applied migrations = %d, want one per file (%d)", n, len(files))
	}
}

func BenchmarkStore_RecordSync(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bridge.db"),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := reconcile.SyncRecord{DiscordID: "100", UserPKs: []int32{7}, Membership: "member",
		Trigger: "hook", Result: reconcile.ResultUnchanged, At: time.Now()}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		rec.DiscordID = string(rune('0' + i%10))
		if err := s.RecordSync(context.Background(), rec); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
}

func TestStore_UserState(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "bridge.db"))
	defer s.Close()
	want := reconcile.UserState{UserPK: 8, DiscordID: "100", AttrHash: "abc",
		AvatarKey: "k.png", AbsentSince: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		DeactivatedByBridge: true, UpdatedAt: time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)}
	if err := s.PutUserState(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.UserState(t.Context(), 8)
	if err != nil || !ok {
		t.Fatalf("UserState = %v, %v", ok, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("UserState (-want +got):\n%s", diff)
	}
	want.AbsentSince, want.DeactivatedByBridge = time.Time{}, false
	if err := s.PutUserState(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	all, err := s.UserStates(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[int32]reconcile.UserState{8: want}, all); diff != "" {
		t.Errorf("UserStates (-want +got):\n%s", diff)
	}
}

// A full pass adds the states it learned from its listing only for users the store holds
// nothing about: a sync that stored a state meanwhile saw something newer.
func TestStore_AddUserStatesKeepsStored(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "bridge.db"))
	defer s.Close()
	at := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	stored := reconcile.UserState{UserPK: 8, DiscordID: "100", AttrHash: "newer",
		AbsentSince: at, UpdatedAt: at}
	if err := s.PutUserState(t.Context(), stored); err != nil {
		t.Fatal(err)
	}
	learned := []reconcile.UserState{
		{UserPK: 8, DiscordID: "100", AttrHash: "older", UpdatedAt: at.Add(-time.Minute)},
		{UserPK: 9, DiscordID: "101", AttrHash: "first", UpdatedAt: at},
	}
	if err := s.AddUserStates(t.Context(), learned); err != nil {
		t.Fatal(err)
	}
	all, err := s.UserStates(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]reconcile.UserState{8: stored, 9: learned[1]}
	if diff := cmp.Diff(want, all); diff != "" {
		t.Errorf("UserStates (-want +got):\n%s", diff)
	}
}
