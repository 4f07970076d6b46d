// Package web is the bridge's HTTP face: the webhooks Authentik's expression policies call
// during enrollment and login, the admin status page behind an Authentik login, health and
// readiness probes, and metrics.
package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/discord-authentik-bridge/bridge/guild"
	"github.com/discord-authentik-bridge/bridge/reconcile"
)

// maxBody bounds every request body. The hooks take a few dozen bytes; anything near this is
// a mistake or an attack.
const maxBody = "64K"

// Options configure a Server.
type Options struct {
	WebhookSecret string
	// SyncDeadline is how long the sync hook waits for a sync before answering "queued" and
	// finishing in the background, so a slow Discord never holds up a login.
	SyncDeadline time.Duration
	AllowPending bool // pending members pass the gate
	GuildID      string
	Discord      guild.MemberGetter
	Reconciler   *reconcile.Reconciler
	// Retry queues a sync that failed for a passing reason, to be tried again with back-off.
	Retry func(discordID string, userPKs []int32)
	// Ready returns the reasons the bridge cannot serve yet; none means ready.
	Ready    func(ctx context.Context) []string
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// Metrics are the bridge's series, registered with Registry; New makes them when nil.
	Metrics *Metrics
	// Routes lets other parts of the bridge add their own handlers, such as avatars.
	Routes func(e *echo.Echo)
	// Status feeds the admin page and the scrape-time metrics; nil leaves the page closed.
	Status Status
	Admin  AdminOptions
}

// Server holds the echo instance and the syncs still running after their caller was answered.
type Server struct {
	e    *echo.Echo
	o    Options
	log  *slog.Logger
	late sync.WaitGroup
	// lateCtx outlives requests so background syncs finish; Shutdown cancels it last.
	lateCtx    context.Context
	lateCancel context.CancelFunc
	secretSum  [32]byte
	metrics    *Metrics
	adm        *admin
	// lateSlots bounds the syncs the hook runs at once, including those that outlived their
	// caller, so a flood of logins against a slow upstream cannot pile up goroutines.
	lateSlots chan struct{}
}

// maxLateSyncs is how many hook syncs may run at once.
const maxLateSyncs = 256

// New builds the server and its routes.
func New(o Options) *Server {
	if o.SyncDeadline <= 0 {
		o.SyncDeadline = 5 * time.Second
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	s := &Server{o: o, log: o.Logger, secretSum: sha256.Sum256([]byte(o.WebhookSecret)),
		lateSlots: make(chan struct{}, maxLateSyncs)}
	s.lateCtx, s.lateCancel = context.WithCancel(context.Background())
	s.metrics = o.Metrics
	if s.metrics == nil {
		s.metrics = NewMetrics(o.Registry)
	}
	if o.Status != nil {
		s.metrics.setHealth(o.Status.Health)
	}
	s.adm = newAdmin(o, o.Logger)

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	e.Use(middleware.Recover())

	healthz := func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	}
	e.GET("/healthz", healthz)
	e.HEAD("/healthz", healthz)
	e.GET("/readyz", s.readyz)
	e.HEAD("/readyz", s.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{})))

	hooks := e.Group("/v1/authentik", middleware.BodyLimit(maxBody), s.requireSecret)
	hooks.POST("/gate", s.gate)
	hooks.POST("/sync", s.sync)
	if o.Routes != nil {
		o.Routes(e)
	}
	s.adminRoutes(e)
	s.e = e
	return s
}

// Handler returns the HTTP handler of every route.
func (s *Server) Handler() http.Handler { return s.e }

// Shutdown waits for background syncs until ctx ends, then abandons them; their users are
// picked up again by the next sync.
func (s *Server) Shutdown(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		s.late.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.lateCancel()
		<-done
	}
	s.lateCancel()
}

// requireSecret admits requests that carry the shared secret as a bearer token. Both sides are
// hashed first so the comparison takes the same time whatever the length of the guess.
func (s *Server) requireSecret(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header.Get(echo.HeaderAuthorization)
		// The scheme is case-insensitive (RFC 9110); the token is not.
		scheme, token, ok := strings.Cut(h, " ")
		ok = ok && strings.EqualFold(scheme, "Bearer")
		sum := sha256.Sum256([]byte(token))
		if !ok || subtle.ConstantTimeCompare(sum[:], s.secretSum[:]) != 1 {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="discord-bridge"`)
			s.log.Debug("refused webhook call without the shared secret",
				"path", c.Path(), "remote", c.RealIP())
			return &apiError{Status: http.StatusUnauthorized, Code: "unauthorized",
				Message: "missing or wrong bearer secret"}
		}
		return next(c)
	}
}

func (s *Server) readyz(c echo.Context) error {
	var reasons []string
	if s.o.Ready != nil {
		reasons = s.o.Ready(c.Request().Context())
	}
	if len(reasons) > 0 {
		return c.JSON(http.StatusServiceUnavailable, map[string]any{
			"status": "not ready", "reasons": reasons,
		})
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ready"})
}

// apiError is an answer with a status, a stable code for programs and a message for people.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// handleError is the one place where errors become HTTP answers. Details of our own failures
// go to the log; the caller gets a message that is safe to show.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var (
		ae *apiError
		he *echo.HTTPError
	)
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, echo.ErrStatusRequestEntityTooLarge):
		ae = &apiError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large",
			Message: "request body exceeds " + maxBody + "B"}
	case errors.As(err, &he):
		ae = &apiError{Status: he.Code, Code: strings.ReplaceAll(
			strings.ToLower(http.StatusText(he.Code)), " ", "_"), Message: http.StatusText(he.Code)}
	default:
		s.log.Error("request failed", "path", c.Path(), "err", err)
		ae = &apiError{Status: http.StatusInternalServerError, Code: "internal",
			Message: "internal error; the bridge's log has the details"}
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ae.Status)
		return
	}
	if s.wantsPage(c) {
		err := s.renderError(c, ae.Status, http.StatusText(ae.Status), ae.Message, false)
		if err == nil {
			return
		}
		s.log.Error("render error page", "err", err)
	}
	_ = c.JSON(ae.Status, map[string]string{"error": ae.Code, "message": ae.Message})
}

// wantsPage tells whether an error should be answered with a page: on the status page's
// routes, and for a browser's request anywhere but the hooks.
func (s *Server) wantsPage(c echo.Context) bool {
	if s.adm == nil || s.adm.pages == nil {
		return false
	}
	if v, _ := c.Get(htmlKey).(bool); v {
		return true
	}
	return strings.Contains(c.Request().Header.Get(echo.HeaderAccept), "text/html") &&
		!strings.HasPrefix(c.Request().URL.Path, "/v1/")
}

// Serve runs srv with the server's handler until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, srv *http.Server) error {
	srv.Handler = s.e
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	s.Shutdown(shutdownCtx)
	return err
}
