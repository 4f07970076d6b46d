package web

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

const adminGroup = "bridge-admins"

// newOIDCBridge runs a server whose page logs in against idp.
func newOIDCBridge(t *testing.T, idp *fakeIdP, st Status) *bridge {
	t.Helper()
	return newBridge(t, st, func(o *Options) {
		o.Admin.OIDC = OIDCOptions{Issuer: idp.srv.URL, ClientID: testClientID,
			ClientSecret: testClientSecret, AdminGroups: []string{"other-admins", adminGroup}}
		o.Admin.HTTPClient = idp.srv.Client()
	})
}

// login walks the browser through the whole flow, starting at path, and returns every page it
// saw; the last is the bridge's answer to the callback.
func (b *bridge) login(path string) []page {
	b.t.Helper()
	var seen []page
	next := path
	for range 6 {
		p := b.get(next)
		seen = append(seen, p)
		loc := p.Header.Get("Location")
		if p.Status != http.StatusFound || loc == "" {
			return seen
		}
		u, err := url.Parse(loc)
		if err != nil {
			b.t.Fatalf("bad Location %q: %v", loc, err)
		}
		if u.Host == "" {
			loc = b.srv.URL + loc
		}
		next = loc
	}
	b.t.Fatalf("login from %s did not finish within 6 redirects", path)
	return nil
}

func TestLogin_RedirectsToAuthentik(t *testing.T) {
	idp := newFakeIdP(t)
	b := newOIDCBridge(t, idp, &fakeStatus{})

	p := b.get("/members?q=alice")
	if p.Status != http.StatusFound {
		t.Fatalf("GET /members without a session: got status %d, want 302", p.Status)
	}
	if got, want := p.Header.Get("Location"), "/auth/login?next=%2Fmembers%3Fq%3Dalice"; got != want {
		t.Errorf("Location: got %q, want %q", got, want)
	}

	states := map[string]bool{}
	for i := range 2 {
		p = b.get("/auth/login?next=%2Fmembers")
		if p.Status != http.StatusFound {
			t.Fatalf("GET /auth/login: got status %d, want 302; body %s", p.Status, p.Body)
		}
		u, err := url.Parse(p.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := u.Scheme+"://"+u.Host+u.Path, idp.srv.URL+"/authorize"; got != want {
			t.Errorf("login %d goes to %s, want %s", i, got, want)
		}
		q := u.Query()
		for key, want := range map[string]string{
			"client_id":             testClientID,
			"response_type":         "code",
			"redirect_uri":          b.srv.URL + "/auth/callback",
			"code_challenge_method": "S256",
			"scope":                 "openid profile email",
		} {
			if got := q.Get(key); got != want {
				t.Errorf("login %d: %s = %q, want %q", i, key, got, want)
			}
		}
		// A S256 challenge is the base64url of 32 bytes.
		if got := len(q.Get("code_challenge")); got != 43 {
			t.Errorf("login %d: code_challenge has %d characters, want 43", i, got)
		}
		if q.Get("nonce") == "" || q.Get("state") == "" || q.Get("nonce") == q.Get("state") {
			t.Errorf("login %d: state %q and nonce %q must be set and differ", i,
				q.Get("state"), q.Get("nonce"))
		}
		states[q.Get("state")] = true

		ck := p.Header.Get("Set-Cookie")
		mustContain(t, "login cookie", ck, loginCookie+"=", "HttpOnly", "SameSite=Lax", "Path=/")
		if strings.Contains(ck, "Secure") {
			t.Errorf("login cookie over plain http is Secure, so the browser would drop it: %s", ck)
		}
	}
	if len(states) != 2 {
		t.Errorf("two logins shared a state")
	}
}

func TestLogin_CookiesSecureBehindHTTPS(t *testing.T) {
	idp := newFakeIdP(t)
	b := newBridge(t, &fakeStatus{}, func(o *Options) {
		o.Admin.PublicURL = "https://bridge.example.org"
		o.Admin.OIDC = OIDCOptions{Issuer: idp.srv.URL, ClientID: testClientID,
			ClientSecret: testClientSecret, AdminGroups: []string{adminGroup}}
		o.Admin.HTTPClient = idp.srv.Client()
	})
	p := b.get("/auth/login")
	mustContain(t, "login cookie", p.Header.Get("Set-Cookie"), "Secure", "HttpOnly", "SameSite=Lax")
	u, err := url.Parse(p.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.Query().Get("redirect_uri"), "https://bridge.example.org/auth/callback"; got != want {
		t.Errorf("redirect_uri: got %q, want %q", got, want)
	}
}

func TestCallback_AdmitsOnlyAdminGroups(t *testing.T) {
	tests := []struct {
		name     string
		user     idpUser
		badNonce bool
		want     int // status of the callback's answer
	}{
		{name: "admin group in the id token",
			user: idpUser{Sub: "u1", Username: "alice", Groups: []string{"members", adminGroup}},
			want: http.StatusSeeOther},
		{name: "admin group only in userinfo",
			user: idpUser{Sub: "u2", Username: "bob", Groups: []string{adminGroup},
				GroupsInUserinfo: true},
			want: http.StatusSeeOther},
		{name: "not in an admin group",
			user: idpUser{Sub: "u3", Username: "carol", Groups: []string{"members"}},
			want: http.StatusForbidden},
		{name: "admin group name in another case",
			user: idpUser{Sub: "u4", Username: "dave", Groups: []string{"Bridge-Admins"}},
			want: http.StatusForbidden},
		{name: "no groups at all",
			user: idpUser{Sub: "u5", Username: "erin", Groups: []string{}},
			want: http.StatusForbidden},
		{name: "id token for another login",
			user:     idpUser{Sub: "u6", Username: "frank", Groups: []string{adminGroup}},
			badNonce: true, want: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idp := newFakeIdP(t)
			idp.setUser(tt.user)
			idp.badNonce = tt.badNonce
			b := newOIDCBridge(t, idp, &fakeStatus{health: Health{Version: "v-test"}})

			seen := b.login("/activity?kind=group_add")
			last := seen[len(seen)-1]
			if last.Status != tt.want {
				t.Fatalf("callback: got status %d, want %d; body:\n%s", last.Status, tt.want, last.Body)
			}
			after := b.get("/")
			seen = append(seen, after)
			switch tt.want {
			case http.StatusSeeOther:
				if got, want := last.Header.Get("Location"), "/activity?kind=group_add"; got != want {
					t.Errorf("after login: Location %q, want %q", got, want)
				}
				if after.Status != http.StatusOK {
					t.Fatalf("GET / after login: status %d, want 200", after.Status)
				}
				mustContain(t, "page after login", after.Body, `data-testid="current-user">`+
					tt.user.Username+"<", `id="logout-button"`)
				ck := b.cookie(sessionCookie)
				if ck == nil {
					t.Fatal("no session cookie after login")
				}
			case http.StatusForbidden:
				mustContain(t, "refusal", last.Body, `data-testid="forbidden"`, tt.user.Username)
				if after.Status != http.StatusFound {
					t.Errorf("GET / after a refused login: status %d, want 302 to the login",
						after.Status)
				}
			default:
				if after.Status != http.StatusFound {
					t.Errorf("GET / after a failed login: status %d, want 302", after.Status)
				}
			}

			secrets := idp.secrets()
			if len(secrets) < 2 {
				t.Fatalf("the provider issued nothing; the flow did not run")
			}
			for _, p := range seen {
				if !strings.HasPrefix(p.URL, b.srv.URL+"/") {
					continue // the provider's own pages carry its codes, as they must
				}
				for _, s := range secrets {
					if strings.Contains(p.Body, s) {
						t.Errorf("a page shows a secret or token: %.20s…", s)
					}
				}
			}
			logs := b.logs.String()
			for _, s := range secrets {
				if strings.Contains(logs, s) {
					t.Errorf("the log holds a secret or token: %.20s…", s)
				}
			}
		})
	}
}

func TestCallback_RefusesForeignOrReusedState(t *testing.T) {
	idp := newFakeIdP(t)
	idp.setUser(idpUser{Sub: "u1", Username: "alice", Groups: []string{adminGroup}})
	victim := newOIDCBridge(t, idp, &fakeStatus{})

	// The attacker starts a login and lets the provider answer, but hands the callback URL to
	// the victim's browser, which never started that login.
	attacker := &bridge{t: t, srv: victim.srv, client: &http.Client{Jar: newJar(t),
		CheckRedirect: victim.client.CheckRedirect}}
	seen := attacker.login("/")
	if len(seen) < 3 {
		t.Fatalf("attacker's flow stopped early")
	}
	authz := seen[len(seen)-2] // the provider's redirect to the callback
	callback := authz.Header.Get("Location")
	if !strings.Contains(callback, "/auth/callback?") {
		t.Fatalf("expected the provider to redirect to the callback, got %q", callback)
	}

	p := victim.get(callback)
	if p.Status != http.StatusBadRequest {
		t.Errorf("callback in a browser that did not start the login: status %d, want 400", p.Status)
	}
	if victim.cookie(sessionCookie) != nil {
		t.Errorf("the victim got a session from someone else's login")
	}

	// The same callback again in the browser that did start it: a state works once.
	again := attacker.get(callback)
	if again.Status != http.StatusBadRequest {
		t.Errorf("replayed callback: status %d, want 400", again.Status)
	}

	forged := victim.get("/auth/callback?code=x&state=made-up")
	if forged.Status != http.StatusBadRequest {
		t.Errorf("made-up state: status %d, want 400", forged.Status)
	}
}

func TestCallback_ProviderError(t *testing.T) {
	idp := newFakeIdP(t)
	b := newOIDCBridge(t, idp, &fakeStatus{})
	p := b.get("/auth/callback?error=access_denied&state=x")
	if p.Status != http.StatusForbidden {
		t.Errorf("status %d, want 403", p.Status)
	}
	mustContain(t, "page", p.Body, "access_denied", `id="login-link"`)
}

func TestLogout(t *testing.T) {
	idp := newFakeIdP(t)
	idp.setUser(idpUser{Sub: "u1", Username: "alice", Groups: []string{adminGroup}})
	b := newOIDCBridge(t, idp, &fakeStatus{})
	if seen := b.login("/"); seen[len(seen)-1].Status != http.StatusSeeOther {
		t.Fatalf("login failed: %d", seen[len(seen)-1].Status)
	}
	token := b.csrf()

	if p := b.post("/auth/logout", nil); p.Status != http.StatusForbidden {
		t.Errorf("logout without the csrf token: status %d, want 403", p.Status)
	}
	if p := b.get("/"); p.Status != http.StatusOK {
		t.Fatalf("a refused logout ended the session: GET / status %d", p.Status)
	}

	p := b.post("/auth/logout", url.Values{"csrf_token": {token}})
	if p.Status != http.StatusSeeOther || p.Header.Get("Location") != "/auth/logged-out" {
		t.Errorf("logout: status %d to %q, want 303 to /auth/logged-out", p.Status,
			p.Header.Get("Location"))
	}
	if b.cookie(sessionCookie) != nil {
		t.Errorf("session cookie still set after logout")
	}
	if p := b.get("/"); p.Status != http.StatusFound {
		t.Errorf("GET / after logout: status %d, want 302 to the login", p.Status)
	}
	mustContain(t, "signed-out page", b.get("/auth/logged-out").Body, `id="logged-out"`)
}

func TestPage_NotConfigured(t *testing.T) {
	b := newBridge(t, &fakeStatus{}, nil)
	for _, path := range []string{"/", "/mapping", "/members/80351110224600002", "/auth/login"} {
		p := b.get(path)
		if p.Status != http.StatusServiceUnavailable {
			t.Errorf("GET %s: status %d, want 503", path, p.Status)
		}
		mustContain(t, "GET "+path, p.Body, "BRIDGE_OIDC_ISSUER", "BRIDGE_ADMIN_GROUPS",
			"BRIDGE_DEV_NO_LOGIN")
	}

	// The hooks and probes are untouched.
	if p := b.get("/healthz"); p.Status != http.StatusOK {
		t.Errorf("GET /healthz: status %d, want 200", p.Status)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
		b.srv.URL+"/v1/authentik/gate", strings.NewReader(`{"discord_id":"1"}`))
	if err != nil {
		t.Fatal(err)
	}
	p := b.do(req)
	var body map[string]string
	if err := json.Unmarshal([]byte(p.Body), &body); err != nil || p.Status != http.StatusUnauthorized ||
		body["error"] != "unauthorized" {
		t.Errorf("hook without secret: status %d body %q, want 401 JSON unauthorized", p.Status, p.Body)
	}
}

func TestPage_DevModeBanner(t *testing.T) {
	st := &fakeStatus{}
	b := newBridge(t, st, func(o *Options) { o.Admin.DevNoLogin = true })

	p := b.get("/")
	if p.Status != http.StatusOK {
		t.Fatalf("GET /: status %d, want 200 without a login", p.Status)
	}
	mustContain(t, "page", p.Body, `id="dev-banner"`, "BRIDGE_DEV_NO_LOGIN=true")
	if strings.Contains(p.Body, `id="logout-button"`) {
		t.Errorf("dev mode offers a sign-out that cannot work")
	}
	if p := b.get("/auth/login?next=%2Fmapping"); p.Status != http.StatusSeeOther ||
		p.Header.Get("Location") != "/mapping" {
		t.Errorf("login in dev mode: status %d to %q, want 303 to /mapping", p.Status,
			p.Header.Get("Location"))
	}
	// Forms still need the token: dev mode drops the login, not the CSRF protection.
	if p := b.post("/actions/sync-all", nil); p.Status != http.StatusForbidden {
		t.Errorf("POST without csrf in dev mode: status %d, want 403", p.Status)
	}
	if _, passes := st.calls(); passes != 0 {
		t.Errorf("a refused POST requested %d passes", passes)
	}
}

func TestPage_WithLoginHasNoBanner(t *testing.T) {
	idp := newFakeIdP(t)
	idp.setUser(idpUser{Sub: "u1", Username: "alice", Groups: []string{adminGroup}})
	b := newOIDCBridge(t, idp, &fakeStatus{})
	b.login("/")
	p := b.get("/")
	if p.Status != http.StatusOK {
		t.Fatalf("GET /: status %d", p.Status)
	}
	if strings.Contains(p.Body, "dev-banner") {
		t.Errorf("the login-off banner shows with login on")
	}
}

func TestSafeNext(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "/"},
		{"/members?q=a", "/members?q=a"},
		{"/activity", "/activity"},
		{"//evil.example/x", "/"},
		{"/\\evil.example", "/"},
		{"https://evil.example/", "/"},
		{"members", "/"},
		{"/x\r\nSet-Cookie: a=b", "/"},
	}
	for _, tt := range tests {
		if got := safeNext(tt.in); got != tt.want {
			t.Errorf("safeNext(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCallback_ExchangeRefused(t *testing.T) {
	const wrong = "a-wrong-client-secret-value"
	idp := newFakeIdP(t)
	idp.setUser(idpUser{Sub: "u1", Username: "alice", Groups: []string{adminGroup}})
	b := newBridge(t, &fakeStatus{}, func(o *Options) {
		o.Admin.OIDC = OIDCOptions{Issuer: idp.srv.URL, ClientID: testClientID,
			ClientSecret: wrong, AdminGroups: []string{adminGroup}}
		o.Admin.HTTPClient = idp.srv.Client()
	})
	seen := b.login("/")
	last := seen[len(seen)-1]
	if last.Status != http.StatusBadGateway {
		t.Fatalf("callback with a refused exchange: status %d, want 502", last.Status)
	}
	if b.cookie(sessionCookie) != nil {
		t.Errorf("a session was made without tokens")
	}
	mustContain(t, "log", b.logs.String(), "invalid_client")
	for _, p := range seen {
		if strings.HasPrefix(p.URL, b.srv.URL+"/") && strings.Contains(p.Body, wrong) {
			t.Errorf("the client secret shows on %s", p.URL)
		}
	}
	if strings.Contains(b.logs.String(), wrong) {
		t.Errorf("the client secret is in the log")
	}
}

// Discovery happens at the first login and is tried again after a failure, so an Authentik
// that was down when the bridge started does not keep the page closed.
func TestLogin_DiscoveryRetried(t *testing.T) {
	idp := newFakeIdP(t)
	var down atomic.Bool
	down.Store(true)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		idp.srv.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	idp.srv.URL = front.URL // the issuer the provider names is the front's
	b := newBridge(t, &fakeStatus{}, func(o *Options) {
		o.Admin.OIDC = OIDCOptions{Issuer: front.URL, ClientID: testClientID,
			ClientSecret: testClientSecret, AdminGroups: []string{adminGroup}}
	})

	p := b.get("/auth/login")
	if p.Status != http.StatusServiceUnavailable {
		t.Fatalf("login with Authentik down: status %d, want 503", p.Status)
	}
	mustContain(t, "page", p.Body, "BRIDGE_OIDC_ISSUER", front.URL)

	down.Store(false)
	p = b.get("/auth/login")
	if p.Status != http.StatusFound || !strings.HasPrefix(p.Header.Get("Location"), front.URL+"/authorize?") {
		t.Errorf("login after Authentik came back: status %d to %q, want 302 to the provider",
			p.Status, p.Header.Get("Location"))
	}
}

func TestForbidden_SignOutToSwitchAccount(t *testing.T) {
	unsupported := func(string, string) string { return "/auth/logged-out?authentik=unsupported" }
	tests := []struct {
		name       string
		endSession string
		want       func(issuer, public string) string // Location of the sign-out's answer
	}{
		{name: "provider lists an end-session endpoint", endSession: "/end-session/",
			want: func(issuer, public string) string {
				return issuer + "/end-session/?" + url.Values{
					"client_id":                {testClientID},
					"post_logout_redirect_uri": {public + "/auth/logged-out"},
					"state":                    {loggedOutState},
				}.Encode()
			}},
		{name: "provider lists none", endSession: "", want: unsupported},
		{name: "endpoint on another origin, which the page's CSP would block",
			endSession: "https://elsewhere.example/logout", want: unsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idp := newFakeIdP(t)
			idp.endSession = tt.endSession
			idp.setUser(idpUser{Sub: "u3", Username: "carol", Groups: []string{"members"}})
			b := newOIDCBridge(t, idp, &fakeStatus{})

			seen := b.login("/")
			refusal := seen[len(seen)-1]
			if refusal.Status != http.StatusForbidden {
				t.Fatalf("callback: status %d, want 403", refusal.Status)
			}
			mustContain(t, "refusal", refusal.Body, `action="/auth/logout"`,
				`name="authentik" value="1"`, `id="switch-account"`)
			mustContain(t, "refusal's CSP", refusal.Header.Get("Content-Security-Policy"),
				"form-action 'self' "+idp.srv.URL+";")

			// Carol has no session of the bridge, so the form carries no token.
			p := b.post("/auth/logout", url.Values{"authentik": {"1"}})
			if p.Status != http.StatusSeeOther {
				t.Fatalf("sign-out: status %d, want 303; body:\n%s", p.Status, p.Body)
			}
			if got, want := p.Header.Get("Location"), tt.want(idp.srv.URL, b.srv.URL); got != want {
				t.Errorf("sign-out goes to %q, want %q", got, want)
			}
		})
	}
}

func TestLoggedOut_SaysWhatEnded(t *testing.T) {
	idp := newFakeIdP(t)
	b := newOIDCBridge(t, idp, &fakeStatus{})
	tests := []struct {
		query string
		want  []string
		not   string
	}{
		{"", []string{`data-authentik="kept"`, "not affected", `id="switch-account"`}, ""},
		{"?state=" + loggedOutState, []string{`data-authentik="ended"`,
			"Authentik was asked to end your session"}, `id="switch-account"`},
		{"?authentik=unsupported", []string{`data-authentik="unsupported"`,
			"could not end your Authentik session"}, `id="switch-account"`},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			p := b.get("/auth/logged-out" + tt.query)
			mustContain(t, "signed-out page", p.Body, tt.want...)
			if tt.not != "" && strings.Contains(p.Body, tt.not) {
				t.Errorf("signed-out page offers %s again", tt.not)
			}
		})
	}
}

func TestCallback_RefusalEndsEarlierSession(t *testing.T) {
	idp := newFakeIdP(t)
	idp.setUser(idpUser{Sub: "u1", Username: "alice", Groups: []string{adminGroup}})
	b := newOIDCBridge(t, idp, &fakeStatus{})
	if seen := b.login("/"); seen[len(seen)-1].Status != http.StatusSeeOther {
		t.Fatalf("admin login failed: %d", seen[len(seen)-1].Status)
	}

	// Someone else signs in on the same browser and is refused.
	idp.setUser(idpUser{Sub: "u3", Username: "carol", Groups: []string{"members"}})
	seen := b.login("/auth/login")
	if last := seen[len(seen)-1]; last.Status != http.StatusForbidden {
		t.Fatalf("second login: status %d, want 403", last.Status)
	}
	if p := b.get("/"); p.Status != http.StatusFound {
		t.Errorf("GET / after the refusal: status %d, want 302 (alice's session ended)",
			p.Status)
	}
}
