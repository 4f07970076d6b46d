package authentikstub

import (
	"encoding/json"
	"errors"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
)

const (
	oidcSlug     = "discord-bridge"
	oidcClient   = "bridge-client-7f3a"
	oidcSecret   = "bridge-secret-5c1e9b0d2a"
	oidcRedirect = "https://bridge.example.org/auth/callback"
	oidcPassword = "correct horse battery staple"
)

// oidcEnv is a stub with one OIDC application and one user who may log in.
type oidcEnv struct {
	s        *Server
	issuer   string
	provider *oidc.Provider
	userPK   int32
}

func newOIDCEnv(t *testing.T) *oidcEnv {
	t.Helper()
	s, _ := newStub(t)
	issuer := s.AddOIDCApp(oidcSlug, oidcClient, oidcSecret, oidcRedirect)
	pk := s.AddUser(User{
		Username: "mara.okafor", Name: "Mara Okafor", Email: "mara@example.org", IsActive: true,
	})
	for _, name := range []string{"makerspace-admins", "laser-users"} {
		s.AddMember(s.AddGroup(Group{Name: name}), pk)
	}
	s.AddGroup(Group{Name: "woodshop"}) // a group she is not in
	s.SetPassword("mara.okafor", oidcPassword)

	provider, err := oidc.NewProvider(t.Context(), issuer)
	if err != nil {
		t.Fatalf("discovery of %s: %v", issuer, err)
	}
	return &oidcEnv{s: s, issuer: issuer, provider: provider, userPK: pk}
}

func (e *oidcEnv) config(style oauth2.AuthStyle) *oauth2.Config {
	ep := e.provider.Endpoint()
	ep.AuthStyle = style
	return &oauth2.Config{
		ClientID:     oidcClient,
		ClientSecret: oidcSecret,
		Endpoint:     ep,
		RedirectURL:  oidcRedirect,
		Scopes:       []string{oidc.ScopeOpenID, "profile", "email"},
	}
}

// browser follows no redirect, so that each hop can be checked; it keeps cookies.
type browser struct {
	t      *testing.T
	client *http.Client
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatalf("cookie jar: %v", err)
	}
	return &browser{t: t, client: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type webPage struct {
	status   int
	location string
	body     string
}

func (b *browser) do(method, target string, form url.Values) webPage {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(b.t.Context(), method, target, body)
	if err != nil {
		b.t.Fatalf("new request: %v", err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("read body: %v", err)
	}
	return webPage{resp.StatusCode, resp.Header.Get("Location"), string(data)}
}

var formAction = regexp.MustCompile(`<form method="post" action="([^"]*)"`)

// submitLogin fills in the login form of p, which was served for pageURL.
func (b *browser) submitLogin(pageURL string, p webPage, username, password string) webPage {
	b.t.Helper()
	for _, id := range []string{`id="username"`, `id="password"`, `id="login"`} {
		if !strings.Contains(p.body, id) {
			b.t.Fatalf("login form lacks %s; page:\n%s", id, p.body)
		}
	}
	m := formAction.FindStringSubmatch(p.body)
	if m == nil {
		b.t.Fatalf("no login form in page:\n%s", p.body)
	}
	base, err := url.Parse(pageURL)
	if err != nil {
		b.t.Fatalf("parse %s: %v", pageURL, err)
	}
	action, err := base.Parse(html.UnescapeString(m[1]))
	if err != nil {
		b.t.Fatalf("form action %q: %v", m[1], err)
	}
	return b.do(http.MethodPost, action.String(), url.Values{
		"username": {username}, "password": {password},
	})
}

// callback checks that p sends the browser to the redirect URI and returns its query.
func callback(t *testing.T, p webPage) url.Values {
	t.Helper()
	if p.status != http.StatusFound {
		t.Fatalf("status = %d, want 302; page:\n%s", p.status, p.body)
	}
	u, err := url.Parse(p.location)
	if err != nil {
		t.Fatalf("location %q: %v", p.location, err)
	}
	u.RawQuery, u.Fragment = "", ""
	if u.String() != oidcRedirect {
		t.Fatalf("redirected to %s, want %s", u, oidcRedirect)
	}
	loc, _ := url.Parse(p.location)
	return loc.Query()
}

// loginCode runs the authorization request of authURL through the login form and returns the
// code, checking that the state came back.
func (b *browser) loginCode(authURL, state string) string {
	b.t.Helper()
	form := b.do(http.MethodGet, authURL, nil)
	if form.status != http.StatusOK {
		b.t.Fatalf("authorize: status = %d, want 200 (the form); location %q",
			form.status, form.location)
	}
	q := callback(b.t, b.submitLogin(authURL, form, "mara.okafor", oidcPassword))
	if got := q.Get("state"); got != state {
		b.t.Fatalf("state = %q, want %q", got, state)
	}
	if q.Get("code") == "" {
		b.t.Fatalf("no code in callback %v", q)
	}
	return q.Get("code")
}

func TestOIDC_Discovery(t *testing.T) {
	e := newOIDCEnv(t)

	if got, want := e.issuer, e.s.URL()+"/application/o/discord-bridge/"; got != want {
		t.Errorf("issuer = %q, want %q", got, want)
	}
	ep := e.provider.Endpoint()
	if got, want := ep.AuthURL, e.s.URL()+"/application/o/authorize/"; got != want {
		t.Errorf("authorization endpoint = %q, want %q", got, want)
	}
	if got, want := ep.TokenURL, e.s.URL()+"/application/o/token/"; got != want {
		t.Errorf("token endpoint = %q, want %q", got, want)
	}

	var meta struct {
		JWKS       string   `json:"jwks_uri"`
		UserInfo   string   `json:"userinfo_endpoint"`
		EndSession string   `json:"end_session_endpoint"`
		PKCE       []string `json:"code_challenge_methods_supported"`
		AuthMethod []string `json:"token_endpoint_auth_methods_supported"`
	}
	if err := e.provider.Claims(&meta); err != nil {
		t.Fatalf("metadata: %v", err)
	}
	base := e.s.URL() + "/application/o/"
	want := struct {
		JWKS, UserInfo, EndSession string
		PKCE, AuthMethod           []string
	}{
		base + "discord-bridge/jwks/", base + "userinfo/", base + "discord-bridge/end-session/",
		[]string{"S256"}, []string{"client_secret_post", "client_secret_basic"},
	}
	got := struct {
		JWKS, UserInfo, EndSession string
		PKCE, AuthMethod           []string
	}{meta.JWKS, meta.UserInfo, meta.EndSession, meta.PKCE, meta.AuthMethod}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("metadata (-want +got):\n%s", d)
	}

	t.Run("unknown application", func(t *testing.T) {
		p := newBrowser(t).do(http.MethodGet,
			e.s.URL()+"/application/o/other-app/.well-known/openid-configuration", nil)
		if p.status != http.StatusNotFound {
			t.Errorf("status = %d, want 404", p.status)
		}
	})
}

func TestOIDC_CodeFlow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		style oauth2.AuthStyle
	}{
		{"client_secret_basic", oauth2.AuthStyleInHeader},
		{"client_secret_post", oauth2.AuthStyleInParams},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newOIDCEnv(t)
			cfg := e.config(tc.style)
			verifier := oauth2.GenerateVerifier()
			authURL := cfg.AuthCodeURL("state-81f2", oauth2.S256ChallengeOption(verifier),
				oidc.Nonce("nonce-4471"))

			code := newBrowser(t).loginCode(authURL, "state-81f2")
			tok, err := cfg.Exchange(t.Context(), code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			raw, ok := tok.Extra("id_token").(string)
			if !ok {
				t.Fatalf("token answer has no id_token")
			}
			idTok, err := e.provider.Verifier(&oidc.Config{ClientID: oidcClient}).
				Verify(t.Context(), raw)
			if err != nil {
				t.Fatalf("verify id token: %v", err)
			}
			if err := idTok.VerifyAccessToken(tok.AccessToken); err != nil {
				t.Errorf("at_hash: %v", err)
			}

			type claims struct {
				Nonce    string   `json:"nonce"`
				Email    string   `json:"email"`
				Name     string   `json:"name"`
				Username string   `json:"preferred_username"`
				Groups   []string `json:"groups"`
			}
			want := claims{
				Nonce: "nonce-4471", Email: "mara@example.org", Name: "Mara Okafor",
				Username: "mara.okafor", Groups: []string{"laser-users", "makerspace-admins"},
			}
			var got claims
			if err := idTok.Claims(&got); err != nil {
				t.Fatalf("id token claims: %v", err)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("id token claims (-want +got):\n%s", d)
			}
			if idTok.Subject != userUID(e.userPK) {
				t.Errorf("sub = %q, want the user's uid %q", idTok.Subject, userUID(e.userPK))
			}

			info, err := e.provider.UserInfo(t.Context(), oauth2.StaticTokenSource(tok))
			if err != nil {
				t.Fatalf("userinfo: %v", err)
			}
			var fromInfo claims
			if err := info.Claims(&fromInfo); err != nil {
				t.Fatalf("userinfo claims: %v", err)
			}
			want.Nonce = ""
			if d := cmp.Diff(want, fromInfo); d != "" {
				t.Errorf("userinfo claims (-want +got):\n%s", d)
			}

			if n := e.s.SessionCount(e.userPK); n != 1 {
				t.Errorf("authenticated sessions = %d, want 1 after logging in", n)
			}
		})
	}
}

func TestOIDC_LoginForm(t *testing.T) {
	e := newOIDCEnv(t)
	e.s.AddUser(User{Username: "no.password", IsActive: true})
	e.s.AddUser(User{Username: "gone", IsActive: false})
	e.s.SetPassword("gone", oidcPassword)
	cfg := e.config(oauth2.AuthStyleInHeader)
	authURL := cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))

	for _, tc := range []struct {
		name, username, password string
	}{
		{"wrong password", "mara.okafor", "hunter2"},
		{"unknown user", "nobody", oidcPassword},
		{"user without password", "no.password", ""},
		{"inactive user", "gone", oidcPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBrowser(t)
			p := b.submitLogin(authURL, b.do(http.MethodGet, authURL, nil), tc.username,
				tc.password)
			if p.status != http.StatusOK || p.location != "" {
				t.Fatalf("status = %d, location %q; want the form again", p.status, p.location)
			}
			if !strings.Contains(p.body, `id="error"`) {
				t.Errorf("form shows no error:\n%s", p.body)
			}
			// The form must work again after a mistake.
			q := callback(t, b.submitLogin(authURL, p, "mara.okafor", oidcPassword))
			if q.Get("code") == "" {
				t.Errorf("no code after the right password: %v", q)
			}
		})
	}
}

func TestOIDC_TokenRefused(t *testing.T) {
	e := newOIDCEnv(t)
	b := newBrowser(t)
	good := e.config(oauth2.AuthStyleInHeader)

	// fresh returns a new code for verifier; after the first login the session answers.
	fresh := func(verifier string) string {
		t.Helper()
		p := b.do(http.MethodGet, good.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), nil)
		if p.status == http.StatusOK {
			p = b.submitLogin(good.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), p,
				"mara.okafor", oidcPassword)
		}
		return callback(t, p).Get("code")
	}

	for _, tc := range []struct {
		name     string
		cfg      func() *oauth2.Config
		verifier func(issued string) string
		code     func(issued string) string
		wantErr  string
	}{
		{
			name: "wrong secret in header",
			cfg: func() *oauth2.Config {
				c := e.config(oauth2.AuthStyleInHeader)
				c.ClientSecret = "guessed"
				return c
			},
			wantErr: "invalid_client",
		},
		{
			name: "wrong secret in body",
			cfg: func() *oauth2.Config {
				c := e.config(oauth2.AuthStyleInParams)
				c.ClientSecret = "guessed"
				return c
			},
			wantErr: "invalid_client",
		},
		{
			name: "unknown client",
			cfg: func() *oauth2.Config {
				c := e.config(oauth2.AuthStyleInHeader)
				c.ClientID = "someone-else"
				return c
			},
			wantErr: "invalid_client",
		},
		{
			name: "other redirect uri",
			cfg: func() *oauth2.Config {
				c := e.config(oauth2.AuthStyleInHeader)
				c.RedirectURL = "https://evil.example.org/auth/callback"
				return c
			},
			wantErr: "invalid_grant",
		},
		{
			name:     "wrong verifier",
			verifier: func(string) string { return oauth2.GenerateVerifier() },
			wantErr:  "invalid_grant",
		},
		{
			name:     "no verifier",
			verifier: func(string) string { return "" },
			wantErr:  "invalid_grant",
		},
		{
			name:    "unknown code",
			code:    func(string) string { return "made-up-code" },
			wantErr: "invalid_grant",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verifier := oauth2.GenerateVerifier()
			code := fresh(verifier)
			cfg, sendVerifier, sendCode := good, verifier, code
			if tc.cfg != nil {
				cfg = tc.cfg()
			}
			if tc.verifier != nil {
				sendVerifier = tc.verifier(verifier)
			}
			if tc.code != nil {
				sendCode = tc.code(code)
			}
			var opts []oauth2.AuthCodeOption
			if sendVerifier != "" {
				opts = append(opts, oauth2.VerifierOption(sendVerifier))
			}

			_, err := cfg.Exchange(t.Context(), sendCode, opts...)
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) {
				t.Fatalf("exchange error = %v, want an OAuth error %s", err, tc.wantErr)
			}
			if re.ErrorCode != tc.wantErr {
				t.Errorf("error = %q (%s), want %q", re.ErrorCode, re.ErrorDescription,
					tc.wantErr)
			}

			// A refused attempt must not burn the code for the rightful client.
			if _, err := good.Exchange(t.Context(), code, oauth2.VerifierOption(verifier)); err != nil {
				t.Errorf("exchange with the right values after the refusal: %v", err)
			}
		})
	}

	t.Run("code used twice", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		code := fresh(verifier)
		if _, err := good.Exchange(t.Context(), code, oauth2.VerifierOption(verifier)); err != nil {
			t.Fatalf("first exchange: %v", err)
		}
		_, err := good.Exchange(t.Context(), code, oauth2.VerifierOption(verifier))
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Errorf("second exchange error = %v, want invalid_grant", err)
		}
	})
}

func TestOIDC_AuthorizeRefused(t *testing.T) {
	e := newOIDCEnv(t)
	authURL := e.s.URL() + "/application/o/authorize/"
	valid := func() url.Values {
		return url.Values{
			"client_id":             {oidcClient},
			"redirect_uri":          {oidcRedirect},
			"response_type":         {"code"},
			"scope":                 {"openid profile"},
			"state":                 {"st-9"},
			"code_challenge":        {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())},
			"code_challenge_method": {"S256"},
		}
	}

	for _, tc := range []struct {
		name      string
		change    func(url.Values)
		wantError string // "" means a page shown to the user, nothing sent to the client
	}{
		{"unknown client", func(q url.Values) { q.Set("client_id", "nope") }, ""},
		{
			"unregistered redirect uri",
			func(q url.Values) { q.Set("redirect_uri", "https://evil.example.org/cb") },
			"",
		},
		{"no pkce", func(q url.Values) { q.Del("code_challenge") }, "invalid_request"},
		{
			"plain pkce",
			func(q url.Values) { q.Set("code_challenge_method", "plain") },
			"invalid_request",
		},
		{
			"implicit flow",
			func(q url.Values) { q.Set("response_type", "id_token") },
			"unsupported_response_type",
		},
		{"prompt none without session", func(q url.Values) { q.Set("prompt", "none") }, "login_required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := valid()
			tc.change(q)
			p := newBrowser(t).do(http.MethodGet, authURL+"?"+q.Encode(), nil)

			if tc.wantError == "" {
				if p.status != http.StatusBadRequest || p.location != "" {
					t.Errorf("status = %d, location %q; want 400 without a redirect",
						p.status, p.location)
				}
				return
			}
			got := callback(t, p)
			if got.Get("error") != tc.wantError || got.Get("state") != "st-9" {
				t.Errorf("callback query = %v, want error %s and state st-9", got, tc.wantError)
			}
		})
	}
}

func TestOIDC_Session(t *testing.T) {
	e := newOIDCEnv(t)
	b := newBrowser(t)
	cfg := e.config(oauth2.AuthStyleInHeader)
	authURL := func(extra ...oauth2.AuthCodeOption) string {
		opts := append([]oauth2.AuthCodeOption{
			oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
		}, extra...)
		return cfg.AuthCodeURL("st", opts...)
	}
	b.loginCode(authURL(), "st")

	t.Run("session answers at once", func(t *testing.T) {
		if q := callback(t, b.do(http.MethodGet, authURL(), nil)); q.Get("code") == "" {
			t.Errorf("no code: %v", q)
		}
	})
	t.Run("prompt=login asks again", func(t *testing.T) {
		p := b.do(http.MethodGet, authURL(oauth2.SetAuthURLParam("prompt", "login")), nil)
		if p.status != http.StatusOK || !strings.Contains(p.body, `id="password"`) {
			t.Errorf("status = %d, location %q; want the form", p.status, p.location)
		}
	})
	t.Run("end session", func(t *testing.T) {
		q := url.Values{
			"post_logout_redirect_uri": {"https://bridge.example.org/"},
			"state":                    {"bye"},
		}
		p := b.do(http.MethodGet, e.issuer+"end-session/?"+q.Encode(), nil)
		if p.status != http.StatusFound || p.location != "https://bridge.example.org/?state=bye" {
			t.Errorf("status = %d, location %q; want 302 to the bridge with the state",
				p.status, p.location)
		}
		if n := e.s.SessionCount(e.userPK); n != 0 {
			t.Errorf("authenticated sessions = %d, want 0 after logging out", n)
		}
		if p := b.do(http.MethodGet, authURL(), nil); p.status != http.StatusOK {
			t.Errorf("authorize after logout: status = %d, want 200 (the form)", p.status)
		}
	})
	t.Run("foreign post_logout_redirect_uri is not followed", func(t *testing.T) {
		q := url.Values{"post_logout_redirect_uri": {"https://evil.example.org/"}}
		p := b.do(http.MethodGet, e.issuer+"end-session/?"+q.Encode(), nil)
		if p.status != http.StatusOK || p.location != "" {
			t.Errorf("status = %d, location %q; want the logged-out page", p.status, p.location)
		}
	})
}

// TestOIDC_SessionRevokedThroughAPI checks that the bridge's revocation (deleting the user's
// authenticated sessions) also ends the browser's login at the provider.
func TestOIDC_SessionRevokedThroughAPI(t *testing.T) {
	e := newOIDCEnv(t)
	b := newBrowser(t)
	cfg := e.config(oauth2.AuthStyleInHeader)
	authURL := cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
	b.loginCode(authURL, "st")

	list := doRaw(t, e.s, http.MethodGet,
		"/api/v3/core/authenticated_sessions/?user__username=mara.okafor", "Bearer "+testToken, "")
	var sessions struct {
		Results []struct {
			UUID string `json:"uuid"`
		} `json:"results"`
	}
	if err := json.Unmarshal(list.body, &sessions); err != nil || len(sessions.Results) != 1 {
		t.Fatalf("sessions = %s (%v), want one", list.body, err)
	}
	del := doRaw(t, e.s, http.MethodDelete,
		"/api/v3/core/authenticated_sessions/"+sessions.Results[0].UUID+"/", "Bearer "+testToken, "")
	if del.status != http.StatusNoContent {
		t.Fatalf("delete session: status = %d, want 204", del.status)
	}

	if p := b.do(http.MethodGet, authURL, nil); p.status != http.StatusOK {
		t.Errorf("authorize after revocation: status = %d, location %q; want the form",
			p.status, p.location)
	}
}

func TestServer_AddOIDCAppMisuse(t *testing.T) {
	s, _ := newStub(t)
	if s.AddOIDCApp("app", "client-1", "secret", oidcRedirect) == "" {
		t.Fatalf("first app refused: %v", s.Violations())
	}
	for _, tc := range []struct {
		name                 string
		slug, client, secret string
		redirects            []string
	}{
		{"taken slug", "app", "client-2", "secret", []string{oidcRedirect}},
		{"reserved slug", "token", "client-2", "secret", []string{oidcRedirect}},
		{"taken client id", "other", "client-1", "secret", []string{oidcRedirect}},
		{"no secret", "other", "client-2", "", []string{oidcRedirect}},
		{"no redirect uri", "other", "client-2", "secret", nil},
		{"relative redirect uri", "other", "client-2", "secret", []string{"/callback"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.ResetViolations()
			if got := s.AddOIDCApp(tc.slug, tc.client, tc.secret, tc.redirects...); got != "" {
				t.Errorf("AddOIDCApp = %q, want \"\" for a refused app", got)
			}
			if v := s.Violations(); len(v) != 1 {
				t.Errorf("violations = %q, want one", v)
			}
			s.ResetViolations()
		})
	}

	s.SetPassword("nobody", "x")
	if v := s.Violations(); len(v) != 1 || !slices.ContainsFunc(v, func(m string) bool {
		return strings.Contains(m, "nobody")
	}) {
		t.Errorf("violations after SetPassword of an unknown user = %q, want one naming it", v)
	}
	s.ResetViolations()
}
