"""`foundry worker` builds the `ray start` command; the store URL given to nodes has no secret."""

from __future__ import annotations

import json
import shlex

import pytest

from foundry.adapters.cli.main import main
from foundry.adapters.store.config import parse_database_url


def test_worker_dry_run_prints_ray_start_with_labels_and_resources(capsys, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert main(["worker", "--class", "rtx-5090", "--site", "lab-2", "--address",
                 "head.lab:6379", "--num-gpus", "2", "--vram-gb", "32", "--dry-run"]) == 0
    argv = shlex.split(capsys.readouterr().out)
    assert argv[1:5] == ["-m", "ray.scripts.scripts", "start", "--block"]
    option = {argv[i]: argv[i + 1] for i in range(4, len(argv) - 1) if argv[i].startswith("--")
              and not argv[i + 1].startswith("--")}
    assert option["--labels"] == "foundry.class=rtx-5090,foundry.site=lab-2"
    assert json.loads(option["--resources"]) == {"foundry.slot": 2.0, "vram-gb": 64.0}
    assert option["--num-gpus"] == "2" and option["--address"] == "head.lab:6379"


def test_worker_counts_visible_gpus_and_can_start_a_head(capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,3")
    assert main(["worker", "--class", "h100", "--site", "dc", "--head", "--port", "6380",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--num-gpus 3" in out and "--head --port 6380" in out
    assert '"foundry.slot": 3.0' in out


@pytest.mark.parametrize(("args", "message"), [
    (["--class", "cpu", "--site", "desk"], "--address: give the Ray head"),
    (["--class", "RTX 5090", "--site", "lab", "--head"], "node class 'RTX 5090': use 1-63"),
    (["--class", "cpu", "--site", "lab-", "--head"], "site 'lab-': use 1-63"),
])
def test_worker_refuses_bad_input_naming_the_option(capsys, monkeypatch, args, message):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["worker", *args, "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_a_url_handed_to_other_nodes_carries_no_password_and_pgpassword_fills_it(monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    config = parse_database_url("postgresql://forge:s3cret@db.lab:5432/foundry?schema=runs")
    assert config.pg_password == "s3cret" and "s3cret" not in config.url_without_password
    assert parse_database_url(config.url_without_password).pg_password == ""
    monkeypatch.setenv("PGPASSWORD", "from-env")
    again = parse_database_url(config.url_without_password)
    assert again.pg_password == "from-env" and again.pg_schema == "runs"
    assert again.pg_conninfo()["password"] == "from-env"
