"""`python -m cfops.release`: the same as `cfops release`."""

from __future__ import annotations

from cfops import cli
from cfops.release.command import main

if __name__ == "__main__":
    cli.run_main(main)
