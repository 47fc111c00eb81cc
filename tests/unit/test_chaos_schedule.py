"""A chaos run's schedule comes from its seed: the same seed draws the same faults."""

from __future__ import annotations

import random
import subprocess
import sys

from ops.cli_chaos import SCENARIO_NAMES
from ops.dev.chaos_checks import Verdict
from ops.dev.chaos_schedule import SCENARIOS, Action
from topics.faults import FAULT_ENV
from topics.settings import REPO_ROOT

WORKERS = ["status_agent", "fees_agent", "ledger_agent", "ledger_sink", "audit_sink", "outbox_relay", "api"]


def draw(name: str, seed: int, window: float = 60.0):
    return SCENARIOS[name].draw(random.Random(f"{name}:{seed}"), window, WORKERS)


def test_the_cli_offers_every_scenario_in_the_issue_order():
    assert list(SCENARIO_NAMES) == list(SCENARIOS)
    assert [s.number for s in SCENARIOS.values()] == list(range(1, 11))


def test_the_same_seed_draws_the_same_schedule_and_another_seed_another():
    for name in SCENARIOS:
        assert draw(name, 7) == draw(name, 7), name
    assert draw("kill-worker", 7).actions != draw("kill-worker", 8).actions


def test_every_fault_that_takes_something_away_gives_it_back_within_the_window():
    for name in SCENARIOS:
        for seed in range(20):
            actions = sorted(draw(name, seed).actions, key=lambda a: a.at)
            stopped = {a.target for a in actions if a.kind in ("sigstop", "service-sigstop", "service-kill")}
            resumed = {a.target for a in actions if a.kind in ("sigcont", "service-sigcont", "service-start")}
            assert stopped <= resumed, f"{name} seed {seed}: {stopped - resumed} left down"
            assert actions and all(a.at >= 0 for a in actions)
            assert actions[-1].at <= 60.0 + 2 * 15 + 60, f"{name} seed {seed} ends at {actions[-1].at}"


def test_a_zombie_stays_stopped_past_the_session_timeout():
    for seed in range(20):
        stop, cont = draw("zombie", seed).actions
        assert stop.kind == "sigstop" and cont.kind == "sigcont" and stop.target == cont.target
        assert cont.at - stop.at > 10.0


def test_crash_points_arm_workers_with_a_point_the_runtime_knows():
    chosen = draw("crash-points", 3)
    assert len(chosen.env) == 4
    assert {env[FAULT_ENV].split("@")[0] for env in chosen.env.values()} == {"after_work", "before_flush"}


def test_a_verdict_names_each_broken_invariant():
    verdict = Verdict(lost=["1 of 3 transfers not final"], dead_letter_problems=["2 new, 0 bad inputs"])
    assert verdict.broken == ["I1 lost: 1 of 3 transfers not final", "I5 dead letters: 2 new, 0 bad inputs"]
    assert Verdict().broken == []
    assert str(Action(1.25, "kill", "fees_agent")) == "   1.2s kill fees_agent"


def test_a_wrong_scenario_gets_one_line_not_a_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "chaos", "--scenario", "meteor"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown scenario meteor" in done.stderr and "Traceback" not in done.stderr


def test_a_failed_runs_logs_are_kept_where_the_next_run_does_not_clear_them(tmp_path, catalog):
    from ops.dev.chaos import Chaos
    from topics.codec import AvroCodec
    from topics.schemas import load_store
    from topics.settings import Settings

    settings = Settings().model_copy(update={"home": tmp_path})
    chaos = Chaos(
        settings,
        AvroCodec(load_store(REPO_ROOT / "avro")),
        catalog,
        SCENARIOS["zombie"],
        4,
        transfers=1,
        minutes=0.2,
    )
    logs = chaos.supervisor.folder / "logs"
    logs.mkdir(parents=True)
    (logs / "ledger_sink.log").write_text("rejoined the group\n")
    chaos.supervisor.log.write_text("INFO exited: ledger_sink\n")
    kept = chaos.keep_logs()
    assert kept == chaos.supervisor.folder / "failed" / f"zombie-seed4-{chaos.run_id}"
    assert (kept / "logs" / "ledger_sink.log").read_text() == "rejoined the group\n"
    assert (kept / "supervisord.log").read_text() == "INFO exited: ledger_sink\n"
