"""Where untrusted children run: ``runner`` (the parent side: limits, namespaces, cgroups, the worker pool),
``worker`` (the child side, ``python -m evo.sandbox.worker``) and ``exported`` (the trusted stage's checks of
exported programs). Kept empty on purpose: every child process imports this package first, so it loads nothing."""
