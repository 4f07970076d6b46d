package authentikstub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	api "goauthentik.io/api/v3"
)

const testToken = "ak-api-0b3f7c9e4d2a"

// newStub starts a validating stub and a generated client for it. At the end of the test it
// fails on any recorded violation, so every test also proves its flows are schema-clean.
func newStub(t *testing.T) (*Server, *api.APIClient) {
	t.Helper()
	s, err := New(Options{Token: testToken})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if v := s.Violations(); len(v) > 0 {
			t.Errorf("violations:\n%s", strings.Join(v, "\n"))
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, newClient(s.URL(), testToken)
}

func newClient(baseURL, token string) *api.APIClient {
	cfg := api.NewConfiguration()
	cfg.Servers = api.ServerConfigurations{{URL: baseURL + "/api/v3"}}
	cfg.AddDefaultHeader("Authorization", "Bearer "+token)
	cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	return api.NewAPIClient(cfg)
}

// rawResponse is an answer read in full, for checks below the generated client.
type rawResponse struct {
	status int
	header http.Header
	body   []byte
}

// doRaw sends a request by hand; auth is the whole Authorization header ("" sends none).
func doRaw(t *testing.T, s *Server, method, path, auth, body string) rawResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL()+path, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return rawResponse{resp.StatusCode, resp.Header, data}
}

// readBody returns the raw body the generated client left readable on its response.
func readBody(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	if resp == nil {
		t.Fatal("no response")
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return data
}

// statusOf returns the HTTP status of a client call that is expected to fail.
func statusOf(t *testing.T, resp *http.Response, err error) int {
	t.Helper()
	if err == nil {
		t.Fatal("call succeeded, want an error status")
	}
	if resp == nil {
		t.Fatalf("no response: %v", err)
	}
	return resp.StatusCode
}

// seedUsers adds n active Discord-enrolled users named user-000, user-001, …
func seedUsers(s *Server, n int) []int32 {
	pks := make([]int32, 0, n)
	for i := range n {
		pks = append(pks, s.AddUser(User{
			Username: fmt.Sprintf("user-%03d", i),
			Name:     fmt.Sprintf("User %d", i),
			Email:    fmt.Sprintf("user%d@example.org", i),
			IsActive: true,
		}))
	}
	return pks
}

func mustJSON(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
	return v
}
