"""Putting the receiver together: what runs, from ``receiver.yaml``, and the ``receiver`` command.

``services`` assembles the long-running pieces (the worker, recovery, the Portal watch),
``recovery`` and ``watch`` bring back what the Portal failed to deliver and watch its retry
budget (they need the Portal client and the store together), ``reload`` applies a SIGHUP,
``startup`` gives the start-up warnings, ``cliutil`` and ``cli/`` are the command.
"""
