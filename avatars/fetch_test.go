package avatars

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cdnStub is an httptest CDN whose routes each misbehave in one way. It records every request's
// Authorization header, which must always be empty.
type cdnStub struct {
	*httptest.Server
	mu       sync.Mutex
	auth     []string
	requests atomic.Int64
	// written counts the bytes the endless routes managed to send; done gets one value when
	// such a handler returns.
	written atomic.Int64
	done    chan struct{}
}

const endless = 64 << 20 // what the oversized routes try to send

func newCDNStub(t *testing.T, other string) *cdnStub {
	t.Helper()
	png := readTestdata(t, "video-001.png")
	c := &cdnStub{done: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	serve := func(ct string, body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if ct == "" {
				w.Header()["Content-Type"] = nil // no label, and no sniffing by net/http
			} else {
				w.Header().Set("Content-Type", ct)
			}
			_, _ = w.Write(body)
		}
	}
	html := []byte("<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>" +
		"<body><h1>502 Bad Gateway</h1></body></html>")
	mux.HandleFunc("/ok.png", serve("image/png", png))
	mux.HandleFunc("/octet.png", serve("application/octet-stream", png))
	mux.HandleFunc("/unlabelled.png", serve("", png))
	mux.HandleFunc("/html.png", serve("text/html; charset=utf-8", html))
	mux.HandleFunc("/html-as-png.png", serve("image/png", html))
	mux.HandleFunc("/json.png", serve("application/json",
		[]byte(`{"message": "404: Not Found", "code": 0}`)))
	mux.HandleFunc("/garbage.png", serve("image/png", []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}))
	mux.HandleFunc("/empty.png", serve("image/png", nil))
	exact := make([]byte, 1<<20) // a PNG signature padded to the fetcher's limit
	copy(exact, "\x89PNG\r\n\x1a\n")
	mux.HandleFunc("/exact.png", serve("image/png", exact))
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		http.Error(w, http.StatusText(code), code)
	})
	mux.HandleFunc("/big-declared.png", c.endless(true))
	mux.HandleFunc("/big-chunked.png", c.endless(false))
	mux.HandleFunc("/redirect-here.png", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok.png", http.StatusFound)
	})
	mux.HandleFunc("/redirect-away.png", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other+"/ok.png", http.StatusFound)
	})
	mux.HandleFunc("/slow.png", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers only when the client gives up
	})
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.requests.Add(1)
		c.mu.Lock()
		c.auth = append(c.auth, r.Header.Get("Authorization"))
		c.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

// endless sends a PNG signature and then zeros until the client hangs up, declaring the full
// length up front or not.
func (c *cdnStub) endless(declare bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		defer func() { c.done <- struct{}{} }()
		w.Header().Set("Content-Type", "image/png")
		if declare {
			w.Header().Set("Content-Length", strconv.Itoa(endless))
		}
		chunk := make([]byte, 64<<10)
		copy(chunk, "\x89PNG\r\n\x1a\n")
		for sent := 0; sent < endless; sent += len(chunk) {
			n, err := w.Write(chunk)
			c.written.Add(int64(n))
			if err != nil {
				return
			}
			if f, ok := w.(http.Flusher); ok && !declare {
				f.Flush()
			}
		}
	}
}

func (c *cdnStub) authHeaders() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.auth...)
}

func newTestFetcher(t *testing.T, base string) *Fetcher {
	t.Helper()
	f, err := NewFetcher(FetchOptions{CDNBase: base, MaxBytes: 1 << 20, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFetcher_Fetch(t *testing.T) {
	other := newCDNStub(t, "")
	c := newCDNStub(t, other.URL)
	f := newTestFetcher(t, c.URL)
	png := readTestdata(t, "video-001.png")

	tests := []struct {
		path      string
		kind      Kind // "" for success
		retryable bool
		status    int
		says      string
	}{
		{path: "/ok.png"},
		{path: "/octet.png"},
		{path: "/unlabelled.png"},
		{path: "/redirect-here.png"},
		{path: "/html.png", kind: KindNotImage, says: "text/html"},
		{path: "/html-as-png.png", kind: KindNotImage, says: `labelled "image/png", not an image`},
		{path: "/json.png", kind: KindNotImage, says: "not an image"},
		{path: "/empty.png", kind: KindNotImage, says: "empty body"},
		{path: "/status/404", kind: KindStatus, status: 404, says: "404 Not Found"},
		{path: "/status/400", kind: KindStatus, status: 400, says: "400 Bad Request"},
		{path: "/status/403", kind: KindStatus, status: 403},
		{path: "/status/429", kind: KindStatus, status: 429, retryable: true},
		{path: "/status/500", kind: KindStatus, status: 500, retryable: true},
		{path: "/status/503", kind: KindStatus, status: 503, retryable: true},
		{path: "/status/204", kind: KindStatus, status: 204},
		{path: "/redirect-away.png", kind: KindHost, says: "redirect to " + other.URL},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := f.Fetch(t.Context(), c.URL+tt.path+"?size=128")
			if tt.kind == "" {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if !bytes.Equal(got, png) {
					t.Errorf("Fetch returned %d bytes, want the image's %d", len(got), len(png))
				}
				return
			}
			if got != nil {
				t.Errorf("Fetch returned %d bytes with an error", len(got))
			}
			wantKind(t, err, tt.kind, tt.retryable)
			var e *Error
			if errors.As(err, &e) && e.Status != tt.status {
				t.Errorf("Status = %d, want %d", e.Status, tt.status)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("err = %q, want it to say %q", err, tt.says)
			}
		})
	}

	if n := other.requests.Load(); n != 0 {
		t.Errorf("the other host got %d requests, want none", n)
	}
	for i, a := range c.authHeaders() {
		if a != "" {
			t.Errorf("request %d carried Authorization %q, want none", i, a)
		}
	}
}

func TestFetcher_Fetch_garbageLabelledPNG(t *testing.T) {
	// Binary bytes under image/png pass the fetch; the decoder refuses them as not an image.
	c := newCDNStub(t, "")
	body, err := newTestFetcher(t, c.URL).Fetch(t.Context(), c.URL+"/garbage.png")
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	_, err = Process(body, 64, Limits{})
	wantKind(t, err, KindNotImage, false)
}

func TestFetcher_Fetch_limit(t *testing.T) {
	c := newCDNStub(t, "")
	f := newTestFetcher(t, c.URL)

	t.Run("exactly the limit", func(t *testing.T) {
		body, err := f.Fetch(t.Context(), c.URL+"/exact.png")
		if err != nil || len(body) != 1<<20 {
			t.Errorf("Fetch = %d bytes, %v; want 1 MiB and no error", len(body), err)
		}
	})

	for _, path := range []string{"/big-declared.png", "/big-chunked.png"} {
		t.Run(path, func(t *testing.T) {
			c.written.Store(0)
			_, err := f.Fetch(t.Context(), c.URL+path)
			wantKind(t, err, KindTooLarge, false)

			select {
			case <-c.done:
			case <-time.After(30 * time.Second):
				t.Fatal("the server kept sending after the client refused the body")
			}
			// Socket buffers take a few MB before the server notices; far less than all.
			w := c.written.Load()
			t.Logf("server wrote %d of %d bytes before the client hung up", w, endless)
			if w >= endless/2 {
				t.Errorf("the client read on past its limit")
			}
		})
	}
}

func TestFetcher_Fetch_refusedBeforeSending(t *testing.T) {
	c := newCDNStub(t, "")
	f := newTestFetcher(t, c.URL)
	host := strings.TrimPrefix(c.URL, "http://")
	for _, u := range []string{
		"https://" + host + "/ok.png",        // other scheme
		"http://user:pw@" + host + "/ok.png", // user info
		"http://example.com/ok.png",
		"http://127.0.0.2" + host[strings.IndexByte(host, ':'):] + "/ok.png",
		"/ok.png",
		"ftp://" + host + "/ok.png",
	} {
		t.Run(u, func(t *testing.T) {
			_, err := f.Fetch(t.Context(), u)
			wantKind(t, err, KindHost, false)
			if strings.Contains(err.Error(), "pw") {
				t.Errorf("err = %q shows the URL's password", err)
			}
		})
	}
	if n := c.requests.Load(); n != 0 {
		t.Errorf("the CDN got %d requests, want none", n)
	}
}

func TestFetcher_Fetch_timeout(t *testing.T) {
	c := newCDNStub(t, "")
	f, err := NewFetcher(FetchOptions{CDNBase: c.URL, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Fetch(t.Context(), c.URL+"/slow.png")
	wantKind(t, err, KindNetwork, true)
}

func TestNewFetcher_badBase(t *testing.T) {
	for _, base := range []string{"", "cdn.discordapp.com", "ftp://cdn", "https://", "://x"} {
		if _, err := NewFetcher(FetchOptions{CDNBase: base}); err == nil {
			t.Errorf("NewFetcher(%q) succeeded, want an error", base)
		}
	}
}

func TestFetcher_Allowed_defaultPort(t *testing.T) {
	f, err := NewFetcher(FetchOptions{CDNBase: "https://CDN.discordapp.com"})
	if err != nil {
		t.Fatal(err)
	}
	for u, want := range map[string]bool{
		"https://cdn.discordapp.com/a.png":      true,
		"https://cdn.discordapp.com:443/a.png":  true,
		"https://cdn.discordapp.com:8443/a.png": false,
		"http://cdn.discordapp.com/a.png":       false,
		"https://cdn.discordapp.com.evil/a.png": false,
		"https://media.discordapp.net/a.png":    false,
	} {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Allowed(pu); got != want {
			t.Errorf("Allowed(%s) = %v, want %v", u, got, want)
		}
	}
}
