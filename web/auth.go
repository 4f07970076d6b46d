package web

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/labstack/echo/v4"
	"golang.org/x/oauth2"
)

// OIDCOptions configure the login through Authentik. An empty Issuer means not configured.
type OIDCOptions struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	// AdminGroups are the group names, as in the `groups` claim, whose members may enter.
	AdminGroups []string
}

// callbackPath is where Authentik sends the browser back; the provider in Authentik must list
// PublicURL + callbackPath as a redirect URI.
const callbackPath = "/auth/callback"

// oidcTimeout bounds each call to Authentik's OIDC endpoints.
const oidcTimeout = 15 * time.Second

// authenticator runs the authorization code flow with PKCE, state and nonce. Discovery is
// lazy and retried on the next login when it fails, so an Authentik that is down at start
// does not keep the page closed after it is back.
type authenticator struct {
	o           OIDCOptions
	redirectURL string
	hc          *http.Client
	log         *slog.Logger

	mu       sync.Mutex
	oauth    *oauth2.Config
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	// endSession is the provider's RP-initiated logout endpoint; empty when discovery lists
	// none.
	endSession string
}

func newAuthenticator(o OIDCOptions, publicURL string, hc *http.Client, log *slog.Logger) *authenticator {
	if hc == nil {
		hc = &http.Client{Timeout: oidcTimeout}
	}
	return &authenticator{o: o, redirectURL: strings.TrimSuffix(publicURL, "/") + callbackPath,
		hc: hc, log: log}
}

func (a *authenticator) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, a.hc)
}

// setup discovers the provider once.
func (a *authenticator) setup(ctx context.Context) (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.provider != nil {
		return a.oauth, a.verifier, nil
	}
	ctx, cancel := context.WithTimeout(ctx, oidcTimeout)
	defer cancel()
	p, err := oidc.NewProvider(a.ctx(ctx), a.o.Issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("oidc discovery at %s: %w", a.o.Issuer, err)
	}
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if err := p.Claims(&meta); err == nil {
		a.endSession = meta.EndSession
	}
	a.provider = p
	a.oauth = &oauth2.Config{
		ClientID:     a.o.ClientID,
		ClientSecret: a.o.ClientSecret,
		Endpoint:     p.Endpoint(),
		RedirectURL:  a.redirectURL,
		// Authentik's default "profile" scope mapping carries the groups claim.
		Scopes: []string{oidc.ScopeOpenID, "profile", "email"},
	}
	a.verifier = p.Verifier(&oidc.Config{ClientID: a.o.ClientID})
	return a.oauth, a.verifier, nil
}

// claims are the parts of the ID token and userinfo the page uses.
type claims struct {
	Subject           string           `json:"sub"`
	PreferredUsername string           `json:"preferred_username"`
	Name              string           `json:"name"`
	Email             string           `json:"email"`
	Groups            *json.RawMessage `json:"groups"` // absent: ask userinfo
}

func (c claims) who() string {
	for _, s := range []string{c.PreferredUsername, c.Name, c.Email, c.Subject} {
		if s != "" {
			return s
		}
	}
	return "unknown"
}

// groups reads the claim as a list of names; a single string is accepted as a list of one.
func (c claims) groups() ([]string, error) {
	if c.Groups == nil {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(*c.Groups, &list); err == nil {
		return list, nil
	}
	var one string
	if err := json.Unmarshal(*c.Groups, &one); err == nil {
		return []string{one}, nil
	}
	return nil, errors.New("the groups claim is not a list of names")
}

// login sends the browser to Authentik.
func (s *Server) login(c echo.Context) error {
	c.Set(htmlKey, true)
	pageHeaders(c, s.adm)
	next := safeNext(c.QueryParam("next"))
	if s.adm.dev {
		return c.Redirect(http.StatusSeeOther, next)
	}
	if s.adm.auth == nil {
		return s.notConfigured(c)
	}
	oc, _, err := s.adm.auth.setup(c.Request().Context())
	if err != nil {
		s.log.Warn("status page login unavailable", "err", err)
		return s.renderError(c, http.StatusServiceUnavailable, "Login unavailable",
			"The bridge could not read Authentik's OpenID configuration at "+
				s.adm.auth.o.Issuer+". Check BRIDGE_OIDC_ISSUER and that Authentik is up, "+
				"then try again.", true)
	}
	verifier := oauth2.GenerateVerifier()
	l := s.adm.sessions.startLogin(c.Response(), next, verifier)
	u := oc.AuthCodeURL(l.state, oidc.Nonce(l.nonce), oauth2.S256ChallengeOption(verifier))
	return c.Redirect(http.StatusFound, u)
}

// callback finishes the login: the state must be the browser's, the code is exchanged with
// the PKCE verifier, the ID token must verify and carry the nonce, and the groups claim must
// hold an admin group.
func (s *Server) callback(c echo.Context) error {
	c.Set(htmlKey, true)
	pageHeaders(c, s.adm)
	if s.adm.auth == nil {
		return s.notConfigured(c)
	}
	q := c.QueryParams()
	if e := q.Get("error"); e != "" {
		s.log.Info("status page login refused by authentik", "error", e)
		return s.renderError(c, http.StatusForbidden, "Login refused",
			"Authentik did not sign you in ("+e+"). If you should have access, ask an "+
				"administrator to give you access to the bridge's application in Authentik.",
			true)
	}
	l, err := s.adm.sessions.finishLogin(c.Response(), c.Request(), q.Get("state"))
	if err != nil {
		s.log.Debug("status page login with a state that does not match", "remote", c.RealIP())
		return s.renderError(c, http.StatusBadRequest, "Login expired",
			"This login was not started in this browser, was already used, or took longer "+
				"than ten minutes. Start it again.", true)
	}
	oc, verifier, err := s.adm.auth.setup(c.Request().Context())
	if err != nil {
		s.log.Warn("status page login unavailable", "err", err)
		return s.renderError(c, http.StatusServiceUnavailable, "Login unavailable",
			"Authentik's OpenID configuration could not be read. Try again in a minute.", true)
	}

	ctx, cancel := context.WithTimeout(c.Request().Context(), oidcTimeout)
	defer cancel()
	ctx = s.adm.auth.ctx(ctx)
	tok, err := oc.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(l.verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			// Only the code and status: the answer's body is the provider's to word.
			s.log.Warn("status page login: code exchange refused", "error_code", re.ErrorCode,
				"status", re.Response.StatusCode)
		} else {
			s.log.Warn("status page login: code exchange failed", "err", err)
		}
		return s.renderError(c, http.StatusBadGateway, "Login failed",
			"Authentik did not accept the login code. Start the login again.", true)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		s.log.Warn("status page login: token answer without an id_token")
		return s.renderError(c, http.StatusBadGateway, "Login failed",
			"Authentik's answer had no ID token. Is the provider an OpenID Connect provider "+
				"with the openid scope?", true)
	}
	idt, err := verifier.Verify(ctx, raw)
	if err != nil {
		s.log.Warn("status page login: id token refused", "err", err)
		return s.renderError(c, http.StatusBadGateway, "Login failed",
			"Authentik's ID token did not verify. Start the login again.", true)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(l.nonce)) != 1 {
		s.log.Warn("status page login: id token nonce does not match")
		return s.renderError(c, http.StatusBadRequest, "Login failed",
			"The ID token does not belong to this login. Start the login again.", true)
	}
	var cl claims
	if err := idt.Claims(&cl); err != nil {
		return fmt.Errorf("read id token claims: %w", err)
	}
	if cl.Groups == nil {
		cl, err = s.adm.auth.userinfo(ctx, tok, cl)
		if err != nil {
			s.log.Warn("status page login: userinfo", "err", err)
			return s.renderError(c, http.StatusBadGateway, "Login failed",
				"The ID token has no groups claim and Authentik's userinfo could not be read.",
				true)
		}
	}
	groups, err := cl.groups()
	if err != nil {
		s.log.Warn("status page login: unreadable groups claim", "user", cl.who(), "err", err)
	}
	if !slices.ContainsFunc(groups, func(g string) bool {
		return slices.Contains(s.adm.auth.o.AdminGroups, g)
	}) {
		s.log.Info("status page login refused: not in an admin group", "user", cl.who())
		// Whoever uses this browser now is not an admin: an earlier admin session of it
		// ends too, so the refusal's own sign-out needs no token.
		s.adm.sessions.destroy(c.Response(), c.Request())
		return s.renderForbidden(c, cl.who())
	}

	s.adm.sessions.destroy(c.Response(), c.Request())
	s.adm.sessions.create(c.Response(), cl.who(), false)
	s.log.Info("status page login", "user", cl.who())
	return c.Redirect(http.StatusSeeOther, l.next)
}

// userinfo reads the claims from the userinfo endpoint, for providers that leave groups out
// of the ID token. Its subject must be the ID token's.
func (a *authenticator) userinfo(ctx context.Context, tok *oauth2.Token, idc claims) (claims, error) {
	a.mu.Lock()
	p := a.provider
	a.mu.Unlock()
	ui, err := p.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		return idc, err
	}
	var cl claims
	if err := ui.Claims(&cl); err != nil {
		return idc, err
	}
	if cl.Subject != idc.Subject {
		return idc, errors.New("userinfo subject differs from the id token's")
	}
	idc.Groups = cl.Groups
	if idc.PreferredUsername == "" {
		idc.PreferredUsername = cl.PreferredUsername
	}
	return idc, nil
}

// logoutProviderField, set to "1" in the logout form, also ends the Authentik session, so
// that someone else can sign in on this browser: Authentik would otherwise sign the same
// account in again at once.
const logoutProviderField = "authentik"

// loggedOutState comes back from Authentik's end-session endpoint to the signed-out page, as
// OpenID Connect RP-initiated logout returns the state it was given.
const loggedOutState = "authentik"

// logout ends the bridge's session and, when asked, sends the browser on to Authentik's
// end-session endpoint. A POST without a session needs no token: it can end no session of the
// bridge, and Authentik's endpoint is reachable with a plain link anyway.
func (s *Server) logout(c echo.Context) error {
	c.Set(htmlKey, true)
	pageHeaders(c, s.adm)
	if sess := s.adm.sessions.get(c.Request()); sess != nil && !validCSRF(sess, c.Request()) {
		c.Set(sessionKey, sess)
		return s.renderError(c, http.StatusForbidden, "Form expired",
			"The form did not carry this session's token. Reload the page and try again.", false)
	}
	s.adm.sessions.destroy(c.Response(), c.Request())
	if c.FormValue(logoutProviderField) != "1" || s.adm.auth == nil {
		return c.Redirect(http.StatusSeeOther, "/auth/logged-out")
	}
	end, err := s.adm.auth.endSessionURL(c.Request().Context())
	if err != nil {
		s.log.Warn("status page logout: oidc discovery", "err", err)
	}
	if end == "" {
		return c.Redirect(http.StatusSeeOther, "/auth/logged-out?authentik=unsupported")
	}
	return c.Redirect(http.StatusSeeOther, end)
}

// endSessionURL is where to send a browser to end its Authentik session, coming back to the
// signed-out page; empty when the provider lists no end-session endpoint on its own origin.
func (a *authenticator) endSessionURL(ctx context.Context) (string, error) {
	if _, _, err := a.setup(ctx); err != nil {
		return "", err
	}
	a.mu.Lock()
	end := a.endSession
	a.mu.Unlock()
	u, err := url.Parse(end)
	// The page's CSP lets forms lead only to the issuer's origin.
	if end == "" || err != nil || origin(end) != origin(a.o.Issuer) {
		return "", nil
	}
	q := u.Query()
	q.Set("client_id", a.o.ClientID)
	q.Set("post_logout_redirect_uri", strings.TrimSuffix(a.redirectURL, callbackPath)+
		"/auth/logged-out")
	q.Set("state", loggedOutState)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// loggedOutPage is the body of loggedout.html.
type loggedOutPage struct {
	// Provider offers to end the Authentik session too; ProviderEnded says the browser came
	// back from Authentik's end-session endpoint, ProviderUnsupported that there is none.
	Provider, ProviderEnded, ProviderUnsupported bool
}

func (s *Server) loggedOut(c echo.Context) error {
	c.Set(htmlKey, true)
	pageHeaders(c, s.adm)
	p := loggedOutPage{Provider: s.adm.auth != nil,
		ProviderEnded:       c.QueryParam("state") == loggedOutState,
		ProviderUnsupported: c.QueryParam("authentik") == "unsupported"}
	return s.render(c, http.StatusOK, "loggedout.html", "Signed out", "", p)
}

// safeNext keeps a post-login redirect on this site: a path, never a scheme-relative URL.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") ||
		strings.HasPrefix(next, "/\\") || strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	if u, err := url.Parse(next); err != nil || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return next
}
