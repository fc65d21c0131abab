"""Literal substrings that every match of a regular expression must contain.

The user-agent matcher uses them to skip patterns whose literal cannot occur in a
user agent, because searching one alternation of 1,500 patterns costs about a
millisecond per user agent in CPython 3.11's `re`.

The analysis is conservative: it may report fewer literals than a pattern
requires, but every literal it reports occurs in every match.
"""

from __future__ import annotations

import re

# A `{m}`, `{m,}`, `{,n}` or `{m,n}` repetition. Any other `{` is a literal in `re`.
_REPETITION = re.compile(r"\{\d*(?:,\d*)?\}")

# Global inline flags such as `(?i)` change what a literal matches.
_GLOBAL_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")

# Group references keep their meaning only inside the original pattern.
_GROUP_REFERENCE = re.compile(r"\\\d|\(\?P=")

_BREAKING_CHARACTERS = frozenset(".^$)}")


def split_alternatives(pattern: str) -> list[str]:
    """Split a pattern at its top-level `|` into patterns with the same union of matches.

    Return the pattern unchanged, as the only item, when it contains group
    references, since splitting would renumber or orphan the referenced groups.
    """
    if _GROUP_REFERENCE.search(pattern):
        return [pattern]

    alternatives: list[str] = []
    depth = 0
    start = 0
    index = 0
    while index < len(pattern):
        character = pattern[index]
        if character == "\\":
            index += 2
            continue
        if character == "[":
            index = _skip_character_class(pattern, index)
            continue
        if character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
        elif character == "|" and depth == 0:
            alternatives.append(pattern[start:index])
            start = index + 1
        index += 1
    alternatives.append(pattern[start:])
    return alternatives


def required_literals(pattern: str) -> list[str]:
    """Return runs of literal characters that occur, unchanged, in every match of the pattern.

    Return no runs for a pattern with global inline flags, group references or a
    top-level alternation, because no single run is then guaranteed.
    """
    if _GLOBAL_FLAGS.search(pattern) or _GROUP_REFERENCE.search(pattern):
        return []
    if len(split_alternatives(pattern)) > 1:
        return []

    runs: list[str] = []
    current: list[str] = []

    def end_run() -> None:
        if current:
            runs.append("".join(current))
            current.clear()

    index = 0
    while index < len(pattern):
        character = pattern[index]

        if character == "\\":
            escaped = pattern[index + 1 : index + 2]
            if escaped and not escaped.isalnum():
                current.append(escaped)
            else:
                # Classes (\d), anchors (\b) and control escapes (\n) end the run.
                end_run()
            index += 2
            continue

        if character in "?*":
            # The preceding atom may be absent, so it is not required.
            if current:
                current.pop()
            end_run()
            index += 1
            continue

        if character == "{":
            repetition = _REPETITION.match(pattern, index)
            if repetition is None:
                end_run()
                index += 1
                continue
            if current:
                current.pop()
            end_run()
            index = repetition.end()
            continue

        if character == "+":
            # The preceding atom occurs at least once, but repeats may follow it.
            end_run()
            index += 1
            continue

        if character == "[":
            end_run()
            index = _skip_character_class(pattern, index)
            continue

        if character == "(":
            end_run()
            index = _skip_group(pattern, index)
            continue

        if character in _BREAKING_CHARACTERS:
            end_run()
            index += 1
            continue

        current.append(character)
        index += 1

    end_run()
    return runs


def _skip_character_class(pattern: str, start: int) -> int:
    """Return the index just past the character class that opens at `start`."""
    index = start + 1
    if pattern[index : index + 1] == "^":
        index += 1
    if pattern[index : index + 1] == "]":
        index += 1
    while index < len(pattern) and pattern[index] != "]":
        index += 2 if pattern[index] == "\\" else 1
    return index + 1


def _skip_group(pattern: str, start: int) -> int:
    """Return the index just past the group that opens at `start`."""
    depth = 0
    index = start
    while index < len(pattern):
        character = pattern[index]
        if character == "\\":
            index += 2
            continue
        if character == "[":
            index = _skip_character_class(pattern, index)
            continue
        if character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return index
