// Package s3server runs a real S3 server for tests: versitygw over a temporary directory, on a
// free loopback port, with its own root credentials and one bucket whose objects anyone may
// read, the way an operator sets up the bridge's avatar bucket. It needs only Go and the
// versitygw binary, which it installs with `go install` when it is missing.
package s3server

import (
	"bytes"
	"context"
	"crypto/rand"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Version is the versitygw release the tests are written against.
const Version = "v1.8.0"

// Module is what `go install` fetches when versitygw is not installed.
const Module = "github.com/versity/versitygw/cmd/versitygw@" + Version

// DefaultBucket is the bucket Start creates.
const DefaultBucket = "avatars"

// healthPath is served by versitygw itself when started with --health; answering it means the
// S3 listener is up.
const healthPath = "/health"

// PublicReadPolicy is the bucket policy that lets anyone, signed in or not, read the objects of
// bucket and nothing else: no listing, no writes. It is the policy the README gives operators
// for the avatar bucket.
func PublicReadPolicy(bucket string) string {
	return `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "PublicReadAvatars",
      "Effect": "Allow",
      "Principal": "*",
      "Action": ["s3:GetObject"],
      "Resource": ["arn:aws:s3:::` + bucket + `/*"]
    }
  ]
}`
}

// Server is a running versitygw. Its exported fields are what a client needs to sign requests.
type Server struct {
	Bucket    string
	Region    string
	AccessKey string
	SecretKey string

	t    testing.TB
	bin  string
	root string // directory whose subdirectories are the buckets
	addr string // host:port

	mu   sync.Mutex
	proc *process
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // what Wait returned, set before done is closed
	out  *lockedBuffer
}

// Start runs versitygw with a new bucket, DefaultBucket, readable anonymously through
// PublicReadPolicy, and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()

	s := &Server{
		Bucket:    DefaultBucket,
		Region:    "us-east-1",
		AccessKey: "AK" + strings.ToUpper(randomHex(t, 9)),
		SecretKey: randomHex(t, 20),
		t:         t,
		bin:       binary(t),
		root:      filepath.Join(t.TempDir(), "gw"),
	}
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		t.Fatalf("s3server: %v", err)
	}
	t.Cleanup(s.Stop)

	// The free port is found by binding and releasing it, so another process may take it before
	// versitygw binds; a few attempts make that harmless.
	var err error
	for range 3 {
		if s.addr, err = freePort(); err != nil {
			break
		}
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("s3server: %v", err)
	}

	if err := s.createBucket(t.Context()); err != nil {
		t.Fatalf("s3server: %v", err)
	}
	return s
}

// Endpoint is host:port without a scheme, as BRIDGE_S3_ENDPOINT takes it.
func (s *Server) Endpoint() string { return s.addr }

// URL is the server's base URL, http://host:port.
func (s *Server) URL() string { return "http://" + s.addr }

// PublicURL is where anyone reads the bucket's objects with path-style addressing, the value
// for BRIDGE_S3_PUBLIC_URL: an object's public address is PublicURL() + "/" + its name.
func (s *Server) PublicURL() string { return s.URL() + "/" + s.Bucket }

// Client returns a minio client signed with the root credentials, for setting up and checking
// state in tests.
func (s *Server) Client() *minio.Client {
	s.t.Helper()
	c, err := minio.New(s.addr, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:       s.Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
	if err != nil {
		s.t.Fatalf("s3server: client: %v", err)
	}
	return c
}

// Stop ends the process and keeps the data, so that the endpoint refuses connections as an S3
// that is down would. It is safe to call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}

	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Restart starts a stopped server again on the same address with the same data and
// credentials. Call it from the test's goroutine: it fails the test when the server does not
// come back.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("s3server: restart: %v", err)
	}
}

// Running reports whether the process is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// start launches versitygw on s.addr and waits until it answers its health path.
func (s *Server) start() error {
	// Global options come before the backend command; the backend takes the root directory.
	// --quiet drops the per-request log; the output is kept only to explain a failed start.
	args := []string{
		"--port", s.addr,
		"--access", s.AccessKey,
		"--secret", s.SecretKey,
		"--region", s.Region,
		"--health", healthPath,
		"--quiet",
		"posix", s.root,
	}
	p := &process{out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(s.bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Keep the credentials out of the environment versitygw would also read them from, so a
	// developer's ROOT_ACCESS_KEY cannot change what the flags say.
	p.cmd.Env = filteredEnv("ROOT_ACCESS_KEY", "ROOT_SECRET_KEY", "ROOT_ACCESS_KEY_ID",
		"ROOT_SECRET_ACCESS_KEY", "VGW_")
	setParentDeath(p.cmd)
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()

	if err := waitReady(s.addr, p); err != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("versitygw on %s: %w\n%s", s.addr, err, p.out.tail(2000))
	}

	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

func waitReady(addr string, p *process) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get("http://" + addr + healthPath)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 30s (last: %v)", err)
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before it was ready: %v", p.err)
		case <-tick.C:
		}
	}
}

func (s *Server) createBucket(ctx context.Context) error {
	c := s.Client()
	if err := c.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	if err := c.SetBucketPolicy(ctx, s.Bucket, PublicReadPolicy(s.Bucket)); err != nil {
		return fmt.Errorf("set bucket policy: %w", err)
	}
	return nil
}

var (
	installOnce sync.Once
	installed   string
	installErr  error
)

// binary finds versitygw on PATH or in Go's install directory, and installs it there once per
// test process when it is in neither.
func binary(t testing.TB) string {
	t.Helper()
	installOnce.Do(func() { installed, installErr = findOrInstall() })
	if installErr != nil {
		t.Fatalf("s3server: %v", installErr)
	}
	if info, err := buildinfo.ReadFile(installed); err == nil && info.Main.Version != Version {
		t.Logf("s3server: %s is versitygw %q; the tests are written against %s",
			installed, info.Main.Version, Version)
	}
	return installed
}

func findOrInstall() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	dir, err := goBinDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}

	cmd := exec.Command("go", "install", Module)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("versitygw is not installed and `go install %s` failed: %w\n%s",
			Module, err, out)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("go install %s: binary not found at %s: %w", Module, p, err)
	}
	return p, nil
}

// goBinDir is where `go install` puts binaries: GOBIN, else the first GOPATH entry's bin.
func goBinDir() (string, error) {
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("go env: %w", err)
	}
	// One line per variable, the first empty when GOBIN is unset: trimming the whole output
	// first would shift GOPATH into GOBIN's place.
	lines := strings.Split(string(out), "\n")
	if len(lines) > 0 && strings.TrimSpace(lines[0]) != "" {
		return strings.TrimSpace(lines[0]), nil
	}
	if len(lines) < 2 || strings.TrimSpace(lines[1]) == "" {
		return "", errors.New("go env: neither GOBIN nor GOPATH is set")
	}
	return filepath.Join(filepath.SplitList(strings.TrimSpace(lines[1]))[0], "bin"), nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr, nil
}

func filteredEnv(drop ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, d := range drop {
			if name == d || (strings.HasSuffix(d, "_") && strings.HasPrefix(name, d)) {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("s3server: random: %v", err)
	}
	return hex.EncodeToString(b)
}

// lockedBuffer collects the process output; exec writes to it from its own goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
