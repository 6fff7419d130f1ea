"""Turning deltas into CloudEvents: attributes, payload, redaction, size policy."""
