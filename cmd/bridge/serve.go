package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/discord-authentik-bridge/bridge/avatars"
	"github.com/discord-authentik-bridge/bridge/config"
	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/reconcile"
	"github.com/discord-authentik-bridge/bridge/web"
)

// queueWorkers is how many syncs the background queue runs at once. Discord's per-guild
// member route and Authentik's writes are the limits, not the CPU.
const queueWorkers = 4

func serve(ctx context.Context, args []string, stderr io.Writer, lookup func(string) (string, bool)) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(lookup, stderr)
	if !ok {
		return 2
	}
	log := newLogger(cfg, stderr)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := web.NewMetrics(reg)
	names := upstreamNames(cfg)
	a, err := newAppWith(cfg, log, func(rt http.RoundTripper) http.RoundTripper {
		return metrics.Transport(rt, names)
	})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	store, err := a.openStore(ctx)
	if err != nil {
		log.Error("open store", "err", err)
		return 1
	}
	defer store.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	goRun := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}

	rec := a.reconciler(metrics.Store(store))
	queue := reconcile.NewQueue(rec, queueWorkers, log)
	ctrl := reconcile.NewController(rec, queue, cfg.Sync.ResyncInterval, log)
	roles := newRolesKeeper(a.discord, cfg.Discord.GuildID, log)
	ctrl.AfterPass = func(ctx context.Context, _ *reconcile.PassReport) {
		roles.poke()
		collectAvatars(ctx, a.avatars, store, cfg.Avatar.GCAfter, log)
	}
	goRun(func() { ctrl.Run(ctx) })

	// The mapping is loaded in the background so that a slow Authentik delays readiness, not
	// the start; until it is loaded /readyz says why.
	goRun(func() { keepMappingLoaded(ctx, rec, cfg.Sync.MappingRefresh, log) })

	var gw *discord.Gateway
	if cfg.Gateway {
		gw, err = discord.NewGateway(discord.GatewayOptions{
			Token:   cfg.Discord.Token.Reveal(),
			GuildID: cfg.Discord.GuildID,
			APIURL:  cfg.Discord.APIURL,
			Logger:  log,
			Handle: func(ev discord.Event) {
				ctrl.HandleEvent(ev)
				if ev.Kind == discord.EventRoleUpdate || ev.Kind == discord.EventRoleDelete {
					roles.poke()
				}
			},
		})
		if err != nil {
			log.Error("gateway", "err", err)
			return 1
		}
		// A refused intent ends the session but not the bridge: hooks and full passes still
		// work, and /readyz names the switch to turn on.
		goRun(func() {
			err := gw.Run(ctx)
			// A refused intent or token was reported once by the gateway itself.
			if err != nil && ctx.Err() == nil && !errors.Is(err, discord.ErrIntentRefused) &&
				!errors.Is(err, discord.ErrAuthFailed) {
				log.Error("gateway stopped", "err", err)
			}
		})
	}

	s3 := newS3Probe(a.s3)
	ready := func(ctx context.Context) []string {
		var reasons []string
		if _, ok := rec.MappingAge(); !ok {
			reasons = append(reasons, "group mapping not loaded from Authentik yet")
		}
		if gw != nil {
			switch st := gw.Status(); st.State {
			case discord.GatewayIntentRefused, discord.GatewayAuthFailed:
				reasons = append(reasons, "discord gateway: "+st.Reason)
			}
		}
		if err := s3.check(ctx); err != nil {
			reasons = append(reasons, "avatar store: "+err.Error())
		}
		return reasons
	}
	probe := &authentikProbe{ak: a.authentik, url: cfg.Authentik.URL, log: log}
	goRun(func() { probe.run(ctx) })
	goRun(func() { roles.run(ctx) })
	status := &statusSource{cfg: cfg, rec: rec, ctrl: ctrl, store: store, gw: gw,
		dc: a.discord, ak: a.authentik, hc: a.http, avatars: a.avatars, roles: roles,
		probe: probe, groups: &groupNames{ak: a.authentik}, ready: ready, started: time.Now()}

	srv := web.New(web.Options{
		WebhookSecret: cfg.Webhook.Secret.Reveal(),
		SyncDeadline:  cfg.Webhook.SyncDeadline,
		AllowPending:  cfg.Sync.GateAllowPending,
		GuildID:       cfg.Discord.GuildID,
		Discord:       a.discord,
		Reconciler:    rec,
		Retry: func(discordID string, userPKs []int32) {
			queue.Retry(discordID, "hook_retry", userPKs)
		},
		Logger:   log,
		Ready:    ready,
		Registry: reg,
		Metrics:  metrics,
		Status:   status,
		Admin: web.AdminOptions{
			PublicURL: cfg.PublicURL,
			OIDC: web.OIDCOptions{
				Issuer:       cfg.OIDC.Issuer,
				ClientID:     cfg.OIDC.ClientID,
				ClientSecret: cfg.OIDC.ClientSecret.Reveal(),
				AdminGroups:  cfg.OIDC.AdminGroups,
			},
			DevNoLogin:   cfg.DevNoLogin,
			AppRoles:     cfg.AppRoles,
			HTTPClient:   a.http,
			ImageOrigins: imageOrigins(cfg),
			Version:      version(),
		},
		Routes: func(e *echo.Echo) {
			if a.local != nil {
				h := echo.WrapHandler(a.local.Handler())
				e.GET(avatars.LocalPath+":key", h)
				e.HEAD(avatars.LocalPath+":key", h)
			}
		},
	})
	httpSrv := &http.Server{
		Addr:              cfg.Listen,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
	}
	log.Info("bridge started", "version", version(), "listen", cfg.Listen,
		"guild_id", cfg.Discord.GuildID, "authentik", cfg.Authentik.URL,
		"avatar_store", cfg.Avatar.Store, "gateway", cfg.Gateway,
		"status_page", statusPageMode(cfg))
	err = srv.Serve(ctx, httpSrv)
	cancel()
	// The gateway, the queue and a pass in progress log as they stop: wait for them, so
	// that the last line says the bridge stopped.
	wg.Wait()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		return 1
	}
	log.Info("bridge stopped")
	return 0
}

// collectAvatars deletes hosted avatars no user points at any more. It runs only after a full
// pass that read everything, with the references the bridge remembers for every user.
func collectAvatars(ctx context.Context, svc *avatars.Service, store reconcile.Store,
	after time.Duration, log *slog.Logger) {
	states, err := store.UserStates(ctx)
	if err != nil {
		log.Warn("avatar collection skipped", "err", err)
		return
	}
	refs := map[string]bool{}
	for _, st := range states {
		if st.AvatarKey != "" {
			refs[st.AvatarKey] = true
		}
	}
	n, err := svc.GC(ctx, func(key string) bool { return refs[key] }, after)
	if err != nil {
		log.Warn("avatar collection", "deleted", n, "err", err)
	}
}

// s3Probe checks the S3 store for /readyz at most every half minute, so that probes do not
// turn into a stream of requests to the bucket.
type s3Probe struct {
	s3 *avatars.S3Store

	mu      sync.Mutex
	checked time.Time
	err     error
}

func newS3Probe(s *avatars.S3Store) *s3Probe { return &s3Probe{s3: s} }

func (p *s3Probe) check(ctx context.Context) error {
	if p.s3 == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.checked) < 30*time.Second {
		return p.err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	p.err, p.checked = p.s3.Check(cctx), time.Now()
	return p.err
}

// statusPageMode says how the status page is reached, for the start-up log line.
func statusPageMode(cfg *config.Config) string {
	switch {
	case cfg.DevNoLogin:
		return "open without login (development)"
	case cfg.OIDC.Issuer != "":
		return "login through " + cfg.OIDC.Issuer
	default:
		return "closed: OIDC not configured"
	}
}
