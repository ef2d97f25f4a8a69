"""Schema fuzzing with schemathesis against a live 2-worker server (built-in models): bounded, fixed seed.

Every response must be one the OpenAPI schema documents (status code, content type, body schema, headers), and the
only 5xx allowed is the documented 503 (busy, loading, storage unavailable). schemathesis's pytest plugin
(``from_fixture``) does not run under pytest 9, so the operations' Hypothesis strategies are driven here directly.
Run with ``-s`` for the count of cases per operation and status."""

from __future__ import annotations

import time
from collections import Counter

import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# (generation mode, cases per operation): valid data, then data that breaks the schema (it must be refused with a
# documented 4xx). About 20 operations: a few hundred cases.
BUDGET = ((GenerationMode.POSITIVE, 10), (GenerationMode.NEGATIVE, 5))
SEED = 12


def no_5xx_but_503(ctx, response, case) -> None:  # noqa: ANN001
    """The only server error the API may answer is its documented 503."""
    assert response.status_code < 500 or response.status_code == 503, (
        f"{case.method} {case.path} answered {response.status_code}: {response.text[:300]}")


CHECKS = [no_5xx_but_503, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


def _fuzz(operation, mode: GenerationMode, examples: int, base_url: str, seen: Counter, failures: list) -> None:  # noqa: ANN001
    @seed(SEED)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:  # noqa: ANN001
        response = case.call(base_url=base_url, timeout=60)
        seen[f"{case.method} {case.path} {mode.value} {response.status_code}"] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{case.method} {case.path} [{mode.value}] → {response.status_code}: {str(exc)[:600]}")

    try:
        run()
    except Unsatisfiable:  # nothing to break in an operation without parameters or body (negative mode)
        assert mode is GenerationMode.NEGATIVE


def test_api_conforms_to_its_schema(builtin_server) -> None:  # noqa: ANN001
    schema = schemathesis.openapi.from_url(builtin_server.url + "/openapi.json")
    seen: Counter[str] = Counter()
    failures: list[str] = []
    t0 = time.monotonic()
    for result in schema.get_all_operations():
        for mode, examples in BUDGET:
            _fuzz(result.ok(), mode, examples, builtin_server.url, seen, failures)
    took = time.monotonic() - t0
    total = sum(seen.values())
    print(f"\nschemathesis: {total} cases in {took:.1f} s (seed {SEED}), {len(failures)} failing")
    for key, n in sorted(seen.items()):
        print(f"  {n:4d}  {key}")
    for f in failures[:20]:
        print("FAIL", f)
    assert 100 <= total <= 600
    assert not failures, "\n\n".join(dict.fromkeys(failures))
