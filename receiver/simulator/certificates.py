"""Test certificates for the simulator and ``receiver demo``: a CA, a server certificate for the
loopback names, and a Sefaz client certificate, made with trustme in a folder.

trustme is the ``simulator`` extra (``pip install 'portal-receiver[simulator]'``; ``dev``
includes it), not a dependency of the receiver: only this module imports it.
"""

from __future__ import annotations

from pathlib import Path

import trustme


def write_demo_certificates(folder: Path) -> dict[str, Path]:
    ca = trustme.CA(organization_name="Demo ICP-Brasil (test only)")
    server = ca.issue_cert("127.0.0.1", "localhost")
    sefaz = ca.issue_cert("sefaz-demo.example", common_name="Sefaz Demo", organization_name="Sefaz")
    paths = {
        "ca": folder / "ca.pem",
        "server": folder / "server.pem",
        "client_cert": folder / "sefaz-cert.pem",
        "client_key": folder / "sefaz-key.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    for blob in sefaz.cert_chain_pems:
        blob.write_to_path(str(paths["client_cert"]), append=True)
    sefaz.private_key_pem.write_to_path(str(paths["client_key"]))
    return paths
