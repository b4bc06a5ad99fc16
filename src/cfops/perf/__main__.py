"""`python -m cfops.perf`: the entry point `nox -s perf_smoke` runs."""

from __future__ import annotations

from cfops import cli
from cfops.perf import main

if __name__ == "__main__":
    cli.run_main(main)
