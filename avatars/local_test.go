package avatars

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// newLocalStore returns a store in a fresh directory whose public base is an httptest server
// serving Handler, as the bridge's web server does.
func newLocalStore(t *testing.T) (*LocalStore, *httptest.Server) {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s, err := NewLocalStore(filepath.Join(t.TempDir(), "avatars"), srv.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle(LocalPath, s.Handler())
	return s, srv
}

func processed(t testing.TB, file string) ([]byte, string) {
	t.Helper()
	png, err := Process(readTestdata(t, file), 64, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return png, Key(png)
}

func TestLocalStore(t *testing.T) {
	s, srv := newLocalStore(t)
	ctx := t.Context()
	png, key := processed(t, "tux.png")

	if ok, err := s.Exists(ctx, key); ok || err != nil {
		t.Fatalf("Exists before Put = %v, %v; want false, nil", ok, err)
	}
	if err := s.Put(ctx, key, png); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := s.Put(ctx, key, png); err != nil {
		t.Fatalf("second Put of the same key: %v", err)
	}
	if ok, err := s.Exists(ctx, key); !ok || err != nil {
		t.Fatalf("Exists after Put = %v, %v; want true, nil", ok, err)
	}
	got, err := os.ReadFile(filepath.Join(s.Dir(), key))
	if err != nil || !bytes.Equal(got, png) {
		t.Fatalf("file holds %d bytes (err %v), want the %d put", len(got), err, len(png))
	}

	// Files that are not avatars never show up, nor do leftovers of a write.
	for _, name := range []string{"notes.txt", tempPrefix + "123", strings.ToUpper(key)} {
		if err := os.WriteFile(filepath.Join(s.Dir(), name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(objs) != 1 || objs[0].Key != key || time.Since(objs[0].Modified) > time.Hour {
		t.Errorf("List = %+v, want just %s, written now", objs, key)
	}

	if want := srv.URL + "/avatars/" + key; s.URL(key) != want {
		t.Errorf("URL = %q, want %q", s.URL(key), want)
	}
	checkPublicAvatar(t, s.URL(key), 64)

	if err := s.Delete(ctx, key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	if ok, _ := s.Exists(ctx, key); ok {
		t.Error("Exists after Delete = true")
	}

	for _, bad := range []string{"../x.png", "notes.txt", ""} {
		if err := s.Put(ctx, bad, png); err == nil {
			t.Errorf("Put(%q) succeeded, want a refusal", bad)
		}
	}
}

func TestNewLocalStore_removesLeftovers(t *testing.T) {
	dir := t.TempDir()
	_, key := processed(t, "tux.png")
	for _, name := range []string{tempPrefix + "1", key} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NewLocalStore(dir, "http://bridge"); err != nil {
		t.Fatal(err)
	}
	var names []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{key}, names); diff != "" {
		t.Errorf("directory after NewLocalStore (-want +got):\n%s", diff)
	}
}

func TestLocalStore_Handler(t *testing.T) {
	s, _ := newLocalStore(t)
	png, key := processed(t, "video-001.png")
	if err := s.Put(t.Context(), key, png); err != nil {
		t.Fatal(err)
	}
	// A file beside the store that traversal must not reach.
	if err := os.WriteFile(filepath.Join(filepath.Dir(s.Dir()), "secret.png"),
		[]byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(s.Dir(), strings.Repeat("a", 64)+".png"), 0o755); err != nil {
		t.Fatal(err)
	}
	etag := `"` + key + `"`

	tests := []struct {
		name    string
		method  string
		target  string
		header  map[string]string
		status  int
		body    []byte
		headers map[string]string
	}{
		{
			name: "get", method: "GET", target: "/avatars/" + key, status: 200, body: png,
			headers: map[string]string{
				"Content-Type":                 "image/png",
				"Cache-Control":                "public, max-age=31536000, immutable",
				"X-Content-Type-Options":       "nosniff",
				"ETag":                         etag,
				"Content-Encoding":             "",
				"Cross-Origin-Resource-Policy": "cross-origin",
			},
		},
		{
			name: "get with gzip accepted is not encoded", method: "GET",
			target: "/avatars/" + key, header: map[string]string{"Accept-Encoding": "gzip"},
			status: 200, body: png, headers: map[string]string{"Content-Encoding": ""},
		},
		{
			name: "head", method: "HEAD", target: "/avatars/" + key, status: 200, body: []byte{},
			headers: map[string]string{"Content-Type": "image/png", "ETag": etag},
		},
		{
			name: "if-none-match", method: "GET", target: "/avatars/" + key,
			header: map[string]string{"If-None-Match": etag}, status: 304, body: []byte{},
			headers: map[string]string{"ETag": etag},
		},
		{
			name: "if-none-match among others", method: "GET", target: "/avatars/" + key,
			header: map[string]string{"If-None-Match": `"x", ` + etag}, status: 304, body: []byte{},
		},
		{
			name: "if-none-match stale", method: "GET", target: "/avatars/" + key,
			header: map[string]string{"If-None-Match": `"other"`}, status: 200, body: png,
		},
		{name: "missing key", method: "GET", target: "/avatars/" + strings.Repeat("0", 64) + ".png",
			status: 404},
		{name: "directory with a key's name", method: "GET",
			target: "/avatars/" + strings.Repeat("a", 64) + ".png", status: 404},
		{name: "listing", method: "GET", target: "/avatars/", status: 404},
		{name: "not a key", method: "GET", target: "/avatars/notes.txt", status: 404},
		{name: "upper case key", method: "GET", target: "/avatars/" + strings.ToUpper(key),
			status: 404},
		{name: "traversal", method: "GET", target: "/avatars/../secret.png", status: 404},
		{name: "encoded traversal", method: "GET", target: "/avatars/..%2fsecret.png", status: 404},
		{name: "double encoded", method: "GET", target: "/avatars/%252e%252e%252fsecret.png",
			status: 404},
		{name: "key below a key", method: "GET", target: "/avatars/" + key + "/" + key,
			status: 404},
		{name: "other prefix", method: "GET", target: "/x/avatars/" + key, status: 404},
		{name: "post", method: "POST", target: "/avatars/" + key, status: 405,
			headers: map[string]string{"Allow": "GET, HEAD"}},
		{name: "delete", method: "DELETE", target: "/avatars/" + key, status: 405},
	}
	h := s.Handler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.target, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d (body %.100q)", rec.Code, tt.status,
					rec.Body.Bytes())
			}
			if tt.body != nil && !bytes.Equal(rec.Body.Bytes(), tt.body) {
				t.Errorf("body is %d bytes, want %d", rec.Body.Len(), len(tt.body))
			}
			if rec.Code != 200 && bytes.Contains(rec.Body.Bytes(), []byte("secret")) {
				t.Error("body shows the file outside the store")
			}
			if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q, want nosniff on every answer", got)
			}
			for k, want := range tt.headers {
				if got := rec.Header().Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestLocalStore_concurrentPuts(t *testing.T) {
	s, _ := newLocalStore(t)
	png, key := processed(t, "tux.png")
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- s.Put(t.Context(), key, png) }()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Errorf("Put: %v", err)
		}
	}
	entries, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if diff := cmp.Diff([]string{key}, names); diff != "" {
		t.Errorf("directory (-want +got):\n%s", diff)
	}
}
