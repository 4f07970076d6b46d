package web

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/reconcile"
)

// gatewayStates lists every state so that the per-state gauge always has all of its series,
// which lets an alert on `bridge_gateway_state{state="ready"} == 0` work from the first scrape.
var gatewayStates = []discord.GatewayState{
	discord.GatewayConnecting, discord.GatewayReady, discord.GatewayResumed,
	discord.GatewayDisconnected, discord.GatewayIntentRefused, discord.GatewayAuthFailed,
	discord.GatewayStopped,
}

// Metrics holds the bridge's Prometheus series. The counters are updated as things happen
// (hook answers, recorded syncs and changes, upstream calls); everything else is read from
// Status.Health when Prometheus scrapes, so no other package needs to know about metrics.
type Metrics struct {
	gate     *prometheus.CounterVec
	hookSync *prometheus.CounterVec
	syncs    *prometheus.CounterVec
	changes  *prometheus.CounterVec
	upstream *prometheus.HistogramVec

	mu     sync.Mutex
	errs   map[string]float64 // counted errors by kind, merged with avatar failures at scrape
	health func(context.Context) Health
}

// NewMetrics registers the bridge's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		gate: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_gate_answers_total",
			Help: "Answers of the gate hook by reason: member, pending, not_member, error.",
		}, []string{"reason"}),
		hookSync: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_sync_hook_answers_total",
			Help: "Answers of the sync hook by status.",
		}, []string{"status"}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_syncs_total",
			Help: "Syncs applied (not dry runs) by result and by what asked for them.",
		}, []string{"result", "trigger"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_changes_total",
			Help: "Changes applied to Authentik by kind, as written to the audit log.",
		}, []string{"kind"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bridge_upstream_request_duration_seconds",
			Help: "Duration of HTTP calls to Discord and Authentik; code is \"error\" " +
				"when no answer arrived.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"upstream", "host", "method", "code"}),
		// Series that exist from the start let rate() see the first error.
		errs: map[string]float64{"sync": 0, "sync_avatar": 0, "upstream_discord": 0,
			"upstream_authentik": 0},
	}
	reg.MustRegister(m.gate, m.hookSync, m.syncs, m.changes, m.upstream, (*scrapeCollector)(m))
	return m
}

// setHealth makes the scrape-time series read h.
func (m *Metrics) setHealth(h func(context.Context) Health) {
	m.mu.Lock()
	m.health = h
	m.mu.Unlock()
}

func (m *Metrics) countError(kind string) {
	m.mu.Lock()
	m.errs[kind]++
	m.mu.Unlock()
}

// Store wraps s so that every recorded sync and change is counted. Dry runs record nothing
// and so count nothing.
func (m *Metrics) Store(s reconcile.Store) reconcile.Store { return &meteredStore{s, m} }

type meteredStore struct {
	reconcile.Store
	m *Metrics
}

func (s *meteredStore) RecordSync(ctx context.Context, r reconcile.SyncRecord) error {
	s.m.syncs.WithLabelValues(string(r.Result), triggerKind(r.Trigger)).Inc()
	if r.Result == reconcile.ResultError {
		s.m.countError("sync")
	}
	if r.AvatarError != "" {
		s.m.countError("sync_avatar")
	}
	return s.Store.RecordSync(ctx, r)
}

func (s *meteredStore) RecordChanges(ctx context.Context, cs []reconcile.Change) error {
	for _, c := range cs {
		s.m.changes.WithLabelValues(string(c.Kind)).Inc()
	}
	return s.Store.RecordChanges(ctx, cs)
}

// triggerKind cuts a trigger such as "gateway:member_update" or "admin:alice" to its kind, so
// that the label's values stay few.
func triggerKind(t string) string {
	kind, _, _ := strings.Cut(t, ":")
	if kind == "" {
		return "unknown"
	}
	return kind
}

// Transport wraps next so that every call is timed into
// bridge_upstream_request_duration_seconds. names maps a host (host:port as in the URL) to
// the upstream's name, such as "discord"; other hosts are labelled "other". A call without
// an answer also counts as an error of kind upstream_<name>, as does a 5xx answer.
func (m *Metrics) Transport(next http.RoundTripper, names map[string]string) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &meteredTransport{next: next, names: names, m: m}
}

type meteredTransport struct {
	next  http.RoundTripper
	names map[string]string
	m     *Metrics
}

func (t *meteredTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	name, ok := t.names[req.URL.Host]
	if !ok {
		name = "other"
	}
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	t.m.upstream.WithLabelValues(name, req.URL.Host, req.Method, code).
		Observe(time.Since(start).Seconds())
	if err != nil || resp.StatusCode >= 500 {
		t.m.countError("upstream_" + name)
	}
	return resp, err
}

// scrapeCollector turns Health into series at scrape time. It is an unchecked collector
// (Describe sends nothing) because the label values of its series, such as avatar failure
// kinds, are only known when it collects.
type scrapeCollector Metrics

var (
	descErrors = prometheus.NewDesc("bridge_errors_total",
		"Errors by kind: sync (a sync ended in error), sync_avatar (a sync could not refresh "+
			"the avatar), avatar_<kind> (avatar service failures), upstream_<name> (calls "+
			"without an answer or with a 5xx).", []string{"kind"}, nil)
	descQueueDepth = prometheus.NewDesc("bridge_queue_depth",
		"Discord users waiting in the work queue.", nil, nil)
	descQueueProcessed = prometheus.NewDesc("bridge_queue_processed_total",
		"Syncs the work queue finished, successful or not.", nil, nil)
	descQueueFailed = prometheus.NewDesc("bridge_queue_failed_total",
		"Syncs of the work queue that ended in an error.", nil, nil)
	descQueueRetries = prometheus.NewDesc("bridge_queue_retries_total",
		"Syncs the work queue put back for a later try.", nil, nil)
	descGatewayEnabled = prometheus.NewDesc("bridge_gateway_enabled",
		"1 when the bridge keeps a Discord gateway session.", nil, nil)
	descGatewayState = prometheus.NewDesc("bridge_gateway_state",
		"1 for the state the Discord gateway session is in, 0 for the others.",
		[]string{"state"}, nil)
	descGatewaySessions = prometheus.NewDesc("bridge_gateway_sessions_total",
		"Gateway sessions started (READY).", nil, nil)
	descGatewayResumes = prometheus.NewDesc("bridge_gateway_resumes_total",
		"Gateway sessions resumed.", nil, nil)
	descGatewayDisconnects = prometheus.NewDesc("bridge_gateway_disconnects_total",
		"Established gateway connections lost.", nil, nil)
	descLastEvent = prometheus.NewDesc("bridge_gateway_last_event_timestamp_seconds",
		"When the newest gateway event arrived, as a Unix time; 0 before the first.", nil, nil)
	descDiscordCalls = prometheus.NewDesc("bridge_discord_calls_total",
		"HTTP requests sent to Discord's API, retries included.", nil, nil)
	descDiscordLimited = prometheus.NewDesc("bridge_discord_rate_limited_total",
		"429 answers from Discord.", nil, nil)
	descDiscordWait = prometheus.NewDesc("bridge_discord_rate_limit_wait_seconds_total",
		"Time spent waiting for Discord's rate limits.", nil, nil)
	descAvatarOps = prometheus.NewDesc("bridge_avatar_operations_total",
		"Work of the avatar service by operation.", []string{"op"}, nil)
	descAuthentikUp = prometheus.NewDesc("bridge_authentik_up",
		"1 when the newest probe of Authentik's API succeeded.", nil, nil)
	descMappingGroups = prometheus.NewDesc("bridge_mapping_groups",
		"Groups carrying discord_role_id by status: managed or invalid.", []string{"status"}, nil)
	descPassRunning = prometheus.NewDesc("bridge_full_pass_running",
		"1 while a full pass runs.", nil, nil)
	descPassEnd = prometheus.NewDesc("bridge_full_pass_last_end_timestamp_seconds",
		"When the newest full pass ended, as a Unix time.", nil, nil)
	descPassDuration = prometheus.NewDesc("bridge_full_pass_last_duration_seconds",
		"How long the newest full pass took.", nil, nil)
	descPassStale = prometheus.NewDesc("bridge_full_pass_last_stale_users",
		"Linked users the newest full pass found out of date.", nil, nil)
	descPassErrors = prometheus.NewDesc("bridge_full_pass_last_errors",
		"Errors of the newest full pass: its syncs' errors, plus 1 when the pass itself failed.",
		nil, nil)
	descPassStopped = prometheus.NewDesc("bridge_full_pass_last_stopped",
		"1 when the mass-removal guard stopped the newest full pass.", nil, nil)
)

func (c *scrapeCollector) Describe(chan<- *prometheus.Desc) {}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	m := (*Metrics)(c)
	m.mu.Lock()
	health := m.health
	errs := make(map[string]float64, len(m.errs))
	for k, v := range m.errs {
		errs[k] = v
	}
	m.mu.Unlock()

	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if health == nil {
		for k, v := range errs {
			counter(descErrors, v, k)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := health(ctx)

	for k, v := range h.Avatars.Failures {
		errs["avatar_"+string(k)] += float64(v)
	}
	for k, v := range errs {
		counter(descErrors, v, k)
	}

	gauge(descQueueDepth, float64(h.Queue.Depth))
	counter(descQueueProcessed, float64(h.Queue.Processed))
	counter(descQueueFailed, float64(h.Queue.Failed))
	counter(descQueueRetries, float64(h.Queue.Retries))

	gauge(descGatewayEnabled, b2f(h.Gateway.Enabled))
	for _, st := range gatewayStates {
		gauge(descGatewayState, b2f(h.Gateway.Enabled && h.Gateway.State == st), string(st))
	}
	counter(descGatewaySessions, float64(h.Gateway.Sessions))
	counter(descGatewayResumes, float64(h.Gateway.Resumes))
	counter(descGatewayDisconnects, float64(h.Gateway.Disconnects))
	gauge(descLastEvent, unix(h.LastEvent))

	counter(descDiscordCalls, float64(h.Discord.Calls))
	counter(descDiscordLimited, float64(h.Discord.RateLimited))
	counter(descDiscordWait, h.Discord.RateLimitWait.Seconds())

	a := h.Avatars
	for op, v := range map[string]int64{
		"sync": a.Syncs, "unchanged": a.Unchanged, "download": a.Downloads, "upload": a.Uploads,
		"reuse": a.Reused, "store_check": a.StoreChecks, "delete": a.Deleted,
	} {
		counter(descAvatarOps, float64(v), op)
	}

	gauge(descAuthentikUp, b2f(h.Authentik.Reachable))
	if h.MappingLoaded {
		gauge(descMappingGroups, float64(h.Managed), "managed")
		gauge(descMappingGroups, float64(h.Invalid), "invalid")
	}

	gauge(descPassRunning, b2f(h.Pass.Running))
	if p := h.Pass.Last; p != nil {
		failed := 0.0
		if h.Pass.Err != "" && p.Stopped == "" {
			failed = 1
		}
		gauge(descPassEnd, unix(p.Ended))
		gauge(descPassDuration, p.Duration().Seconds())
		gauge(descPassStale, float64(p.Stale))
		gauge(descPassErrors, float64(p.Errors)+failed)
		gauge(descPassStopped, b2f(p.Stopped != ""))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
