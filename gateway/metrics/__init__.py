"""What operators see: the gateway's Prometheus metrics and the ``/metrics`` endpoint."""
