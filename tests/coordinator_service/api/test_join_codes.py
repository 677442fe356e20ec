"""Rotated join codes: 60 bits, typeable, and the old code refused without a trace."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

from coordinator_service.join_codes import ALPHABET, BITS, expected_years_to_guess, new_join_code
from coordinator_service.settings import Settings
from tests.conftest import RunningCoordinator
from tests.coordinator_service.helpers import database_fingerprint

CODE = re.compile(r"^[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}$")


def test_generated_codes_have_60_bits_of_unambiguous_symbols() -> None:
    assert len(set(ALPHABET)) == 32 and not set("ilou") & set(ALPHABET)
    assert BITS == 60
    codes = [new_join_code() for _ in range(2000)]
    assert all(CODE.match(code) for code in codes) and len(set(codes)) == len(codes)
    # Every symbol about equally often (24,000 draws: 750 each, sd 27): nothing favoured.
    counts = Counter("".join(codes).replace("-", ""))
    assert set(counts) == set(ALPHABET)
    assert all(550 < n < 950 for n in counts.values()), counts


def test_guessing_at_the_registration_limit_takes_longer_than_the_class() -> None:
    """The docstring's number: one address at the sustained registration rate."""
    per_second = Settings().registrations_per_minute / 60
    assert expected_years_to_guess(per_second) > 1e10
    assert expected_years_to_guess(1000 * per_second) > 1e7  # a thousand addresses


def test_rotation_gives_a_strong_code_and_the_old_one_changes_nothing(
    coordinator: RunningCoordinator,
) -> None:
    admin, anonymous = coordinator.admin(), coordinator.client()
    rotated = [admin.post("/admin/join-code/rotate").json()["join_code"] for _ in range(3)]
    assert all(CODE.match(code) for code in rotated) and len(set(rotated)) == 3
    assert admin.get("/admin/join-code").json()["join_code"] == rotated[-1]
    before = asyncio.run(database_fingerprint(coordinator.database_url))
    for old in (coordinator.join_code, *rotated[:-1], rotated[-1].upper()):
        refused = anonymous.post("/workers", json={"join_code": old, "name": "late"})
        assert refused.status_code == 403 and refused.json()["code"] == "invalid_join_code"
    assert asyncio.run(database_fingerprint(coordinator.database_url)) == before
    joined = anonymous.post("/workers", json={"join_code": rotated[-1], "name": "late"})
    assert joined.status_code == 201
