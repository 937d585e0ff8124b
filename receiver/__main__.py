"""``python -m receiver`` is the ``receiver`` command."""

from receiver.cli import main

main()
