"""Step names: deterministic DNS labels that tell apart objects (by name and UID),
generations and attempts, whatever the object's name (a DNS subdomain, up to 253)."""

from __future__ import annotations

import random
import re

import pytest

from bertops.operator.planners.common import step_name

LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
UIDS = ["6f1c0e2a-8b7d-4c5e-9f00-1234567890ab", "uid-obj", "", "X"]


def _names(seed: int, count: int) -> list[str]:
    """Object names as the API server accepts them (DNS subdomains: dots, up to 253)."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-."
    found = []
    for _ in range(count):
        size = rng.choice([1, 2, 30, 40, 57, 63, 64, 120, 253])
        middle = "".join(rng.choice(alphabet) for _ in range(max(size - 2, 0)))
        found.append((rng.choice("abc19") + middle + rng.choice("xyz09"))[:size])
    return found


@pytest.mark.parametrize(
    "name",
    ["a", "tweets", "x" * 52, "y" * 63, "a.b.c", "a-.-b", "9lives", "z" * 253, *_names(7, 200)],
)
def test_step_names_are_dns_labels(name: str) -> None:
    """Every object name, step code, generation, attempt and UID gives a DNS label of at
    most 57 characters (room for an Indexed Job's "-<index>" pod hostnames)."""
    for step, generation, attempt, uid in [
        ("prep", 1, 1, UIDS[0]),
        ("train", 2**63 - 1, 10, UIDS[1]),
        ("cmp", 999, 3, UIDS[2]),
        ("eval", 12, 1, UIDS[3]),
    ]:
        found = step_name(name, step, generation, uid, attempt)
        assert LABEL.match(found) and len(found) <= 57, (name, found)


def test_step_names_tell_objects_generations_and_attempts_apart() -> None:
    names = {
        step_name(name, "train", generation, uid, attempt)
        for name in ("tweets", "x" * 80, "x" * 81)
        for generation in (1, 2)
        for uid in UIDS[:2]
        for attempt in (1, 2)
    }
    assert len(names) == 3 * 2 * 2 * 2
    # Same name, new UID (the object was deleted and re-created): a different step.
    assert step_name("t", "prep", 1, "aaaaaaaa-1") != step_name("t", "prep", 1, "bbbbbbbb-1")
    assert step_name("t", "prep", 1, UIDS[0]) == "t-prep-g1-a1-6f1c0e2a"
