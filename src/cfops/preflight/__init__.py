"""`cfops preflight`: one release-readiness report, measured from the real bundles.

Kept free of imports so that ``python -m cfops.preflight.probe`` (run in a child process by the
edge-contract check) starts fast. The command is ``cfops.preflight.command.main``.
"""
