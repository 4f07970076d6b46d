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

	"github.com/discord-authentik-bridge/bridge/avatars"
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
	a, err := newApp(cfg, log)
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

	rec := a.reconciler(store)
	queue := reconcile.NewQueue(rec, queueWorkers, log)
	ctrl := reconcile.NewController(rec, queue, cfg.Sync.ResyncInterval, log)
	ctrl.AfterPass = func(ctx context.Context, _ *reconcile.PassReport) {
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
			Handle:  ctrl.HandleEvent,
		})
		if err != nil {
			log.Error("gateway", "err", err)
			return 1
		}
		// A refused intent ends the session but not the bridge: hooks and full passes still
		// work, and /readyz names the switch to turn on.
		goRun(func() {
			if err := gw.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("gateway stopped", "err", err)
			}
		})
	}

	s3 := newS3Probe(a.s3)
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
		Logger: log,
		Ready: func(ctx context.Context) []string {
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
		"avatar_store", cfg.Avatar.Store, "gateway", cfg.Gateway)
	err = srv.Serve(ctx, httpSrv)
	cancel()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		return 1
	}
	log.Info("bridge stopped")
	return 0
}

// collectAvatars deletes hosted avatars no user points at any more. It runs only after a full
// pass that read everything, with the references the bridge remembers for every user.
func collectAvatars(ctx context.Context, svc *avatars.Service, store reconcile.Store, after time.Duration, log *slog.Logger) {
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
