package discordstub

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	testGuild = "41771983423143937"
	testToken = "stub-token"
)

// Three members whose IDs sort differently as numbers and as strings.
var memberIDs = []string{"80351110224678912", "123456789012345678", "1234567890123456789"}

func newServer(t *testing.T) *Server {
	t.Helper()
	s, err := New(Options{GuildID: testGuild, Token: testToken})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func addMembers(t *testing.T, s *Server, ids ...string) {
	t.Helper()
	for _, id := range ids {
		m := ExampleMember()
		m.User.ID = id
		if err := s.SetMember(m); err != nil {
			t.Fatalf("SetMember(%s): %v", id, err)
		}
	}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, url, auth string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: body}
}

// decode turns a JSON body into generic values so that answers compare by content.
func decode(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("body %q is not JSON: %v", b, err)
	}
	return v
}

func TestServer_member(t *testing.T) {
	s := newServer(t)
	addMembers(t, s, memberIDs[0])
	bot := "Bot " + testToken

	tests := []struct {
		name       string
		path, auth string
		wantStatus int
		wantBody   string // JSON, compared by content; empty to skip
	}{
		{"unknown member", "/guilds/" + testGuild + "/members/1", bot,
			404, `{"message": "Unknown Member", "code": 10007}`},
		{"unknown guild", "/guilds/1/members/" + memberIDs[0], bot,
			404, `{"message": "Unknown Guild", "code": 10004}`},
		{"missing token", "/guilds/" + testGuild + "/members/" + memberIDs[0], "",
			401, `{"message": "401: Unauthorized", "code": 0}`},
		{"token without Bot prefix", "/guilds/" + testGuild + "/members/" + memberIDs[0], testToken,
			401, `{"message": "401: Unauthorized", "code": 0}`},
		{"wrong token", "/guilds/" + testGuild + "/members/" + memberIDs[0], "Bot nope",
			401, `{"message": "401: Unauthorized", "code": 0}`},
		{"user id not a snowflake", "/guilds/" + testGuild + "/members/abc", bot, 400, ""},
		{"unknown route", "/guilds/" + testGuild + "/bans", bot,
			404, `{"message": "404: Not Found", "code": 0}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := get(t, s.APIURL()+tt.path, tt.auth)
			if a.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", a.status, tt.wantStatus, a.body)
			}
			if tt.wantBody == "" {
				return
			}
			if diff := cmp.Diff(decode(t, []byte(tt.wantBody)), decode(t, a.body)); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestServer_memberShape checks the member body against Discord's documented example: the same
// fields with the same values, plus the user, and no guild_id.
func TestServer_memberShape(t *testing.T) {
	s := newServer(t)
	addMembers(t, s, "80351110224678912")

	a := get(t, s.APIURL()+"/guilds/"+testGuild+"/members/80351110224678912", "Bot "+testToken)
	if a.status != http.StatusOK {
		t.Fatalf("status = %d, want 200 (body %s)", a.status, a.body)
	}
	got := decode(t, a.body).(map[string]any)

	if _, ok := got["guild_id"]; ok {
		t.Errorf("member body has guild_id; Discord's has none")
	}
	example, err := os.ReadFile("testdata/guild_member.example.json")
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range decode(t, example).(map[string]any) {
		if k == "user" {
			continue
		}
		if diff := cmp.Diff(want, got[k]); diff != "" {
			t.Errorf("field %s differs from the example (-want +got):\n%s", k, diff)
		}
	}
	for _, k := range []string{"premium_since", "communication_disabled_until"} {
		if v, ok := got[k]; !ok || v != nil {
			t.Errorf("field %s = %v (present %t), want null", k, v, ok)
		}
	}
	user := got["user"].(map[string]any)
	if user["id"] != "80351110224678912" || user["global_name"] != "Nelly" {
		t.Errorf("user = %v, want the documented migrated user", user)
	}
	if _, ok := user["email"]; ok {
		t.Errorf("user has email; a bot token never sees it")
	}
}

func TestServer_listMembers(t *testing.T) {
	s := newServer(t)
	addMembers(t, s, memberIDs...)
	base := s.APIURL() + "/guilds/" + testGuild + "/members"

	tests := []struct {
		name       string
		query      string
		wantStatus int
		wantIDs    []string
		wantCode   float64
	}{
		{"limit defaults to 1", "", 200, memberIDs[:1], 0},
		{"limit 2", "?limit=2", 200, memberIDs[:2], 0},
		{"after is exclusive", "?limit=2&after=" + memberIDs[0], 200, memberIDs[1:], 0},
		{"after the last", "?limit=1000&after=" + memberIDs[2], 200, []string{}, 0},
		{"after 0 with default limit", "?after=0", 200, memberIDs[:1], 0},
		{"limit 0", "?limit=0", 400, nil, 50035},
		{"limit over 1000", "?limit=1001", 400, nil, 50035},
		{"after not a number", "?after=x", 400, nil, 50035},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := get(t, base+tt.query, "Bot "+testToken)
			if a.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", a.status, tt.wantStatus, a.body)
			}
			if tt.wantStatus != http.StatusOK {
				var e struct{ Code float64 }
				_ = json.Unmarshal(a.body, &e)
				if e.Code != tt.wantCode {
					t.Errorf("code = %v, want %v", e.Code, tt.wantCode)
				}
				return
			}
			var page []Member
			if err := json.Unmarshal(a.body, &page); err != nil {
				t.Fatalf("page %s: %v", a.body, err)
			}
			got := []string{}
			for _, m := range page {
				got = append(got, m.User.ID)
			}
			if diff := cmp.Diff(tt.wantIDs, got); diff != "" {
				t.Errorf("page IDs (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("without the members intent", func(t *testing.T) {
		s.SetMembersIntent(false)
		t.Cleanup(func() { s.SetMembersIntent(true) })
		a := get(t, base+"?limit=10", "Bot "+testToken)
		if diff := cmp.Diff(decode(t, []byte(`{"message": "Missing Access", "code": 50001}`)),
			decode(t, a.body)); a.status != http.StatusForbidden || diff != "" {
			t.Errorf("status = %d, want 403; body (-want +got):\n%s", a.status, diff)
		}
	})

	t.Run("removed member is gone", func(t *testing.T) {
		s.RemoveMember(memberIDs[0])
		a := get(t, base, "Bot "+testToken)
		var page []Member
		if err := json.Unmarshal(a.body, &page); err != nil || len(page) != 1 {
			t.Fatalf("page = %s (%v), want one member", a.body, err)
		}
		if page[0].User.ID != memberIDs[1] {
			t.Errorf("first member = %s, want %s", page[0].User.ID, memberIDs[1])
		}
	})
}

func TestServer_roles(t *testing.T) {
	s := newServer(t)
	s.SetRoles(ExampleRole())

	a := get(t, s.APIURL()+"/guilds/"+testGuild+"/roles", "Bot "+testToken)
	if a.status != http.StatusOK {
		t.Fatalf("status = %d, want 200", a.status)
	}
	roles := decode(t, a.body).([]any)
	if len(roles) != 2 {
		t.Fatalf("got %d roles, want @everyone and the example", len(roles))
	}
	if got := roles[0].(map[string]any); got["id"] != testGuild || got["name"] != "@everyone" {
		t.Errorf("first role = %v, want @everyone with the guild's ID", got)
	}
	example, err := os.ReadFile("testdata/role.example.json")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(decode(t, example), roles[1]); diff != "" {
		t.Errorf("role differs from Discord's example (-want +got):\n%s", diff)
	}
}

func TestServer_guildAndBot(t *testing.T) {
	s := newServer(t)

	a := get(t, s.APIURL()+"/guilds/"+testGuild, "Bot "+testToken)
	g := decode(t, a.body).(map[string]any)
	if a.status != http.StatusOK || g["id"] != testGuild || g["name"] != "Bridge Test Guild" {
		t.Errorf("guild = %d %v, want 200 with the guild", a.status, g)
	}

	a = get(t, s.APIURL()+"/users/@me", "Bot "+testToken)
	u := decode(t, a.body).(map[string]any)
	if a.status != http.StatusOK || u["id"] != DefaultBotUserID || u["bot"] != true {
		t.Errorf("bot user = %d %v, want 200 with the bot", a.status, u)
	}
}

func TestServer_faults(t *testing.T) {
	memberURL := func(s *Server) string {
		return s.APIURL() + "/guilds/" + testGuild + "/members/" + memberIDs[0]
	}

	t.Run("per-route 429", func(t *testing.T) {
		s := newServer(t)
		addMembers(t, s, memberIDs[0])
		s.RateLimitNext(1, 2.5, false)

		a := get(t, memberURL(s), "Bot "+testToken)
		want := `{"message": "You are being rate limited.", "retry_after": 2.5, "global": false}`
		diff := cmp.Diff(decode(t, []byte(want)), decode(t, a.body))
		if a.status != http.StatusTooManyRequests || diff != "" {
			t.Errorf("status = %d, want 429; body (-want +got):\n%s", a.status, diff)
		}
		for k, v := range map[string]string{
			"Retry-After": "3", "X-RateLimit-Remaining": "0",
			"X-RateLimit-Reset-After": "2.500", "X-RateLimit-Scope": "user",
		} {
			if got := a.header.Get(k); got != v {
				t.Errorf("header %s = %q, want %q", k, got, v)
			}
		}
		if a := get(t, memberURL(s), "Bot "+testToken); a.status != http.StatusOK {
			t.Errorf("second request: status = %d, want 200", a.status)
		}
		if got := s.Counts().RateLimited; got != 1 {
			t.Errorf("RateLimited = %d, want 1", got)
		}
	})

	t.Run("global 429 as in Discord's example", func(t *testing.T) {
		s := newServer(t)
		s.RateLimitNext(1, 64.57, true)

		a := get(t, memberURL(s), "Bot "+testToken)
		want := `{"message": "You are being rate limited.", "retry_after": 64.57, "global": true}`
		diff := cmp.Diff(decode(t, []byte(want)), decode(t, a.body))
		if a.status != http.StatusTooManyRequests || diff != "" {
			t.Errorf("status = %d, want 429; body (-want +got):\n%s", a.status, diff)
		}
		if a.header.Get("X-RateLimit-Global") != "true" || a.header.Get("Retry-After") != "65" {
			t.Errorf("headers = %v, want X-RateLimit-Global and Retry-After 65", a.header)
		}
		if v := a.header.Get("X-RateLimit-Reset-After"); v != "" {
			t.Errorf("X-RateLimit-Reset-After = %q, want absent", v)
		}
	})

	t.Run("fail and garbage", func(t *testing.T) {
		s := newServer(t)
		addMembers(t, s, memberIDs[0])
		s.FailNext(1, http.StatusServiceUnavailable)
		s.SetGarbage(1)

		if a := get(t, memberURL(s), "Bot "+testToken); a.status != 503 {
			t.Errorf("first: status = %d, want 503", a.status)
		}
		a := get(t, memberURL(s), "Bot "+testToken)
		if a.status != http.StatusOK || json.Valid(a.body) {
			t.Errorf("second: status = %d, body %q; want 200 that is not JSON", a.status, a.body)
		}
		a = get(t, memberURL(s), "Bot "+testToken)
		if a.status != http.StatusOK || !json.Valid(a.body) {
			t.Errorf("third: status = %d, want 200 JSON", a.status)
		}
	})
}

func TestServer_cdn(t *testing.T) {
	s := newServer(t)
	png := []byte("\x89PNG\r\n\x1a\nnot really")
	s.SetAvatar("avatars/80351110224678912/8342729096ea3675442027381ff50dfe.png", "image/png", png)
	path := "/avatars/80351110224678912/8342729096ea3675442027381ff50dfe.png"

	tests := []struct {
		name       string
		url        string
		wantStatus int
	}{
		{"no size", path, 200},
		{"size 64", path + "?size=64", 200},
		{"size 16", path + "?size=16", 200},
		{"size 4096", path + "?size=4096", 200},
		{"size 48", path + "?size=48", 400},
		{"size 8", path + "?size=8", 400},
		{"size 8192", path + "?size=8192", 400},
		{"size text", path + "?size=big", 400},
		{"unknown hash", "/avatars/80351110224678912/0000.png?size=64", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := get(t, s.CDNURL()+tt.url, "")
			if a.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d", a.status, tt.wantStatus)
			}
			if tt.wantStatus != http.StatusOK {
				return
			}
			if ct := a.header.Get("Content-Type"); ct != "image/png" {
				t.Errorf("Content-Type = %q, want image/png", ct)
			}
			if string(a.body) != string(png) {
				t.Errorf("body = %q, want the bytes given to SetAvatar", a.body)
			}
		})
	}
}

func TestServer_counts(t *testing.T) {
	s := newServer(t)
	addMembers(t, s, memberIDs[0])
	for range 3 {
		get(t, s.APIURL()+"/guilds/"+testGuild+"/members/"+memberIDs[0], "Bot "+testToken)
	}
	get(t, s.APIURL()+"/guilds/"+testGuild+"/roles", "")
	get(t, s.CDNURL()+"/avatars/1/2.png", "")

	want := Counts{
		Total: 5,
		ByRoute: map[string]int{
			"GET /guilds/{guild}/members/{user}": 3,
			"GET /guilds/{guild}/roles":          1,
			"GET /cdn/{path...}":                 1,
		},
	}
	if diff := cmp.Diff(want, s.Counts()); diff != "" {
		t.Errorf("Counts (-want +got):\n%s", diff)
	}

	s.ResetCounts()
	if got := s.Counts(); got.Total != 0 || len(got.ByRoute) != 0 {
		t.Errorf("after ResetCounts: %+v, want zero", got)
	}
}

func TestServer_setMemberJSON(t *testing.T) {
	s := newServer(t)
	tests := []struct {
		name    string
		raw     string
		wantErr bool
	}{
		{"member with a user", `{"user": {"id": "42"}, "roles": [], "nick": null}`, false},
		{"no user", `{"roles": []}`, true},
		{"numeric user id", `{"user": {"id": 42}}`, true},
		{"with guild_id", `{"guild_id": "1", "user": {"id": "42"}}`, true},
		{"not JSON", `{`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.SetMemberJSON([]byte(tt.raw))
			if (err != nil) != tt.wantErr {
				t.Errorf("SetMemberJSON(%s) error = %v, want error %t", tt.raw, err, tt.wantErr)
			}
		})
	}

	a := get(t, s.APIURL()+"/guilds/"+testGuild+"/members/42", "Bot "+testToken)
	if want := `{"user": {"id": "42"}, "roles": [], "nick": null}`; string(a.body) != want {
		t.Errorf("body = %s, want the JSON byte for byte: %s", a.body, want)
	}
}

func TestNew_options(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"guild id not a snowflake", Options{GuildID: "guild", Token: "t"}},
		{"empty token", Options{GuildID: testGuild}},
		{"bad address", Options{GuildID: testGuild, Token: "t", Addr: "256.0.0.1:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.o)
			if err == nil {
				_ = s.Close()
				t.Fatalf("New(%+v) succeeded, want an error", tt.o)
			}
		})
	}
}
