"""Running handlers from the durable inbox, after the acknowledgement.

``routing`` is what handler authors use (``Router``, ``Notification``, ``Context`` with its typed
``PortalAPI``) and the routing table; ``planner`` routes stored notifications into jobs, or
quarantines them; ``jobs`` is the job queue (the ``JobQueue`` protocol, ``StoreJobQueue`` over
the store), ``memory`` its in-memory twin; ``retry`` the retry policy; ``results`` what handlers
keep; ``replay`` running handlers again; ``worker`` the worker itself.

Nothing is imported here: ``receiver`` imports ``receiver.worker.routing`` for the handler API,
and that must not bring the store along.
"""
