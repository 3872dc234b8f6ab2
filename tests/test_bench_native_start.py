"""The native start benchmark's pure parts (benchmarks/native_start.py); its starts need Docker."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict

import pytest

from benchmarks import native_start as ns


def test_a_wait_finds_a_state_at_its_first_check_at_or_after_it():
    assert ns.found_at(0.0, 0.0, iter([1.0])) == 0.0  # there at the first check
    assert ns.found_at(1.0, 0.0, itertools.repeat(0.5)) == 1.0
    assert ns.found_at(1.01, 0.0, itertools.repeat(0.5)) == 1.5
    assert ns.found_at(0.3, 0.2, iter([0.05, 0.1])) == pytest.approx(0.35)


def test_the_spawner_asks_for_the_answer_from_the_check_that_found_the_task_running():
    before_task, before_answer = ns.schedules()["before"]
    # task running at 1.2 s: found at 2.5 s (checks at 0, 1.0, 2.5); answering since 1.6 s: found there
    assert ns.spawner_sees(1.2, 1.6, before_task(), before_answer()) == 2.5
    now_task, now_answer = ns.schedules()["now"]
    # task checks at 0, .25, .625, 1.1875, 2.031: running seen at 2.031; answering since 1.6 s: found there
    assert ns.spawner_sees(1.2, 1.6, now_task(), now_answer()) == pytest.approx(2.03125)
    # running at 0.33 s, answering at 0.71 s (this machine's p50): seen at 0.625, then 0.675, 0.75
    assert ns.spawner_sees(0.33, 0.71, now_task(), now_answer()) == pytest.approx(0.75)
    # the earlier schedule: task found at 1.0, then answers every 0.5 s
    assert ns.spawner_sees(0.8, 1.1, before_task(), before_answer()) == 1.5


def test_the_schedules_now_are_the_spawners_defaults():
    from cablab_cluster.bundle import cablab_hub

    task, answer = ns.schedules()["now"]
    traits = cablab_hub.CablabSwarmSpawner.class_traits()
    assert next(task()) == traits["start_check_interval"].default_value
    assert list(itertools.islice(answer(), 8))[-1] == traits["ready_check_interval"].default_value


def test_the_report_compares_when_the_spawner_finds_a_start_with_its_first_answer():
    r = ns.Report("img:1", "now", starts=[
        ns.Start(0.8, 1.4, {"now": 1.47, "before": 1.5}),
        ns.Start(0.9, 1.5, {"now": 1.55, "before": 2.5}),
        ns.Start(0.7, 1.3, {"now": 1.4, "before": 1.5})])
    r.summarize()
    assert (r.running.p50, r.answered.p50, r.spawner["now"].p50, r.spawner["before"].p50) == (0.8, 1.4, 1.47, 1.5)
    assert r.over_answered_p50 == {"now": 1.05, "before": 1.071}
    table = r.table()
    assert "the spawner finds it (before schedules)     3   1.50   1.50   2.50" in table
    assert "spawner (now) p50 / first answer p50: 1.05" in table
    assert json.loads(json.dumps(asdict(r)))["starts"][0]["spawner_s"] == {"now": 1.47, "before": 1.5}
