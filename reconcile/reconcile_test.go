package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/google/go-cmp/cmp"

	"github.com/discord-authentik-bridge/bridge/authentik"
	"github.com/discord-authentik-bridge/bridge/avatars"
	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/groupmatch"
	"github.com/discord-authentik-bridge/bridge/guild"
)

// fakeAuthentik keeps users and groups in memory and counts writes. It implements only the
// reconciler's view; the HTTP semantics are covered by the stand-in in test/authentikstub.
type fakeAuthentik struct {
	mu      sync.Mutex
	users   map[int32]*authentik.User
	groups  []groupmatch.Group
	links   map[string][]int32
	reads   int
	writes  int
	revoked int
	fail    error
	failAdd error // only additions fail
}

func (f *fakeAuthentik) User(_ context.Context, pk int32) (*authentik.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	u, ok := f.users[pk]
	if !ok {
		return nil, &authentik.Error{Op: "get user", Status: 404}
	}
	cp := *u
	cp.Groups = append([]string(nil), u.Groups...)
	cp.Attributes = map[string]json.RawMessage{}
	for k, v := range u.Attributes {
		cp.Attributes[k] = v
	}
	return &cp, nil
}

func (f *fakeAuthentik) UsersByDiscordID(_ context.Context, id string) ([]int32, error) {
	return f.links[id], nil
}

func (f *fakeAuthentik) Groups(context.Context) ([]groupmatch.Group, error) {
	return f.groups, nil
}

func (f *fakeAuthentik) AddToGroup(_ context.Context, g string, pk int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if f.failAdd != nil {
		return f.failAdd
	}
	f.writes++
	u := f.users[pk]
	for _, have := range u.Groups {
		if have == g {
			return nil
		}
	}
	u.Groups = append(u.Groups, g)
	return nil
}

func (f *fakeAuthentik) RemoveFromGroup(_ context.Context, g string, pk int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.writes++
	u := f.users[pk]
	kept := u.Groups[:0]
	for _, have := range u.Groups {
		if have != g {
			kept = append(kept, have)
		}
	}
	u.Groups = kept
	return nil
}

func (f *fakeAuthentik) UpdateUser(_ context.Context, pk int32, up authentik.Update) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.writes++
	u := f.users[pk]
	// Like Authentik's PATCH, a write replaces the whole map: with a Base, by the Base and
	// the owned keys, whatever the stored map holds by now.
	if up.Base != nil && len(up.Attributes) > 0 {
		u.Attributes = map[string]json.RawMessage{}
		for k, v := range up.Base {
			u.Attributes[k] = v
		}
	}
	for k, v := range up.Attributes {
		u.Attributes[k] = v
	}
	if up.Name != nil {
		u.Name = *up.Name
	}
	return nil
}

func (f *fakeAuthentik) SetActive(_ context.Context, pk int32, active bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	f.users[pk].IsActive = active
	return nil
}

func (f *fakeAuthentik) Revoke(context.Context, int32, string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	f.revoked++
	return 1, nil
}

// fakeDiscord answers member lookups from a map.
type fakeDiscord map[string]*discordgo.Member

func (f fakeDiscord) Member(_ context.Context, _, id string) (*discordgo.Member, error) {
	if m, ok := f[id]; ok {
		return m, nil
	}
	return nil, discord.ErrNotMember
}

const (
	roleAdmin  = "1187654321098765431"
	roleEditor = "1187654321098765432"
	roleOld    = "1187654321098765433"
)

func world() (*fakeAuthentik, fakeDiscord) {
	ak := &fakeAuthentik{
		groups: []groupmatch.Group{
			{UUID: "g-admins", Name: "admins", Attributes: json.RawMessage(`{"discord_role_id": 1187654321098765431}`)},
			{UUID: "g-editors", Name: "editors", Attributes: json.RawMessage(`{"discord_role_id": ["1187654321098765432"]}`)},
			{UUID: "g-old", Name: "old", Attributes: json.RawMessage(`{"discord_role_id": "1187654321098765433"}`)},
			{UUID: "g-staff", Name: "staff", Attributes: json.RawMessage(`{}`)},
			{UUID: "g-root", Name: "root", IsSuperuser: true, Attributes: json.RawMessage(`{"discord_role_id": "1187654321098765431"}`)},
		},
		users: map[int32]*authentik.User{
			7: {PK: 7, Username: "nelly", Name: "Nelly", IsActive: true,
				Groups:     []string{"g-staff", "g-old", "g-root"},
				Attributes: map[string]json.RawMessage{"employee": json.RawMessage(`1234567890123456789`)}},
		},
		links: map[string][]int32{"80351110224678912": {7}},
	}
	dc := fakeDiscord{"80351110224678912": {
		User:  &discordgo.User{ID: "80351110224678912", Username: "nelly", Discriminator: "0", GlobalName: "Nelly N."},
		Roles: []string{roleEditor, roleAdmin},
	}}
	return ak, dc
}

func newTestReconciler(ak *fakeAuthentik, dc fakeDiscord, o Options) *Reconciler {
	o.GuildID = "81384788765712384"
	o.Now = func() time.Time { return time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC) }
	return New(dc, ak, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), o)
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func TestReconciler_SyncConvergesAndIsIdempotent(t *testing.T) {
	ak, dc := world()
	r := newTestReconciler(ak, dc, Options{})
	target := Target{DiscordID: "80351110224678912"}

	out, err := r.Sync(t.Context(), target, "test", false)
	if err != nil {
		t.Fatal(err)
	}
	if out.Result != ResultChanged {
		t.Errorf("result = %s, want changed", out.Result)
	}
	if diff := cmp.Diff([]string{"admins", "editors"}, sorted(out.Added)); diff != "" {
		t.Errorf("added (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"old"}, out.Removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	// staff is unmanaged and root is a superuser group: both stay.
	want := []string{"g-admins", "g-editors", "g-root", "g-staff"}
	if diff := cmp.Diff(want, sorted(ak.users[7].Groups)); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}
	if got := string(ak.users[7].Attributes["employee"]); got != "1234567890123456789" {
		t.Errorf("unrelated attribute = %s, want it untouched", got)
	}
	var d DiscordAttribute
	if err := json.Unmarshal(ak.users[7].Attributes["discord"], &d); err != nil {
		t.Fatalf("discord attribute: %v", err)
	}
	if d.ID != "80351110224678912" || *d.GlobalName != "Nelly N." || len(d.Roles) != 2 {
		t.Errorf("discord attribute = %+v", d)
	}

	writes := ak.writes
	out, err = r.Sync(t.Context(), target, "test", false)
	if err != nil {
		t.Fatal(err)
	}
	if out.Result != ResultUnchanged || ak.writes != writes {
		t.Errorf("second sync: result %s, %d new writes; want unchanged, 0", out.Result, ak.writes-writes)
	}
}

func TestReconciler_DryRunWritesNothing(t *testing.T) {
	ak, dc := world()
	r := newTestReconciler(ak, dc, Options{SetName: true})
	out, err := r.Sync(t.Context(), Target{DiscordID: "80351110224678912"}, "test", true)
	if err != nil {
		t.Fatal(err)
	}
	if out.Result != ResultPlanned || ak.writes != 0 {
		t.Fatalf("dry run: result %s, %d writes", out.Result, ak.writes)
	}
	p := out.Plan.Users[0]
	if len(p.Add) != 2 || len(p.Remove) != 1 || len(p.Attributes) != 1 || p.Name == nil {
		t.Errorf("plan = %+v", p)
	}
	if p.Name.After != "Nelly N." {
		t.Errorf("name after = %q, want the global name", p.Name.After)
	}
}

func TestReconciler_LeavingMember(t *testing.T) {
	for _, tc := range []struct {
		onLeave string
		want    []string
	}{
		{OnLeaveRemoveGroups, []string{"g-root", "g-staff"}},
		{OnLeaveKeep, []string{"g-admins", "g-old", "g-root", "g-staff"}},
	} {
		t.Run(tc.onLeave, func(t *testing.T) {
			ak, dc := world()
			ak.users[7].Groups = append(ak.users[7].Groups, "g-admins")
			delete(dc, "80351110224678912")
			r := newTestReconciler(ak, dc, Options{OnLeave: tc.onLeave})
			if _, err := r.Sync(t.Context(), Target{DiscordID: "80351110224678912"}, "test", false); err != nil {
				t.Fatal(err)
			}
			got := sorted(ak.users[7].Groups)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("groups (-want +got):\n%s", diff)
			}
			if _, ok := ak.users[7].Attributes["discord"]; ok {
				t.Error("a member who left got a discord attribute written")
			}
		})
	}
}

func TestReconciler_OwnerCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stored string // attributes.discord
		linked bool   // the source connection links the user to the synced account
		want   error
	}{
		{"other account, not linked", `{"id":"999"}`, false, ErrOtherAccount},
		{"other account as a number", `{"id":999}`, false, ErrOtherAccount},
		{"same account as a number", `{"id":80351110224678912}`, false, nil},
		{"re-linked to this account", `{"id":"999"}`, true, nil},
		{"no id yet", `{"username":"x"}`, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ak, dc := world()
			ak.users[7].Attributes["discord"] = json.RawMessage(tc.stored)
			if !tc.linked {
				ak.links = map[string][]int32{}
			}
			r := newTestReconciler(ak, dc, Options{})
			_, err := r.Sync(t.Context(), Target{DiscordID: "80351110224678912", UserPKs: []int32{7}}, "test", false)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want != nil && ak.writes != 0 {
				t.Errorf("writes = %d, want 0", ak.writes)
			}
			if tc.want == nil && !contains(ak.users[7].Groups, "g-admins") {
				t.Errorf("groups = %v, want the account's groups", ak.users[7].Groups)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestReconciler_FailedAddDoesNotHoldBackRemoval(t *testing.T) {
	ak, dc := world()
	ak.failAdd = &authentik.Error{Op: "add", Status: 403}
	r := newTestReconciler(ak, dc, Options{})
	out, err := r.Sync(t.Context(), Target{DiscordID: "80351110224678912"}, "test", false)
	if err == nil {
		t.Fatal("a refused addition was not reported")
	}
	if contains(ak.users[7].Groups, "g-old") {
		t.Error("the removal was held back by a failed addition")
	}
	if out == nil || len(out.Removed) != 1 {
		t.Errorf("outcome = %+v, want the removal recorded", out)
	}
}

func TestReconciler_EveryoneRole(t *testing.T) {
	ak, dc := world()
	ak.groups = append(ak.groups, groupmatch.Group{UUID: "g-all", Name: "everyone",
		Attributes: json.RawMessage(`{"discord_role_id":"81384788765712384"}`)})
	r := newTestReconciler(ak, dc, Options{})
	if _, err := r.Sync(t.Context(), Target{DiscordID: "80351110224678912"}, "test", false); err != nil {
		t.Fatal(err)
	}
	if !contains(ak.users[7].Groups, "g-all") {
		t.Error("a group mapped to @everyone (the guild ID) did not get the member")
	}
}

func TestReconciler_LeaverLosesRolesInAttribute(t *testing.T) {
	ak, dc := world()
	r := newTestReconciler(ak, dc, Options{})
	target := Target{DiscordID: "80351110224678912"}
	if _, err := r.Sync(t.Context(), target, "test", false); err != nil {
		t.Fatal(err)
	}
	delete(dc, "80351110224678912")
	if _, err := r.Sync(t.Context(), target, "test", false); err != nil {
		t.Fatal(err)
	}
	var d DiscordAttribute
	if err := json.Unmarshal(ak.users[7].Attributes["discord"], &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Roles) != 0 || d.ID != "80351110224678912" {
		t.Errorf("attributes.discord after leaving = %+v, want the account without roles", d)
	}
}

func TestReconciler_FailedWriteKeepsWhatWasApplied(t *testing.T) {
	ak, dc := world()
	ak.fail = &authentik.Error{Op: "add", Status: 500}
	r := newTestReconciler(ak, dc, Options{})
	_, err := r.Sync(t.Context(), Target{DiscordID: "80351110224678912"}, "test", false)
	if !authentik.IsRetryable(err) {
		t.Fatalf("err = %v, want a retryable Authentik error", err)
	}
	ak.fail = nil
	out, err := r.Sync(t.Context(), Target{DiscordID: "80351110224678912"}, "test", false)
	if err != nil || out.Result != ResultChanged {
		t.Fatalf("retry: %v, %v", out, err)
	}
}

func TestReconciler_UnknownDiscordID(t *testing.T) {
	ak, dc := world()
	r := newTestReconciler(ak, dc, Options{})
	out, err := r.Sync(t.Context(), Target{DiscordID: "123"}, "test", false)
	if err != nil {
		t.Fatal(err)
	}
	if out.Result != ResultNoUser || ak.writes != 0 {
		t.Errorf("result %s with %d writes, want no_user and none", out.Result, ak.writes)
	}
	if _, err := r.Sync(t.Context(), Target{DiscordID: "12a"}, "test", false); err == nil {
		t.Error("a non-numeric Discord ID was accepted")
	}
}

func BenchmarkReconciler_PlanUnchanged(b *testing.B) {
	ak, dc := world()
	r := newTestReconciler(ak, dc, Options{})
	target := Target{DiscordID: "80351110224678912"}
	if _, err := r.Sync(context.Background(), target, "bench", false); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		out, err := r.Sync(context.Background(), target, "bench", false)
		if err != nil || out.Result != ResultUnchanged {
			b.Fatalf("%v %v", out, err)
		}
	}
}

// memStore is an in-memory Store for tests of the reconciler's memory.
type memStore struct {
	mu      sync.Mutex
	states  map[int32]UserState
	changes []Change
}

func (m *memStore) RecordSync(context.Context, SyncRecord) error { return nil }
func (m *memStore) RecordChanges(_ context.Context, cs []Change) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.changes = append(m.changes, cs...)
	return nil
}
func (m *memStore) LastSync(context.Context, string) (SyncRecord, bool, error) {
	return SyncRecord{}, false, nil
}
func (m *memStore) Changes(context.Context, ChangeFilter) ([]Change, error) { return m.changes, nil }
func (m *memStore) UserState(_ context.Context, pk int32) (UserState, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.states[pk]
	return s, ok, nil
}
func (m *memStore) UserStates(context.Context) (map[int32]UserState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.states), nil // a copy, as a database hands out
}
func (m *memStore) PutUserState(_ context.Context, s UserState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[s.UserPK] = s
	return nil
}
func (m *memStore) AddUserStates(_ context.Context, ss []UserState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range ss {
		if _, ok := m.states[s.UserPK]; !ok {
			m.states[s.UserPK] = s
		}
	}
	return nil
}
func (m *memStore) Close() error { return nil }

func TestReconciler_DeactivateAfterGraceAndReactivate(t *testing.T) {
	ak, dc := world()
	member := dc["80351110224678912"]
	delete(dc, "80351110224678912")
	store := &memStore{states: map[int32]UserState{}}
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	r := New(dc, ak, store, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{
		GuildID: "81384788765712384", OnLeave: OnLeaveDeactivate, LeaveGrace: time.Hour,
		RevokeOnLoss: true, Now: func() time.Time { return now },
	})
	target := Target{DiscordID: "80351110224678912"}
	sync := func() *Outcome {
		t.Helper()
		out, err := r.Sync(t.Context(), target, "test", false)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	sync() // first seen absent: groups go, the user stays active during the grace period
	if !ak.users[7].IsActive {
		t.Fatal("deactivated before the grace period ended")
	}
	if ak.revoked != 1 {
		t.Errorf("revocations after losing a group = %d, want 1", ak.revoked)
	}
	now = now.Add(59 * time.Minute)
	if out := sync(); out.Result != ResultUnchanged || !ak.users[7].IsActive {
		t.Fatalf("inside the grace period: %s, active %v", out.Result, ak.users[7].IsActive)
	}
	now = now.Add(2 * time.Minute)
	sync()
	if ak.users[7].IsActive {
		t.Fatal("not deactivated after the grace period")
	}

	dc["80351110224678912"] = member // back in the guild
	sync()
	if !ak.users[7].IsActive {
		t.Fatal("not reactivated on return")
	}
	if st := store.states[7]; !st.AbsentSince.IsZero() || st.DeactivatedByBridge {
		t.Errorf("state after return = %+v", st)
	}

	// A user an admin deactivated is never reactivated by the bridge.
	ak.users[7].IsActive = false
	if out := sync(); out.Result != ResultUnchanged || ak.users[7].IsActive {
		t.Errorf("admin deactivation undone: %s, active %v", out.Result, ak.users[7].IsActive)
	}
}

// brokenAvatars is an avatar service whose every fetch fails for good, as a CDN answering 404.
type brokenAvatars struct{ syncs int }

func (b *brokenAvatars) Source(m avatars.Member) (avatars.Source, error) {
	return avatars.Source{URL: "https://cdn.example/avatars/" + m.UserID + "/" + m.UserAvatar + ".png",
		Hash: m.UserAvatar}, nil
}

func (b *brokenAvatars) Sync(context.Context, avatars.Member, avatars.Current) (avatars.Result, error) {
	b.syncs++
	return avatars.Result{}, &avatars.Error{Kind: avatars.KindStatus, Status: 404,
		Err: errors.New("cdn answered 404")}
}

func (b *brokenAvatars) KeyOf(string) (string, bool) { return "", false }

func TestReconciler_BrokenAvatarIsLeftAloneForAWhile(t *testing.T) {
	ak, dc := world()
	dc["80351110224678912"].User.Avatar = "8342729096ea3675442027381ff50dfe"
	av := &brokenAvatars{}
	store := &memStore{states: map[int32]UserState{}}
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	r := New(dc, ak, store, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{
		GuildID: "81384788765712384", Avatars: av, Now: func() time.Time { return now },
	})
	target := Target{DiscordID: "80351110224678912"}

	out, err := r.Sync(t.Context(), target, "test", false)
	if err != nil || out.AvatarError == "" || av.syncs != 1 {
		t.Fatalf("first sync: err %v, avatar error %q, fetches %d", err, out.AvatarError, av.syncs)
	}
	if _, ok := ak.users[7].Attributes["avatar"]; ok {
		t.Error("a failed avatar wrote attributes.avatar")
	}
	if !contains(ak.users[7].Groups, "g-admins") {
		t.Error("a failed avatar held back the groups")
	}

	writes := ak.writes
	plan, err := r.Plan(t.Context(), target)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Empty() {
		t.Errorf("a member whose avatar cannot be fetched shows as out of date: %s", plan)
	}
	out, err = r.Sync(t.Context(), target, "test", false)
	if err != nil || out.Result != ResultUnchanged || av.syncs != 1 || ak.writes != writes {
		t.Errorf("second sync: %v %s, fetches %d, writes %d", err, out.Result, av.syncs, ak.writes-writes)
	}

	now = now.Add(avatarRetryAfter)
	if _, err := r.Sync(t.Context(), target, "test", false); err != nil || av.syncs != 2 {
		t.Errorf("after the back-off: err %v, fetches %d, want a new try", err, av.syncs)
	}
}

func TestReconciler_MemberWithoutRolesIsStable(t *testing.T) {
	ak, dc := world()
	dc["80351110224678912"].Roles = nil
	r := newTestReconciler(ak, dc, Options{})
	target := Target{DiscordID: "80351110224678912"}
	if _, err := r.Sync(t.Context(), target, "test", false); err != nil {
		t.Fatal(err)
	}
	writes := ak.writes
	out, err := r.Sync(t.Context(), target, "test", false)
	if err != nil || out.Result != ResultUnchanged || ak.writes != writes {
		t.Errorf("second sync of a member without roles: %v %s, %d writes", err, out.Result,
			ak.writes-writes)
	}
}

// While a full pass runs, a sync from the pass whose view of the member is older than one
// another sync applied meanwhile (a gateway event, a login) must not undo it.
func TestReconciler_PassDoesNotUndoNewerSync(t *testing.T) {
	ak, dc := world()
	r := newTestReconciler(ak, dc, Options{})
	id := "80351110224678912"
	listed := r.opts.Now()
	old := guild.Membership{State: guild.StateMember, Member: &discordgo.Member{
		User: dc[id].User, Roles: []string{roleOld}}}
	r.passing.Store(true)

	// The member's roles changed after the pass listed them; the event's sync ran first.
	r.opts.Now = func() time.Time { return listed.Add(time.Second) }
	if _, err := r.Sync(t.Context(), Target{DiscordID: id}, "gateway", false); err != nil {
		t.Fatal(err)
	}
	want := sorted(ak.users[7].Groups)
	writes := ak.writes

	r.opts.Now = func() time.Time { return listed.Add(2 * time.Second) }
	out, err := r.Sync(t.Context(), Target{DiscordID: id, UserPKs: []int32{7}, Known: &old,
		ObservedAt: listed}, "full_pass:timer", false)
	if err != nil {
		t.Fatal(err)
	}
	if out.Result != ResultSuperseded || ak.writes != writes {
		t.Errorf("stale pass item: result %s, %d writes; want superseded, 0", out.Result,
			ak.writes-writes)
	}
	if diff := cmp.Diff(want, sorted(ak.users[7].Groups)); diff != "" {
		t.Errorf("groups after the stale pass item (-want +got):\n%s", diff)
	}

	// A view newer than the event's is applied.
	out, err = r.Sync(t.Context(), Target{DiscordID: id, UserPKs: []int32{7}, Known: &old,
		ObservedAt: listed.Add(1500 * time.Millisecond)}, "full_pass:timer", false)
	if err != nil || out.Result != ResultChanged || !contains(ak.users[7].Groups, "g-old") {
		t.Errorf("newer pass item: result %v, %v, groups %v; want it applied", out.Result, err,
			ak.users[7].Groups)
	}
}

// A pass writes on users it read in a batch moments before, without reading them again,
// unless another sync of the member finished since: then it reads them afresh, so that what
// was written in between survives.
func TestReconciler_BatchReadUsers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		syncAfter bool // another sync of the member finishes after the batch read
		wantReads int
	}{
		{"used as read", false, 0},
		{"read again after another sync", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ak, dc := world()
			r := newTestReconciler(ak, dc, Options{})
			id := "80351110224678912"
			t0 := r.opts.Now()
			r.passing.Store(true)
			at := func(d time.Duration) { r.opts.Now = func() time.Time { return t0.Add(d) } }

			// The users were read when the guild listed the member in a pass before.
			at(-time.Minute)
			if _, err := r.Sync(t.Context(), Target{DiscordID: id}, "hook", false); err != nil {
				t.Fatal(err)
			}
			at(0)
			batch, _ := ak.User(t.Context(), 7)
			if tc.syncAfter {
				at(time.Second)
				ak.users[7].Attributes["locale"] = json.RawMessage(`"de"`) // another writer
				if _, err := r.Sync(t.Context(), Target{DiscordID: id}, "hook", false); err != nil {
					t.Fatal(err)
				}
			}

			at(2 * time.Second)
			m := *dc[id]
			m.Nick = "Nel"
			known := guild.Membership{State: guild.StateMember, Member: &m}
			reads := ak.reads
			out, err := r.Sync(t.Context(), Target{DiscordID: id, UserPKs: []int32{7},
				Known: &known, Users: map[int32]*authentik.User{7: batch}, ReadAt: t0},
				"full_pass:timer", false)
			if err != nil || out.Result != ResultChanged {
				t.Fatalf("pass item: %v, %v; want changed", out, err)
			}
			if got := ak.reads - reads; got != tc.wantReads {
				t.Errorf("user read %d times, want %d", got, tc.wantReads)
			}
			if tc.syncAfter && string(ak.users[7].Attributes["locale"]) != `"de"` {
				t.Errorf("attributes after the pass: %v; the other writer's locale is lost",
					ak.users[7].Attributes)
			}
			if !strings.Contains(string(ak.users[7].Attributes["discord"]), `"nick":"Nel"`) {
				t.Errorf("attributes.discord = %s, want the new nick",
					ak.users[7].Attributes["discord"])
			}
		})
	}
}
