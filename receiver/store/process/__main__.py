"""``python -m receiver.store.process FD``: the writer process, on the socket FD."""

import sys

from receiver.store.process.child import main

main(sys.argv)
