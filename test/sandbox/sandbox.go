package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

// DefaultCallbackPaths are registered as the OIDC application's redirect URIs under the
// bridge's public URL, so that the status page's login works whichever of these it uses.
var DefaultCallbackPaths = []string{
	"/auth/callback", "/login/callback", "/oidc/callback", "/callback",
}

// Options configure Start. The zero value starts the bridge on a free loopback port with a
// temporary data directory, no trickle and no schema validation.
type Options struct {
	// Listen is the bridge's address, host:port on loopback; port 0 picks a free port.
	// Default 127.0.0.1:0.
	Listen string
	// DataDir is the bridge's data directory, which is never deleted. Empty: a new directory
	// under the sandbox's temporary directory, deleted by Close unless KeepData is set.
	DataDir  string
	KeepData bool
	// Trickle is the time between two changes to the guild; 0 makes none.
	Trickle time.Duration
	// Resync is BRIDGE_RESYNC_INTERVAL; default 30s.
	Resync time.Duration
	// Validate checks the bridge's Authentik traffic against the schemas (about a second more
	// at start); Sandbox.Authentik.Violations lists what failed.
	Validate bool
	// Seed makes the trickle's choices repeatable; 0 picks 1.
	Seed uint64
	// Bridge is a built bridge binary. Empty: `go build ./cmd/bridge` in the module around the
	// working directory.
	Bridge string
	// BridgeOutput receives the bridge's log as well as the log file; nil: only the file.
	BridgeOutput io.Writer
	// Out receives one line per trickle change; nil discards them.
	Out io.Writer
	// Logger receives the stand-ins' logs; nil discards them.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for the bridge's /readyz, building excluded; default 60s.
	ReadyTimeout time.Duration
	// CallbackPaths are the redirect paths to register; default DefaultCallbackPaths.
	CallbackPaths []string
	// Env adds or overrides BRIDGE_* variables of the bridge, as NAME=value.
	Env []string
}

// Sandbox is a running bridge with its stand-ins and seeded guild. Close stops everything.
type Sandbox struct {
	// URL is the bridge's base URL without a trailing slash, e.g. http://127.0.0.1:8080.
	URL string
	// Issuer is the OIDC issuer the bridge logs in against.
	Issuer string
	// Admin may see the status page (a member of AdminGroup); Member may not.
	Admin, Member Login
	AdminGroup    string
	// DataDir is the bridge's data directory; LogPath its log file.
	DataDir string
	LogPath string
	Guild   Guild

	Authentik *authentikstub.Server
	Discord   *discordstub.Server

	opts     Options
	work     string // temporary directory: binary, log and (by default) data
	log      *os.File
	tail     *tailBuffer
	proc     *exec.Cmd
	exited   chan struct{}
	exitErr  error
	guild    *guildState
	stop     context.CancelFunc
	trickled sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Start seeds the stand-ins, builds and starts the bridge and returns once its /readyz answers
// 200. ctx bounds the start only; Close ends the sandbox.
func Start(ctx context.Context, o Options) (*Sandbox, error) {
	o.Listen = cmp.Or(o.Listen, "127.0.0.1:0")
	o.Resync = cmp.Or(o.Resync, 30*time.Second)
	o.ReadyTimeout = cmp.Or(o.ReadyTimeout, time.Minute)
	o.Seed = cmp.Or(o.Seed, 1)
	if o.CallbackPaths == nil {
		o.CallbackPaths = DefaultCallbackPaths
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	for _, kv := range o.Env {
		if !strings.HasPrefix(kv, "BRIDGE_") || !strings.Contains(kv, "=") {
			return nil, fmt.Errorf("env %q: want BRIDGE_NAME=value", kv)
		}
	}
	listen, err := loopbackAddr(o.Listen)
	if err != nil {
		return nil, err
	}

	work, err := os.MkdirTemp("", "bridge-sandbox-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	sb := &Sandbox{
		URL:        "http://" + listen,
		Admin:      adminLogin,
		Member:     memberLogin,
		AdminGroup: adminGroup,
		DataDir:    cmp.Or(o.DataDir, filepath.Join(work, "data")),
		LogPath:    filepath.Join(work, "bridge.log"),
		opts:       o,
		work:       work,
		exited:     make(chan struct{}),
		tail:       &tailBuffer{max: 32 << 10},
	}
	if err := sb.start(ctx, listen); err != nil {
		return nil, errors.Join(err, sb.Close())
	}
	return sb, nil
}

func (sb *Sandbox) start(ctx context.Context, listen string) error {
	o := sb.opts
	bin := o.Bridge
	if bin == "" {
		bin = filepath.Join(sb.work, "bridge")
		if err := buildBridge(ctx, bin); err != nil {
			return err
		}
	}

	secrets := struct{ bot, ak, webhook, client string }{
		randomHex(24), randomHex(24), randomHex(32), randomHex(48),
	}
	var err error
	sb.Authentik, err = authentikstub.New(authentikstub.Options{
		Token: secrets.ak, NoValidate: !o.Validate, Seed: o.Seed, Logger: o.Logger,
	})
	if err != nil {
		return fmt.Errorf("start authentik stand-in: %w", err)
	}
	sb.Discord, err = discordstub.New(discordstub.Options{
		GuildID: guildID, Token: secrets.bot, GuildName: guildName,
	})
	if err != nil {
		return fmt.Errorf("start discord stand-in: %w", err)
	}
	if err := sb.seed(secrets.client); err != nil {
		return err
	}

	env := []string{
		"BRIDGE_DISCORD_TOKEN=" + secrets.bot,
		"BRIDGE_DISCORD_GUILD_ID=" + guildID,
		"BRIDGE_DISCORD_API_URL=" + sb.Discord.APIURL(),
		"BRIDGE_DISCORD_CDN_URL=" + sb.Discord.CDNURL(),
		"BRIDGE_AUTHENTIK_URL=" + sb.Authentik.URL(),
		"BRIDGE_AUTHENTIK_TOKEN=" + secrets.ak,
		"BRIDGE_AUTHENTIK_SOURCE_SLUG=" + sourceSlug,
		"BRIDGE_WEBHOOK_SECRET=" + secrets.webhook,
		"BRIDGE_LISTEN=" + listen,
		"BRIDGE_PUBLIC_URL=" + sb.URL,
		"BRIDGE_DATA_DIR=" + sb.DataDir,
		"BRIDGE_OIDC_ISSUER=" + sb.Issuer,
		"BRIDGE_OIDC_CLIENT_ID=" + oidcClientID,
		"BRIDGE_OIDC_CLIENT_SECRET=" + secrets.client,
		"BRIDGE_ADMIN_GROUPS=" + adminGroup,
		"BRIDGE_APP_ROLES=" + appRoles,
		"BRIDGE_RESYNC_INTERVAL=" + o.Resync.String(),
		"BRIDGE_MAPPING_REFRESH=10s",
		"BRIDGE_AVATAR_PREFER_GUILD=true",
		"BRIDGE_LOG_LEVEL=info",
	}
	if err := sb.startBridge(bin, append(env, o.Env...)); err != nil {
		return err
	}
	if err := sb.waitReady(ctx); err != nil {
		return err
	}

	if o.Trickle > 0 {
		tctx, stop := context.WithCancel(context.Background())
		sb.stop = stop
		sb.trickled.Go(func() { sb.guild.trickle(tctx, o.Trickle, o.Out) })
	}
	return nil
}

// oidcClientID is the bridge's client ID at the provider; Authentik makes up a random one.
const oidcClientID = "x6TqZ0mB3c9YvKpR2hW7LdN4sE1uJfGa8oCkVtQy"

// seed fills both stand-ins and registers the bridge as an OIDC application.
func (sb *Sandbox) seed(clientSecret string) error {
	ak, dc := sb.Authentik, sb.Discord
	if err := serveDefaultAvatars(dc); err != nil {
		return err
	}
	sb.Guild = Guild{ID: guildID, Name: guildName, Roles: seedRoles(dc)}

	ak.AddSource(sourceSlug, "Discord")
	var groupUUID map[string]string
	sb.Guild.Groups, groupUUID = seedGroups(ak)
	var current map[string]discordstub.Member
	var err error
	sb.Guild.Members, current, err = seedPeople(dc, ak, groupUUID)
	if err != nil {
		return err
	}

	var steady []string
	for _, m := range sb.Guild.Members {
		if m.Username == adminLogin.Username || m.Username == memberLogin.Username {
			steady = append(steady, m.DiscordID)
		}
	}
	sb.guild = newGuildState(dc, current, sb.opts.Seed, steady...)

	var redirects []string
	for _, p := range sb.opts.CallbackPaths {
		redirects = append(redirects, sb.URL+p)
	}
	sb.Issuer = ak.AddOIDCApp(oidcSlug, oidcClientID, clientSecret, redirects...)
	ak.SetPassword(adminLogin.Username, adminLogin.Password)
	ak.SetPassword(memberLogin.Username, memberLogin.Password)

	if v := ak.Violations(); len(v) > 0 {
		return fmt.Errorf("seed authentik: %s", strings.Join(v, "; "))
	}
	return nil
}

// buildBridge compiles ./cmd/bridge of the module around the working directory.
func buildBridge(ctx context.Context, out string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("find the module (is Go installed?): %w", err)
	}
	mod := strings.TrimSpace(string(gomod))
	if mod == "" || mod == os.DevNull {
		return errors.New("run the sandbox inside the bridge's repository (no go.mod found)")
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/bridge")
	build.Dir = filepath.Dir(mod)
	if msg, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the bridge: %w\n%s", err, msg)
	}
	return nil
}

func (sb *Sandbox) startBridge(bin string, env []string) error {
	if err := os.MkdirAll(sb.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	logFile, err := os.OpenFile(sb.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("bridge log: %w", err)
	}
	sb.log = logFile
	out := io.MultiWriter(logFile, sb.tail)
	if sb.opts.BridgeOutput != nil {
		out = io.MultiWriter(logFile, sb.tail, sb.opts.BridgeOutput)
	}

	// The caller's own BRIDGE_* settings must not leak into the sandbox's bridge.
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BRIDGE_") {
			base = append(base, kv)
		}
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(base, env...)
	cmd.Stdout, cmd.Stderr = out, out
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the bridge: %w", err)
	}
	sb.proc = cmd
	go func() {
		sb.exitErr = cmd.Wait()
		close(sb.exited)
	}()
	return nil
}

// waitReady polls /readyz until it answers 200, the bridge exits or the time is up.
func (sb *Sandbox) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, sb.opts.ReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	last := "no answer"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, sb.URL+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("readyz: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		}

		select {
		case <-sb.exited:
			return fmt.Errorf("bridge exited before it was ready (%v); its log ends:\n%s",
				sb.exitErr, sb.tail.String())
		case <-ctx.Done():
			return fmt.Errorf("bridge not ready: /readyz said %s; its log ends:\n%s",
				last, sb.tail.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Exited is closed when the bridge process has ended, by Close or on its own.
func (sb *Sandbox) Exited() <-chan struct{} { return sb.exited }

// ExitErr is how the bridge ended; valid once Exited is closed.
func (sb *Sandbox) ExitErr() error {
	<-sb.exited
	return sb.exitErr
}

// LogTail returns the last part of the bridge's log, for failure messages.
func (sb *Sandbox) LogTail() string { return sb.tail.String() }

// MakeStale gives a member one more role that feeds a group, without a gateway event, so that
// Discord and Authentik differ until something (a full pass, an admin's sync) syncs the
// member. It returns what changed, e.g. "@chenwei got Woodshop".
func (sb *Sandbox) MakeStale(discordID string) (string, error) {
	return sb.guild.makeStale(discordID)
}

// Close stops the trickle, the bridge (interrupt, then kill after 15 s) and the stand-ins, and
// deletes the temporary directory, keeping the data and the log when Options.KeepData is set.
func (sb *Sandbox) Close() error {
	sb.closeOnce.Do(func() { sb.closeErr = sb.close() })
	return sb.closeErr
}

func (sb *Sandbox) close() error {
	var errs []error
	if sb.stop != nil {
		sb.stop()
		sb.trickled.Wait()
	}
	if sb.proc != nil {
		errs = append(errs, sb.stopBridge())
	}
	if sb.Discord != nil {
		errs = append(errs, sb.Discord.Close())
	}
	if sb.Authentik != nil {
		errs = append(errs, sb.Authentik.Close())
	}
	if sb.log != nil {
		errs = append(errs, sb.log.Close())
	}

	if sb.opts.KeepData {
		errs = append(errs, os.Remove(filepath.Join(sb.work, "bridge")))
	} else {
		errs = append(errs, os.RemoveAll(sb.work))
	}
	// A missing binary (a prebuilt one was used, or the build failed) is no problem.
	errs = slices.DeleteFunc(errs, func(err error) bool { return errors.Is(err, os.ErrNotExist) })
	return errors.Join(errs...)
}

// stopBridge interrupts the bridge as Ctrl-C would and waits for it to finish its work.
func (sb *Sandbox) stopBridge() error {
	select {
	case <-sb.exited:
		if sb.exitErr != nil {
			return fmt.Errorf("bridge had exited: %w", sb.exitErr)
		}
		return nil
	default:
	}

	if err := sb.proc.Process.Signal(os.Interrupt); err != nil {
		return fmt.Errorf("interrupt the bridge: %w", err)
	}
	select {
	case <-sb.exited:
	case <-time.After(15 * time.Second):
		_ = sb.proc.Process.Kill()
		<-sb.exited
		return errors.New("bridge did not stop within 15s of an interrupt; killed it")
	}
	if sb.exitErr != nil {
		return fmt.Errorf("bridge stopped with %w", sb.exitErr)
	}
	return nil
}

// loopbackAddr checks that addr binds loopback only (the stand-ins and the login are reachable
// from this machine alone) and resolves port 0 to a free port. It also makes sure a fixed port
// is free, to fail with a clear message rather than a bridge that cannot start.
func loopbackAddr(addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("listen address %q: want host:port", addr)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", fmt.Errorf("listen address %q: the sandbox listens on loopback only, "+
			"e.g. 127.0.0.1:8080", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen address %s is not free (try another port, or port 0 "+
			"for any free one): %w", addr, err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("probe %s: %w", addr, err)
	}
	return net.JoinHostPort(host, port), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
