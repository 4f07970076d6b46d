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
	"github.com/discord-authentik-bridge/bridge/avatars"
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
	avatars   *avatars.Service
	local     *avatars.LocalStore // set when avatars are kept in the data directory
	s3        *avatars.S3Store    // set when avatars are kept in S3
	// http is the client the Discord and Authentik clients share.
	http *http.Client
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
	return newAppWith(cfg, log, nil)
}

// newAppWith is newApp with the upstream transport wrapped by wrap (when not nil), which is
// how serve times every call to Discord and Authentik.
func newAppWith(cfg *config.Config, log *slog.Logger,
	wrap func(http.RoundTripper) http.RoundTripper) (*app, error) {
	hc := upstreamClient()
	if wrap != nil {
		hc.Transport = wrap(hc.Transport)
	}
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
	a := &app{cfg: cfg, log: log, discord: dc, authentik: ak, http: hc}
	if err := a.openAvatars(); err != nil {
		return nil, err
	}
	return a, nil
}

// openAvatars builds the avatar store the configuration names and the service on top of it.
func (a *app) openAvatars() error {
	cfg := a.cfg
	var store avatars.Store
	switch cfg.Avatar.Store {
	case config.AvatarStoreS3:
		s, err := avatars.NewS3Store(avatars.S3Options{
			Endpoint:  cfg.S3.Endpoint,
			UseSSL:    cfg.S3.UseSSL,
			Bucket:    cfg.S3.Bucket,
			Region:    cfg.S3.Region,
			Prefix:    cfg.S3.Prefix,
			AccessKey: cfg.S3.AccessKey.Reveal(),
			SecretKey: cfg.S3.SecretKey.Reveal(),
			PublicURL: cfg.S3.PublicURL,
		})
		if err != nil {
			return fmt.Errorf("avatar store: %w", err)
		}
		a.s3, store = s, s
	default:
		s, err := avatars.NewLocalStore(filepath.Join(cfg.DataDir, "avatars"), cfg.PublicURL)
		if err != nil {
			return fmt.Errorf("avatar store: %w", err)
		}
		a.local, store = s, s
	}
	svc, err := avatars.New(store, a.log, avatars.Options{
		CDNBase:     cfg.Discord.CDNURL,
		PreferGuild: cfg.Avatar.PreferGuild,
		Edge:        cfg.Avatar.Size,
	})
	if err != nil {
		return fmt.Errorf("avatars: %w", err)
	}
	a.avatars = svc
	return nil
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
		Avatars:         a.avatars,
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
