"""Watching: per-resource reflectors, the inventory, live CRD discovery and the engine."""
