"""Delivery sinks: one protocol, one conformance suite."""
