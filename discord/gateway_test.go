package discord_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/google/go-cmp/cmp"

	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

// recorder keeps the events a Gateway hands on.
type recorder struct {
	mu     sync.Mutex
	events []discord.Event
	panics map[discord.EventKind]bool // kinds whose delivery panics
}

func (r *recorder) handle(e discord.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	boom := r.panics[e.Kind]
	r.mu.Unlock()
	if boom {
		panic("handler failed on " + string(e.Kind))
	}
}

func (r *recorder) all() []discord.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]discord.Event(nil), r.events...)
}

func (r *recorder) count(kind discord.EventKind) int {
	n := 0
	for _, e := range r.all() {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func (r *recorder) kinds() []discord.EventKind {
	var ks []discord.EventKind
	for _, e := range r.all() {
		ks = append(ks, e.Kind)
	}
	return ks
}

// syncBuffer is a log sink the gateway's goroutines may write to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type running struct {
	g    *discord.Gateway
	rec  *recorder
	logs *syncBuffer
	stop context.CancelFunc
	done chan error

	once sync.Once
	err  error
}

// startGateway runs a Gateway against the stub until the test ends.
func startGateway(
	t *testing.T, s *discordstub.Server, edit func(*discord.GatewayOptions),
) *running {
	t.Helper()
	r := &running{rec: &recorder{}, logs: &syncBuffer{}, done: make(chan error, 1)}
	o := discord.GatewayOptions{
		Token:   token,
		GuildID: guildID,
		APIURL:  s.APIURL(),
		Logger:  slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handle:  r.rec.handle,
	}
	if edit != nil {
		edit(&o)
	}
	g, err := discord.NewGateway(o)
	if err != nil {
		t.Fatalf("NewGateway: %v", err)
	}
	r.g = g

	ctx, cancel := context.WithCancel(t.Context())
	r.stop = cancel
	go func() { r.done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		r.wait(t)
	})
	return r
}

// wait returns what Run returned, failing the test if it does not return in time.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	r.once.Do(func() {
		select {
		case r.err = <-r.done:
		case <-time.After(10 * time.Second):
			r.err = errors.New("Run did not return")
			t.Error(r.err)
		}
	})
	return r.err
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stays polls cond for a while and fails the test as soon as it does not hold.
func stays(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !cond() {
			t.Fatalf("%s no longer holds", what)
		}
	}
}

func stubMember(id, nick string, roles ...string) discordstub.Member {
	m := discordstub.ExampleMember()
	m.User.ID = id
	if nick != "" {
		m.Nick = discordstub.Ptr(nick)
	}
	m.Roles = append([]string{}, roles...)
	return m
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// seen is the part of an Event the tests compare.
type seen struct {
	Kind            discord.EventKind
	GuildID, UserID string
	Nick            string
	Roles           []string
	RoleID          string
	RoleName        string
	HasMember       bool
}

func summarize(events []discord.Event) []seen {
	var out []seen
	for _, e := range events {
		v := seen{Kind: e.Kind, GuildID: e.GuildID, UserID: e.UserID, RoleID: e.RoleID}
		if e.Member != nil {
			v.HasMember, v.Nick, v.Roles = true, e.Member.Nick, e.Member.Roles
		}
		if e.Role != nil {
			v.RoleName = e.Role.Name
		}
		out = append(out, v)
	}
	return out
}

func TestGateway_eventsInOrder(t *testing.T) {
	t.Parallel()
	s := newStub(t)
	role := discordstub.ExampleRole()
	s.SetRoles(role)
	r := startGateway(t, s, nil)
	waitFor(t, "ready", func() bool { return r.rec.count(discord.EventReady) == 1 })

	want := discordgo.IntentGuilds | discordgo.IntentGuildMembers
	if got := s.LastIntents(); got != int(want) {
		t.Errorf("intents sent = %d, want GUILDS|GUILD_MEMBERS (%d)", got, want)
	}

	must(t, s.DispatchMemberAdd(stubMember(nelly, "first", role.ID)))
	must(t, s.DispatchMemberUpdate(stubMember(nelly, "nell", role.ID)))
	role.Name = "renamed"
	must(t, s.DispatchRoleUpdate(role))
	must(t, s.DispatchMemberRemove(nelly))
	must(t, s.DispatchRoleDelete(role.ID))
	waitFor(t, "six events", func() bool { return len(r.rec.all()) == 6 })

	wantSeen := []seen{
		{Kind: discord.EventReady, GuildID: guildID},
		{Kind: discord.EventMemberAdd, GuildID: guildID, UserID: nelly, Nick: "first",
			Roles: []string{role.ID}, HasMember: true},
		{Kind: discord.EventMemberUpdate, GuildID: guildID, UserID: nelly, Nick: "nell",
			Roles: []string{role.ID}, HasMember: true},
		{Kind: discord.EventRoleUpdate, GuildID: guildID, RoleID: role.ID, RoleName: "renamed"},
		{Kind: discord.EventMemberRemove, GuildID: guildID, UserID: nelly},
		{Kind: discord.EventRoleDelete, GuildID: guildID, RoleID: role.ID},
	}
	events := r.rec.all()
	if diff := cmp.Diff(wantSeen, summarize(events)); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
	for i, e := range events {
		if e.At.IsZero() || (i > 0 && e.At.Before(events[i-1].At)) {
			t.Errorf("event %d (%s) At = %v, want set and not before the previous", i, e.Kind, e.At)
		}
	}
	if m := events[1].Member; m.GuildID != guildID || m.User == nil || m.User.Username != "nelly" {
		t.Errorf("member_add member = %+v, want guild %s and the user nelly", m, guildID)
	}

	st := r.g.Status()
	if st.State != discord.GatewayReady || st.Sessions != 1 || st.Resumes != 0 ||
		st.Disconnects != 0 || st.LastReady.IsZero() || !st.LastEvent.Equal(events[5].At) {
		t.Errorf("Status() = %+v, want ready, 1 session, LastEvent of the last event", st)
	}
}

func TestGateway_otherGuildIgnored(t *testing.T) {
	t.Parallel()
	s := newStub(t)
	const other = "41771983423143938"
	r := startGateway(t, s, func(o *discord.GatewayOptions) { o.GuildID = other })
	waitFor(t, "ready", func() bool { return r.rec.count(discord.EventReady) == 1 })
	if st := r.g.Status(); !strings.Contains(st.Reason, "not a member of guild "+other) {
		t.Errorf("Status().Reason = %q, want it to say the bot is not in guild %s", st.Reason, other)
	}

	must(t, s.DispatchMemberAdd(stubMember(nelly, "")))
	must(t, s.DispatchRoleUpdate(discordstub.ExampleRole()))
	// Events come in order: once the second READY is here, the others have been dropped.
	s.SendInvalidSession(false)
	waitFor(t, "second ready", func() bool { return r.rec.count(discord.EventReady) == 2 })

	want := []discord.EventKind{discord.EventReady, discord.EventReady}
	if diff := cmp.Diff(want, r.rec.kinds()); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
}

func TestGateway_dropConnectionResumes(t *testing.T) {
	t.Parallel()
	s := newStub(t)
	r := startGateway(t, s, nil)
	waitFor(t, "ready", func() bool { return r.rec.count(discord.EventReady) == 1 })

	s.DropConnection()
	must(t, s.DispatchMemberAdd(stubMember(nelly, "while away")))
	waitFor(t, "resumed", func() bool { return r.rec.count(discord.EventResumed) == 1 })

	want := []discord.EventKind{discord.EventReady, discord.EventMemberAdd, discord.EventResumed}
	if diff := cmp.Diff(want, r.rec.kinds()); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
	st := r.g.Status()
	if st.State != discord.GatewayResumed || st.Sessions != 1 || st.Resumes != 1 ||
		st.Disconnects != 1 {
		t.Errorf("Status() = %+v, want resumed, 1 session, 1 resume, 1 disconnect", st)
	}
	if s.Identifies() != 1 || s.Resumes() != 1 {
		t.Errorf("stub saw %d identifies and %d resumes, want 1 and 1", s.Identifies(), s.Resumes())
	}
}

func TestGateway_reconnectReplaysMissedEvents(t *testing.T) {
	t.Parallel()
	s := newStub(t)
	r := startGateway(t, s, nil)
	waitFor(t, "ready", func() bool { return r.rec.count(discord.EventReady) == 1 })

	// Held events reach the bridge only through the replay that follows RESUME.
	s.PauseDispatch(true)
	must(t, s.DispatchMemberUpdate(stubMember(nelly, "a")))
	must(t, s.DispatchMemberUpdate(stubMember(nelly, "b")))
	s.SendReconnect()
	waitFor(t, "resumed", func() bool { return r.rec.count(discord.EventResumed) == 1 })
	s.PauseDispatch(false)

	want := []seen{
		{Kind: discord.EventReady, GuildID: guildID},
		{Kind: discord.EventMemberUpdate, GuildID: guildID, UserID: nelly, Nick: "a",
			Roles: []string{}, HasMember: true},
		{Kind: discord.EventMemberUpdate, GuildID: guildID, UserID: nelly, Nick: "b",
			Roles: []string{}, HasMember: true},
		{Kind: discord.EventResumed, GuildID: guildID},
	}
	if diff := cmp.Diff(want, summarize(r.rec.all())); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
	if st := r.g.Status(); st.Resumes != 1 || st.Disconnects != 1 || st.Sessions != 1 {
		t.Errorf("Status() = %+v, want 1 session, 1 resume, 1 disconnect", st)
	}
	if s.Identifies() != 1 {
		t.Errorf("stub saw %d identifies, want 1", s.Identifies())
	}
}

func TestGateway_invalidSessionStartsNewSession(t *testing.T) {
	t.Parallel()
	s := newStub(t)
	r := startGateway(t, s, nil)
	waitFor(t, "ready", func() bool { return r.rec.count(discord.EventReady) == 1 })

	const other = "123456789012345678"
	s.PauseDispatch(true)
	must(t, s.DispatchMemberAdd(stubMember(nelly, ""))) // lost with the old session
	s.SendInvalidSession(false)
	waitFor(t, "second ready", func() bool { return r.rec.count(discord.EventReady) == 2 })
	s.PauseDispatch(false)
	must(t, s.DispatchMemberAdd(stubMember(other, "")))
	waitFor(t, "member_add", func() bool { return r.rec.count(discord.EventMemberAdd) == 1 })

	events := r.rec.all()
	want := []discord.EventKind{discord.EventReady, discord.EventReady, discord.EventMemberAdd}
	if diff := cmp.Diff(want, r.rec.kinds()); diff != "" {
		t.Errorf("events mismatch (-want +got):\n%s", diff)
	}
	if got := events[len(events)-1].UserID; got != other {
		t.Errorf("member_add for %s, want %s (the one before INVALID_SESSION is lost)", got, other)
	}
	st := r.g.Status()
	if st.State != discord.GatewayReady || st.Sessions != 2 || st.Disconnects != 0 {
		t.Errorf("Status() = %+v, want ready, 2 sessions, no disconnect", st)
	}
	if s.Identifies() != 2 {
		t.Errorf("stub saw %d identifies, want 2", s.Identifies())
	}
}

func TestGateway_fatalCloseCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		token      string
		refuse     bool // before connecting
		midSession bool // refuse, then end the session so that the bot identifies again
		wantErr    error
		wantState  discord.GatewayState
		wantReason []string
		wantIdents int
	}{
		{
			name: "intent refused at connect", token: token, refuse: true,
			wantErr: discord.ErrIntentRefused, wantState: discord.GatewayIntentRefused,
			wantReason: []string{"4014", "Bot → Privileged Gateway Intents → Server Members Intent"},
			wantIdents: 1,
		},
		{
			// discordgo reads this close frame while listening, not in Open: only the
			// watched socket sees its code.
			name: "intent refused mid-session", token: token, midSession: true,
			wantErr: discord.ErrIntentRefused, wantState: discord.GatewayIntentRefused,
			wantReason: []string{"4014", "Server Members Intent"},
			wantIdents: 2,
		},
		{
			name: "token refused", token: "wrong-token",
			wantErr: discord.ErrAuthFailed, wantState: discord.GatewayAuthFailed,
			wantReason: []string{"4004", "token"},
			wantIdents: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStub(t)
			s.RefuseIntents(tt.refuse)
			r := startGateway(t, s, func(o *discord.GatewayOptions) { o.Token = tt.token })
			if tt.midSession {
				waitFor(t, "ready", func() bool { return r.rec.count(discord.EventReady) == 1 })
				s.RefuseIntents(true)
				s.SendInvalidSession(false)
			}

			err := r.wait(t)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run() = %v, want an error wrapping %v", err, tt.wantErr)
			}
			st := r.g.Status()
			if st.State != tt.wantState {
				t.Errorf("State = %q, want %q", st.State, tt.wantState)
			}
			for _, part := range tt.wantReason {
				if !strings.Contains(st.Reason, part) {
					t.Errorf("Reason = %q, want it to contain %q", st.Reason, part)
				}
			}
			stays(t, "no further IDENTIFY", 300*time.Millisecond, func() bool {
				return s.Identifies() == tt.wantIdents
			})
			if n := strings.Count(r.logs.String(), "level=ERROR"); n != 1 {
				t.Errorf("%d error lines logged, want exactly 1:\n%s", n, r.logs.String())
			}
		})
	}
}

func TestGateway_cancelClosesSocket(t *testing.T) {
	t.Parallel()
	s := newStub(t)
	r := startGateway(t, s, nil)
	waitFor(t, "ready", func() bool { return r.rec.count(discord.EventReady) == 1 })
	if !s.Connected() {
		t.Fatal("stub has no connected session after ready")
	}

	if err := r.g.Run(t.Context()); err == nil {
		t.Error("second Run() = nil, want an error")
	}
	r.stop()
	if err := r.wait(t); err != nil {
		t.Fatalf("Run() = %v after cancel, want nil", err)
	}
	if st := r.g.Status(); st.State != discord.GatewayStopped {
		t.Errorf("State = %q, want stopped", st.State)
	}
	waitFor(t, "the stub to see the socket closed", func() bool { return !s.Connected() })
}

func TestGateway_manyUpdatesInOrder(t *testing.T) {
	t.Parallel()
	s := newStub(t)
	r := startGateway(t, s, nil)
	waitFor(t, "ready", func() bool { return r.rec.count(discord.EventReady) == 1 })

	var want []string
	for i := range 100 {
		nick := fmt.Sprintf("n%03d", i)
		want = append(want, nick)
		must(t, s.DispatchMemberUpdate(stubMember(nelly, nick)))
	}
	waitFor(t, "100 updates", func() bool { return r.rec.count(discord.EventMemberUpdate) == 100 })

	var got []string
	for _, e := range r.rec.all() {
		if e.Kind == discord.EventMemberUpdate {
			got = append(got, e.Member.Nick)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("update order mismatch (-want +got):\n%s", diff)
	}
}

func TestGateway_handlerPanicIsContained(t *testing.T) {
	t.Parallel()
	s := newStub(t)
	r := startGateway(t, s, nil)
	r.rec.mu.Lock()
	r.rec.panics = map[discord.EventKind]bool{discord.EventMemberAdd: true}
	r.rec.mu.Unlock()
	waitFor(t, "ready", func() bool { return r.rec.count(discord.EventReady) == 1 })

	must(t, s.DispatchMemberAdd(stubMember(nelly, "")))
	must(t, s.DispatchMemberUpdate(stubMember(nelly, "after")))
	waitFor(t, "the update after the panic", func() bool {
		return r.rec.count(discord.EventMemberUpdate) == 1
	})
	if !strings.Contains(r.logs.String(), "panicked") {
		t.Errorf("the panic was not logged:\n%s", r.logs.String())
	}
	if st := r.g.Status(); st.State != discord.GatewayReady || st.Disconnects != 0 {
		t.Errorf("Status() = %+v, want the session still ready", st)
	}
}

func TestNewGateway_invalidOptions(t *testing.T) {
	t.Parallel()
	handle := func(discord.Event) {}
	tests := []struct {
		name string
		o    discord.GatewayOptions
	}{
		{"empty token", discord.GatewayOptions{GuildID: guildID, Handle: handle}},
		{"token with spaces", discord.GatewayOptions{Token: "a b", GuildID: guildID, Handle: handle}},
		{"guild not a snowflake", discord.GatewayOptions{Token: token, GuildID: "x", Handle: handle}},
		{"no handler", discord.GatewayOptions{Token: token, GuildID: guildID}},
		{"api url not http", discord.GatewayOptions{
			Token: token, GuildID: guildID, Handle: handle, APIURL: "ftp://example.com/api",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := discord.NewGateway(tt.o); err == nil {
				t.Error("NewGateway() = nil error, want one")
			}
		})
	}

	g, err := discord.NewGateway(discord.GatewayOptions{
		Token: "Bot " + token, GuildID: guildID, Handle: handle,
	})
	if err != nil {
		t.Fatalf("NewGateway with defaults: %v", err)
	}
	if st := g.Status(); st.State != discord.GatewayStopped {
		t.Errorf("State before Run = %q, want stopped", st.State)
	}
}

// TestSetDiscordgoEndpoints is not parallel: it changes discordgo's process-global variables,
// which the parallel gateway tests set for themselves only after this test has ended.
func TestSetDiscordgoEndpoints(t *testing.T) {
	saved := []*string{
		&discordgo.EndpointAPI, &discordgo.EndpointGuilds, &discordgo.EndpointChannels,
		&discordgo.EndpointUsers, &discordgo.EndpointGateway, &discordgo.EndpointGatewayBot,
		&discordgo.EndpointWebhooks, &discordgo.EndpointStickers,
		&discordgo.EndpointStageInstances, &discordgo.EndpointVoice,
		&discordgo.EndpointVoiceRegions, &discordgo.EndpointNitroStickersPacks,
		&discordgo.EndpointGuildCreate, &discordgo.EndpointApplications, &discordgo.EndpointOAuth2,
	}
	values := make([]string, len(saved))
	for i, p := range saved {
		values[i] = *p
	}
	t.Cleanup(func() {
		for i, p := range saved {
			*p = values[i]
		}
	})

	if err := discord.SetDiscordgoEndpoints("http://127.0.0.1:1/api/v10/"); err != nil {
		t.Fatalf("SetDiscordgoEndpoints: %v", err)
	}
	got := map[string]string{
		"api":         discordgo.EndpointAPI,
		"gateway":     discordgo.EndpointGateway,
		"gateway bot": discordgo.EndpointGatewayBot,
		"member":      discordgo.EndpointGuildMember(guildID, nelly),
		"user":        discordgo.EndpointUser("@me"),
	}
	want := map[string]string{
		"api":         "http://127.0.0.1:1/api/v10/",
		"gateway":     "http://127.0.0.1:1/api/v10/gateway",
		"gateway bot": "http://127.0.0.1:1/api/v10/gateway/bot",
		"member":      "http://127.0.0.1:1/api/v10/guilds/" + guildID + "/members/" + nelly,
		"user":        "http://127.0.0.1:1/api/v10/users/@me",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("endpoints mismatch (-want +got):\n%s", diff)
	}
	if discordgo.EndpointCDN != "https://cdn.discordapp.com/" {
		t.Errorf("EndpointCDN = %q, want it left alone", discordgo.EndpointCDN)
	}

	if err := discord.SetDiscordgoEndpoints("not a url"); err == nil {
		t.Error("SetDiscordgoEndpoints(\"not a url\") = nil, want an error")
	}
	if discordgo.EndpointAPI != want["api"] {
		t.Errorf("a refused URL changed EndpointAPI to %q", discordgo.EndpointAPI)
	}
}
