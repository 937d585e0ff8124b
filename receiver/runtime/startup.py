"""Settings that are valid but will not work as the Portal delivers: what ``serve`` warns about,
once, at start (through logging, at WARNING)."""

from __future__ import annotations

from receiver.config import Settings
from receiver.credentials import HeaderCredential

SHORT_SECRET = 16


def startup_warnings(settings: Settings) -> list[str]:
    """What ``serve`` warns about, once, at start: settings that are valid but will not work as
    the Portal delivers (it can send neither Basic nor Bearer), or a weak secret."""
    warnings: list[str] = []
    pucomex = settings.sources.get("pucomex")
    if pucomex is not None:
        kinds = sorted({c.type for c in pucomex.credentials if c.type in ("basic", "bearer")})
        if kinds:
            warnings.append(
                f"sources.pucomex has {' and '.join(kinds)} credentials, which the Portal cannot "
                "send: its subscription API has no field for them, so every delivery would get "
                "401 and be lost after 3 tries. Protect pucomex with the allowlist and "
                "{type: header, name: secret, value: env:PUCOMEX_CHAVE_SECRETA}, the "
                "chaveSecreta given at subscription."
            )
    chave = settings.portal.chave_secreta if settings.portal is not None else None
    if chave is not None:
        secret = chave.get_secret_value()
        if len(secret) < SHORT_SECRET:
            warnings.append(
                f"portal.chave_secreta has {len(secret)} characters; use a random one of at "
                "least 16 (the Portal's example is 32 hex digits)"
            )
        expected = [
            c.value.get_secret_value()
            for c in (pucomex.credentials if pucomex is not None else [])
            if isinstance(c, HeaderCredential) and c.name == "secret"
        ]
        if pucomex is not None and not pucomex.credentials:
            warnings.append(
                "portal.chave_secreta is set but sources.pucomex checks no credentials: add "
                "{type: header, name: secret, value: ...} with the same value"
            )
        elif pucomex is not None and secret not in expected:
            warnings.append(
                "portal.chave_secreta is not among the values of sources.pucomex's "
                "{type: header, name: secret} credentials: deliveries made with it would get 401"
            )
    return warnings
