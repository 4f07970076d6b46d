package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/discord-authentik-bridge/bridge/authentik"
	"github.com/discord-authentik-bridge/bridge/config"
	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/reconcile"
	"github.com/discord-authentik-bridge/bridge/reconcile/sqlitestore"
)

// buildVersion is set with -ldflags "-X main.buildVersion=v1.2.3" by release builds.
var buildVersion = ""

func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// app holds what every command builds from the configuration.
type app struct {
	cfg       *config.Config
	log       *slog.Logger
	discord   *discord.Client
	authentik *authentik.Client
}

func loadConfig(lookup func(string) (string, bool), stderr io.Writer) (*config.Config, bool) {
	cfg, err := config.Load(lookup)
	if err != nil {
		fmt.Fprintln(stderr, "bridge: invalid configuration:")
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "  -", line)
		}
		return nil, false
	}
	return cfg, true
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// upstreamClient is shared by the Discord and Authentik clients. Its pool is sized for the
// webhook load of a busy login hour; the per-call deadline comes from each call's context.
func upstreamClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 128
	t.IdleConnTimeout = 90 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return &http.Client{Transport: t, Timeout: time.Minute}
}

func newApp(cfg *config.Config, log *slog.Logger) (*app, error) {
	hc := upstreamClient()
	ua := "discord-authentik-bridge/" + version()
	dc, err := discord.NewClient(discord.Options{
		Token:      cfg.Discord.Token.Reveal(),
		APIURL:     cfg.Discord.APIURL,
		HTTPClient: hc,
		Logger:     log,
		UserAgent:  ua,
	})
	if err != nil {
		return nil, err
	}
	ak, err := authentik.New(authentik.Options{
		URL:        cfg.Authentik.URL,
		Token:      cfg.Authentik.Token.Reveal(),
		SourceSlug: cfg.Authentik.SourceSlug,
		HTTPClient: hc,
		UserAgent:  ua,
	})
	if err != nil {
		return nil, err
	}
	return &app{cfg: cfg, log: log, discord: dc, authentik: ak}, nil
}

func (a *app) openStore(ctx context.Context) (*sqlitestore.Store, error) {
	if err := os.MkdirAll(a.cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	return sqlitestore.Open(ctx, filepath.Join(a.cfg.DataDir, "bridge.db"), a.log)
}

func (a *app) reconciler(store reconcile.Store) *reconcile.Reconciler {
	return reconcile.New(a.discord, a.authentik, store, a.log, reconcile.Options{
		GuildID:         a.cfg.Discord.GuildID,
		AllowSuperuser:  a.cfg.Sync.AllowSuperuserGroups,
		SetName:         a.cfg.Sync.SetName,
		OnLeave:         a.cfg.Sync.OnLeave,
		LeaveGrace:      a.cfg.Sync.LeaveGrace,
		RevokeOnLoss:    a.cfg.Sync.RevokeOnLoss,
		MaxRemovalShare: a.cfg.Sync.MaxRemovalShare,
		MappingRefresh:  a.cfg.Sync.MappingRefresh,
	})
}

// errorLine shortens an error for one line of terminal output.
func errorLine(err error) string {
	var ae *authentik.Error
	if errors.As(err, &ae) && ae.Status == http.StatusForbidden {
		return err.Error() + " (is the token's intent \"api\", and does its user have the permissions the README lists?)"
	}
	return err.Error()
}
