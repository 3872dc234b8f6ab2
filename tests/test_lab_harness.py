"""The lab harness's report (lab/harness.py); the lab itself needs VMs."""

from __future__ import annotations

from lab.harness import PHASES, Report


def test_the_budget_is_converge_idempotence_and_verify_only():
    r = Report("ubuntu", phases={"up": 200.0, "provision": 250.0, "idempotence": 60.0, "verify": 400.0,
                                 "drills": 540.0, "bench": 900.0})
    assert r.budget() == 710.0
    assert Report("ubuntu", phases={"verify": 400.0}).budget() is None


def test_the_bench_and_the_upgrade_come_after_the_drills():
    """Outside the converge + verify budget; the upgrade last, as it leaves the cluster upgraded."""
    assert PHASES[-3:] == ("drills", "bench", "upgrade")
