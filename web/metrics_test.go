package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discord-authentik-bridge/bridge/reconcile"
)

// recordingStore keeps what the metered store passes on; other methods are not used.
type recordingStore struct {
	reconcile.Store
	syncs   []reconcile.SyncRecord
	changes []reconcile.Change
}

func (s *recordingStore) RecordSync(_ context.Context, r reconcile.SyncRecord) error {
	s.syncs = append(s.syncs, r)
	return nil
}

func (s *recordingStore) RecordChanges(_ context.Context, cs []reconcile.Change) error {
	s.changes = append(s.changes, cs...)
	return nil
}

func TestMetrics_Exposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)

	// Syncs and changes as the reconciler records them.
	inner := &recordingStore{}
	store := m.Store(inner)
	ctx := t.Context()
	for _, r := range []reconcile.SyncRecord{
		{DiscordID: "1", Trigger: "gateway:member_update", Result: reconcile.ResultError},
		{DiscordID: "2", Trigger: "admin:alice", Result: reconcile.ResultChanged,
			AvatarError: "cdn answered 404"},
		{DiscordID: "3", Trigger: "hook", Result: reconcile.ResultUnchanged},
	} {
		if err := store.RecordSync(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.RecordChanges(ctx, []reconcile.Change{
		{Kind: reconcile.KindGroupAdd}, {Kind: reconcile.KindGroupAdd}, {Kind: reconcile.KindRevoke},
	}); err != nil {
		t.Fatal(err)
	}
	if len(inner.syncs) != 3 || len(inner.changes) != 3 {
		t.Errorf("the metered store kept %d syncs and %d changes from the real one, want 3 and 3",
			len(inner.syncs), len(inner.changes))
	}

	// Upstream calls: an answer, a 503, and a host that refuses connections.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/down" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(up.Close)
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close()
	upHost := hostOf(t, up.URL)
	client := &http.Client{Transport: m.Transport(http.DefaultTransport,
		map[string]string{upHost: "discord", hostOf(t, goneURL): "authentik"})}
	for _, u := range []string{up.URL + "/ok", up.URL + "/down", goneURL + "/x"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}

	b := newBridge(t, sampleStatus(), func(o *Options) {
		o.Registry, o.Metrics = reg, m
	})
	p := b.get("/metrics")
	if p.Status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", p.Status)
	}
	want := []string{
		`bridge_syncs_total{result="error",trigger="gateway"} 1`,
		`bridge_syncs_total{result="changed",trigger="admin"} 1`,
		`bridge_syncs_total{result="unchanged",trigger="hook"} 1`,
		`bridge_changes_total{kind="group_add"} 2`,
		`bridge_changes_total{kind="revoke"} 1`,
		`bridge_errors_total{kind="sync"} 1`,
		`bridge_errors_total{kind="sync_avatar"} 1`,
		`bridge_errors_total{kind="avatar_status"} 2`,
		`bridge_errors_total{kind="upstream_discord"} 1`,
		`bridge_errors_total{kind="upstream_authentik"} 1`,
		`bridge_upstream_request_duration_seconds_count{code="200",host="` + upHost +
			`",method="GET",upstream="discord"} 1`,
		`bridge_upstream_request_duration_seconds_count{code="503",host="` + upHost +
			`",method="GET",upstream="discord"} 1`,
		`code="error",host="` + hostOf(t, goneURL) + `",method="GET",upstream="authentik"} 1`,
		`bridge_queue_depth 17`,
		`bridge_queue_retries_total 5`,
		`bridge_queue_failed_total 2`,
		`bridge_gateway_enabled 1`,
		`bridge_gateway_state{state="intent_refused"} 1`,
		`bridge_gateway_state{state="ready"} 0`,
		`bridge_gateway_sessions_total 2`,
		`bridge_discord_calls_total 99`,
		`bridge_discord_rate_limited_total 3`,
		`bridge_discord_rate_limit_wait_seconds_total 4.5`,
		`bridge_avatar_operations_total{op="sync"} 8`,
		`bridge_authentik_up 0`,
		`bridge_mapping_groups{status="managed"} 6`,
		`bridge_mapping_groups{status="invalid"} 2`,
		`bridge_full_pass_last_stale_users 5`,
		`bridge_full_pass_last_errors 3`,
		`bridge_full_pass_last_stopped 1`,
		`bridge_full_pass_running 0`,
		"# TYPE bridge_upstream_request_duration_seconds histogram",
	}
	mustContain(t, "/metrics", p.Body, want...)
}

// The page's login does not cover /metrics: Prometheus scrapes without one.
func TestMetrics_NoLoginNeeded(t *testing.T) {
	idp := newFakeIdP(t)
	b := newOIDCBridge(t, idp, sampleStatus())
	p := b.get("/metrics")
	if p.Status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d, want 200", p.Status)
	}
	mustContain(t, "/metrics", p.Body, "bridge_queue_depth 17")
}

func TestMetrics_WithoutStatus(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.countError("sync")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var found bool
	for _, mf := range mfs {
		if mf.GetName() == "bridge_queue_depth" {
			t.Errorf("queue depth reported without a status source")
		}
		if mf.GetName() == "bridge_errors_total" {
			for _, mt := range mf.GetMetric() {
				if mt.GetLabel()[0].GetValue() == "sync" && mt.GetCounter().GetValue() == 1 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("bridge_errors_total{kind=\"sync\"} 1 missing")
	}
}

func TestTriggerKind(t *testing.T) {
	for in, want := range map[string]string{
		"gateway:member_update": "gateway", "admin:alice": "admin", "hook": "hook",
		"full_pass:timer": "full_pass", "": "unknown",
	} {
		if got := triggerKind(in); got != want {
			t.Errorf("triggerKind(%q) = %q, want %q", in, got, want)
		}
	}
}

func hostOf(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func TestRender_Helpers(t *testing.T) {
	if got := roleColor(0); got != "#99aab5" {
		t.Errorf("roleColor(0) = %q", got)
	}
	if got := roleColor(0x00ff0a); got != "#00ff0a" {
		t.Errorf("roleColor(0x00ff0a) = %q", got)
	}
	for in, want := range map[string]string{"1h0m0s": "1h", "1h30m0s": "1h30m", "10m0s": "10m"} {
		d, err := time.ParseDuration(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%s) = %q, want %q", in, got, want)
		}
	}
	if got := prettyJSON(nil); got != "(absent)" {
		t.Errorf("prettyJSON(nil) = %q", got)
	}
	if got := prettyJSON([]byte(`{"a":1}`)); !strings.Contains(got, "\n  \"a\": 1") {
		t.Errorf("prettyJSON did not indent: %q", got)
	}
}
