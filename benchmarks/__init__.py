"""Realtime benchmarks: poke-to-render latency, burst coalescing, and a polling baseline.

Each script starts the sandbox (`wardsync sandbox`) and the app side (`app_process`) as
separate processes and drives writes from its own process; see benchmarks/README.md.
"""
