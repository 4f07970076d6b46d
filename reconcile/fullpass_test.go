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
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/discord-authentik-bridge/bridge/authentik"
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
