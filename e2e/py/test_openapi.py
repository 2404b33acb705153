"""docs/openapi.yaml against the code: every /v1 route and method Nexus serves is documented,
nothing else is, and the error codes are exactly the wire codes of core/src/error.rs. The
schemathesis run (e2e/tests/e2e/contract.rs) checks the answers themselves."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"get", "put", "post", "delete", "patch"}


def spec():
    return yaml.safe_load((ROOT / "docs/openapi.yaml").read_text())


def routes_in_source():
    """(method, path) of every `.route("PATH", method(..).method(..))` in Nexus's routes."""
    found = set()
    for file in sorted((ROOT / "nexus/src/routes").glob("*.rs")):
        src = file.read_text()
        for m in re.finditer(r'\.route\(\s*"([^"]+)"', src):
            i, depth = m.end(), 1
            while depth:
                depth += {"(": 1, ")": -1}.get(src[i], 0)
                i += 1
            path = re.sub(r"\{\*(\w+)\}", r"{\1}", m.group(1))
            for method in re.findall(r"\b(get|put|post|delete|patch)\(", src[m.end() : i]):
                found.add((method, path))
    return {r for r in found if r[1].startswith("/v1/")}


def routes_in_spec():
    return {
        (method, path)
        for path, ops in spec()["paths"].items()
        for method in ops
        if method in METHODS
    }


def test_the_source_scan_finds_the_routes():
    # A guard against a scan that silently finds nothing.
    found = routes_in_source()
    assert ("put", "/v1/secrets/data/{path}") in found
    assert ("post", "/v1/tokens/{id}/revoke") in found
    assert len(found) >= 30


def test_every_route_is_documented_and_nothing_else():
    code, documented = routes_in_source(), routes_in_spec()
    assert sorted(code - documented) == [], "served but not in docs/openapi.yaml"
    assert sorted(documented - code) == [], "in docs/openapi.yaml but not served"


def test_error_codes_are_the_wire_codes():
    src = (ROOT / "core/src/error.rs").read_text()
    wire = set(re.findall(r'Self::\w+ => "([a-z_]+)"', src))
    assert len(wire) > 20
    documented = set(spec()["components"]["schemas"]["ErrorCode"]["enum"])
    assert documented == wire


def test_it_is_openapi_3_1_with_unique_operation_ids():
    doc = spec()
    assert doc["openapi"].startswith("3.1")
    ids = [
        op["operationId"]
        for ops in doc["paths"].values()
        for method, op in ops.items()
        if method in METHODS
    ]
    assert len(ids) == len(set(ids))


def test_the_gateway_refusal_codes_are_the_gateways():
    src = (ROOT / "gateway/src/refusal.rs").read_text()
    own = set(re.findall(r'Self::\w+ => "([a-z_]+)"', src))
    assert "value_in_request" in own
    code = spec()["components"]["schemas"]["GatewayRefusal"]["properties"]["error"][
        "properties"
    ]["code"]
    documented = {c for branch in code["anyOf"] for c in branch.get("enum", [])}
    assert documented == own
