package discord_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/google/go-cmp/cmp"

	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

const (
	guildID = "41771983423143937"
	token   = "test-token"

	// nelly is the documented example user; bigRole has 19 digits, which float64 would round.
	nelly   = "80351110224678912"
	bigRole = "1234567890123456789"
)

func newStub(t *testing.T) *discordstub.Server {
	t.Helper()
	s, err := discordstub.New(discordstub.Options{GuildID: guildID, Token: token})
	if err != nil {
		t.Fatalf("start stub: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newClient(t *testing.T, apiURL, tok string) *discord.Client {
	t.Helper()
	c, err := discord.NewClient(discord.Options{Token: tok, APIURL: apiURL})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

// deadline gives a context that ends well after any call of these tests should have returned.
func deadline(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func addMember(t *testing.T, s *discordstub.Server, id string, edit func(*discordstub.Member)) {
	t.Helper()
	m := discordstub.ExampleMember()
	m.User.ID = id
	if edit != nil {
		edit(&m)
	}
	if err := s.SetMember(m); err != nil {
		t.Fatalf("SetMember: %v", err)
	}
}

// asError returns err as *discord.Error or fails the test.
func asError(t *testing.T, err error) *discord.Error {
	t.Helper()
	e, ok := errors.AsType[*discord.Error](err)
	if !ok {
		t.Fatalf("error %v (%T) is not a *discord.Error", err, err)
	}
	return e
}

func TestClient_Member(t *testing.T) {
	s := newStub(t)
	addMember(t, s, nelly, func(m *discordstub.Member) {
		m.Roles = []string{"41771983423143936", bigRole}
		m.Avatar = discordstub.Ptr("a_1269e74af4df7417b13759eae50c83dc")
	})
	c := newClient(t, s.APIURL(), token)

	got, err := c.Member(deadline(t), guildID, nelly)
	if err != nil {
		t.Fatalf("Member: %v", err)
	}

	want := &discordgo.Member{
		GuildID:  guildID,
		JoinedAt: time.Date(2015, 4, 26, 6, 26, 56, 936000000, time.UTC),
		Nick:     "NOT API SUPPORT",
		Avatar:   "a_1269e74af4df7417b13759eae50c83dc",
		Roles:    []string{"41771983423143936", bigRole},
		User: &discordgo.User{
			ID:            nelly,
			Username:      "nelly",
			GlobalName:    "Nelly",
			Discriminator: "0",
			Avatar:        "8342729096ea3675442027381ff50dfe",
			Banner:        "06c16474723fe537c283b8efa61a30c8",
			AccentColor:   16711680,
			PublicFlags:   64,
			Flags:         64,
		},
	}
	sameInstant := cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })
	if diff := cmp.Diff(want, got, sameInstant); diff != "" {
		t.Errorf("Member (-want +got):\n%s", diff)
	}
	if got := discord.DisplayName(got); got != "Nelly" {
		t.Errorf("DisplayName = %q, want Nelly", got)
	}
}

func TestClient_Member_errors(t *testing.T) {
	s := newStub(t)
	tests := []struct {
		name          string
		guild, user   string
		wantIs        error
		wantStatus    int
		wantCode      int
		wantRequested bool
	}{
		{"not a member", guildID, "1", discord.ErrNotMember, 404, 10007, true},
		{"unknown guild", "1", nelly, nil, 404, 10004, true},
		{"user id not digits", guildID, "../roles", discord.ErrInvalidID, 0, 0, false},
		{"user id of 21 digits", guildID, "123456789012345678901",
			discord.ErrInvalidID, 0, 0, false},
		{"empty guild id", "", nelly, discord.ErrInvalidID, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.ResetCounts()
			c := newClient(t, s.APIURL(), token)

			_, err := c.Member(deadline(t), tt.guild, tt.user)
			e := asError(t, err)
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if tt.wantIs == nil && errors.Is(err, discord.ErrNotMember) {
				t.Errorf("error %v is ErrNotMember, want another error", err)
			}
			if e.Status != tt.wantStatus || e.Code != tt.wantCode {
				t.Errorf("status, code = %d, %d; want %d, %d",
					e.Status, e.Code, tt.wantStatus, tt.wantCode)
			}
			if discord.IsRetryable(err) {
				t.Errorf("IsRetryable(%v) = true, want false", err)
			}
			if got := s.Counts().Total > 0; got != tt.wantRequested {
				t.Errorf("request sent = %t, want %t", got, tt.wantRequested)
			}
		})
	}
}

func TestClient_rateLimit(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter float64
		global     bool
	}{
		{"per route", 0.05, false},
		// Discord's documented global 429 has no X-RateLimit-Reset-After, which discordgo
		// needs to notice it.
		{"global without reset-after", 0.05, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStub(t)
			addMember(t, s, nelly, nil)
			c := newClient(t, s.APIURL(), token)
			s.RateLimitNext(1, tt.retryAfter, tt.global)

			m, err := c.Member(deadline(t), guildID, nelly)
			if err != nil {
				t.Fatalf("Member after a 429 that fits the deadline: %v", err)
			}
			if m.User.ID != nelly {
				t.Errorf("user = %s, want %s", m.User.ID, nelly)
			}
			if got := s.Counts(); got.Total != 2 || got.RateLimited != 1 {
				t.Errorf("stub counts = %+v, want 2 requests, 1 rate limited", got)
			}
			st := c.Stats()
			if st.Calls != 2 || st.RateLimited != 1 || st.RateLimitWait <= 0 {
				t.Errorf("Stats = %+v, want 2 calls, 1 rate limited, some wait", st)
			}
		})
	}
}

// A 429 asking for longer than the caller can wait ends the call at once with a retryable
// error, and later calls under the same limit do not reach Discord.
func TestClient_rateLimitBeyondDeadline(t *testing.T) {
	tests := []struct {
		name         string
		global       bool
		rolesBlocked bool // whether a call on another route is held too
	}{
		{"per route", false, false},
		{"global", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStub(t)
			addMember(t, s, nelly, nil)
			c := newClient(t, s.APIURL(), token)
			s.RateLimitNext(1, 30, tt.global)

			ctx := deadline(t)
			_, err := c.Member(ctx, guildID, nelly)
			if ctx.Err() != nil {
				t.Fatalf("Member returned only after its deadline")
			}
			e := asError(t, err)
			if !errors.Is(err, discord.ErrRateLimited) || !discord.IsRetryable(err) {
				t.Errorf("error %v: want a retryable ErrRateLimited", err)
			}
			if e.Status != http.StatusTooManyRequests || e.RetryAfter < 29*time.Second {
				t.Errorf("status %d, RetryAfter %v; want 429 and about 30s", e.Status, e.RetryAfter)
			}

			_, err = c.Member(deadline(t), guildID, nelly)
			if !errors.Is(err, discord.ErrRateLimited) {
				t.Errorf("second call: %v, want ErrRateLimited", err)
			}
			_, err = c.Roles(deadline(t), guildID)
			if blocked := errors.Is(err, discord.ErrRateLimited); blocked != tt.rolesBlocked {
				t.Errorf("roles call: %v, want rate limited %t", err, tt.rolesBlocked)
			}

			wantTotal := 2
			if tt.rolesBlocked {
				wantTotal = 1
			}
			if got := s.Counts().Total; got != wantTotal {
				t.Errorf("stub saw %d requests, want %d", got, wantTotal)
			}
		})
	}
}

func TestClient_serverErrors(t *testing.T) {
	tests := []struct {
		name      string
		failures  int
		status    int
		wantErr   bool
		wantTotal int
	}{
		{"500 twice", 2, 500, true, 2},
		{"503 twice", 2, 503, true, 2},
		{"502 once then success", 1, 502, false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStub(t)
			addMember(t, s, nelly, nil)
			c := newClient(t, s.APIURL(), token)
			s.FailNext(tt.failures, tt.status)

			_, err := c.Member(deadline(t), guildID, nelly)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Member error = %v, want error %t", err, tt.wantErr)
			}
			if tt.wantErr {
				if e := asError(t, err); e.Status != tt.status || !discord.IsRetryable(err) {
					t.Errorf("error %v: want retryable with status %d", err, tt.status)
				}
			}
			if got := s.Counts().Total; got != tt.wantTotal {
				t.Errorf("stub saw %d requests, want %d", got, tt.wantTotal)
			}
		})
	}
}

func TestClient_garbage(t *testing.T) {
	s := newStub(t)
	addMember(t, s, nelly, nil)
	s.SetRoles(discordstub.ExampleRole())
	c := newClient(t, s.APIURL(), token)

	calls := map[string]func(context.Context, *discord.Client) error{
		"member":   member,
		"roles":    roles,
		"bot user": botUser,
		"page": func(ctx context.Context, c *discord.Client) error {
			_, err := c.MembersPage(ctx, guildID, "", 10)
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			s.SetGarbage(1)
			err := call(deadline(t), c)
			if e := asError(t, err); e.Status != http.StatusOK || !discord.IsRetryable(err) {
				t.Errorf("error %v: want a retryable error with status 200", err)
			}
			if err := call(deadline(t), c); err != nil {
				t.Errorf("call after the garbage: %v", err)
			}
		})
	}
}

// Bodies a stand-in or a proxy might send with a 200 that discordgo's own methods panic on or
// that cannot be what was asked for.
func TestClient_malformedBodies(t *testing.T) {
	tests := []struct {
		name string
		body string
		call func(context.Context, *discord.Client) error
	}{
		{"null member", "null", member},
		{"empty member", "", member},
		{"member without user", `{"nick": "x", "roles": []}`, member},
		{"member of another user", `{"user": {"id": "1"}, "roles": []}`, member},
		{"string for member", `"member"`, member},
		{"null roles", "null", roles},
		{"null role in list", "[null]", roles},
		{"object for roles", `{"id": "1"}`, roles},
		{"null user", "null", botUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			answer := func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, tt.body)
			}
			srv := httptest.NewServer(http.HandlerFunc(answer))
			t.Cleanup(srv.Close)
			c := newClient(t, srv.URL+"/api/v10", token)

			err := tt.call(deadline(t), c)
			if e := asError(t, err); e.Status != http.StatusOK || !discord.IsRetryable(err) {
				t.Errorf("error %v: want a retryable error with status 200", err)
			}
		})
	}
}

func member(ctx context.Context, c *discord.Client) error {
	_, err := c.Member(ctx, guildID, nelly)
	return err
}

func roles(ctx context.Context, c *discord.Client) error {
	_, err := c.Roles(ctx, guildID)
	return err
}

func botUser(ctx context.Context, c *discord.Client) error {
	_, err := c.BotUser(ctx)
	return err
}

func TestClient_unauthorized(t *testing.T) {
	s := newStub(t)
	c := newClient(t, s.APIURL(), "wrong-token")

	_, err := c.BotUser(deadline(t))
	e := asError(t, err)
	if e.Status != http.StatusUnauthorized || discord.IsRetryable(err) {
		t.Errorf("error %v: want a final 401", err)
	}
	if e.Message != "401: Unauthorized" {
		t.Errorf("Message = %q, want Discord's", e.Message)
	}
}

func TestClient_noAnswer(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		s := newStub(t)
		c := newClient(t, s.APIURL(), token)
		_ = s.Close()

		_, err := c.Member(deadline(t), guildID, nelly)
		if e := asError(t, err); e.Status != 0 || !discord.IsRetryable(err) {
			t.Errorf("error %v: want retryable without status", err)
		}
	})

	// hanging answers nothing until the request ends; arrived tells when a request is in.
	hanging := func(t *testing.T) (*discord.Client, <-chan struct{}) {
		t.Helper()
		release := make(chan struct{})
		arrived := make(chan struct{}, 1)
		srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			select {
			case arrived <- struct{}{}:
			default:
			}
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}))
		t.Cleanup(srv.Close)
		t.Cleanup(func() { close(release) })
		return newClient(t, srv.URL+"/api/v10", token), arrived
	}

	t.Run("deadline", func(t *testing.T) {
		c, _ := hanging(t)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()

		_, err := c.Member(ctx, guildID, nelly)
		if !errors.Is(err, context.DeadlineExceeded) || !discord.IsRetryable(err) {
			t.Errorf("error %v: want retryable DeadlineExceeded", err)
		}
	})

	t.Run("cancelled in flight", func(t *testing.T) {
		c, arrived := hanging(t)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() {
			<-arrived
			cancel()
		}()

		_, err := c.Member(ctx, guildID, nelly)
		if !errors.Is(err, context.Canceled) || discord.IsRetryable(err) {
			t.Errorf("error %v: want final Canceled", err)
		}
	})
}

func TestClient_MembersPage(t *testing.T) {
	s := newStub(t)
	ids := []string{nelly, "123456789012345678", bigRole} // ascending as numbers
	for _, id := range ids {
		addMember(t, s, id, nil)
	}
	c := newClient(t, s.APIURL(), token)

	tests := []struct {
		name    string
		after   string
		limit   int
		wantIDs []string
	}{
		{"first page", "", 2, ids[:2]},
		{"second page", ids[1], 2, ids[2:]},
		{"past the end", bigRole, 1000, nil},
		{"one", "", 1, ids[:1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page, err := c.MembersPage(deadline(t), guildID, tt.after, tt.limit)
			if err != nil {
				t.Fatalf("MembersPage: %v", err)
			}
			var got []string
			for _, m := range page {
				got = append(got, m.User.ID)
				if m.GuildID != guildID {
					t.Errorf("member %s has GuildID %q, want %s", m.User.ID, m.GuildID, guildID)
				}
			}
			if diff := cmp.Diff(tt.wantIDs, got); diff != "" {
				t.Errorf("IDs (-want +got):\n%s", diff)
			}
		})
	}

	for _, limit := range []int{0, 1001} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			s.ResetCounts()
			_, err := c.MembersPage(deadline(t), guildID, "", limit)
			if err == nil || discord.IsRetryable(err) || s.Counts().Total != 0 {
				t.Errorf("error %v after %d requests: want a final error without a request",
					err, s.Counts().Total)
			}
		})
	}

	t.Run("without the members intent", func(t *testing.T) {
		s.SetMembersIntent(false)
		_, err := c.MembersPage(deadline(t), guildID, "", 10)
		if e := asError(t, err); e.Status != http.StatusForbidden || e.Code != 50001 {
			t.Errorf("error %v: want 403 with code 50001", err)
		}
	})
}

func TestClient_Roles(t *testing.T) {
	s := newStub(t)
	bots := discordstub.ExampleRole()
	bots.ID, bots.Name, bots.Position, bots.Managed = bigRole, "Bots", 5, true
	s.SetRoles(discordstub.ExampleRole(), bots)
	c := newClient(t, s.APIURL(), token)

	got, err := c.Roles(deadline(t), guildID)
	if err != nil {
		t.Fatalf("Roles: %v", err)
	}
	want := []*discordgo.Role{
		{ID: guildID, Name: "@everyone", Permissions: 2248473465835073},
		{
			ID: "41771983423143936", Name: "WE DEM BOYZZ!!!!!!", Color: 3447003, Hoist: true,
			Icon: "cf3ced8600b777c9486c6d8d84fb4327", Position: 1, Permissions: 66321471,
		},
		{
			ID: bigRole, Name: "Bots", Color: 3447003, Hoist: true, Managed: true,
			Icon: "cf3ced8600b777c9486c6d8d84fb4327", Position: 5, Permissions: 66321471,
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Roles (-want +got):\n%s", diff)
	}
}

func TestClient_GuildAndBotUser(t *testing.T) {
	s := newStub(t)
	c := newClient(t, s.APIURL(), "Bot "+token) // the prefix is accepted and not doubled

	g, err := c.Guild(deadline(t), guildID)
	if err != nil {
		t.Fatalf("Guild: %v", err)
	}
	if g.ID != guildID || g.Name != "Bridge Test Guild" || len(g.Roles) != 1 {
		t.Errorf("Guild = %s %q with %d roles, want the stub's guild with @everyone",
			g.ID, g.Name, len(g.Roles))
	}

	u, err := c.BotUser(deadline(t))
	if err != nil {
		t.Fatalf("BotUser: %v", err)
	}
	if u.ID != discordstub.DefaultBotUserID || !u.Bot {
		t.Errorf("BotUser = %s (bot %t), want %s", u.ID, u.Bot, discordstub.DefaultBotUserID)
	}
}

// TestIsRetryable is the one table that says which failures are worth trying again.
func TestIsRetryable(t *testing.T) {
	statuses := []struct {
		status int
		want   bool
	}{
		{400, false},
		{401, false},
		{403, false},
		{404, false},
		{429, true},
		{500, true},
		{502, true},
		{503, true},
		{504, true},
	}
	for _, tt := range statuses {
		t.Run(fmt.Sprintf("status %d", tt.status), func(t *testing.T) {
			t.Parallel()
			s := newStub(t)
			addMember(t, s, nelly, nil)
			c := newClient(t, s.APIURL(), token)
			if tt.status == http.StatusTooManyRequests {
				s.RateLimitNext(1, 60, false)
			} else {
				s.FailNext(10, tt.status)
			}

			_, err := c.Member(deadline(t), guildID, nelly)
			if e := asError(t, err); e.Status != tt.status {
				t.Fatalf("status = %d, want %d", e.Status, tt.status)
			}
			if got := discord.IsRetryable(err); got != tt.want {
				t.Errorf("IsRetryable(%v) = %t, want %t", err, got, tt.want)
			}
		})
	}

	others := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain error", errors.New("boom"), false},
		{"deadline", context.DeadlineExceeded, true},
		{"cancelled", context.Canceled, false},
		{"wrapped retryable",
			fmt.Errorf("sync: %w", &discord.Error{Op: "x", Retryable: true}), true},
		{"wrapped final", fmt.Errorf("sync: %w", &discord.Error{Op: "x", Status: 404}), false},
	}
	for _, tt := range others {
		t.Run(tt.name, func(t *testing.T) {
			if got := discord.IsRetryable(tt.err); got != tt.want {
				t.Errorf("IsRetryable(%v) = %t, want %t", tt.err, got, tt.want)
			}
		})
	}
}

func TestError_Error(t *testing.T) {
	tests := []struct {
		err  *discord.Error
		want string
	}{
		{
			&discord.Error{Op: "get member", Status: 404, Code: 10007, Message: "Unknown Member",
				Err: discord.ErrNotMember},
			`discord: get member: not a member of the guild ` +
				`(http 404, code 10007, "Unknown Member")`,
		},
		{
			&discord.Error{Op: "list roles", Status: 429, Message: "You are being rate limited.",
				RetryAfter: 1500 * time.Millisecond, Err: discord.ErrRateLimited},
			`discord: list roles: rate limited (http 429, "You are being rate limited.", ` +
				`retry after 1.5s)`,
		},
		{
			&discord.Error{Op: "get guild", Status: 502},
			"discord: get guild: bad gateway (http 502)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNewClient_options(t *testing.T) {
	tests := []struct {
		name string
		o    discord.Options
	}{
		{"empty token", discord.Options{}},
		{"only the prefix", discord.Options{Token: "Bot "}},
		{"relative url", discord.Options{Token: "t", APIURL: "/api/v10"}},
		{"ftp url", discord.Options{Token: "t", APIURL: "ftp://discord.com/api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := discord.NewClient(tt.o); err == nil {
				t.Errorf("NewClient(%+v) succeeded, want an error", tt.o)
			}
		})
	}
}

func TestDisplayName(t *testing.T) {
	tests := []struct {
		name string
		m    *discordgo.Member
		want string
	}{
		{"global name", &discordgo.Member{Nick: "nick", User: &discordgo.User{
			Username: "nelly", GlobalName: "Nelly"}}, "Nelly"},
		{"username when no global name", &discordgo.Member{User: &discordgo.User{
			Username: "nelly"}}, "nelly"},
		{"no user", &discordgo.Member{}, ""},
		{"nil", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := discord.DisplayName(tt.m); got != tt.want {
				t.Errorf("DisplayName = %q, want %q", got, tt.want)
			}
		})
	}
}
