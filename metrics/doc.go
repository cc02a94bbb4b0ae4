// Package metrics counts what a server reports through serval.Metrics
// (connections opened and closed by reason, requests in flight, by status
// and by duration) and what its upstream attempts do through
// serval.UpstreamDoneHook (attempts, failures, time to response head), in
// fixed tables of atomic counters allocated once: recording allocates
// nothing and takes no lock, and an exporter reads the tables at scrape
// time. The promexport package serves them to Prometheus.
package metrics
