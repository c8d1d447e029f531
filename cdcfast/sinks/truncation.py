"""TRUNCATE in a batch, the same for every sink (docs/truncate.md, "What a sink does with it").

A batch of one table's events (one source, commit log order) with truncations in it changes the
state as: empty the table at its last truncation, then apply the changes that survive it. Those
are the changes after it in the batch, and the writes that raced it: this node's changes of the
table after the truncation's recorded position that were read before its record, whether in this
batch (at hand) or in earlier ones (the parser puts them on the event: ``raced``). Earlier
truncations of the batch and the changes before the last one are cleared anyway: only logged.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from cdcfast.events import TRUNCATE, ChangeEvent


class StateWork(NamedTuple):
    """What a table's batch does to the state: ``truncation`` (the last one, None if none) empties
    it first, then ``events`` are applied."""

    truncation: ChangeEvent | None
    events: list[ChangeEvent]


def recorded_position(event: ChangeEvent) -> tuple[int, int]:
    return event.truncated_segment_id, event.truncated_position


def state_work(events: list[ChangeEvent]) -> StateWork:
    """Split one table's batch (commit log order) into the truncation to apply and the changes to
    merge after it (all of them when there is no truncation)."""
    last = next((i for i in range(len(events) - 1, -1, -1) if events[i].op == TRUNCATE), None)
    if last is None:
        return StateWork(None, events)
    truncation = events[last]
    recorded = recorded_position(truncation)
    survivors: dict[bytes, ChangeEvent] = {e.event_id: e for e in truncation.raced}
    for event in events[:last]:
        if event.op != TRUNCATE and (event.segment_id, event.position) > recorded:
            survivors.setdefault(event.event_id, event)
    return StateWork(truncation, list(survivors.values()) + events[last + 1 :])


def record_json(event: ChangeEvent) -> bytes:
    """A truncation's record, as its change-log row keeps it (in ``range``: what it covers)."""
    return orjson.dumps(
        {
            "truncated_segment_id": event.truncated_segment_id,
            "truncated_position": event.truncated_position,
            "truncated_at": event.truncated_at,
        }
    )


def covered_by(
    source: str, segment_id: int, position: int, truncations: list[tuple[str, int, int]]
) -> tuple[str, int, int] | None:
    """The truncation (source, recorded segment, recorded position) of the same source that covers a
    change read at (segment_id, position), if any: a dead letter there must not come back."""
    for truncation in truncations:
        if truncation[0] == source and (segment_id, position) <= truncation[1:]:
            return truncation
    return None
