"""Benchmarks (``make bench``): throughput, baseline, live latency, memory, scale."""
