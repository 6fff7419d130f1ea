"""Delivery: routing events to sinks, retries in order, acks back to the checkpoints."""
