"""`python -m cfops.image`: the same as `cfops image`."""

from __future__ import annotations

from cfops import cli
from cfops.image.command import main

if __name__ == "__main__":
    cli.run_main(main)
