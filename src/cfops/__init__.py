"""cfops: the IMMCAD Cloudflare ops library (sync, dev, preflight, perf smoke, images, deploys, releases).

Each command is a module with ``main(argv) -> int`` run as ``python -m cfops.<command>``; nox sessions
and invoke tasks are thin wrappers over those entry points.
"""

__version__ = "0.1.0"
