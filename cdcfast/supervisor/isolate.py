"""Finding the changes a warehouse refused in a batch, so that one bad change never stops a sink.

The screen (:mod:`cdcfast.sinks.poison`) catches the values cdcfast's own conversion refuses. A few
are refused only by the write itself: U+0000 in a range bound or a removed set element (PostgreSQL
jsonb), a key too big for a btree index row, a write timestamp beyond what the change log's time
column holds. Such an error is classified POISON (:mod:`cdcfast.sinks.errors`) and the whole batch
failed with it: PostgreSQL rolled the transaction back (data and checkpoint); ClickHouse may have
kept some of the batch's rows, which is harmless, since every write is idempotent.

:func:`apply_isolating` then applies the batch in parts, in commit log order and without moving the
checkpoint: a part that fails is halved at mutation boundaries (a mutation, the changes at one
commit log position, is applied whole while it can be), a failing part of at most
:data:`ONE_BY_ONE` mutations is tried one mutation at a time, and a failing mutation of several
changes one change at a time. A single change that still fails is the poison: it goes to the
sink's dead-letter table with the server's error. Only after every part is settled does the
checkpoint move to the batch's position (an empty apply: PostgreSQL's checkpoint transaction,
ClickHouse's checkpoint row), so a crash on the way replays the batch, and the dead letters
already stored are stored again as the same rows.

Bounded: with ``k`` poison changes among ``n`` mutations the parts applied number about
``2 k log2(n / ONE_BY_ONE) + k * ONE_BY_ONE``; a batch of nothing but poison costs about ``n / ONE_BY_ONE``
failed halvings and ``n`` single applies. Progress is logged every :data:`PROGRESS_SECONDS`; the
batch's one warning is the writer's, which counts these letters with the screened ones and names
the parts and seconds isolating took (:class:`Isolation`).
A transient or permanent error on the way is raised as it is: the writer retries the whole batch
(from its checkpoint, which has not moved) or takes the sink down.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from cdcfast.commitlog.schema import TableDef
from cdcfast.events import ChangeEvent
from cdcfast.sinks.errors import ErrorClass, classify
from cdcfast.sinks.poison import DeadLetter

ONE_BY_ONE = 8  # mutations: a failing part this small is tried one mutation at a time
PROGRESS_SECONDS = 5.0

Mutation = list[ChangeEvent]


@dataclass(frozen=True)
class Isolation:
    """What isolating a batch's poison took (the letters are the sink's ``dead_lettered``): the
    parts applied, the time."""

    parts: int
    seconds: float


def mutations(events: list[ChangeEvent]) -> list[Mutation]:
    """Consecutive changes read at the same commit log position: one mutation each."""
    out: list[Mutation] = []
    for event in events:
        if out and (out[-1][0].segment_id, out[-1][0].position) == (event.segment_id, event.position):
            out[-1].append(event)
        else:
            out.append([event])
    return out


def refusal(sink_name: str, event: ChangeEvent, exc: BaseException) -> str:
    """A dead letter's reason: the sink, the table, where the change was read, the server's words."""
    return (
        f"sink {sink_name} refused the change to {event.keyspace}.{event.table} read at segment "
        f"{event.segment_id} position {event.position}: {type(exc).__name__}: {exc}"
    )


def split(part: list[Mutation]) -> list[list[Mutation]]:
    """The parts to try after ``part`` failed: its changes one at a time for a single mutation, its
    mutations one at a time for a small part, else its two halves."""
    if len(part) == 1:
        return [[[e]] for e in part[0]]
    if len(part) <= ONE_BY_ONE:
        return [[m] for m in part]
    middle = len(part) // 2
    return [part[:middle], part[middle:]]


async def apply_isolating(
    sink: Any,
    events: list[ChangeEvent],
    tables: dict[tuple[str, str], TableDef],
    source: str,
    position: tuple[int, int],
    refused: BaseException,
    log: Any,
) -> Isolation:
    """Apply ``events``, which the sink refused whole with the POISON error ``refused``, in parts;
    store the changes it refuses alone as dead letters, then move the checkpoint to ``position``."""
    dead: list[DeadLetter] = []
    settled = attempts = 0
    started = reported = time.monotonic()

    async def bury(event: ChangeEvent, exc: BaseException) -> None:
        nonlocal settled
        letter = DeadLetter(event, refusal(sink.name, event, exc))
        await sink.store_dead_letters([letter], source)  # counted by the writer with the screened ones
        dead.append(letter)
        settled += 1

    parts: deque[list[Mutation]] = deque()
    if len(events) == 1:
        await bury(events[0], refused)
    elif events:
        parts.extend(split(mutations(events)))
    while parts:
        part = parts.popleft()
        flat = [e for mutation in part for e in mutation]
        attempts += 1
        try:
            await sink.apply(flat, tables, source, None)
            settled += len(flat)
        except Exception as exc:  # noqa: BLE001 - classified: anything but poison is the writer's
            if classify(exc) is not ErrorClass.POISON:
                raise
            if len(flat) == 1:
                await bury(flat[0], exc)
            else:
                parts.extendleft(reversed(split(part)))
        if time.monotonic() - reported >= PROGRESS_SECONDS:
            reported = time.monotonic()
            log.info(
                "isolating refused changes", settled=settled, events=len(events), dead_letters=len(dead), parts=attempts
            )
    await sink.apply([], tables, source, position)  # the checkpoint, once everything is settled
    return Isolation(attempts, round(time.monotonic() - started, 2))
