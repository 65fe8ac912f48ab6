"""`foundry projections run` on PostgreSQL: the views kept in a process of their own (the
library's ProjectionRunner), killed and restarted, catch up with nothing applied twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, drop_schema, pg_schema_url
from tests.integration.test_projection_rebuild import events_only

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def store(tmp_path) -> Iterator[Any]:
    from foundry.adapters.bootstrap import Foundry

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with Foundry.open(pg_schema_url(schema), state_dir=tmp_path / "state") as foundry:
        yield foundry
    drop_schema(schema)


def write_recipes(foundry: Any, recipe_data: dict[str, Any], n: int, start: int) -> None:
    """Events only (the handlers would write the view in the same transaction)."""
    with events_only(foundry):
        for i in range(start, start + n):
            foundry.recipes.create_recipe({**recipe_data, "name": f"p{i:04d}"},
                                          recipe_id=None, author="bench", command_id=None)


def rows(foundry: Any) -> list[dict[str, Any]]:
    view = foundry.recipe_view
    return view.fetch(f"SELECT * FROM {view.table} ORDER BY id", [])


def position(foundry: Any) -> int:
    return int(foundry.recipe_view.max_tracking_id("RecipeBook") or 0)


def projections_process(foundry: Any, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "foundry.adapters.cli.main", "--db", foundry.config.url,
         "projections", "run", "--seconds", str(seconds)], cwd=ROOT, stderr=subprocess.PIPE)


def wait_for_position(foundry: Any, at_least: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reached = position(foundry)
        if reached >= at_least:
            return reached
        time.sleep(0.02)
    pytest.fail(f"the projections process did not reach position {at_least} in {timeout}s")


def test_a_killed_projections_process_restarts_where_it_stopped(store, recipe_data):
    write_recipes(store, recipe_data, 400, 0)
    last = store.recipes.recorder.max_notification_id()
    assert position(store) == 0 and rows(store) == []

    first = projections_process(store, seconds=120)
    killed_at = wait_for_position(store, 1, 60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    stopped = position(store)
    assert killed_at <= stopped < last, "killed before it finished (else nothing is tested)"
    assert len(rows(store)) == stopped  # rows and tracking moved together

    write_recipes(store, recipe_data, 100, 400)
    last = store.recipes.recorder.max_notification_id()
    second = projections_process(store, seconds=8)
    wait_for_position(store, last, 60)
    _, err = second.communicate(timeout=60)
    # A re-applied event fails its tracking insert and stops the runner with an error.
    assert second.returncode == 0, err.decode()[-2000:]
    caught_up = rows(store)
    assert len(caught_up) == 500 and position(store) == last

    store.recipe_host.rebuild()
    assert rows(store) == caught_up
