"""When the supervisor restarts the pipeline after a child failed, and when it gives up."""

from __future__ import annotations

from cdcfast.supervisor.restart import RestartPolicy


def test_real_failures_back_off_doubling_up_to_the_cap() -> None:
    policy = RestartPolicy(give_up_after=None, base=1.0, cap=8.0)
    delays = [policy.after_failure(killed=False, made_progress=False) for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_kills_from_outside_restart_at_once_and_never_grow_the_delay() -> None:
    policy = RestartPolicy(give_up_after=3, base=1.0, cap=8.0)
    assert [policy.after_failure(killed=True, made_progress=False) for _ in range(50)] == [1.0] * 50
    # ... and do not count towards giving up, nor hide the real failures' backoff
    assert policy.after_failure(killed=False, made_progress=False) == 1.0
    assert policy.after_failure(killed=True, made_progress=False) == 1.0
    assert policy.after_failure(killed=False, made_progress=False) == 2.0


def test_progress_between_failures_starts_the_count_anew() -> None:
    policy = RestartPolicy(give_up_after=3, base=1.0, cap=8.0)
    assert policy.after_failure(killed=False, made_progress=False) == 1.0
    assert policy.after_failure(killed=False, made_progress=False) == 2.0
    assert policy.after_failure(killed=False, made_progress=True) == 1.0
    assert policy.after_failure(killed=False, made_progress=False) == 2.0
    assert policy.after_failure(killed=False, made_progress=False) is None  # third in a row: give up
