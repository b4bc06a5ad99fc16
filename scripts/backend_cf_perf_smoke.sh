#!/usr/bin/env bash
# Compatibility shim: the latency canary is now `nox -s perf_smoke` (see README "Command map").
exec python3 -m nox -s perf_smoke -- "$@"
