"""Request ids and trace context, Prometheus metrics, JSON logs."""
