package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/reconcile"
)

//go:embed templates static
var assets embed.FS

// htmlKey marks a request whose errors are answered with a page rather than JSON.
const htmlKey = "web.html"

// sessionKey holds the request's *session.
const sessionKey = "web.session"

// pageNames are the templates under templates/ that render a whole page with the layout.
var pageNames = []string{
	"health.html", "mapping.html", "members.html", "member.html", "plan.html",
	"passpreview.html", "activity.html", "error.html", "loggedout.html",
}

// changeKinds are the audit kinds the Activity filter offers.
var changeKinds = []reconcile.ChangeKind{
	reconcile.KindGroupAdd, reconcile.KindGroupRemove, reconcile.KindAttribute,
	reconcile.KindName, reconcile.KindActive, reconcile.KindRevoke,
}

// pages holds the parsed templates and the fingerprints of the static files.
type pages struct {
	t      map[string]*template.Template
	static map[string]staticFile
}

type staticFile struct {
	body        []byte
	contentType string
	version     string
}

func loadPages() (*pages, error) {
	p := &pages{t: map[string]*template.Template{}, static: map[string]staticFile{}}
	for _, name := range []string{"style.css", "app.js"} {
		b, err := assets.ReadFile("static/" + name)
		if err != nil {
			return nil, fmt.Errorf("read static %s: %w", name, err)
		}
		sum := sha256.Sum256(b)
		ct := "text/css; charset=utf-8"
		if path.Ext(name) == ".js" {
			ct = "text/javascript; charset=utf-8"
		}
		p.static[name] = staticFile{body: b, contentType: ct, version: hex.EncodeToString(sum[:6])}
	}
	funcs := template.FuncMap{
		"ts":     formatTime,
		"ago":    ago,
		"dur":    formatDuration,
		"color":  roleColor,
		"join":   strings.Join,
		"raw":    prettyJSON,
		"pretty": func(s string) string { return prettyJSON(json.RawMessage(s)) },
		"kinds":  func() []reconcile.ChangeKind { return changeKinds },
		"asset": func(name string) string {
			return "/static/" + name + "?v=" + p.static[name].version
		},
		"plural": plural,
		"add":    func(a, b int) int { return a + b },
		"stateClass": func(st discord.GatewayState) string {
			switch st {
			case discord.GatewayReady, discord.GatewayResumed:
				return "ok"
			case discord.GatewayConnecting, discord.GatewayDisconnected:
				return "warn"
			}
			return "bad"
		},
	}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "templates/layout.html",
			"templates/parts.html", "templates/"+name)
		if err != nil {
			return nil, fmt.Errorf("parse template %s: %w", name, err)
		}
		p.t[name] = t
	}
	return p, nil
}

// pageData is what every page template gets; Body is the page's own data.
type pageData struct {
	Title   string
	Nav     string // the active tab
	User    string
	Dev     bool
	CSRF    string
	Flashes []flash
	Version string
	Body    any
}

// render writes a whole page. It renders into a buffer first, so a template error becomes a
// clean 500 instead of half a page.
func (s *Server) render(c echo.Context, status int, name, title, nav string, body any) error {
	t, ok := s.adm.pages.t[name]
	if !ok {
		return fmt.Errorf("render: no template %s", name)
	}
	d := pageData{Title: title, Nav: nav, Dev: s.adm.dev, Version: s.adm.version, Body: body}
	if sess, _ := c.Get(sessionKey).(*session); sess != nil {
		d.User, d.CSRF = sess.user, sess.csrf
		d.Flashes = s.adm.sessions.popFlashes(sess)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", d); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	return c.HTMLBlob(status, buf.Bytes())
}

// errorPage is the body of error.html.
type errorPage struct {
	Status  int
	Message string
	Login   bool // offer a link to log in again
	// SwitchAccount offers to sign out of Authentik, so that another account can sign in.
	SwitchAccount bool
	TestID        string
}

func (s *Server) renderError(c echo.Context, status int, title, msg string, login bool) error {
	return s.render(c, status, "error.html", title, "", errorPage{Status: status, Message: msg,
		Login: login, TestID: "error"})
}

func (s *Server) renderForbidden(c echo.Context, user string) error {
	return s.render(c, http.StatusForbidden, "error.html", "Access denied", "", errorPage{
		Status: http.StatusForbidden, TestID: "forbidden", SwitchAccount: true,
		Message: "You are signed in to Authentik as " + user + ", but that account is not in a " +
			"group allowed to see the bridge's status page. Ask an administrator to add you " +
			"to one of the groups in BRIDGE_ADMIN_GROUPS.",
	})
}

// notConfigured answers when the page has no way to check who is asking.
func (s *Server) notConfigured(c echo.Context) error {
	return s.renderError(c, http.StatusServiceUnavailable, "Status page not configured",
		"The status page needs a login through Authentik. Set BRIDGE_OIDC_ISSUER, "+
			"BRIDGE_OIDC_CLIENT_ID, BRIDGE_OIDC_CLIENT_SECRET and BRIDGE_ADMIN_GROUPS (an "+
			"OAuth2/OpenID provider in Authentik whose redirect URI is the bridge's public URL "+
			"followed by "+callbackPath+"). For local development on a loopback address, "+
			"BRIDGE_DEV_NO_LOGIN=true opens the page without a login. The webhooks work either way.",
		false)
}

// pageHeaders keep the page from being framed, cached or fed from other origins. The admin's
// imgSrc adds the origins hosted avatars come from, and formSrc Authentik's, where the
// sign-out form's answer leads (browsers hold a form's redirects to form-action too).
func pageHeaders(c echo.Context, a *admin) {
	h := c.Response().Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; "+
		"img-src 'self'"+a.imgSrc+"; form-action 'self'"+a.formSrc+"; frame-ancestors 'none'; "+
		"base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// serveStatic serves the embedded CSS and script. Their URLs carry a fingerprint, so they may
// be cached for long.
func (s *Server) serveStatic(c echo.Context) error {
	f, ok := s.adm.pages.static[c.Param("name")]
	if !ok {
		return echo.ErrNotFound
	}
	h := c.Response().Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=86400")
	return c.Blob(http.StatusOK, f.contentType, f.body)
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// ago says how long ago t was, roughly, for people.
func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm ago", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

func formatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		// "1h0m0s" reads better as "1h".
		s := d.Round(time.Second).String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return s
	}
}

// roleColor turns Discord's integer colour into CSS; 0 means "no colour", which Discord shows
// in a neutral grey.
func roleColor(c int) string {
	if c <= 0 || c > 0xffffff {
		return "#99aab5"
	}
	return fmt.Sprintf("#%06x", c)
}

// prettyJSON indents a raw JSON value for reading; "(absent)" for none.
func prettyJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "(absent)"
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
