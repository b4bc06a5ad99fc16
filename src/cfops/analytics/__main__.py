from cfops import cli
from cfops.analytics.command import main

if __name__ == "__main__":
    cli.run_main(main)
