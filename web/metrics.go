package web

import "github.com/prometheus/client_golang/prometheus"

// metrics are the hook counters; the reconciler and the Discord client register their own.
type metrics struct {
	gate *prometheus.CounterVec
	sync *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		gate: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_gate_answers_total",
			Help: "Answers of the gate hook by reason: member, pending, not_member, error.",
		}, []string{"reason"}),
		sync: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_sync_hook_answers_total",
			Help: "Answers of the sync hook by status.",
		}, []string{"status"}),
	}
	reg.MustRegister(m.gate, m.sync)
	return m
}
