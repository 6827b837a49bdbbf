//! Prometheus-style counters and gauges for /metrics.
