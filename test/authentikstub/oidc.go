package authentikstub

// The OAuth2/OpenID provider of the stand-in: what Authentik serves under /application/o/ for an
// application backed by an OAuth2 provider, reduced to the authorization code flow. Logging in
// happens on a small HTML form instead of Authentik's flow executor, so that a real browser (or
// net/http with a cookie jar) can sign in with a username and password seeded by SetPassword.
//
// It is stricter than Authentik in one respect: every authorization request must carry an S256
// PKCE challenge, so a client that drops PKCE fails here instead of in production.

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"math/big"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// oidcPrefix is where Authentik serves its OAuth2 provider views.
const oidcPrefix = "/application/o/"

// Authentik's defaults for a new OAuth2 provider.
const (
	codeValidity    = time.Minute // access_code_validity
	tokenValidity   = time.Hour   // access_token_validity
	sessionValidity = 14 * 24 * time.Hour
	acrDefault      = "goauthentik.io/providers/oauth2/default"
)

// sessionCookie is the name of Authentik's own session cookie. Cookies do not tell ports apart,
// so on 127.0.0.1 the relying party receives it too; it must use another name for its own.
const sessionCookie = "authentik_session"

// maxFormBody bounds the token and login request bodies.
const maxFormBody = 64 << 10

// reservedSlugs are the provider-wide views that share the URL space with application slugs.
var reservedSlugs = []string{"authorize", "token", "userinfo", "introspect", "revoke", "device"}

var (
	oidcSlugPattern = regexp.MustCompile(`^[-a-zA-Z0-9_]+$`)
	// verifierPattern is RFC 7636's code_verifier: 43 to 128 unreserved characters.
	verifierPattern = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)
)

// oidcState is the provider's data. Its maps are guarded by Server.mu like the REST data,
// since logins read users and groups and create sessions.
type oidcState struct {
	key       *rsa.PrivateKey
	kid       string
	apps      map[string]*oidcApp // by slug
	codes     map[string]*authCode
	tokens    map[string]*accessGrant // by access token
	passwords map[int32]string        // by user pk
	loginAt   map[string]time.Time    // by session uuid: when the password was given
}

type oidcApp struct {
	slug         string
	clientID     string
	clientSecret string
	redirectURIs []string
}

// authRequest is a validated authorization request.
type authRequest struct {
	app         *oidcApp
	redirectURI string
	state       string
	nonce       string
	challenge   string
	prompt      string
	scopes      []string
}

type authCode struct {
	req      authRequest
	userPK   int32
	authTime time.Time
	expires  time.Time
}

type accessGrant struct {
	app     *oidcApp
	userPK  int32
	scopes  []string
	expires time.Time
}

// AddOIDCApp registers an application with an OAuth2/OpenID provider (a confidential client)
// under slug and returns its issuer, {URL}/application/o/{slug}/. Redirect URIs match exactly,
// as in Authentik's "strict" mode. The signing key is generated with the first application.
// Misuse (a taken or reserved slug, a taken client ID, no redirect URI) is recorded as a
// violation and "" is returned.
func (s *Server) AddOIDCApp(slug, clientID, clientSecret string, redirectURIs ...string) string {
	s.mu.Lock()
	defer s.mu.Unlock()

	o := &s.oidc
	if o.key == nil {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			s.violation("add oidc app %s: generate signing key: %v", slug, err)
			return ""
		}
		der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		if err != nil {
			s.violation("add oidc app %s: encode signing key: %v", slug, err)
			return ""
		}
		sum := sha256.Sum256(der)
		o.key, o.kid = key, hex.EncodeToString(sum[:16])
		o.apps = map[string]*oidcApp{}
		o.codes = map[string]*authCode{}
		o.tokens = map[string]*accessGrant{}
		o.passwords = map[int32]string{}
		o.loginAt = map[string]time.Time{}
	}

	switch {
	case !oidcSlugPattern.MatchString(slug) || slices.Contains(reservedSlugs, slug):
		s.violation("add oidc app: slug %q is not a slug or is reserved", slug)
		return ""
	case o.apps[slug] != nil:
		s.violation("add oidc app: slug %q is taken", slug)
		return ""
	case clientID == "" || clientSecret == "":
		s.violation("add oidc app %s: client id and secret are required", slug)
		return ""
	case len(redirectURIs) == 0:
		s.violation("add oidc app %s: at least one redirect URI is required", slug)
		return ""
	}
	for _, other := range o.apps {
		if other.clientID == clientID {
			s.violation("add oidc app %s: client id is taken by %s", slug, other.slug)
			return ""
		}
	}
	for _, uri := range redirectURIs {
		if u, err := url.Parse(uri); err != nil || !u.IsAbs() || u.Fragment != "" {
			s.violation("add oidc app %s: redirect URI %q is not absolute", slug, uri)
			return ""
		}
	}

	o.apps[slug] = &oidcApp{
		slug:         slug,
		clientID:     clientID,
		clientSecret: clientSecret,
		redirectURIs: slices.Clone(redirectURIs),
	}
	s.log.Info("authentik stub oidc app added", "slug", slug, "redirect_uris", len(redirectURIs))
	return s.issuer(slug)
}

// SetPassword lets the user log in on the provider's login form. Authentik stores a hash; the
// stub keeps the password in memory. An unknown username is recorded as a violation.
func (s *Server) SetPassword(username, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()

	pk, ok := s.pkOfUsername(username)
	if !ok {
		s.violation("set password: unknown user %q", username)
		return
	}
	if s.oidc.passwords == nil {
		s.oidc.passwords = map[int32]string{}
	}
	s.oidc.passwords[pk] = password
}

func (s *Server) issuer(slug string) string {
	return s.URL() + oidcPrefix + slug + "/"
}

// serveOIDC routes a request under /application/o/. These paths are not part of the REST
// API: they are neither counted nor validated against the schemas, and faults do not apply.
func (s *Server) serveOIDC(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, oidcPrefix)
	switch rest {
	case "authorize/":
		if allow(w, r, http.MethodGet, http.MethodPost) {
			s.authorizeView(w, r)
		}
		return
	case "token/":
		if allow(w, r, http.MethodPost) {
			s.tokenView(w, r)
		}
		return
	case "userinfo/":
		if allow(w, r, http.MethodGet, http.MethodPost) {
			s.userinfoView(w, r)
		}
		return
	}

	slug, view, _ := strings.Cut(rest, "/")
	s.mu.Lock()
	app := s.oidc.apps[slug]
	s.mu.Unlock()
	if app == nil {
		http.NotFound(w, r)
		return
	}
	switch view {
	case ".well-known/openid-configuration":
		if allow(w, r, http.MethodGet) {
			s.discoveryView(w, app)
		}
	case "jwks/":
		if allow(w, r, http.MethodGet) {
			s.jwksView(w)
		}
	case "end-session/":
		if allow(w, r, http.MethodGet, http.MethodPost) {
			s.endSessionView(w, r, app)
		}
	default:
		http.NotFound(w, r)
	}
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	if slices.Contains(methods, r.Method) {
		return true
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

// discoveryView answers the provider's metadata in the shape of Authentik's ProviderInfoView,
// listing only what the stub serves: Authentik also names its introspection, revocation and
// device endpoints, and offers the implicit and hybrid flows.
func (s *Server) discoveryView(w http.ResponseWriter, app *oidcApp) {
	base := s.URL() + oidcPrefix
	writeOIDCJSON(w, http.StatusOK, map[string]any{
		"issuer":                   s.issuer(app.slug),
		"authorization_endpoint":   base + "authorize/",
		"token_endpoint":           base + "token/",
		"userinfo_endpoint":        base + "userinfo/",
		"end_session_endpoint":     base + app.slug + "/end-session/",
		"jwks_uri":                 base + app.slug + "/jwks/",
		"response_types_supported": []string{"code"},
		"response_modes_supported": []string{"query"},
		"grant_types_supported":    []string{"authorization_code"},
		"subject_types_supported":  []string{"public"},
		"scopes_supported":         []string{"openid", "email", "profile"},
		"acr_values_supported":     []string{acrDefault},
		"claims_supported": []string{
			"sub", "iss", "aud", "exp", "iat", "auth_time", "acr",
		},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{
			"client_secret_post", "client_secret_basic",
		},
		"code_challenge_methods_supported": []string{"S256"},
		"request_parameter_supported":      false,
		"claims_parameter_supported":       false,
	})
}

func (s *Server) jwksView(w http.ResponseWriter) {
	s.mu.Lock()
	pub, kid := s.oidc.key.PublicKey, s.oidc.kid
	s.mu.Unlock()

	e := big.NewInt(int64(pub.E)).Bytes()
	writeOIDCJSON(w, http.StatusOK, map[string]any{"keys": []map[string]string{{
		"kty": "RSA",
		"alg": "RS256",
		"use": "sig",
		"kid": kid,
		"n":   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e":   base64.RawURLEncoding.EncodeToString(e),
	}}})
}

// authorizeView runs the authorization endpoint: GET shows the login form (or, with a live
// session, answers at once), POST checks the form's credentials. The request's parameters
// stay in the query string of both, so the form needs no hidden fields.
func (s *Server) authorizeView(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req, problem := s.parseAuthRequest(q)
	if problem != "" {
		// Without a trusted redirect URI the error can only be shown, never sent back.
		renderPage(w, http.StatusBadRequest, "Request has been denied", problem)
		return
	}
	if code, desc := req.check(q); code != "" {
		redirectWith(w, r, req.redirectURI, url.Values{
			"error": {code}, "error_description": {desc}, "state": {req.state},
		})
		return
	}

	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
		if err := r.ParseForm(); err != nil {
			renderPage(w, http.StatusBadRequest, "Request has been denied", "Unreadable form.")
			return
		}
		username := r.PostForm.Get("username")
		sid, pk, ok := s.login(username, r.PostForm.Get("password"))
		if !ok {
			renderLogin(w, r, req, username, "Invalid username or password.")
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: sessionCookie, Value: sid, Path: "/", HttpOnly: true,
			SameSite: http.SameSiteLaxMode, MaxAge: int(sessionValidity / time.Second),
		})
		s.grantCode(w, r, req, pk, sid)
		return
	}

	if req.prompt != "login" {
		if sid, pk, ok := s.sessionUser(r); ok {
			s.grantCode(w, r, req, pk, sid)
			return
		}
	}
	if req.prompt == "none" {
		redirectWith(w, r, req.redirectURI, url.Values{
			"error": {"login_required"}, "error_description": {"no session"}, "state": {req.state},
		})
		return
	}
	renderLogin(w, r, req, "", "")
}

// parseAuthRequest identifies the client and its redirect URI; a problem with either is
// shown to the user.
func (s *Server) parseAuthRequest(q url.Values) (authRequest, string) {
	s.mu.Lock()
	defer s.mu.Unlock()

	var app *oidcApp
	for _, a := range s.oidc.apps {
		if a.clientID == q.Get("client_id") {
			app = a
		}
	}
	if app == nil {
		return authRequest{}, "Invalid client identifier (client_id)."
	}
	redirect := q.Get("redirect_uri")
	if !slices.Contains(app.redirectURIs, redirect) {
		return authRequest{}, "The request fails due to a missing, invalid, or mismatching " +
			"redirection URI (redirect_uri)."
	}
	return authRequest{
		app:         app,
		redirectURI: redirect,
		state:       q.Get("state"),
		nonce:       q.Get("nonce"),
		challenge:   q.Get("code_challenge"),
		prompt:      q.Get("prompt"),
		scopes:      strings.Fields(q.Get("scope")),
	}, ""
}

// check returns the OAuth error code and description for a request the client got wrong.
func (req authRequest) check(q url.Values) (code, desc string) {
	switch {
	case q.Get("response_type") != "code":
		return "unsupported_response_type", "only the authorization code flow is served"
	case req.challenge == "":
		return "invalid_request", "PKCE is required: send code_challenge with S256"
	case q.Get("code_challenge_method") != "S256":
		return "invalid_request", "code_challenge_method must be S256"
	}
	return "", ""
}

// login checks a username and password and opens a browser session, visible in the REST API
// as an authenticated session.
func (s *Server) login(username, password string) (sid string, pk int32, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()

	pk, known := s.pkOfUsername(username)
	want, hasPassword := s.oidc.passwords[pk]
	if !known || !hasPassword || !s.users[pk].isActive ||
		subtle.ConstantTimeCompare([]byte(want), []byte(password)) != 1 {
		s.log.Debug("authentik stub login refused", "username", username)
		return "", 0, false
	}

	now := s.now()
	sid = s.newUUID()
	s.sessions[sid] = &session{
		uuid: sid, userPK: pk, lastUsed: now, expires: now.Add(sessionValidity),
	}
	s.oidc.loginAt[sid] = now
	s.users[pk].lastLogin = &now
	s.log.Info("authentik stub login", "username", username)
	return sid, pk, true
}

// sessionUser returns the user of the request's session cookie while the session exists: a
// session deleted through the API logs the browser out.
func (s *Server) sessionUser(r *http.Request) (sid string, pk int32, ok bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	se := s.sessions[c.Value]
	if se == nil || s.now().After(se.expires) || !s.users[se.userPK].isActive {
		return "", 0, false
	}
	se.lastUsed = s.now()
	return se.uuid, se.userPK, true
}

// grantCode sends the browser back to the client with a fresh code and the client's state.
func (s *Server) grantCode(w http.ResponseWriter, r *http.Request, req authRequest, pk int32,
	sid string,
) {
	code := randomToken()
	s.mu.Lock()
	now := s.now()
	authTime, ok := s.oidc.loginAt[sid]
	if !ok {
		authTime = now
	}
	s.oidc.codes[code] = &authCode{
		req: req, userPK: pk, authTime: authTime, expires: now.Add(codeValidity),
	}
	s.mu.Unlock()

	redirectWith(w, r, req.redirectURI, url.Values{"code": {code}, "state": {req.state}})
}

// tokenError is an error answer of the token endpoint (RFC 6749, section 5.2).
type tokenError struct {
	status int
	code   string
	desc   string
}

// tokenView exchanges an authorization code. A failed attempt leaves the code usable, so only a
// successful exchange consumes it.
func (s *Server) tokenView(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		writeTokenError(w, tokenError{http.StatusBadRequest, "invalid_request", "unreadable form"})
		return
	}
	body, tokErr := s.exchange(r)
	if tokErr != nil {
		writeTokenError(w, *tokErr)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeOIDCJSON(w, http.StatusOK, body)
}

func (s *Server) exchange(r *http.Request) (map[string]any, *tokenError) {
	form := r.PostForm
	app := s.authenticateClient(r)
	if app == nil {
		return nil, &tokenError{http.StatusUnauthorized, "invalid_client",
			"client authentication failed"}
	}
	if gt := form.Get("grant_type"); gt != "authorization_code" {
		// TODO: refresh_token and the other grants Authentik offers are not served; the bridge
		// needs only the authorization code grant for its status page login.
		return nil, &tokenError{http.StatusBadRequest, "unsupported_grant_type",
			fmt.Sprintf("grant type %q is not supported", gt)}
	}
	invalid := func(desc string) *tokenError {
		return &tokenError{http.StatusBadRequest, "invalid_grant", desc}
	}

	s.mu.Lock()
	now := s.now()
	c := s.oidc.codes[form.Get("code")]
	switch {
	case c == nil || now.After(c.expires):
		s.mu.Unlock()
		return nil, invalid("unknown, used or expired code")
	case c.req.app != app:
		s.mu.Unlock()
		return nil, invalid("code was issued to another client")
	case form.Get("redirect_uri") != c.req.redirectURI:
		s.mu.Unlock()
		return nil, invalid("redirect_uri differs from the authorization request")
	case !pkceMatches(c.req.challenge, form.Get("code_verifier")):
		s.mu.Unlock()
		return nil, invalid("code_verifier does not match the code_challenge")
	}
	delete(s.oidc.codes, form.Get("code"))
	u := s.users[c.userPK]
	if u == nil || !u.isActive {
		s.mu.Unlock()
		return nil, invalid("user is gone or inactive")
	}

	access := map[string]any{
		"iss":       s.issuer(app.slug),
		"sub":       userUID(u.pk),
		"aud":       app.clientID,
		"azp":       app.clientID,
		"exp":       now.Add(tokenValidity).Unix(),
		"iat":       now.Unix(),
		"auth_time": c.authTime.Unix(),
		"acr":       acrDefault,
		"scope":     strings.Join(c.req.scopes, " "),
		"jti":       randomToken(),
	}
	var id map[string]any
	if slices.Contains(c.req.scopes, "openid") {
		id = s.scopeClaims(u, c.req.scopes)
		for _, k := range []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "acr"} {
			id[k] = access[k]
		}
		id["amr"] = []string{"pwd"}
		if c.req.nonce != "" {
			id["nonce"] = c.req.nonce
		}
	}
	key, kid := s.oidc.key, s.oidc.kid
	s.mu.Unlock()

	accessToken, err := signJWT(key, kid, access)
	if err != nil {
		return nil, &tokenError{http.StatusInternalServerError, "server_error", "sign token"}
	}
	body := map[string]any{
		"access_token": accessToken,
		"token_type":   "Bearer",
		"expires_in":   int(tokenValidity / time.Second),
		"scope":        access["scope"],
	}
	if id != nil {
		sum := sha256.Sum256([]byte(accessToken))
		id["at_hash"] = base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
		idToken, err := signJWT(key, kid, id)
		if err != nil {
			return nil, &tokenError{http.StatusInternalServerError, "server_error", "sign token"}
		}
		body["id_token"] = idToken
	}

	s.mu.Lock()
	s.oidc.tokens[accessToken] = &accessGrant{
		app: app, userPK: u.pk, scopes: c.req.scopes, expires: now.Add(tokenValidity),
	}
	s.mu.Unlock()
	return body, nil
}

// authenticateClient accepts client_secret_basic (credentials form-encoded, RFC 6749 section
// 2.3.1) and client_secret_post.
func (s *Server) authenticateClient(r *http.Request) *oidcApp {
	id, secret, basic := r.BasicAuth()
	if basic {
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return nil
		}
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, app := range s.oidc.apps {
		if id != "" && app.clientID == id &&
			subtle.ConstantTimeCompare([]byte(app.clientSecret), []byte(secret)) == 1 {
			return app
		}
	}
	return nil
}

func pkceMatches(challenge, verifier string) bool {
	if !verifierPattern.MatchString(verifier) {
		return false
	}
	sum := sha256.Sum256([]byte(verifier))
	got := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}

// scopeClaims are the claims Authentik's default scope mappings give for scopes. Caller holds
// s.mu.
func (s *Server) scopeClaims(u *user, scopes []string) map[string]any {
	claims := map[string]any{}
	if slices.Contains(scopes, "email") {
		claims["email"] = u.email
		claims["email_verified"] = true
	}
	if slices.Contains(scopes, "profile") {
		groups := []string{}
		for _, g := range s.groupsOf(u.pk) {
			groups = append(groups, g.name)
		}
		claims["name"] = u.name
		claims["given_name"] = u.name
		claims["preferred_username"] = u.username
		claims["nickname"] = u.username
		claims["groups"] = groups
		// Authentik passes an avatar on as picture only when it is an http(s) URL.
		if avatar := avatarOf(u); strings.HasPrefix(avatar, "http") {
			claims["picture"] = avatar
		}
	}
	return claims
}

func (s *Server) userinfoView(w http.ResponseWriter, r *http.Request) {
	token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found && r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
		token = r.PostFormValue("access_token")
	}

	s.mu.Lock()
	g := s.oidc.tokens[token]
	var claims map[string]any
	if g != nil && s.now().Before(g.expires) && s.users[g.userPK] != nil {
		u := s.users[g.userPK]
		claims = s.scopeClaims(u, g.scopes)
		claims["sub"] = userUID(u.pk)
	}
	s.mu.Unlock()

	if claims == nil {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeTokenError(w, tokenError{http.StatusUnauthorized, "invalid_token",
			"unknown or expired access token"})
		return
	}
	writeOIDCJSON(w, http.StatusOK, claims)
}

// endSessionView logs the browser out. It follows post_logout_redirect_uri only to an origin the
// application registered a redirect URI on, and otherwise shows that the user is logged out.
func (s *Server) endSessionView(w http.ResponseWriter, r *http.Request, app *oidcApp) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.mu.Lock()
		if se := s.sessions[c.Value]; se != nil {
			delete(s.sessions, c.Value)
			delete(s.oidc.loginAt, c.Value)
			s.log.Info("authentik stub logout", "username", s.users[se.userPK].username)
		}
		s.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1})

	if err := r.ParseForm(); err == nil {
		next := r.Form.Get("post_logout_redirect_uri")
		if next != "" && sameOriginAsAny(next, app.redirectURIs) {
			redirectWith(w, r, next, url.Values{"state": {r.Form.Get("state")}})
			return
		}
	}
	renderPage(w, http.StatusOK, "Logged out", "You have been logged out of "+app.slug+".")
}

func sameOriginAsAny(raw string, uris []string) bool {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() {
		return false
	}
	for _, other := range uris {
		o, err := url.Parse(other)
		if err == nil && o.Scheme == u.Scheme && o.Host == u.Host {
			return true
		}
	}
	return false
}

// redirectWith sends the browser to target with params added to its query; empty values are
// left out (an absent state is not sent as "state=").
func redirectWith(w http.ResponseWriter, r *http.Request, target string, params url.Values) {
	u, err := url.Parse(target)
	if err != nil {
		renderPage(w, http.StatusBadRequest, "Request has been denied", "Invalid redirect URI.")
		return
	}
	q := u.Query()
	for k, vs := range params {
		if len(vs) > 0 && vs[0] != "" {
			q.Set(k, vs[0])
		}
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// signJWT encodes claims as a JWS in compact form, signed with RS256.
func signJWT(key *rsa.PrivateKey, kid string, claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "RS256", "kid": kid, "typ": "JWT"})
	if err != nil {
		return "", fmt.Errorf("encode jwt header: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode jwt claims: %w", err)
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("sign jwt: %w", err)
	}
	return signing + "." + enc.EncodeToString(sig), nil
}

// randomToken returns 256 random bits, URL-safe, for codes, token IDs and the like.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

func writeOIDCJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeTokenError(w http.ResponseWriter, e tokenError) {
	if e.status == http.StatusUnauthorized && e.code == "invalid_client" {
		w.Header().Set("WWW-Authenticate", `Basic realm="authentik"`)
	}
	writeOIDCJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

// The login form keeps stable element ids (#username, #password, #login, #error) for browser
// tests.
var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in to {{.App}} · authentik stand-in</title>
<style>
body { font-family: system-ui, sans-serif; background: #1c1e21; color: #f0f0f0; margin: 0; }
main { max-width: 22rem; margin: 4rem auto; padding: 2rem; background: #2b2e33; }
label, input, button { display: block; width: 100%; box-sizing: border-box; }
input { margin: .25rem 0 1rem; padding: .5rem; }
button { padding: .6rem; background: #fd4b2d; color: #fff; border: 0; border-radius: 4px; }
#error { color: #ff8a80; }
</style>
</head>
<body>
<main>
<h1>Log in to {{.App}}</h1>
{{with .Error}}<p id="error" role="alert">{{.}}</p>{{end}}
<form method="post" action="{{.Action}}">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" value="{{.Username}}"
 required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button id="login" type="submit">Log in</button>
</form>
</main>
</body>
</html>
`))

var messagePage = template.Must(template.New("message").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{.Title}} · authentik stand-in</title></head>
<body><main><h1>{{.Title}}</h1><p id="message">{{.Message}}</p></main></body>
</html>
`))

func renderLogin(w http.ResponseWriter, r *http.Request, req authRequest,
	username, problem string,
) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = loginPage.Execute(w, map[string]string{
		"App":      req.app.slug,
		"Action":   r.URL.RequestURI(),
		"Username": username,
		"Error":    problem,
	})
}

func renderPage(w http.ResponseWriter, status int, title, message string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = messagePage.Execute(w, map[string]string{"Title": title, "Message": message})
}
