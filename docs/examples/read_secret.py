"""Reads one value of a SPIKE secret as the workload this process is.

Its identity comes from the SPIFFE Workload API (py-spiffe); the call is plain HTTPS with the
standard library, presenting that SVID and accepting only Nexus's SPIFFE ID:

    pip install 'spiffe==0.3.2'
    SPIKE_DEV_WORKLOAD=frontend python3 docs/examples/read_secret.py demo/db pass

It reads SPIFFE_ENDPOINT_SOCKET, SPIKE_NEXUS_ADDR and SPIKE_TRUST_DOMAIN, as `spike` does.
"""

import http.client
import json
import os
import ssl
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import TrustDomain, WorkloadApiClient
from spiffe.workloadapi.errors import FetchX509SvidError


def tls_context(trust_domain: str, workdir: Path) -> ssl.SSLContext:
    if not os.environ.get("SPIFFE_ENDPOINT_SOCKET"):
        sys.exit("SPIFFE_ENDPOINT_SOCKET is not set: paste the export lines `spike dev` prints")
    client = WorkloadApiClient()
    try:
        context = client.fetch_x509_context(timeout=30)
    except FetchX509SvidError as e:
        sys.exit(f"no SVID for this process ({e}); with spike dev, start it with SPIKE_DEV_WORKLOAD=NAME")
    finally:
        client.close()
    svid = context.default_svid
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(trust_domain))
    if svid is None or bundle is None:
        sys.exit(f"no SVID or no bundle of {trust_domain} from the Workload API")
    cert, key = workdir / "svid.pem", workdir / "svid.key"
    svid.save(cert, key, Encoding.PEM)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # A SPIFFE certificate names a SPIFFE ID, not a host name: the chain is checked against the
    # trust bundle here, and the server's ID right after the handshake.
    tls.check_hostname = False
    tls.load_verify_locations(
        cadata="".join(a.public_bytes(Encoding.PEM).decode() for a in bundle.x509_authorities)
    )
    tls.load_cert_chain(cert, key)
    return tls


def main() -> None:
    path, key = sys.argv[1], sys.argv[2]
    trust_domain = os.environ.get("SPIKE_TRUST_DOMAIN", "spike.dev")
    host, port = os.environ.get("SPIKE_NEXUS_ADDR", "127.0.0.1:8553").rsplit(":", 1)
    with tempfile.TemporaryDirectory() as workdir:
        conn = http.client.HTTPSConnection(
            host, int(port), context=tls_context(trust_domain, Path(workdir))
        )
        conn.connect()
    peer = dict(conn.sock.getpeercert().get("subjectAltName", ()))
    if peer.get("URI") != f"spiffe://{trust_domain}/spike/nexus":
        sys.exit(f"the server is {peer.get('URI')}, not Nexus")
    conn.request("GET", f"/v1/secrets/data/{path}")
    answer = conn.getresponse()
    body = json.loads(answer.read())
    if answer.status != 200:
        sys.exit(f"{answer.status}: {body['error']['message']} ({body['error']['code']})")
    print(body["data"][key])


if __name__ == "__main__":
    main()
