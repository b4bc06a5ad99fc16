"""IMMCAD backend API: the FastAPI app that runs as a native Cloudflare Python Worker."""

__version__ = "0.1.0"
