package reconcile

// Tests of the full pass's batch reads, of how a pass yields to newer syncs, and of passes
// cut short. They run FullPass in process against in-memory fakes, so that each test can
// choose exactly when another sync, another writer, a failure or a cancellation happens.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/discord-authentik-bridge/bridge/authentik"
	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/guild"
)

// passAuthentik is fakeAuthentik plus what a full pass needs: the group listing, the
// connections and the batch read. Hooks let a test act between the pass's steps.
type passAuthentik struct {
	*fakeAuthentik
	batchCalls int
	// batch, when set, answers UsersByDiscordIDs instead of the filter below; call is 1-based.
	batch func(call int, ids []string) (map[int32]*authentik.User, error)
	// beforeUpdate runs before every attribute write, outside the fake's lock.
	beforeUpdate func(pk int32)
}

func (p *passAuthentik) GroupsWithMembers(_ context.Context,
	visit func(authentik.GroupMembers) error) error {
	p.mu.Lock()
	var out []authentik.GroupMembers
	for _, g := range p.groups {
		gm := authentik.GroupMembers{Group: g, Owned: map[int32]json.RawMessage{}}
		for pk, u := range p.users {
			if slices.Contains(u.Groups, g.UUID) {
				gm.Members = append(gm.Members, pk)
				if raw, ok := u.Attributes["discord"]; ok {
					gm.Owned[pk] = raw
				}
			}
		}
		out = append(out, gm)
	}
	p.mu.Unlock()
	for _, gm := range out {
		if err := visit(gm); err != nil {
			return err
		}
	}
	return nil
}

func (p *passAuthentik) Connections(context.Context) ([]authentik.Connection, error) {
	var out []authentik.Connection
	for id, pks := range p.links {
		for _, pk := range pks {
			out = append(out, authentik.Connection{UserPK: pk, Identifier: id})
		}
	}
	return out, nil
}

// UsersByDiscordIDs answers like Authentik with the filter applied: copies of the users whose
// attributes.discord.id is one of ids, as a string.
func (p *passAuthentik) UsersByDiscordIDs(_ context.Context,
	ids []string) (map[int32]*authentik.User, error) {
	p.mu.Lock()
	p.batchCalls++
	call := p.batchCalls
	p.mu.Unlock()
	if p.batch != nil {
		return p.batch(call, ids)
	}
	return p.filtered(ids), nil
}

func (p *passAuthentik) filtered(ids []string) map[int32]*authentik.User {
	out := map[int32]*authentik.User{}
	p.mu.Lock()
	var pks []int32
	for pk, u := range p.users {
		var d struct {
			ID *string `json:"id"`
		}
		if json.Unmarshal(u.Attributes["discord"], &d) == nil && d.ID != nil &&
			slices.Contains(ids, *d.ID) {
			pks = append(pks, pk)
		}
	}
	p.mu.Unlock()
	for _, pk := range pks {
		u, _ := p.fakeAuthentik.User(context.Background(), pk)
		p.mu.Lock()
		p.reads-- // a batch read is not a read one by one
		p.mu.Unlock()
		out[pk] = u
	}
	return out
}

func (p *passAuthentik) UpdateUser(ctx context.Context, pk int32, up authentik.Update) error {
	if p.beforeUpdate != nil {
		p.beforeUpdate(pk)
	}
	return p.fakeAuthentik.UpdateUser(ctx, pk, up)
}

// passDiscord is fakeDiscord plus the member list and the roles.
type passDiscord struct{ fakeDiscord }

func (d passDiscord) MembersPage(_ context.Context, _, after string,
	limit int) ([]*discordgo.Member, error) {
	var ids []string
	for id := range d.fakeDiscord {
		if len(id) > len(after) || (len(id) == len(after) && id > after) {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool {
		if len(ids[i]) != len(ids[j]) {
			return len(ids[i]) < len(ids[j])
		}
		return ids[i] < ids[j]
	})
	var out []*discordgo.Member
	for _, id := range ids[:min(limit, len(ids))] {
		m := *d.fakeDiscord[id]
		out = append(out, &m)
	}
	return out, nil
}

func (d passDiscord) Roles(context.Context, string) ([]*discordgo.Role, error) {
	return []*discordgo.Role{{ID: roleAdmin}, {ID: roleEditor}, {ID: roleOld}}, nil
}

// passWorld is a guild of n members, each linked to one user (pk 100+i) that is a member of
// g-old only and whose attributes.discord names the member with the old role, so that every
// member is out of date: the guild gives them admins and editors.
func passWorld(n int) (*passAuthentik, passDiscord, []string) {
	ak, _ := world()
	ak.users = map[int32]*authentik.User{}
	ak.links = map[string][]int32{}
	dc := fakeDiscord{}
	ids := make([]string, n)
	for i := range n {
		id := fmt.Sprint(900000000000000000 + i)
		ids[i] = id
		pk := int32(100 + i)
		old, _ := json.Marshal(DiscordAttribute{ID: id, Username: "m" + id[len(id)-3:],
			Discriminator: "0", Roles: []string{roleOld}})
		ak.users[pk] = &authentik.User{PK: pk, Username: "u" + fmt.Sprint(pk), IsActive: true,
			Groups: []string{"g-old", "g-staff"},
			Attributes: map[string]json.RawMessage{"discord": old,
				"locale": json.RawMessage(`"de"`)}}
		ak.links[id] = []int32{pk}
		dc[id] = &discordgo.Member{User: &discordgo.User{ID: id, Username: "m" + id[len(id)-3:],
			Discriminator: "0"}, Roles: []string{roleAdmin, roleEditor}}
	}
	return &passAuthentik{fakeAuthentik: ak}, passDiscord{dc}, ids
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newPassReconciler(ak *passAuthentik, dc passDiscord, logs *logBuffer) *Reconciler {
	var h slog.Handler = slog.NewTextHandler(&logBuffer{}, nil)
	if logs != nil {
		h = slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	return New(dc, ak, nil, slog.New(h), Options{GuildID: "81384788765712384", Now: time.Now})
}

// inLine reports whether user pk has exactly the managed groups and the roles the guild gives.
func inLine(ak *passAuthentik, pk int32) bool {
	ak.mu.Lock()
	defer ak.mu.Unlock()
	u := ak.users[pk]
	var d DiscordAttribute
	_ = json.Unmarshal(u.Attributes["discord"], &d)
	return contains(u.Groups, "g-admins") && contains(u.Groups, "g-editors") &&
		!contains(u.Groups, "g-old") && len(d.Roles) == 2
}

// A gateway event that waited in the queue since before the pass listed the guild carries
// an older view than the pass's page, even when its sync runs after the listing began: the
// pass must not yield to it. An event that arrived after the listing began is newer, and the
// pass leaves the member to it.
func TestFullPass_QueuedEventYieldsOnlyWhenNewer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		arrived time.Duration // when the event arrived, from the start of the listing
		want    Result
	}{
		{"event older than the listing", -time.Second, ResultChanged},
		{"event newer than the listing", time.Second, ResultSuperseded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ak, dc := world()
			r := newTestReconciler(ak, dc, Options{})
			q := NewQueue(r, 1, r.log)
			id := "80351110224678912"
			t0 := r.opts.Now()
			at := func(d time.Duration) { r.opts.Now = func() time.Time { return t0.Add(d) } }
			r.passing.Store(true)

			// The event says the member has only the old role.
			at(tc.arrived)
			q.Add(id, "gateway:member_update", &guild.Membership{State: guild.StateMember,
				Member: &discordgo.Member{User: dc[id].User, Roles: []string{roleOld}}}, nil)
			// The queue gets to it only after the listing began.
			at(2 * time.Second)
			if !q.next(t.Context()) {
				t.Fatal("queue shut down")
			}
			// The pass's page, read from t0 on, says admin and editor.
			at(3 * time.Second)
			out, err := r.Sync(t.Context(), Target{DiscordID: id, UserPKs: []int32{7},
				Known:      &guild.Membership{State: guild.StateMember, Member: dc[id]},
				ObservedAt: t0}, "full_pass:gateway_ready", false)
			if err != nil {
				t.Fatal(err)
			}
			if out.Result != tc.want {
				t.Errorf("pass item after the queued event: %s, want %s (groups %v)",
					out.Result, tc.want, sorted(ak.users[7].Groups))
			}
			if tc.want == ResultChanged && !contains(ak.users[7].Groups, "g-admins") {
				t.Errorf("groups %v, want the pass's view applied", sorted(ak.users[7].Groups))
			}
		})
	}
}

// A sync handed a membership of unknown age (no ObservedAt) supersedes nothing.
func TestFullPass_ViewOfUnknownAgeSupersedesNothing(t *testing.T) {
	ak, dc := world()
	r := newTestReconciler(ak, dc, Options{})
	id := "80351110224678912"
	t0 := r.opts.Now()
	at := func(d time.Duration) { r.opts.Now = func() time.Time { return t0.Add(d) } }
	r.passing.Store(true)

	at(time.Second)
	eventView := guild.Membership{State: guild.StateMember, Member: &discordgo.Member{
		User: dc[id].User, Roles: []string{roleOld}}}
	if _, err := r.Sync(t.Context(), Target{DiscordID: id, Known: &eventView}, "gateway",
		false); err != nil {
		t.Fatal(err)
	}
	at(2 * time.Second)
	out, err := r.Sync(t.Context(), Target{DiscordID: id, UserPKs: []int32{7},
		Known: &guild.Membership{State: guild.StateMember, Member: dc[id]}, ObservedAt: t0},
		"full_pass:gateway_ready", false)
	if err != nil {
		t.Fatal(err)
	}
	if out.Result != ResultChanged || !contains(ak.users[7].Groups, "g-admins") {
		t.Errorf("pass item: result %s, groups %v; want it applied", out.Result,
			sorted(ak.users[7].Groups))
	}
}

// Authentik answering the batch read with an error (500, 429 past retries, a body that is no
// JSON) costs only requests: the pass reads the users one by one and applies everything.
func TestFullPass_BatchReadFailsFallsBackToSingleReads(t *testing.T) {
	for _, fail := range []error{
		&authentik.Error{Op: "list users", Status: 500},
		&authentik.Error{Op: "list users", Status: 429},
		&authentik.Error{Op: "list users", Detail: "undecodable answer",
			Err: errors.New("invalid character '<'")},
	} {
		t.Run(fail.Error(), func(t *testing.T) {
			ak, dc, ids := passWorld(20)
			ak.batch = func(int, []string) (map[int32]*authentik.User, error) { return nil, fail }
			logs := &logBuffer{}
			r := newPassReconciler(ak, dc, logs)
			rep, err := r.FullPass(t.Context(), PassOptions{Trigger: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Applied != len(ids) || rep.Errors != 0 || ak.reads != len(ids) {
				t.Errorf("applied %d, errors %d, single reads %d; want %d, 0, %d", rep.Applied,
					rep.Errors, ak.reads, len(ids), len(ids))
			}
			// Every batch is tried: a failure other than an ignored filter is no reason to
			// stop batch reads.
			if ak.batchCalls != (len(ids)+readBatch-1)/readBatch {
				t.Errorf("%d batch reads, want %d", ak.batchCalls, (len(ids)+readBatch-1)/readBatch)
			}
			for i := range ids {
				if !inLine(ak, int32(100+i)) {
					t.Errorf("user %d not in line: %+v", 100+i, ak.users[int32(100+i)])
				}
			}
			if n := strings.Count(logs.String(), "level=WARN msg=\"batch read of users failed"); n != 1 {
				t.Errorf("%d warnings about failed batch reads, want 1:\n%s", n, logs.String())
			}
		})
	}
}

// Authentik starts ignoring the filter in the middle of a pass: the second batch read
// answers with a user outside the batch. The pass warns once, stops batch reads and reads
// the rest one by one; nobody is written from a user the filter should have left out.
func TestFullPass_FilterIgnoredMidPass(t *testing.T) {
	ak, dc, ids := passWorld(30)
	ak.batch = func(call int, want []string) (map[int32]*authentik.User, error) {
		got := ak.filtered(want)
		if call >= 2 {
			// Whatever the bridge's client makes of an answer with strangers in it.
			return nil, fmt.Errorf("authentik: user 999 is not one of them: %w",
				authentik.ErrFilterIgnored)
		}
		return got, nil
	}
	logs := &logBuffer{}
	r := newPassReconciler(ak, dc, logs)
	rep, err := r.FullPass(t.Context(), PassOptions{Trigger: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if ak.batchCalls != 2 || ak.reads != len(ids)-readBatch || rep.Applied != len(ids) {
		t.Errorf("batch reads %d, single reads %d, applied %d; want 2, %d, %d", ak.batchCalls,
			ak.reads, rep.Applied, len(ids)-readBatch, len(ids))
	}
	if n := strings.Count(logs.String(), "this pass reads users one by one"); n != 1 {
		t.Errorf("%d warnings about the ignored filter, want 1:\n%s", n, logs.String())
	}
}

// One Discord account linked to two users, and one user linked to two Discord accounts,
// in the same batch. Both users of the first account are read in the batch and written;
// the shared user pointer handed to two workers must not race (run with -race).
func TestFullPass_SharedLinksInOneBatch(t *testing.T) {
	ak, dc, ids := passWorld(8)
	// ids[1]'s user 101 is also linked to ids[0]: ids[0] has users 100 and 101.
	ak.links[ids[0]] = []int32{100, 101}
	r := newPassReconciler(ak, dc, nil)
	rep, err := r.FullPass(t.Context(), PassOptions{Trigger: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors != 0 || ak.batchCalls != 1 {
		t.Errorf("errors %d (%v), batch reads %d; want 0, 1", rep.Errors, rep.FirstErrors,
			ak.batchCalls)
	}
	for i := range ids {
		if !inLine(ak, int32(100+i)) {
			t.Errorf("user %d not in line: %+v", 100+i, ak.users[int32(100+i)])
		}
		if got := string(ak.users[int32(100+i)].Attributes["locale"]); got != `"de"` {
			t.Errorf("user %d lost locale: %s", 100+i, got)
		}
	}
}

// A pass cut short (SIGTERM, ctx) in its apply phase must say so: FullPass should return
// the context's error, so that `bridge sync --all` does not report a finished pass and
// the controller does not treat it as one.
func TestFullPass_CancelledMidApplyIsReported(t *testing.T) {
	ak, dc, ids := passWorld(40)
	ctx, cancel := context.WithCancel(t.Context())
	var once sync.Once
	ak.beforeUpdate = func(int32) { once.Do(cancel) }
	r := newPassReconciler(ak, dc, nil)
	rep, err := r.FullPass(ctx, PassOptions{Trigger: "test"})
	t.Logf("cancelled pass: err %v, applied %d of %d, errors %d", err, rep.Applied, len(ids),
		rep.Errors)
	if rep.Applied+rep.Errors+rep.Superseded == len(ids) {
		t.Skip("the pass finished before the cancellation took effect")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("FullPass = %v after a cancellation that left %d of %d members unsynced; "+
			"want context.Canceled", err, len(ids)-rep.Applied-rep.Errors, len(ids))
	}
	if r.passing.Load() {
		t.Errorf("passing still set after the pass returned")
	}
}

// A dry run cut short returns what it planned so far; it should say it is incomplete.
func TestFullPass_CancelledDryRunIsReported(t *testing.T) {
	ak, dc, ids := passWorld(40)
	ctx, cancel := context.WithCancel(t.Context())
	ak.batch = func(call int, want []string) (map[int32]*authentik.User, error) {
		if call == 2 {
			cancel()
		}
		return ak.filtered(want), nil
	}
	r := newPassReconciler(ak, dc, nil)
	rep, err := r.FullPass(ctx, PassOptions{Trigger: "test", DryRun: true})
	t.Logf("cancelled dry run: err %v, %d plans of %d stale", err, len(rep.Plans), len(ids))
	if len(rep.Plans) < len(ids) && err == nil {
		t.Errorf("dry run planned %d of %d out-of-date members and returned no error",
			len(rep.Plans), len(ids))
	}
}

// A login or gateway sync of a member that finishes between the pass's batch read and the
// pass's write makes the pass read that user again, so another writer's key written in
// between survives. The reader goroutine runs these syncs while the workers write the batch
// before (run with -race).
func TestFullPass_ConcurrentSyncsDuringPassKeepOtherKeys(t *testing.T) {
	ak, dc, ids := passWorld(64)
	r := newPassReconciler(ak, dc, nil)
	ak.batch = func(call int, want []string) (map[int32]*authentik.User, error) {
		got := ak.filtered(want)
		// Right after the batch read: an admin sets another key, then a login syncs
		// the member, both before the pass writes.
		for _, id := range want {
			pk := ak.links[id][0]
			ak.mu.Lock()
			u := ak.users[pk]
			attrs := map[string]json.RawMessage{}
			for k, v := range u.Attributes {
				attrs[k] = v
			}
			attrs["note"] = json.RawMessage(`"set by an admin"`)
			u.Attributes = attrs
			ak.mu.Unlock()
			if _, err := r.Sync(context.Background(), Target{DiscordID: id}, "hook",
				false); err != nil {
				return nil, err
			}
		}
		return got, nil
	}
	rep, err := r.FullPass(t.Context(), PassOptions{Trigger: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("applied %d, superseded %d, errors %d", rep.Applied, rep.Superseded, rep.Errors)
	for i := range ids {
		pk := int32(100 + i)
		if !inLine(ak, pk) {
			t.Errorf("user %d not in line", pk)
		}
		if got := string(ak.users[pk].Attributes["note"]); got != `"set by an admin"` {
			t.Errorf("user %d lost the admin's note: %v", pk, ak.users[pk].Attributes)
		}
	}
}

// switchDiscord answers member lookups from a fakeDiscord, or fails with err when set, and
// counts the lookups.
type switchDiscord struct {
	fakeDiscord
	mu    sync.Mutex
	err   error
	calls int
}

func (s *switchDiscord) Member(ctx context.Context, g, id string) (*discordgo.Member, error) {
	s.mu.Lock()
	s.calls++
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s.fakeDiscord.Member(ctx, g, id)
}

// A gateway event that arrived after the pass began listing applies a newer view; a later
// sync of the same member that fails (a login whose Discord lookup hits a 503) must not make
// the pass forget that newer view and write its older page over it.
func TestFullPass_FailedSyncKeepsNewerView(t *testing.T) {
	ak, dc := world()
	id := "80351110224678912"
	sd := &switchDiscord{fakeDiscord: dc}
	r := New(sd, ak, nil, newTestReconciler(ak, dc, Options{}).log, Options{
		GuildID: "81384788765712384"})
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) { r.opts.Now = func() time.Time { return t0.Add(d) } }
	r.passing.Store(true)

	// t0: the pass lists the guild; its page says admin and editor.
	listedView := guild.Membership{State: guild.StateMember, Member: dc[id]}
	// t0+1s: the member loses both roles; the gateway event says so and is applied.
	at(time.Second)
	eventView := guild.Membership{State: guild.StateMember, Member: &discordgo.Member{
		User: dc[id].User, Roles: []string{roleOld}}}
	if _, err := r.Sync(t.Context(), Target{DiscordID: id, Known: &eventView,
		ObservedAt: t0.Add(time.Second)}, "gateway:member_update", false); err != nil {
		t.Fatal(err)
	}
	if contains(ak.users[7].Groups, "g-admins") {
		t.Fatalf("event not applied: %v", sorted(ak.users[7].Groups))
	}
	// t0+2s: a login's sync fails reading Discord; nothing is written.
	at(2 * time.Second)
	sd.mu.Lock()
	sd.err = &discord.Error{Status: 503, Retryable: true}
	sd.mu.Unlock()
	if _, err := r.Sync(t.Context(), Target{DiscordID: id}, "hook", false); err == nil {
		t.Fatal("the failing sync did not fail")
	}
	// t0+3s: the pass gets to the member with its page from t0.
	at(3 * time.Second)
	out, err := r.Sync(t.Context(), Target{DiscordID: id, UserPKs: []int32{7},
		Known: &listedView, ObservedAt: t0}, "full_pass:timer", false)
	if err != nil {
		t.Fatal(err)
	}
	if out.Result != ResultSuperseded {
		t.Errorf("pass item after a newer event and a failed sync: %s, want superseded; "+
			"groups now %v (the event had removed g-admins and g-editors)", out.Result,
			sorted(ak.users[7].Groups))
	}
}

// A queued event whose sync fails for a passing reason is retried without the event's
// membership: the retry asks Discord afresh, and its view (read after the pass began)
// supersedes the pass's page.
func TestFullPass_QueueRetryReadsDiscordAfresh(t *testing.T) {
	ak, dc := world()
	id := "80351110224678912"
	sd := &switchDiscord{fakeDiscord: dc}
	r := New(sd, ak, nil, newTestReconciler(ak, dc, Options{}).log, Options{
		GuildID: "81384788765712384"})
	q := NewQueue(r, 1, r.log)
	t0 := time.Now()
	at := func(d time.Duration) { r.opts.Now = func() time.Time { return t0.Add(d) } }
	r.passing.Store(true)

	// The event arrived before the listing (t0) and says: only the old role.
	at(-time.Second)
	q.Add(id, "gateway:member_update", &guild.Membership{State: guild.StateMember,
		Member: &discordgo.Member{User: dc[id].User, Roles: []string{roleOld}}}, nil)
	ak.mu.Lock()
	ak.fail = &authentik.Error{Op: "add", Status: 503}
	ak.mu.Unlock()
	at(time.Second)
	q.next(t.Context())
	if st := q.Stats(); st.Retries != 1 {
		t.Fatalf("queue stats after a 503: %+v, want one retry", st)
	}
	ak.mu.Lock()
	ak.fail = nil
	ak.mu.Unlock()
	// Discord's truth (admin, editor) is what the retry must apply. The retry waits its
	// back-off (1 s) in the workqueue.
	at(2 * time.Second)
	done := make(chan struct{})
	go func() { q.next(t.Context()); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("retry did not run within 5 s")
	}
	sd.mu.Lock()
	calls := sd.calls
	sd.mu.Unlock()
	if calls != 1 {
		t.Errorf("Discord lookups by the retry: %d, want 1 (a retry must not reuse the event)", calls)
	}
	if !contains(ak.users[7].Groups, "g-admins") || contains(ak.users[7].Groups, "g-old") {
		t.Errorf("groups after the retry: %v, want Discord's current view", sorted(ak.users[7].Groups))
	}
	// The pass's page from t0 (the old role) comes later and must yield to the retry.
	at(3 * time.Second)
	out, err := r.Sync(t.Context(), Target{DiscordID: id, UserPKs: []int32{7},
		Known: &guild.Membership{State: guild.StateMember, Member: &discordgo.Member{
			User: dc[id].User, Roles: []string{roleOld}}}, ObservedAt: t0},
		"full_pass:timer", false)
	if err != nil {
		t.Fatal(err)
	}
	if out.Result != ResultSuperseded {
		t.Errorf("pass item after the retry: %s, want superseded", out.Result)
	}
}

// ctxAuthentik fails every call once ctx has ended, as the real client does.
type ctxAuthentik struct {
	*passAuthentik
	onWrite func()
}

func (c *ctxAuthentik) User(ctx context.Context, pk int32) (*authentik.User, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.passAuthentik.User(ctx, pk)
}

func (c *ctxAuthentik) UsersByDiscordIDs(ctx context.Context,
	ids []string) (map[int32]*authentik.User, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.passAuthentik.UsersByDiscordIDs(ctx, ids)
}

func (c *ctxAuthentik) write(ctx context.Context) error {
	if c.onWrite != nil {
		c.onWrite()
	}
	return ctx.Err()
}

func (c *ctxAuthentik) AddToGroup(ctx context.Context, g string, pk int32) error {
	if err := c.write(ctx); err != nil {
		return err
	}
	return c.passAuthentik.AddToGroup(ctx, g, pk)
}

func (c *ctxAuthentik) RemoveFromGroup(ctx context.Context, g string, pk int32) error {
	if err := c.write(ctx); err != nil {
		return err
	}
	return c.passAuthentik.RemoveFromGroup(ctx, g, pk)
}

func (c *ctxAuthentik) UpdateUser(ctx context.Context, pk int32, up authentik.Update) error {
	if err := c.write(ctx); err != nil {
		return err
	}
	return c.passAuthentik.UpdateUser(ctx, pk, up)
}

// recStore counts the sync records whose error is the cancellation.
type recStore struct {
	memStore
	cancelled atomic.Int64
}

func (s *recStore) RecordSync(_ context.Context, rec SyncRecord) error {
	if strings.Contains(rec.Error, "context canceled") {
		s.cancelled.Add(1)
	}
	return nil
}

// Cancelled in its apply phase, a pass may have had at most passWorkers syncs in flight;
// those are its "context canceled" errors. Members handed to a worker after the cancellation
// were never attempted and belong in NotReached, not in Errors and not in the sync log.
func TestFullPass_CancelledCountsOnlyInFlightAsErrors(t *testing.T) {
	worst, worstRecords := 0, int64(0)
	for range 30 {
		pa, dc, ids := passWorld(200)
		ctx, cancel := context.WithCancel(t.Context())
		var once sync.Once
		ak := &ctxAuthentik{passAuthentik: pa, onWrite: func() { once.Do(cancel) }}
		st := &recStore{memStore: memStore{states: map[int32]UserState{}}}
		r := New(dc, ak, st, newPassReconciler(pa, dc, nil).log, Options{
			GuildID: "81384788765712384"})
		rep, err := r.FullPass(ctx, PassOptions{Trigger: "test"})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("FullPass = %v, want context.Canceled", err)
		}
		if got := rep.Applied + rep.Errors + rep.Superseded + rep.NotReached; got != len(ids) {
			t.Errorf("applied %d + errors %d + superseded %d + not reached %d = %d, want %d",
				rep.Applied, rep.Errors, rep.Superseded, rep.NotReached, got, len(ids))
		}
		t.Logf("errors %d, not reached %d, applied %d, records %d", rep.Errors, rep.NotReached, rep.Applied, st.cancelled.Load())
		worst = max(worst, rep.Errors)
		worstRecords = max(worstRecords, st.cancelled.Load())
	}
	if worst > passWorkers {
		t.Errorf("up to %d members counted as errors after the cancellation, with %d workers: "+
			"members handed out after it were counted as failed syncs", worst, passWorkers)
	}
	if worstRecords > passWorkers {
		t.Errorf("up to %d \"context canceled\" sync records written for one cancelled pass, "+
			"with %d workers", worstRecords, passWorkers)
	}
}

// A cancellation while the last members are in flight leaves none unreached, but the pass
// did not finish either: its syncs failed with the context's error. It must not report
// itself as finished, or the controller would run its after-pass work on a dead context.
func TestFullPass_CancelledDuringLastBatchIsNotFinished(t *testing.T) {
	pa, dc, ids := passWorld(passWorkers)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// Every worker holds one member; once all are writing, the pass is cancelled.
	var writing atomic.Int32
	ak := &ctxAuthentik{passAuthentik: pa, onWrite: func() {
		if writing.Add(1) == passWorkers {
			cancel()
		}
		<-ctx.Done()
	}}
	logs := &logBuffer{}
	r := New(dc, ak, nil, newPassReconciler(pa, dc, logs).log, Options{
		GuildID: "81384788765712384"})
	rep, err := r.FullPass(ctx, PassOptions{Trigger: "test"})
	if rep.Errors != len(ids) || rep.NotReached != 0 {
		t.Fatalf("errors %d, not reached %d; want %d, 0 (every member in flight)", rep.Errors,
			rep.NotReached, len(ids))
	}
	if !errors.Is(err, ErrInterrupted) || !errors.Is(err, context.Canceled) {
		t.Errorf("FullPass = %v for a pass whose %d syncs were cut short; want "+
			"ErrInterrupted and context.Canceled; log:\n%s", err, rep.Errors, logs.String())
	}
	if strings.Contains(logs.String(), "full pass finished") {
		t.Errorf("the log calls the pass finished:\n%s", logs.String())
	}
}

// The states a first pass learns never replace one a sync stored while the pass listed.
func TestFullPass_LearnedStateDoesNotReplaceStored(t *testing.T) {
	pa, dc, ids := passWorld(3)
	// Make user 100 current so that the pass learns its state from the listing.
	dc.fakeDiscord[ids[0]].Roles = []string{roleOld}
	st := &memStore{states: map[int32]UserState{}}
	r := New(dc, pa, st, newPassReconciler(pa, dc, nil).log, Options{
		GuildID: "81384788765712384"})
	stored := UserState{UserPK: 100, DiscordID: ids[0], AttrHash: "stored-by-a-sync",
		UpdatedAt: time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)}
	// The group listing runs first; a sync stores its state right after it.
	var stored1 sync.Once
	r2 := &groupHookAuthentik{passAuthentik: pa, after: func() {
		stored1.Do(func() { _ = st.PutUserState(context.Background(), stored) })
	}}
	r.ak = r2
	rep, err := r.FullPass(t.Context(), PassOptions{Trigger: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stale %d of linked %d", rep.Stale, rep.Linked)
	got, _, _ := st.UserState(t.Context(), 100)
	if got.AttrHash != stored.AttrHash {
		t.Errorf("state of user 100 after the pass: %+v, want the one the sync stored", got)
	}
}

// groupHookAuthentik runs after once the group listing is done.
type groupHookAuthentik struct {
	*passAuthentik
	after func()
}

func (g *groupHookAuthentik) GroupsWithMembers(ctx context.Context,
	visit func(authentik.GroupMembers) error) error {
	err := g.passAuthentik.GroupsWithMembers(ctx, visit)
	g.after()
	return err
}

// A login's sync that waits for the member's lock (another sync of the member holds it)
// while the pass begins listing reads Discord only once it has the lock, after the listing
// began; its view is newer than the pass's page and must supersede it.
func TestFullPass_SyncWaitingForLockIsNewer(t *testing.T) {
	ak, dc := world()
	id := "80351110224678912"
	sd := &switchDiscord{fakeDiscord: dc}
	r := New(sd, ak, nil, newTestReconciler(ak, dc, Options{}).log, Options{
		GuildID: "81384788765712384"})
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	var now atomic.Int64
	at := func(d time.Duration) { now.Store(int64(d)) }
	r.opts.Now = func() time.Time { return t0.Add(time.Duration(now.Load())) }
	r.passing.Store(true)
	listedView := guild.Membership{State: guild.StateMember, Member: &discordgo.Member{
		User: dc[id].User, Roles: []string{roleAdmin, roleEditor}}}

	// Another sync of the member holds its lock (a slow avatar fetch, say).
	unlock, err := r.locks.lock(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	at(-500 * time.Millisecond)
	done := make(chan error, 1)
	go func() {
		_, err := r.Sync(context.Background(), Target{DiscordID: id}, "hook", false)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // the login is waiting for the lock
	// t0: the pass lists (admin, editor). t0+1s: the member loses both roles in Discord.
	at(time.Second)
	dc[id].Roles = []string{roleOld}
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if contains(ak.users[7].Groups, "g-admins") {
		t.Fatalf("the login did not apply Discord's view: %v", sorted(ak.users[7].Groups))
	}
	at(2 * time.Second)
	out, err := r.Sync(t.Context(), Target{DiscordID: id, UserPKs: []int32{7},
		Known: &listedView, ObservedAt: t0}, "full_pass:timer", false)
	if err != nil {
		t.Fatal(err)
	}
	if out.Result != ResultSuperseded {
		t.Errorf("pass item after a login that read Discord at t0+1s: %s, want superseded; "+
			"groups now %v", out.Result, sorted(ak.users[7].Groups))
	}
}

// A gateway event that waited in the queue while a pass listed and applied the guild is older
// than what the pass wrote. Taken off the queue after the pass, it must not set the member
// back, not even for a moment: its sync asks Discord afresh instead. Discord has moved on
// since the event (the member has admin and editor, and is in the guild); the event saying so
// was lost with the gateway session.
func TestFullPass_EventQueuedBeforePassDoesNotUndoIt(t *testing.T) {
	for _, tc := range []struct {
		kind string
		ms   func(u *discordgo.User) *guild.Membership
	}{
		{"member_update", func(u *discordgo.User) *guild.Membership {
			return &guild.Membership{State: guild.StateMember,
				Member: &discordgo.Member{User: u, Roles: []string{roleOld}}}
		}},
		{"member_remove", func(*discordgo.User) *guild.Membership {
			return &guild.Membership{State: guild.StateAbsent}
		}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			ak, dc, ids := passWorld(1)
			r := newPassReconciler(ak, dc, nil)
			q := NewQueue(r, 1, r.log)
			t0 := time.Now()
			at := func(d time.Duration) { r.opts.Now = func() time.Time { return t0.Add(d) } }

			at(-time.Second)
			q.Add(ids[0], "gateway:"+tc.kind, tc.ms(dc.fakeDiscord[ids[0]].User), nil)
			at(0)
			if _, err := r.FullPass(t.Context(), PassOptions{Trigger: "gateway_ready"}); err != nil {
				t.Fatal(err)
			}
			if !inLine(ak, 100) {
				t.Fatalf("the pass did not apply the guild: %+v", ak.users[100])
			}
			at(time.Second)
			writes := ak.writes
			if !q.next(t.Context()) {
				t.Fatal("queue shut down")
			}
			if !inLine(ak, 100) {
				t.Errorf("after the queued event: groups %v; its older view undid the pass",
					sorted(ak.users[100].Groups))
			}
			if ak.writes != writes {
				t.Errorf("%d writes for an event older than the pass, want none",
					ak.writes-writes)
			}
		})
	}
}

// A login reads Discord after the pass listed the guild (the member lost the old role and
// gained admin and editor), removes g-old, and then fails to add g-admins. What it removed
// came from a newer view than the pass's page; the pass's sync of the member must not put
// g-old back. The add fails with a 403, which nothing retries.
func TestFullPass_PartlyAppliedNewerViewIsKept(t *testing.T) {
	ak, dc := world()
	id := "80351110224678912"
	r := newTestReconciler(ak, dc, Options{})
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) { r.opts.Now = func() time.Time { return t0.Add(d) } }
	r.passing.Store(true)
	r.passBegan.Store(&t0)
	// The pass's page, from t0: the member still had the old role.
	page := guild.Membership{State: guild.StateMember, Member: &discordgo.Member{
		User: dc[id].User, Roles: []string{roleOld}}}

	at(time.Second)
	ak.mu.Lock()
	ak.failAdd = &authentik.Error{Op: "add to group", Status: 403}
	ak.mu.Unlock()
	if _, err := r.Sync(t.Context(), Target{DiscordID: id}, "hook", false); err == nil {
		t.Fatal("the login's sync did not fail")
	}
	if contains(ak.users[7].Groups, "g-old") {
		t.Fatalf("the login did not remove g-old: %v", sorted(ak.users[7].Groups))
	}
	ak.mu.Lock()
	ak.failAdd = nil
	ak.mu.Unlock()

	at(2 * time.Second)
	out, err := r.Sync(t.Context(), Target{DiscordID: id, UserPKs: []int32{7}, Known: &page,
		ObservedAt: t0}, "full_pass:timer", false)
	if err != nil {
		t.Fatal(err)
	}
	if contains(ak.users[7].Groups, "g-old") {
		t.Errorf("pass item from t0 after a login that read Discord at t0+1s and removed g-old: "+
			"result %s, groups %v; the pass gave back a group for a role the member lost",
			out.Result, sorted(ak.users[7].Groups))
	}
}

// blockingAuthentik holds the first write made while hold is set until release is closed,
// and runs afterGroups once the pass's group listing is done.
type blockingAuthentik struct {
	*passAuthentik
	hold        atomic.Bool
	holding     chan struct{}
	release     chan struct{}
	afterGroups func()
}

func (b *blockingAuthentik) wait() {
	if b.hold.CompareAndSwap(true, false) {
		close(b.holding)
		<-b.release
	}
}

func (b *blockingAuthentik) RemoveFromGroup(ctx context.Context, g string, pk int32) error {
	b.wait()
	return b.passAuthentik.RemoveFromGroup(ctx, g, pk)
}

func (b *blockingAuthentik) AddToGroup(ctx context.Context, g string, pk int32) error {
	b.wait()
	return b.passAuthentik.AddToGroup(ctx, g, pk)
}

func (b *blockingAuthentik) GroupsWithMembers(ctx context.Context,
	visit func(authentik.GroupMembers) error) error {
	err := b.passAuthentik.GroupsWithMembers(ctx, visit)
	if b.afterGroups != nil {
		b.afterGroups()
	}
	return err
}

// A gateway event from before a pass (the member had only the old role) is being synced
// when the pass begins; its check against the listing ran before the listing began, and it
// writes after the pass read the groups. Discord has since given the member admin and editor
// back (the event saying so was lost with the session whose end started the pass). The pass
// lists admin and editor and, from its group listing, finds the member current; after the
// pass the member must still be in line with the guild.
func TestFullPass_EventInFlightWhenPassBeginsDoesNotOutliveIt(t *testing.T) {
	pa, dc, ids := passWorld(1)
	ak := &blockingAuthentik{passAuthentik: pa, holding: make(chan struct{}),
		release: make(chan struct{})}
	r := New(dc, ak, nil, newPassReconciler(pa, dc, nil).log, Options{
		GuildID: "81384788765712384"})
	if _, err := r.FullPass(t.Context(), PassOptions{Trigger: "start"}); err != nil {
		t.Fatal(err)
	}
	if !inLine(pa, 100) {
		t.Fatalf("first pass did not apply the guild: %+v", pa.users[100])
	}

	old := guild.Membership{State: guild.StateMember, Member: &discordgo.Member{
		User: dc.fakeDiscord[ids[0]].User, Roles: []string{roleOld}}}
	ak.hold.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := r.Sync(context.Background(), Target{DiscordID: ids[0], Known: &old,
			ObservedAt: time.Now()}, "gateway:member_update", false)
		done <- err
	}()
	<-ak.holding // the event's sync is writing
	var once sync.Once
	ak.afterGroups = func() {
		once.Do(func() {
			close(ak.release)
			if err := <-done; err != nil {
				t.Errorf("event sync: %v", err)
			}
		})
	}
	rep, err := r.FullPass(t.Context(), PassOptions{Trigger: "gateway_ready"})
	if err != nil {
		t.Fatal(err)
	}
	if !inLine(pa, 100) {
		pa.mu.Lock()
		groups := sorted(pa.users[100].Groups)
		pa.mu.Unlock()
		t.Errorf("after the pass: groups %v (stale %d, applied %d); the event from before the "+
			"listing outlived the pass", groups, rep.Stale, rep.Applied)
	}
}

// Dry runs change neither passBegan nor recent: a dry-run pass, and a dry-run sync during an
// applying pass.
func TestFullPass_DryRunsLeavePassStateAlone(t *testing.T) {
	ak, dc, ids := passWorld(3)
	r := newPassReconciler(ak, dc, nil)
	began := time.Now().Add(-time.Hour)
	r.passBegan.Store(&began)
	if _, err := r.FullPass(t.Context(), PassOptions{Trigger: "admin_preview",
		DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if got := r.passBegan.Load(); got != &began {
		t.Errorf("passBegan after a dry-run pass: %v, want %v", got, began)
	}
	r.passing.Store(true)
	if _, err := r.Sync(t.Context(), Target{DiscordID: ids[0]}, "cli", true); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.recent.Load(ids[0]); ok {
		t.Errorf("a dry-run sync during a pass stored a recentSync")
	}
	if got := r.passBegan.Load(); got != &began {
		t.Errorf("passBegan after a dry-run sync: %v, want %v", got, began)
	}
}

// Items still in the queue when the bridge shuts down are dropped, for the next full pass to
// find. They must not be synced on the ended context: each would fail with "context
// canceled", be counted as a failed sync and leave that error as the member's last sync.
func TestQueue_ShutdownDropsLeftovers(t *testing.T) {
	pa, dc, ids := passWorld(50)
	st := &recStore{memStore: memStore{states: map[int32]UserState{}}}
	r := New(dc, &ctxAuthentik{passAuthentik: pa}, st, newPassReconciler(pa, dc, nil).log,
		Options{GuildID: "81384788765712384"})
	q := NewQueue(r, 4, r.log)
	for _, id := range ids {
		q.Add(id, "gateway:member_update", nil, nil)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	q.Run(ctx)
	s := q.Stats()
	if s.Processed != 0 || st.cancelled.Load() != 0 {
		t.Errorf("after a shutdown with %d queued: processed %d, failed %d, \"context canceled\" "+
			"sync records %d; want them dropped", len(ids), s.Processed, s.Failed,
			st.cancelled.Load())
	}
}

// connAuthentik fails the connection listing with err after cancelling the pass.
type connAuthentik struct {
	*passAuthentik
	cancel context.CancelFunc
	err    error
}

func (c *connAuthentik) Connections(context.Context) ([]authentik.Connection, error) {
	c.cancel()
	return nil, c.err
}

// A pass whose listing fails for a reason of its own (a 403 on the connections) as SIGTERM
// arrives reports that failure, not only the interruption.
func TestFullPass_ListingFailureIsNotHiddenByInterruption(t *testing.T) {
	pa, dc, _ := passWorld(3)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	forbidden := &authentik.Error{Op: "list connections", Status: 403}
	r := New(dc, &connAuthentik{passAuthentik: pa, cancel: cancel, err: forbidden}, nil,
		newPassReconciler(pa, dc, nil).log, Options{GuildID: "81384788765712384"})
	_, err := r.FullPass(ctx, PassOptions{Trigger: "cli"})
	if !errors.Is(err, forbidden) {
		t.Errorf("FullPass = %v; want it to name the 403", err)
	}
}

// allRecStore counts every sync record, and those that record a failure.
type allRecStore struct {
	memStore
	all, failed atomic.Int64
}

func (s *allRecStore) RecordSync(_ context.Context, rec SyncRecord) error {
	s.all.Add(1)
	if rec.Error != "" {
		s.failed.Add(1)
	}
	return nil
}

// The pass is cancelled while it reads its second batch, when the workers have finished the
// first and wait for more. Whatever the reader still hands out after that was never
// attempted: no errors, no failed sync records, all of the second batch not reached.
func TestFullPass_HandedOutAfterCancelIsNotAttempted(t *testing.T) {
	for range 20 {
		pa, dc, ids := passWorld(2 * readBatch)
		ctx, cancel := context.WithCancel(t.Context())
		st := &allRecStore{memStore: memStore{states: map[int32]UserState{}}}
		pa.batch = func(call int, want []string) (map[int32]*authentik.User, error) {
			if call == 2 {
				deadline := time.Now().Add(5 * time.Second)
				for st.all.Load() < readBatch && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				cancel()
			}
			return pa.filtered(want), nil
		}
		r := New(dc, &ctxAuthentik{passAuthentik: pa}, st, newPassReconciler(pa, dc, nil).log,
			Options{GuildID: "81384788765712384"})
		rep, err := r.FullPass(ctx, PassOptions{Trigger: "test"})
		cancel()
		if !errors.Is(err, ErrInterrupted) {
			t.Fatalf("FullPass = %v, want ErrInterrupted", err)
		}
		if rep.Applied != readBatch || rep.Errors != 0 || rep.NotReached != len(ids)-readBatch ||
			st.failed.Load() != 0 {
			t.Fatalf("applied %d, errors %d, not reached %d, failed sync records %d; want %d, "+
				"0, %d, 0", rep.Applied, rep.Errors, rep.NotReached, st.failed.Load(),
				readBatch, len(ids)-readBatch)
		}
	}
}
