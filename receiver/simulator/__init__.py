"""The Portal simulator: what stands in for the Portal so the system runs end to end.

``app`` serves the dispatcher's subscription API with the Portal API stand-in (``portal_api``:
authentication and the Duimp consultation, with ``duimps``' realistic data) beside it;
``certificates`` makes test certificates (trustme, the ``simulator`` extra); ``demo`` and
``demo_report`` are ``receiver demo``; ``cli`` holds the ``receiver dispatcher`` and ``receiver
demo`` commands. Nothing in the receiver imports this package: the command group names its
commands by import string.
"""

from receiver.simulator.app import create_simulator_app, run_simulator
from receiver.simulator.portal_api import PortalAuthority

__all__ = ["PortalAuthority", "create_simulator_app", "run_simulator"]
