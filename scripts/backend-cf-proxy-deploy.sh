#!/usr/bin/env bash
# Compatibility shim: this is now `nox -s deploy_proxy` (see README "Command map").
exec python3 -m nox -s deploy_proxy -- "$@"
