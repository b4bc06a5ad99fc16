"""Local stand-ins for outside services, started as real processes on 127.0.0.1 by the tests."""
