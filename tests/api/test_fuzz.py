"""Schema-driven fuzzing (schemathesis) of every operation of the OpenAPI document, against the app with its workers
and the tiny models: no 5xx, no hang (each call has a deadline), and every response matches the schema declared for
its status. Bounded: a few examples per operation, no shrinking, the whole run well under a minute."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.checks import content_type_conformance, response_schema_conformance  # noqa: E402

from wanserve.api.app import create_app  # noqa: E402
from wanserve.config import Settings  # noqa: E402

EXAMPLES_PER_OPERATION = 8
CALL_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory):
    """The app with one worker on the tiny models (the image route waits for its job), started once."""
    from fastapi.testclient import TestClient

    data = tmp_path_factory.mktemp("fuzz")
    app = create_app(
        Settings(
            data_dir=data,
            models=["tiny-t2v", "tiny-i2v", "tiny-animate"],
            concurrency=1,
            max_queue=16,
            poll_interval_s=0.2,
            legacy_input_dir=data,
            animate_jobs_root=data,
        )
    )
    with TestClient(app):  # runs the lifespan: workers load their models
        for worker, _device in app.state.runtime.pool.workers:
            assert worker.ready.wait(120), "the tiny models did not load"
        yield app


def test_every_operation_no_5xx_and_matches_schema(fuzzed_app):
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 29  # every route family is in the document
    failures = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case):
            response = case.call(timeout=CALL_TIMEOUT_S)
            # 503 is documented where it is an answer (health while starting); any other 5xx is a bug.
            assert response.status_code < 500 or (
                response.status_code == 503 and case.operation.path.startswith("/health")
            ), f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
            case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])

        try:
            call()
        except Exception as exc:  # noqa: BLE001 - collected, reported together
            failures.append(f"{operation.verbose_name}: {exc}")
    assert not failures, "\n\n".join(failures)
