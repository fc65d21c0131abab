"""Click-burst detection over the clicks of one contact on one message."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from server.domain.classification.facts import EarlierClick
from server.domain.classification.rules import BurstRule


def find_burst_clicks(
    occurred_at: datetime,
    earlier_clicks: Sequence[EarlierClick],
    rules: Sequence[BurstRule],
) -> tuple[EarlierClick, ...] | None:
    """Return the earlier clicks that share a burst with a click at `occurred_at`.

    Return None when the new click belongs to no burst. A burst is a set of at
    least `rule.min_clicks` clicks, the new click included, whose times span at
    most `rule.window`. The result lists every earlier click of every burst that
    contains the new click, in time order, whether stored as human or not.
    """
    members: set[int] = set()
    for rule in rules:
        members.update(_burst_members(occurred_at, earlier_clicks, rule))
    if not members:
        return None

    ordered = sorted(members, key=lambda position: earlier_clicks[position].occurred_at)
    return tuple(earlier_clicks[position] for position in ordered)


def _burst_members(occurred_at: datetime, earlier_clicks: Sequence[EarlierClick], rule: BurstRule) -> set[int]:
    """Return the positions of earlier clicks in bursts under `rule` that contain the new click.

    Slides a window over the clicks sorted by time. Every window that starts at a
    click no later than the new click and reaches the new click is checked.
    """
    # Position -1 stands for the new click.
    nearby = [(occurred_at, -1)]
    for position, click in enumerate(earlier_clicks):
        if abs(click.occurred_at - occurred_at) <= rule.window:
            nearby.append((click.occurred_at, position))
    if len(nearby) < rule.min_clicks:
        return set()
    nearby.sort()

    members: set[int] = set()
    end = 0
    for start, (start_time, _) in enumerate(nearby):
        if start_time > occurred_at:
            break
        end = max(end, start)
        while end + 1 < len(nearby) and nearby[end + 1][0] - start_time <= rule.window:
            end += 1
        if end - start + 1 >= rule.min_clicks:
            members.update(position for _, position in nearby[start : end + 1])
    members.discard(-1)
    return members
