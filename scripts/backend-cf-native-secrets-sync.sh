#!/usr/bin/env bash
# Compatibility shim: this is now `nox -s secrets_sync` (see README "Command map").
exec python3 -m nox -s secrets_sync -- "$@"
