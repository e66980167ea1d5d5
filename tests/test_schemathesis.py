"""The admin API against its own /openapi.json: schemathesis generates valid and invalid requests for every
operation; none may answer 5xx or a status the schema does not list."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.conftest import Gateway

ADMIN_KEY = "admin-key-schemathesis-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
# ~60 operations x 2 modes x this many cases: about 20 s a backend on 2 idle cores.
EXAMPLES_PER_OPERATION = 10
BOUNDED = settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                   phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory({"admin_key": ADMIN_KEY})


def test_no_generated_request_gets_a_server_error_or_an_undocumented_status(gateway: Gateway) -> None:
    schema = schemathesis.openapi.from_url(gateway.url + "/openapi.json")
    session = requests.Session()
    failures: dict[tuple[str, int], str] = {}  # one report per operation and status
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        # An operation that takes nothing (no parameter, body or credential) has no invalid request to make.
        takes_something = operation.definition.raw.get("parameters") or operation.definition.raw.get(
            "requestBody") or operation.definition.raw.get("security")
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_something else (GenerationMode.POSITIVE,)
        for mode in modes:

            @BOUNDED
            @given(case=operation.as_strategy(generation_mode=mode))
            def probe(case: schemathesis.Case) -> None:
                response = case.call(base_url=gateway.url, session=session, headers=AUTH, timeout=30)
                try:
                    case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
                except BaseExceptionGroup as found:  # schemathesis' FailureGroup
                    failures.setdefault((operation.label, response.status_code), str(found))

            probe()
    assert operations >= 50, "the schema lost its operations"
    assert not failures, "\n\n".join(failures.values())
