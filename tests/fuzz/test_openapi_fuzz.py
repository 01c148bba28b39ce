"""schemathesis over every operation of a live orchestrator's ``/openapi.json``, as four callers (a user
key, a worker key, an admin key and no key): no generated request may get a server error (5xx), and what
the server answers must match what the schema declares for it (content type; body of a declared status).

Bounded and deterministic so CI is quick and not flaky: ``SDFLEET_FUZZ_EXAMPLES`` cases per operation
and generation mode (valid and invalid data), Hypothesis derandomized, no example database. Each case is
sent once per caller. One pytest test per operation, collected from the app's own schema, so a failure
names its route.

schemathesis' own pytest integration (``from_fixture``) does not run under pytest 9 (it reads
``Node._nodeid``), so the cases come from its Hypothesis strategies (``APIOperation.as_strategy``) and
its checks, driven here.
"""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from sdfleet.api.app import create_app
from sdfleet.config import Settings
from tests.fuzz.conftest import FUZZ_EXAMPLES, Identities
from tests.support.live import Orchestrator

pytestmark = [
    pytest.mark.fuzz,
    # schemathesis' own strategies draw from `random`; Hypothesis seeds it per example, so runs repeat
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]

CONFIG = SchemathesisConfig.from_dict({"seed": 14})

CHECKS = [not_a_server_error, content_type_conformance]
"""Checked on every answer. The body's schema is checked on 2xx answers only: FastAPI declares its own
422 shape for every route, while the app answers with its error envelopes (checked below)."""


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation the app declares; built in-process, no server needed."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = create_app(Settings(data_dir=tmp)).openapi()
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]


OPERATIONS = _operations()


def assert_error_envelope(path: str, response: Any) -> None:
    """A refusal is JSON in the envelope of its API: on ``/sdapi`` A1111's (``detail``: FastAPI's list for a
    body that does not fit the model, as A1111 answers, else a message), the native one elsewhere."""
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), (content_type, response.text[:200])
    body = response.json()
    if path.startswith("/sdapi/") or path.startswith("/internal/"):
        assert isinstance(body.get("detail"), str | list) and body["detail"], body
    else:
        assert isinstance(body.get("error"), dict) and body["error"].get("message"), body


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_orchestrator: tuple[Orchestrator, Identities]) -> Any:
    orch, _ = fuzz_orchestrator
    return schemathesis.openapi.from_url(f"{orch.url}/openapi.json", config=CONFIG)


def test_the_schema_lists_every_operation(fuzz_schema: Any) -> None:
    """The live schema is the one the tests were collected from (no route hidden from the fuzzer)."""
    live = {(op.ok().method.upper(), op.ok().path) for op in fuzz_schema.get_all_operations()}
    assert live == set(OPERATIONS)
    assert len(OPERATIONS) > 60


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors_for_any_caller(
    fuzz_schema: Any, fuzz_orchestrator: tuple[Orchestrator, Identities], method: str, path: str
) -> None:
    """Every operation, every caller, valid and invalid data: no 5xx, and answers as declared."""
    _, identities = fuzz_orchestrator
    operation = fuzz_schema[path][method]
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=2 * FUZZ_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        for name, headers in identities.headers.items():
            response = case.call(headers=headers, timeout=30)
            try:
                ok = 200 <= response.status_code < 300
                checks = [*CHECKS, response_schema_conformance] if ok else CHECKS
                case.validate_response(response, checks=checks, headers=headers)
                if response.status_code >= 400:
                    assert_error_envelope(path, response)
            except Exception as exc:
                exc.add_note(f"as the {name} caller")
                raise

    run()
