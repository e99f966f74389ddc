"""The real server answers as its OpenAPI schema says (schemathesis, a few hundred generated cases, valid and
invalid): every status and media type it sends is documented, every body matches its schema, and nothing is a
server error."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

pytestmark = pytest.mark.integration

CASES_PER_OPERATION = 200  # operations without inputs stop after their one case: about 200 cases in all


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def operations(api_schema) -> list:
    return [result.ok() for result in api_schema.get_all_operations()]


def test_server_conforms_to_its_openapi_schema(api_schema, server):
    found = operations(api_schema)
    assert {op.path for op in found} >= {"/v1/audio/transcriptions", "/v1/models", "/metrics", "/readyz"}
    for operation in found:
        cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

        @given(case=cases)
        @settings(max_examples=CASES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def conforms(case) -> None:
            # Every check but one: a schema cannot say that `file` must hold decodable audio, so a schema-valid
            # upload of random bytes is rightly refused (415/422, both documented).
            case.call_and_validate(base_url=server.url, excluded_checks=[positive_data_acceptance], timeout=60)

        conforms()


def test_schema_documents_errors_metrics_and_seed(server):
    spec = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    upload = spec["paths"]["/v1/audio/transcriptions"]["post"]
    assert {"400", "404", "413", "415", "422", "503", "504"} <= set(upload["responses"])
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert form["seed"]["maximum"] == 2**32 - 1 and form["denoising_steps"]["maximum"] == 64
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
