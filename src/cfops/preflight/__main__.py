"""``python -m cfops.preflight``: the same entry point as `cfops preflight`."""

from __future__ import annotations

from cfops import cli
from cfops.preflight.command import main

if __name__ == "__main__":
    cli.run_main(main)
