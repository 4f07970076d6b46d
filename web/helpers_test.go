package web

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discord-authentik-bridge/bridge/reconcile"
)

const (
	testClientID     = "bridge-status-page"
	testClientSecret = "client-secret-that-must-never-show-up"
	testWebhook      = "a-webhook-secret-of-32-characters"
)

// syncBuffer collects log output written from several goroutines.
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

// fakeStatus answers the page from canned data and records what the page asked it to do.
type fakeStatus struct {
	mu         sync.Mutex
	mapping    *MappingView
	search     *SearchResult
	member     *MemberView
	changes    []reconcile.Change
	health     Health
	pass       *reconcile.PassReport
	outcome    *reconcile.Outcome
	syncs      []syncCall
	passes     int
	filters    []reconcile.ChangeFilter
	queries    []string
	memberErr  error
	previewErr error
}

type syncCall struct {
	DiscordID, Trigger string
	DryRun             bool
}

var _ Status = (*fakeStatus)(nil)

func (f *fakeStatus) Mapping(context.Context) (*MappingView, error) { return f.mapping, nil }

func (f *fakeStatus) Search(_ context.Context, q string, _ int) (*SearchResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	return f.search, nil
}

func (f *fakeStatus) Member(context.Context, string) (*MemberView, error) {
	return f.member, f.memberErr
}

func (f *fakeStatus) Activity(_ context.Context, flt reconcile.ChangeFilter) ([]reconcile.Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filters = append(f.filters, flt)
	var out []reconcile.Change
	for _, c := range f.changes {
		if flt.Before != 0 && c.ID >= flt.Before {
			continue
		}
		if flt.Kind != "" && c.Kind != flt.Kind {
			continue
		}
		out = append(out, c)
		if len(out) == flt.Limit {
			break
		}
	}
	return out, nil
}

func (f *fakeStatus) Health(context.Context) Health { return f.health }

func (f *fakeStatus) SyncMember(_ context.Context, id, trigger string, dryRun bool) (*reconcile.Outcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs = append(f.syncs, syncCall{id, trigger, dryRun})
	return f.outcome, nil
}

func (f *fakeStatus) PreviewAll(context.Context) (*reconcile.PassReport, error) {
	return f.pass, f.previewErr
}

func (f *fakeStatus) RequestFullPass() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.passes++
}

func (f *fakeStatus) calls() ([]syncCall, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]syncCall(nil), f.syncs...), f.passes
}

// bridge is a Server under test behind a real HTTP listener, with a browser-like client.
type bridge struct {
	t      *testing.T
	srv    *httptest.Server
	s      *Server
	logs   *syncBuffer
	client *http.Client
}

// newBridge starts a server; mod adjusts the options before it is built. The public URL is the
// test server's.
func newBridge(t *testing.T, st Status, mod func(*Options)) *bridge {
	t.Helper()
	b := &bridge{t: t, logs: &syncBuffer{}}
	var h http.Handler
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(b.srv.Close)
	o := Options{
		WebhookSecret: testWebhook,
		Logger:        slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Status:        st,
		Admin:         AdminOptions{PublicURL: b.srv.URL, Version: "test"},
	}
	if mod != nil {
		mod(&o)
	}
	b.s = New(o)
	h = b.s.Handler()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	b.client = &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return b
}

// page is one answer, read whole.
type page struct {
	URL    string
	Status int
	Header http.Header
	Body   string
}

func (b *bridge) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return page{URL: req.URL.String(), Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
}

// get fetches a path of the bridge or a full URL, without following redirects.
func (b *bridge) get(target string) page {
	b.t.Helper()
	if strings.HasPrefix(target, "/") {
		target = b.srv.URL + target
	}
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodGet, target, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	return b.do(req)
}

// post sends a form to a path of the bridge.
func (b *bridge) post(path string, form url.Values) page {
	b.t.Helper()
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodPost, b.srv.URL+path,
		strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	return b.do(req)
}

var csrfField = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// csrf reads the form token from a page of the bridge.
func (b *bridge) csrf() string {
	b.t.Helper()
	p := b.get("/")
	m := csrfField.FindStringSubmatch(p.Body)
	if m == nil {
		b.t.Fatalf("GET /: no csrf_token field (status %d)", p.Status)
	}
	return m[1]
}

// cookie returns the named cookie the jar holds for the bridge.
func (b *bridge) cookie(name string) *http.Cookie {
	u, _ := url.Parse(b.srv.URL)
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func mustContain(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s does not contain %q", what, w)
		}
	}
}

// fakeIdP is an OpenID provider with discovery, JWKS, authorize, token and userinfo
// endpoints, signing ID tokens with a test RSA key. It checks PKCE and the client secret the
// way Authentik does, and remembers every code and token it issued so tests can look for
// them where they must not be.
type fakeIdP struct {
	t   *testing.T
	srv *httptest.Server
	key *rsa.PrivateKey

	mu sync.Mutex
	// user is who logs in at /authorize.
	user   idpUser
	grants map[string]grant
	access map[string]idpUser
	issued []string // every code and token handed out
	// badNonce makes the ID token carry another nonce than the one asked for.
	badNonce bool
	// endSession is the end_session_endpoint discovery lists: "" for none, a path for one on
	// the provider's own origin, or a whole URL.
	endSession string
}

type idpUser struct {
	Sub, Username string
	Groups        []string
	// GroupsInUserinfo leaves the groups claim out of the ID token, so only userinfo has it.
	GroupsInUserinfo bool
}

type grant struct {
	user                          idpUser
	nonce, challenge, redirectURI string
}

func newFakeIdP(t *testing.T) *fakeIdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeIdP{t: t, key: key, grants: map[string]grant{}, access: map[string]idpUser{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /jwks", p.jwks)
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	mux.HandleFunc("GET /userinfo", p.userinfo)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *fakeIdP) setUser(u idpUser) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.user = u
}

func (p *fakeIdP) secrets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string{testClientSecret}, p.issued...)
}

func (p *fakeIdP) discovery(w http.ResponseWriter, _ *http.Request) {
	u := p.srv.URL
	meta := map[string]any{
		"issuer":                                u,
		"authorization_endpoint":                u + "/authorize",
		"token_endpoint":                        u + "/token",
		"userinfo_endpoint":                     u + "/userinfo",
		"jwks_uri":                              u + "/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"code_challenge_methods_supported":      []string{"S256"},
	}
	p.mu.Lock()
	switch end := p.endSession; {
	case strings.HasPrefix(end, "/"):
		meta["end_session_endpoint"] = u + end
	case end != "":
		meta["end_session_endpoint"] = end
	}
	p.mu.Unlock()
	writeJSON(w, meta)
}

func (p *fakeIdP) jwks(w http.ResponseWriter, _ *http.Request) {
	pub := p.key.PublicKey
	writeJSON(w, map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "test-key", "use": "sig", "alg": "RS256",
		"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}

// authorize logs the configured user in at once and sends the browser back with a code.
func (p *fakeIdP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != testClientID || q.Get("response_type") != "code" ||
		q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" ||
		q.Get("nonce") == "" || q.Get("state") == "" ||
		!strings.Contains(" "+q.Get("scope")+" ", " openid ") {
		http.Error(w, "bad authorization request: "+r.URL.RawQuery, http.StatusBadRequest)
		return
	}
	code := "code-" + rand.Text()
	p.mu.Lock()
	p.grants[code] = grant{user: p.user, nonce: q.Get("nonce"),
		challenge: q.Get("code_challenge"), redirectURI: q.Get("redirect_uri")}
	p.issued = append(p.issued, code)
	p.mu.Unlock()
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	bq := back.Query()
	bq.Set("code", code)
	bq.Set("state", q.Get("state"))
	back.RawQuery = bq.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (p *fakeIdP) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != testClientID || secret != testClientSecret {
		writeJSONStatus(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	p.mu.Lock()
	g, ok := p.grants[r.PostForm.Get("code")]
	delete(p.grants, r.PostForm.Get("code"))
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if !ok || b64(sum[:]) != g.challenge || r.PostForm.Get("redirect_uri") != g.redirectURI {
		writeJSONStatus(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
		return
	}

	now := time.Now()
	claims := map[string]any{
		"iss": p.srv.URL, "sub": g.user.Sub, "aud": testClientID,
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"nonce": g.nonce, "preferred_username": g.user.Username,
	}
	p.mu.Lock()
	if p.badNonce {
		claims["nonce"] = "another-login"
	}
	p.mu.Unlock()
	if !g.user.GroupsInUserinfo {
		claims["groups"] = g.user.Groups
	}
	idToken := p.sign(claims)
	access := "access-" + rand.Text()
	p.mu.Lock()
	p.access[access] = g.user
	p.issued = append(p.issued, idToken, access)
	p.mu.Unlock()
	writeJSON(w, map[string]any{"access_token": access, "token_type": "Bearer",
		"expires_in": 300, "id_token": idToken})
}

func (p *fakeIdP) userinfo(w http.ResponseWriter, r *http.Request) {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	p.mu.Lock()
	u, ok := p.access[token]
	p.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	writeJSON(w, map[string]any{"sub": u.Sub, "preferred_username": u.Username,
		"groups": u.Groups})
}

// sign makes a compact RS256 JWS.
func (p *fakeIdP) sign(claims map[string]any) string {
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": "test-key", "typ": "JWT"})
	payload, _ := json.Marshal(claims)
	input := b64(header) + "." + b64(payload)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, p.key, crypto.SHA256, sum[:])
	if err != nil {
		p.t.Fatal(err)
	}
	return input + "." + b64(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func writeJSON(w http.ResponseWriter, v any) { writeJSONStatus(w, http.StatusOK, v) }

func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func newJar(t *testing.T) http.CookieJar {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return jar
}
