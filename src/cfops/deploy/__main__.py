"""`python -m cfops.deploy`: the same as `cfops deploy`."""

from __future__ import annotations

from cfops import cli
from cfops.deploy.command import main

if __name__ == "__main__":
    cli.run_main(main)
