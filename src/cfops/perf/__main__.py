"""`python -m cfops.perf`: the same entry point as `cfops perf`."""

from __future__ import annotations

from cfops import cli
from cfops.perf import main

if __name__ == "__main__":
    cli.run_main(main)
