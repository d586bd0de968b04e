"""Property-based contract test of the whole HTTP API from its own OpenAPI document, with schemathesis.

Every operation in /openapi.json, the V2 protocol ones included, gets a bounded number of generated requests
against a real server: none may answer 5xx, and every documented response must match its schema.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from harness import ServerProcess, running_server
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from support import V1_SMALL

CONFIG = {
    "models": [V1_SMALL],
    "default_model": V1_SMALL,
    "max_body_bytes": 1024 * 1024,
    "intra_op_threads": 1,
}
EXPECTED_OPERATIONS = {
    ("POST", "/classify"), ("POST", "/embed"), ("POST", "/backbone"), ("POST", "/detect"), ("POST", "/segment"),
    ("GET", "/v1/models"), ("GET", "/v1/models/{name}"), ("GET", "/healthz"), ("GET", "/readyz"),
    ("GET", "/metrics"), ("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/{name}"), ("GET", "/v2/models/{name}/ready"), ("GET", "/v2/models/{name}/config"),
    ("POST", "/v2/models/{name}/infer"),
}  # fmt: skip
EXAMPLES = 60
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("contract"), CONFIG) as process:
        yield process


@pytest.fixture(scope="module")
def api_schema(contract_server: ServerProcess) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(contract_server.url + "/openapi.json")


def test_every_route_is_in_the_document(api_schema: schemathesis.BaseSchema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert EXPECTED_OPERATIONS <= found, EXPECTED_OPERATIONS - found


# Driven through Hypothesis directly rather than schemathesis's pytest plugin, whose collection hooks do not
# work with the pytest this project pins; one test per operation keeps the failures readable.
@pytest.mark.parametrize(("method", "path"), sorted(EXPECTED_OPERATIONS))
def test_api_contract(api_schema: schemathesis.BaseSchema, method: str, path: str) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS, timeout=30)

    run()
