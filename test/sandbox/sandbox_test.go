package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// syncBuffer is a bytes.Buffer safe for the trickle's goroutine and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// eventually polls cond every 50 ms until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func memberNamed(t *testing.T, sb *Sandbox, username string) Member {
	t.Helper()
	i := slices.IndexFunc(sb.Guild.Members, func(m Member) bool { return m.Username == username })
	if i < 0 {
		t.Fatalf("no seeded member %q", username)
	}
	return sb.Guild.Members[i]
}

func get(t *testing.T, target string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, target, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", target, err)
	}
	return resp.StatusCode, body
}

// TestStart runs the whole sandbox: the real bridge must come up ready, converge the seeded
// guild, host avatars, follow the trickle, and stop cleanly with nothing left behind.
func TestStart(t *testing.T) {
	out := &syncBuffer{}
	bridgeLog := &syncBuffer{}
	sb, err := Start(t.Context(), Options{
		Trickle: 200 * time.Millisecond, Validate: true, Out: out, BridgeOutput: bridgeLog,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = sb.Close()
		}
		if t.Failed() {
			t.Logf("bridge log:\n%s", bridgeLog.String())
		}
	})

	if status, body := get(t, sb.URL+"/healthz"); status != http.StatusOK {
		t.Errorf("/healthz = %d %s, want 200", status, body)
	}

	t.Run("oidc login is registered for the bridge", func(t *testing.T) {
		p, err := oidc.NewProvider(t.Context(), sb.Issuer)
		if err != nil {
			t.Fatalf("discovery: %v", err)
		}
		q := url.Values{
			"client_id": {oidcClientID}, "redirect_uri": {sb.URL + "/auth/callback"},
			"response_type": {"code"}, "scope": {"openid profile email"},
			"code_challenge":        {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"},
			"code_challenge_method": {"S256"},
		}
		status, body := get(t, p.Endpoint().AuthURL+"?"+q.Encode())
		if status != http.StatusOK || !bytes.Contains(body, []byte(`id="username"`)) {
			t.Errorf("authorize = %d, want 200 with the login form:\n%s", status, body)
		}
	})

	t.Run("first full pass converges the seeded drift", func(t *testing.T) {
		ak := sb.Authentik
		departed := memberNamed(t, sb, "helga.b")
		missing := memberNamed(t, sb, "priya.builds")
		extra := memberNamed(t, sb, "noah_schmidt")
		eventually(t, 15*time.Second, "drift repaired", func() bool {
			return !slices.Contains(ak.UserGroupNames(departed.UserPK), "woodshop") &&
				slices.Contains(ak.UserGroupNames(missing.UserPK), "makerspace-members") &&
				!slices.Contains(ak.UserGroupNames(extra.UserPK), "laser-users")
		})
		admin := memberNamed(t, sb, sb.Admin.Username)
		if got := ak.UserGroupNames(admin.UserPK); !slices.Contains(got, sb.AdminGroup) {
			t.Errorf("admin's groups = %q, want %s kept (it is not managed)", got, sb.AdminGroup)
		}
	})

	t.Run("avatars are hosted at 64 px", func(t *testing.T) {
		admin := memberNamed(t, sb, sb.Admin.Username)
		var attrs struct {
			Avatar string `json:"avatar"`
		}
		eventually(t, 15*time.Second, "attributes.avatar set", func() bool {
			return json.Unmarshal(sb.Authentik.UserAttributes(admin.UserPK), &attrs) == nil &&
				attrs.Avatar != ""
		})
		if !strings.HasPrefix(attrs.Avatar, sb.URL+"/") {
			t.Fatalf("avatar URL %q is not on the bridge %s", attrs.Avatar, sb.URL)
		}
		status, body := get(t, attrs.Avatar)
		cfg, err := png.DecodeConfig(bytes.NewReader(body))
		if status != http.StatusOK || err != nil || cfg.Width != 64 || cfg.Height != 64 {
			t.Errorf("avatar = %d, %d×%d (%v), want 200 and a 64×64 PNG",
				status, cfg.Width, cfg.Height, err)
		}
	})

	t.Run("trickle changes the guild", func(t *testing.T) {
		eventually(t, 10*time.Second, "a trickle line", func() bool {
			return strings.Contains(out.String(), " trickle: @")
		})
		if strings.Contains(out.String(), "trickle failed") {
			t.Errorf("trickle output has failures:\n%s", out.String())
		}
	})

	t.Run("MakeStale", func(t *testing.T) {
		m := memberNamed(t, sb, "rafa.mendes")
		desc, err := sb.MakeStale(m.DiscordID)
		if err != nil || !strings.HasPrefix(desc, "@rafa.mendes got ") {
			t.Errorf("MakeStale = %q, %v; want a role given to @rafa.mendes", desc, err)
		}
		gone := memberNamed(t, sb, "helga.b")
		if _, err := sb.MakeStale(gone.DiscordID); !errors.Is(err, errNotMember) {
			t.Errorf("MakeStale of a former member: err = %v, want errNotMember", err)
		}
	})

	stopped = true
	if err := sb.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-sb.Exited():
	default:
		t.Errorf("bridge still running after Close")
	}
	if _, err := http.Get(sb.URL + "/healthz"); err == nil {
		t.Errorf("bridge still answers after Close")
	}
	if _, err := os.Stat(sb.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory %s: stat err = %v, want it deleted", sb.DataDir, err)
	}
	for _, v := range sb.Authentik.Violations() {
		t.Errorf("authentik schema violation: %s", v)
	}
}

func TestStart_RefusesOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"every interface", Options{Listen: "0.0.0.0:0"}, "loopback only"},
		{"another host", Options{Listen: "192.0.2.10:8080"}, "loopback only"},
		{"no port", Options{Listen: "127.0.0.1"}, "want host:port"},
		{"foreign variable", Options{Env: []string{"HOME=/"}}, "BRIDGE_NAME=value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			sb, err := Start(ctx, tc.opts)
			if err == nil {
				sb.Close()
				t.Fatalf("Start succeeded, want an error mentioning %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestSeed checks that the seeded world has every case the status page must show.
func TestSeed(t *testing.T) {
	ids := map[string]bool{}
	for _, id := range roleIDs {
		ids[id] = true
	}
	for _, p := range people {
		ids[snowflakeAt(p.created, len(p.username))] = true
	}
	if want := len(roles) + len(people); len(ids) != want {
		t.Errorf("%d distinct snowflakes, want %d: roles and members must not share IDs",
			len(ids), want)
	}

	problems := map[string]string{}
	for _, g := range groups {
		problems[g.name] = g.problem
	}
	for _, tc := range []struct{ group, mapping string }{
		{"inventory-admins", roleIDs["inventory"]},
		{"makerspace-editors", `["` + roleIDs["editors"] + `","` + roleIDs["mods"] + `"]`},
		{"keyholders", `{"id":"` + roleIDs["keyholder"] + `"}`},
		{"former-staff", `"` + deletedRoleID + `"`},
	} {
		i := slices.IndexFunc(groups, func(g groupSeed) bool { return g.name == tc.group })
		if i < 0 || groups[i].mapping != tc.mapping {
			t.Errorf("group %s: mapping missing or not %s", tc.group, tc.mapping)
		}
	}
	if !slices.ContainsFunc(groups, func(g groupSeed) bool { return g.superuser && g.mapping != "" }) {
		t.Errorf("no superuser group with a discord_role_id")
	}
	for _, u := range []string{adminLogin.Username, memberLogin.Username} {
		if !slices.ContainsFunc(people, func(p personSeed) bool {
			return p.username == u && !p.unlinked && !p.departed
		}) {
			t.Errorf("login %s is not a linked guild member", u)
		}
	}
	if got := groupsOf("board"); !slices.Equal(got, []string{"makerspace-admins"}) {
		t.Errorf("groups of Board = %q, want only makerspace-admins (the superuser one is refused)",
			got)
	}
}

func TestRun_Usage(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"unknown flag", []string{"-colour"}, 2, "flag provided but not defined"},
		{"stray argument", []string{"now"}, 2, "unexpected arguments"},
		{"public listen address", []string{"-listen", "0.0.0.0:8080"}, 1, "loopback only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tc.args, &stdout, &stderr)
			if code != tc.wantCode || !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("run(%q) = %d, stderr %q; want %d and %q", tc.args, code,
					stderr.String(), tc.wantCode, tc.wantErr)
			}
		})
	}
}
