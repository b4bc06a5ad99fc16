#!/usr/bin/env bash
# Compatibility shim: the sync is now `nox -s sync` (see README "Command map").
exec python3 -m nox -s sync -- "$@"
