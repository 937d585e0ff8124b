"""``python -m receiver`` is the ``receiver`` command."""

from receiver.runtime.cli import main

main()
