"""Prometheus metrics of a run: the series, their delivery (Pushgateway, /metrics), the Trainer callback."""
