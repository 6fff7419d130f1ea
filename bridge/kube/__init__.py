"""Talking to the Kubernetes API server: auth, a raw-bytes transport, resource descriptions."""
