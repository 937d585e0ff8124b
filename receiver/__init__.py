"""Durable webhook receiver for the Portal Único (PUCOMEX), SINtegre and InvoiCy.

What handler authors use is exported here; everything else is internal.
"""

from receiver.errors import ReceiverError, Retry

__all__ = ["ReceiverError", "Retry"]
