"""The webhook path: from the socket to ``Store.append`` and the answer.

``http`` is uvicorn set up for ``receiver serve`` (the only module that touches uvicorn's
internals: its httptools protocol and its multi-process supervisor), ``edge`` what the protocol
enforces before the app (which peers may connect, request head limits, the busy answer),
``allowlist`` and ``verifier`` the address and credential checks, ``endpoint`` the webhook
endpoint, ``app`` the ASGI front and the ingest app.
"""
