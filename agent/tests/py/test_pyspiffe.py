"""The spike-agent binary against py-spiffe, an independent Workload API client.

Run (after `cargo build -p spike-agent`):

    pip install 'spiffe==0.3.2' pytest
    SPIKE_AGENT_BIN=target/debug/spike-agent python3 -m pytest agent/tests/py -q
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from spiffe import TrustDomain, WorkloadApiClient
from spiffe.workloadapi.errors import FetchX509SvidError

WAIT_SECONDS = 30
SPIFFE_ID = "spiffe://spike.dev/py/test"


def agent_bin() -> str:
    path = os.environ.get("SPIKE_AGENT_BIN")
    if not path:
        pytest.fail("set SPIKE_AGENT_BIN to the spike-agent binary (cargo build -p spike-agent)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"SPIKE_AGENT_BIN={path} is not an executable file")
    return path


def entry(spiffe_id: str, uid: int) -> str:
    return f'[[entry]]\nspiffe_id = "{spiffe_id}"\nuid = {uid}\n'


class Agent:
    def __init__(self, tmp: Path) -> None:
        self.socket = tmp / "sock" / "agent.sock"
        self.registrations = tmp / "registrations.toml"
        self.registrations.write_text(entry(SPIFFE_ID, os.getuid()))
        self.log_path = tmp / "agent.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                agent_bin(),
                "--socket", str(self.socket),
                "--registrations", str(self.registrations),
                "--svid-ttl", "10m",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.socket.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"spike-agent exited early ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"socket never appeared:\n{self.log()}")
            time.sleep(0.05)

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=WAIT_SECONDS)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def agent(tmp_path: Path):
    a = Agent(tmp_path)
    try:
        yield a
    finally:
        a.stop()


def test_fetches_svid_and_bundle(agent: Agent) -> None:
    client = WorkloadApiClient(socket_path=agent.endpoint, default_timeout=WAIT_SECONDS)
    try:
        svid = client.fetch_x509_svid()
        assert str(svid.spiffe_id) == SPIFFE_ID
        leaf = svid.leaf
        uris = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
        assert uris == [SPIFFE_ID]
        assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False

        bundles = client.fetch_x509_bundles()
        bundle = bundles.get_bundle_for_trust_domain(TrustDomain("spike.dev"))
        assert bundle is not None
        authorities = list(bundle.x509_authorities)
        assert len(authorities) == 1
        ca = authorities[0]
        # The bundle holds the CA that signed the SVID.
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
        ca_uris = ca.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
        assert ca_uris == ["spiffe://spike.dev"]
        leaf.verify_directly_issued_by(ca)

        # The SVID response carries the same bundle.
        context = client.fetch_x509_context()
        ctx_bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain("spike.dev"))
        assert ctx_bundle is not None and ctx_bundle.x509_authorities == bundle.x509_authorities
    finally:
        client.close()

    assert agent.stop() == 0
    assert not agent.socket.exists(), "socket left behind after SIGTERM"
    assert "NOT a SPIRE replacement" in agent.log()


def test_unregistered_caller_is_denied_after_reload(agent: Agent) -> None:
    client = WorkloadApiClient(socket_path=agent.endpoint, default_timeout=WAIT_SECONDS)
    try:
        assert str(client.fetch_x509_svid().spiffe_id) == SPIFFE_ID

        # Re-register the ID for another user and reload with SIGHUP.
        agent.registrations.write_text(entry(SPIFFE_ID, os.getuid() + 1))
        agent.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                client.fetch_x509_svid()
            except FetchX509SvidError as e:
                assert "no identity issued" in str(e).lower() or "permission" in str(e).lower(), e
                break
            assert time.monotonic() < deadline, f"reload never took effect:\n{agent.log()}"
            time.sleep(0.1)
    finally:
        client.close()
