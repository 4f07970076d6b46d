package web

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/discord-authentik-bridge/bridge/config"
	"github.com/discord-authentik-bridge/bridge/reconcile"
)

// AdminOptions configure the status page.
type AdminOptions struct {
	// PublicURL is where browsers reach the bridge. It makes the login's redirect URI, and an
	// https URL makes the cookies Secure.
	PublicURL string
	OIDC      OIDCOptions
	// DevNoLogin opens the page to anyone who can reach it; config allows it only on loopback.
	DevNoLogin bool
	// AppRoles, when set, previews the role a downstream app gives a member (first match wins,
	// default "user").
	AppRoles []config.AppRole
	// HTTPClient calls Authentik's OIDC endpoints.
	HTTPClient *http.Client
	// SessionTTL is how long a login lasts; default 8 hours.
	SessionTTL time.Duration
	// ImageOrigins are origins (scheme://host[:port]) hosted avatars are served from besides
	// the page's own, such as the S3 public URL.
	ImageOrigins []string
	Version      string
}

// Timeouts of the page's actions. The HTTP server's write timeout is a minute; a dry full
// pass over a large guild must answer within it.
const (
	memberTimeout  = 30 * time.Second
	previewTimeout = 50 * time.Second
)

// Limits of what one page shows.
const (
	searchLimit   = 50
	activityLimit = 50
	maxPlansShown = 200
)

// defaultAppRole is what apps commonly give a user whom no mapping entry matches.
const defaultAppRole = "user"

// admin is the status page's state.
type admin struct {
	st       Status
	auth     *authenticator // nil when OIDC is not configured
	dev      bool
	sessions *sessions
	pages    *pages
	pagesErr error
	appRoles []config.AppRole
	imgSrc   string // origins of hosted avatars, each after a space, for the CSP
	formSrc  string // Authentik's origin after a space, for the CSP; empty without login
	version  string
}

func newAdmin(o Options, log *slog.Logger) *admin {
	a := o.Admin
	if a.SessionTTL <= 0 {
		a.SessionTTL = 8 * time.Hour
	}
	secure := strings.HasPrefix(strings.ToLower(a.PublicURL), "https://")
	adm := &admin{st: o.Status, dev: a.DevNoLogin, sessions: newSessions(a.SessionTTL, secure),
		appRoles: a.AppRoles, version: a.Version}
	if a.OIDC.Issuer != "" && !a.DevNoLogin {
		adm.auth = newAuthenticator(a.OIDC, a.PublicURL, a.HTTPClient, log)
		adm.formSrc = origin(a.OIDC.Issuer)
	}
	for _, o := range a.ImageOrigins {
		adm.imgSrc += origin(o)
	}
	adm.pages, adm.pagesErr = loadPages()
	if adm.pagesErr != nil {
		log.Error("status page templates", "err", adm.pagesErr)
	}
	return adm
}

// loopbackHost reports whether a Host header names this machine's loopback interface.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// origin is " scheme://host[:port]" of a URL, for a CSP source list; "" when it has none.
func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ""
	}
	return " " + u.Scheme + "://" + u.Host
}

// adminRoutes adds the status page, its login and its assets.
func (s *Server) adminRoutes(e *echo.Echo) {
	e.GET("/static/:name", s.serveStatic)
	e.GET("/auth/login", s.login)
	e.GET(callbackPath, s.callback)
	e.POST("/auth/logout", s.logout)
	e.GET("/auth/logged-out", s.loggedOut)

	e.GET("/", s.health, s.requireAdmin)
	e.GET("/mapping", s.mapping, s.requireAdmin)
	e.GET("/members", s.members, s.requireAdmin)
	e.GET("/members/:id", s.member, s.requireAdmin)
	e.POST("/members/:id/preview", s.previewMember, s.requireAdmin)
	e.POST("/members/:id/sync", s.syncMember, s.requireAdmin)
	e.GET("/activity", s.activity, s.requireAdmin)
	e.POST("/actions/preview-all", s.previewAll, s.requireAdmin)
	e.POST("/actions/sync-all", s.syncAll, s.requireAdmin)
}

// requireAdmin lets through only signed-in admins (or anyone, with login off) and checks the
// CSRF token of every POST.
func (s *Server) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Set(htmlKey, true)
		pageHeaders(c, s.adm)
		if s.adm.pagesErr != nil {
			return s.adm.pagesErr
		}
		if !s.adm.dev && s.adm.auth == nil {
			return s.notConfigured(c)
		}
		if s.adm.dev && !loopbackHost(c.Request().Host) {
			// Without a login, the loopback listener is the only fence. A page on another
			// site could point its own name at 127.0.0.1 (DNS rebinding) and drive this one;
			// its requests carry that name, so only loopback names are served.
			return s.renderError(c, http.StatusMisdirectedRequest, "Wrong address",
				"With BRIDGE_DEV_NO_LOGIN the status page answers only on localhost or a loopback "+
					"address.", false)
		}
		if s.adm.st == nil {
			return s.renderError(c, http.StatusServiceUnavailable, "Status page unavailable",
				"The bridge started without a status source; see its log.", false)
		}
		r := c.Request()
		sess := s.adm.sessions.get(r)
		if sess == nil {
			switch {
			case s.adm.dev:
				sess = s.adm.sessions.create(c.Response(), "developer", true)
			case r.Method == http.MethodGet:
				return c.Redirect(http.StatusFound,
					"/auth/login?next="+url.QueryEscape(r.URL.RequestURI()))
			default:
				return s.renderError(c, http.StatusForbidden, "Signed out",
					"Your session ended (the bridge restarted or you were idle). Sign in "+
						"again and repeat the action.", true)
			}
		}
		c.Set(sessionKey, sess)
		if r.Method == http.MethodPost && !validCSRF(sess, r) {
			s.log.Debug("status page post without a valid csrf token", "path", c.Path(),
				"remote", c.RealIP())
			return s.renderError(c, http.StatusForbidden, "Form expired",
				"The form did not carry this session's token. Reload the page and try again.",
				false)
		}
		return next(c)
	}
}

func sessionOf(c echo.Context) *session {
	sess, _ := c.Get(sessionKey).(*session)
	return sess
}

func (s *Server) health(c echo.Context) error {
	h := s.adm.st.Health(c.Request().Context())
	return s.render(c, http.StatusOK, "health.html", "Health", "health", h)
}

type mappingPage struct {
	View *MappingView
	Err  string
}

func (s *Server) mapping(c echo.Context) error {
	v, err := s.adm.st.Mapping(c.Request().Context())
	p := mappingPage{View: v}
	if err != nil {
		s.log.Warn("status page mapping", "err", err)
		p.Err = err.Error()
	}
	return s.render(c, http.StatusOK, "mapping.html", "Mapping", "mapping", p)
}

type membersPage struct {
	Q      string
	Result *SearchResult
	Err    string
	// ExactID is set when the query is a Discord ID, so the page can offer its member page
	// even if no search found it.
	ExactID string
}

func (s *Server) members(c echo.Context) error {
	p := membersPage{Q: strings.TrimSpace(c.QueryParam("q"))}
	if p.Q != "" {
		if checkDiscordID(p.Q) == nil {
			p.ExactID = p.Q
		}
		ctx, cancel := context.WithTimeout(c.Request().Context(), memberTimeout)
		defer cancel()
		res, err := s.adm.st.Search(ctx, p.Q, searchLimit)
		if err != nil {
			p.Err = err.Error()
		}
		p.Result = res
	}
	return s.render(c, http.StatusOK, "members.html", "Members", "members", p)
}

// memberUserPage adds the app roles to a linked user.
type memberUserPage struct {
	MemberUser
	RoleNow, RoleAfter string
}

type memberPage struct {
	*MemberView
	Users    []memberUserPage
	AppRoles bool
}

func (s *Server) memberID(c echo.Context) (string, error) {
	id := c.Param("id")
	if err := checkDiscordID(id); err != nil {
		return "", err
	}
	return id, nil
}

func (s *Server) member(c echo.Context) error {
	id, err := s.memberID(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), memberTimeout)
	defer cancel()
	v, err := s.adm.st.Member(ctx, id)
	if err != nil {
		return fmt.Errorf("member %s: %w", id, err)
	}
	p := memberPage{MemberView: v, AppRoles: len(s.adm.appRoles) > 0}
	for _, u := range v.Users {
		mu := memberUserPage{MemberUser: u}
		if p.AppRoles {
			mu.RoleNow = s.adm.appRole(u.GroupsNow)
			mu.RoleAfter = s.adm.appRole(u.GroupsAfter)
		}
		p.Users = append(p.Users, mu)
	}
	return s.render(c, http.StatusOK, "member.html", v.Name(), "members", p)
}

// appRole maps a `groups` claim to the downstream app's role the way such apps usually do:
// the first role, in the configured order, one of whose groups the user is in.
func (a *admin) appRole(groups []string) string {
	for _, r := range a.appRoles {
		if slices.ContainsFunc(r.Groups, func(g string) bool {
			return slices.Contains(groups, g)
		}) {
			return r.Name
		}
	}
	return defaultAppRole
}

type planPage struct {
	DiscordID string
	Outcome   *reconcile.Outcome
	Err       string
}

// planName names the member of a dry run the way the member page does.
func planName(id string, out *reconcile.Outcome) string {
	if out == nil || out.Plan == nil {
		return MemberName(id, "", nil)
	}
	var discordUsername string
	if m := out.Plan.Membership.Member; m != nil && m.User != nil {
		discordUsername = m.User.Username
	}
	var usernames []string
	for _, u := range out.Plan.Users {
		usernames = append(usernames, u.Username)
	}
	return MemberName(id, discordUsername, usernames)
}

// NotLinked reports whether the dry run found no Authentik user to sync.
func (p planPage) NotLinked() bool {
	return p.Outcome != nil && p.Outcome.Plan != nil && p.Outcome.Plan.NoUser
}

// previewMember shows what a sync would do, with the button that applies it.
func (s *Server) previewMember(c echo.Context) error {
	id, err := s.memberID(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), memberTimeout)
	defer cancel()
	out, err := s.adm.st.SyncMember(ctx, id, "admin_preview", true)
	p := planPage{DiscordID: id, Outcome: out}
	if err != nil {
		p.Err = err.Error()
	}
	return s.render(c, http.StatusOK, "plan.html", "Preview sync of "+planName(id, out),
		"members", p)
}

func (s *Server) syncMember(c echo.Context) error {
	id, err := s.memberID(c)
	if err != nil {
		return err
	}
	sess := sessionOf(c)
	ctx, cancel := context.WithTimeout(c.Request().Context(), memberTimeout)
	defer cancel()
	out, err := s.adm.st.SyncMember(ctx, id, "admin:"+sess.user, false)
	switch {
	case err != nil:
		s.log.Warn("admin sync failed", "user", sess.user, "discord_id", id, "err", err)
		s.adm.sessions.addFlash(sess, "error", "Sync failed: "+err.Error())
	default:
		s.log.Info("admin sync", "user", sess.user, "discord_id", id, "result", out.Result,
			"changes", len(out.Changes))
		s.adm.sessions.addFlash(sess, "ok", outcomeText(out))
	}
	return c.Redirect(http.StatusSeeOther, "/members/"+id)
}

// outcomeText sums up an applied sync in one sentence.
func outcomeText(out *reconcile.Outcome) string {
	var b strings.Builder
	switch out.Result {
	case reconcile.ResultChanged:
		b.WriteString("Sync applied: " + plural(len(out.Changes), "change", "changes"))
	case reconcile.ResultNoUser:
		b.WriteString("Nothing to sync: no Authentik user is linked to this Discord account")
	default:
		b.WriteString("Sync done: Authentik already matched Discord")
	}
	if len(out.Added) > 0 {
		b.WriteString("; joined " + strings.Join(out.Added, ", "))
	}
	if len(out.Removed) > 0 {
		b.WriteString("; left " + strings.Join(out.Removed, ", "))
	}
	if out.AvatarError != "" {
		b.WriteString("; the avatar was not refreshed: " + out.AvatarError)
	}
	return b.String() + "."
}

type passPage struct {
	Report *reconcile.PassReport
	Plans  []*reconcile.Plan
	Hidden int
	Err    string
}

func (s *Server) previewAll(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), previewTimeout)
	defer cancel()
	rep, err := s.adm.st.PreviewAll(ctx)
	p := passPage{Report: rep}
	if err != nil {
		p.Err = err.Error()
	}
	if rep != nil {
		p.Plans = rep.Plans
		if len(p.Plans) > maxPlansShown {
			p.Hidden = len(p.Plans) - maxPlansShown
			p.Plans = p.Plans[:maxPlansShown]
		}
	}
	return s.render(c, http.StatusOK, "passpreview.html", "Preview: sync everyone", "health", p)
}

func (s *Server) syncAll(c echo.Context) error {
	sess := sessionOf(c)
	s.adm.st.RequestFullPass()
	s.log.Info("admin requested a full pass", "user", sess.user)
	s.adm.sessions.addFlash(sess, "ok", "A full pass was requested. It runs in the "+
		"background; this page shows when it has finished, and Activity lists its changes.")
	return c.Redirect(http.StatusSeeOther, "/")
}

type activityPage struct {
	Entries    []reconcile.Change
	DiscordID  string
	Kind       string
	UserPK     string
	NextBefore int64 // 0: no older entries
	Filtered   bool
	Err        string
}

func (s *Server) activity(c echo.Context) error {
	p := activityPage{DiscordID: strings.TrimSpace(c.QueryParam("discord_id")),
		Kind: c.QueryParam("kind"), UserPK: strings.TrimSpace(c.QueryParam("user_pk"))}
	f := reconcile.ChangeFilter{Limit: activityLimit + 1}
	if p.DiscordID != "" {
		if err := checkDiscordID(p.DiscordID); err != nil {
			return err
		}
		f.DiscordID = p.DiscordID
	}
	if p.Kind != "" {
		if !slices.Contains(changeKinds, reconcile.ChangeKind(p.Kind)) {
			return &apiError{Status: http.StatusBadRequest, Code: "bad_request",
				Message: "unknown kind " + strconv.Quote(p.Kind)}
		}
		f.Kind = reconcile.ChangeKind(p.Kind)
	}
	if p.UserPK != "" {
		pk, err := strconv.ParseInt(p.UserPK, 10, 32)
		if err != nil || pk <= 0 {
			return &apiError{Status: http.StatusBadRequest, Code: "bad_request",
				Message: "user_pk must be a positive integer"}
		}
		f.UserPK = int32(pk)
	}
	if b := c.QueryParam("before"); b != "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return &apiError{Status: http.StatusBadRequest, Code: "bad_request",
				Message: "before must be a positive integer"}
		}
		f.Before = n
	}
	p.Filtered = f.DiscordID != "" || f.Kind != "" || f.UserPK != 0 || f.Before != 0
	entries, err := s.adm.st.Activity(c.Request().Context(), f)
	if err != nil {
		s.log.Warn("status page activity", "err", err)
		p.Err = err.Error()
	}
	if len(entries) > activityLimit {
		entries = entries[:activityLimit]
		p.NextBefore = entries[len(entries)-1].ID
	}
	p.Entries = entries
	return s.render(c, http.StatusOK, "activity.html", "Activity", "activity", p)
}

// OlderURL links the next page of the activity log with the same filters.
func (p activityPage) OlderURL() string {
	q := url.Values{}
	if p.DiscordID != "" {
		q.Set("discord_id", p.DiscordID)
	}
	if p.Kind != "" {
		q.Set("kind", p.Kind)
	}
	if p.UserPK != "" {
		q.Set("user_pk", p.UserPK)
	}
	q.Set("before", strconv.FormatInt(p.NextBefore, 10))
	return "/activity?" + q.Encode()
}
