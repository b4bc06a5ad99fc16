"""``python -m cfops.preflight``: the entry point `nox -s preflight` calls."""

from __future__ import annotations

from cfops import cli
from cfops.preflight.command import main

if __name__ == "__main__":
    cli.run_main(main)
