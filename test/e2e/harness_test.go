// Package e2e runs the real bridge binary against the Authentik and Discord stand-ins over
// loopback HTTP, the way an operator runs it against the real services.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

// binary is the bridge built once for the whole package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bridge-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "bridge")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/bridge")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build bridge:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	guildID       = "81384788765712384"
	botToken      = "stub-bot-token-for-tests"
	akToken       = "stub-authentik-api-token"
	webhookSecret = "a-webhook-secret-of-32-characters"
)

// env is a running bridge with its two stand-ins.
type env struct {
	t       *testing.T
	ak      *authentikstub.Server
	dc      *discordstub.Server
	url     string // the bridge's base URL
	dataDir string
	vars    []string
	proc    *exec.Cmd
	logs    *syncBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ak, err := authentikstub.New(authentikstub.Options{Token: akToken})
	if err != nil {
		t.Fatalf("start authentik stand-in: %v", err)
	}
	t.Cleanup(func() {
		for _, v := range ak.Violations() {
			t.Errorf("authentik schema violation: %s", v)
		}
		ak.Close()
	})
	dc, err := discordstub.New(discordstub.Options{GuildID: guildID, Token: botToken})
	if err != nil {
		t.Fatalf("start discord stand-in: %v", err)
	}
	t.Cleanup(func() { dc.Close() })

	e := &env{t: t, ak: ak, dc: dc, dataDir: t.TempDir()}
	port := freePort(t)
	e.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	e.vars = []string{
		"BRIDGE_DISCORD_TOKEN=" + botToken,
		"BRIDGE_DISCORD_GUILD_ID=" + guildID,
		"BRIDGE_DISCORD_API_URL=" + dc.APIURL(),
		"BRIDGE_DISCORD_CDN_URL=" + dc.CDNURL(),
		"BRIDGE_AUTHENTIK_URL=" + ak.URL(),
		"BRIDGE_AUTHENTIK_TOKEN=" + akToken,
		"BRIDGE_WEBHOOK_SECRET=" + webhookSecret,
		"BRIDGE_LISTEN=" + fmt.Sprintf("127.0.0.1:%d", port),
		"BRIDGE_DATA_DIR=" + e.dataDir,
		"BRIDGE_LOG_LEVEL=debug",
		// The hook tests watch one sync at a time; full passes have their own tests.
		"BRIDGE_RESYNC_INTERVAL=0",
	}
	return e
}

// start runs `bridge serve` and waits until /readyz answers 200.
func (e *env) start(extra ...string) {
	e.t.Helper()
	e.launch(extra...)
	e.waitReady()
}

// launch runs `bridge serve` with the env's variables and extra ones, without waiting.
func (e *env) launch(extra ...string) {
	e.t.Helper()
	e.logs = &syncBuffer{}
	cmd := exec.Command(binary, "serve")
	cmd.Env = append(append(os.Environ()[:0:0], e.vars...), extra...)
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start bridge: %v", err)
	}
	e.proc = cmd
	e.t.Cleanup(func() {
		e.stop()
		if e.t.Failed() {
			e.t.Logf("bridge log:\n%s", e.logs.String())
		}
	})
}

// waitReady waits until /readyz answers 200.
func (e *env) waitReady() {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(e.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("bridge not ready within 20s; log:\n%s", e.logs.String())
}

func (e *env) stop() {
	if e.proc == nil || e.proc.Process == nil {
		return
	}
	_ = e.proc.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { e.proc.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = e.proc.Process.Kill()
		<-done
	}
	e.proc = nil
}

// cli runs a one-shot bridge command with the same environment and returns its output.
func (e *env) cli(args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ()[:0:0], e.vars...)
	var o, er bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &er
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run bridge %v: %v", args, err)
	}
	return o.String(), er.String(), code
}

// post sends body to a hook with the given Authorization header value ("" for none).
func (e *env) post(path, auth string, body []byte) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		e.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("POST %s: answer is not JSON: %v: %q", path, err, raw)
	}
	return resp.StatusCode, out
}

// hook posts v as JSON with the right secret.
func (e *env) hook(path string, v any) (int, map[string]any) {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.post(path, "Bearer "+webhookSecret, b)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects the bridge's log from its two output streams.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
