"""Durable checkpoints: every stream's resume position and inventory, in a pluggable store."""
