"""The hostile tables cover the whole API: every operation in the app's own /openapi.json has
cases, and there are at least 150 of them."""

from __future__ import annotations

import re

from tests.hostile import test_bodies, test_fields, test_images, test_names, test_prompts, test_training

ALL = [*test_bodies.CASES, *test_fields.CASES, *test_images.CASES, *test_names.CASES, *test_names.SHARED_CASES, *test_prompts.CASES,
       *test_training.CASES, *test_training.SHARED_CASES]


def test_every_route_in_openapi_has_hostile_cases(hostile):
    spec = hostile.client.get("/openapi.json").json()
    missing = []
    for path, operations in spec["paths"].items():
        pattern = re.compile("^" + "/".join("[^/]+" if part.startswith("{") else re.escape(part) for part in path.split("/")) + "$")
        for method in operations:
            if not any(case.method == method.upper() and pattern.match(case.path) for case in ALL):
                missing.append(f"{method.upper()} {path}")
    assert not missing, f"routes without hostile cases: {missing}"


def test_case_ids_are_unique_and_many():
    ids = [case.id for case in ALL]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert len(ids) >= 150
