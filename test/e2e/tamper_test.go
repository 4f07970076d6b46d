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
	"testing"

	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

// tamper sits in front of a stand-in. before runs before the request is forwarded (it may
// block); rewrite may replace the body of an answer.
type tamper struct {
	srv     *httptest.Server
	before  func(r *http.Request)
	rewrite func(r *http.Request, status int, body []byte) []byte
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
			if tp.rewrite == nil {
				return nil
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			body = tp.rewrite(resp.Request, resp.StatusCode, body)
			resp.Body = io.NopCloser(bytes.NewReader(body))
			resp.ContentLength = int64(len(body))
			resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
			return nil
		},
	}
	tp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tp.before != nil {
			tp.before(r)
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
