package e2e

// Helpers for the breaker tests: a reverse proxy that can hold or rewrite answers of the
// stand-ins, so faults the stand-ins cannot produce on their own can be injected.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"

	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

// tamper sits in front of a stand-in. Its hooks are set while the server runs, so they are
// read and written under mu (the race detector would flag them otherwise).
type tamper struct {
	srv *httptest.Server

	mu sync.Mutex
	// answer, when it returns true, has answered the request itself; nothing is forwarded.
	answer func(w http.ResponseWriter, r *http.Request) bool
	// before runs before the request is forwarded; it may block.
	before func(r *http.Request)
	// rewrite may replace the body of an answer.
	rewrite func(r *http.Request, status int, body []byte) []byte
}

// set changes the proxy's hooks: f runs under the lock the handlers read them with.
func (tp *tamper) set(f func(tp *tamper)) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	f(tp)
}

func (tp *tamper) hooks() (answer func(http.ResponseWriter, *http.Request) bool,
	before func(*http.Request), rewrite func(*http.Request, int, []byte) []byte) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.answer, tp.before, tp.rewrite
}

func newTamper(t *testing.T, target string) *tamper {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	tp := &tamper{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: u.Scheme, Host: u.Host})
			pr.Out.Host = u.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			_, _, rewrite := tp.hooks()
			if rewrite == nil {
				return nil
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			body = rewrite(resp.Request, resp.StatusCode, body)
			resp.Body = io.NopCloser(bytes.NewReader(body))
			resp.ContentLength = int64(len(body))
			resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
			return nil
		},
	}
	tp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer, before, _ := tp.hooks()
		if answer != nil && answer(w, r) {
			return
		}
		if before != nil {
			before(r)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(tp.srv.Close)
	return tp
}

// editJSON decodes body as an object, lets f change it, and encodes it again.
func editJSON(t *testing.T, body []byte, f func(m map[string]any)) []byte {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Errorf("tamper: answer is not a JSON object: %v", err)
		return body
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Errorf("tamper: %v", err)
		return body
	}
	return out
}

func discordstubMember(id, username string, roles ...string) discordstub.Member {
	m := discordstub.ExampleMember()
	m.User.ID, m.User.Username, m.User.GlobalName = id, username, nil
	m.Roles = roles
	return m
}
