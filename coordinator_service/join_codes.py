"""Join codes that a student can type from the projector and a stranger cannot guess.

A generated code is three groups of four characters from Crockford's base-32 alphabet
in lower case (digits and letters without i, l, o and u, so nothing reads as another
symbol), e.g. ``k7q2-m9xd-4hpt``: 12 symbols of 5 bits, **60 bits**.

What that buys against guessing, with the registration limit of
``coordinator_service.rate_limits`` (after a burst of 120, one registration a second
per client address): a guesser needs 2^59 tries on average, about 1.8e10 years from
one address, and still 1.8e7 years from a thousand addresses at once. The code it
replaces (two of ten words and four digits: 10^6 codes, about 20 bits) fell in 1.6
hours at the 87 registrations a second measured before there was a limit, and would
still fall in under a week at one a second.

A code the instructor sets with GAN_JOIN_CODE is used as given; a short one is as weak
as its length, so ``gan-coordinator join-code rotate`` is the way to get a strong one.
"""

from __future__ import annotations

import math
import secrets

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base 32, lower case
GROUPS = 3
GROUP_LENGTH = 4
BITS = GROUPS * GROUP_LENGTH * math.log2(len(ALPHABET))  # 60.0
SECONDS_PER_YEAR = 365.25 * 24 * 3600


def new_join_code() -> str:
    """A fresh code, e.g. ``k7q2-m9xd-4hpt`` (60 bits from ``secrets``)."""
    return "-".join(
        "".join(secrets.choice(ALPHABET) for _ in range(GROUP_LENGTH)) for _ in range(GROUPS)
    )


def expected_years_to_guess(guesses_per_second: float) -> float:
    """Years a guesser needs on average (half the codes) at ``guesses_per_second``."""
    return 2 ** (BITS - 1) / guesses_per_second / SECONDS_PER_YEAR
