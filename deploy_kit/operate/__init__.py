"""Operating deployments over time: live metrics, Prometheus/Grafana files, self-healing policy."""
