"""Rounding modes and overflow rules (one enum each, shared by float and fixed-point formats).

Every rounding decision reduces to one question: given the magnitude truncated to the target
quantum (``q``) and the discarded fraction ``f`` in [0, 1), is ``q`` incremented? For the
deterministic modes the answer is

- nearest modes: ``f > 1/2``, or ``f == 1/2`` and the mode's tie rule says so;
- directed modes: ``f > 0`` and the mode's direction says so;

where both the tie rule and the direction are ``k0 ^ (ks & sign) ^ (kl & lsb)`` for three constant
bits of the mode (``sign`` is the sign of the exact value, ``lsb`` the last bit of ``q``). The
table :data:`MODE_BITS` holds them; it is the whole definition of the deterministic modes.

ap_fixed names: nearest_even = AP_RND_CONV, nearest_away = AP_RND_INF, nearest_zero = AP_RND_ZERO,
nearest_up = AP_RND, nearest_down = AP_RND_MIN_INF, toward_zero = AP_TRN_ZERO, down = AP_TRN.
"""

from __future__ import annotations

import enum

__all__ = ["Rounding", "Overflow"]


class Rounding(str, enum.Enum):
    NEAREST_EVEN = "nearest_even"
    NEAREST_AWAY = "nearest_away"
    NEAREST_ZERO = "nearest_zero"
    NEAREST_UP = "nearest_up"
    NEAREST_DOWN = "nearest_down"
    TOWARD_ZERO = "toward_zero"
    AWAY_FROM_ZERO = "away_from_zero"
    UP = "up"
    DOWN = "down"
    ODD = "odd"
    STOCHASTIC = "stochastic"

    def __str__(self):
        return self.value


class Overflow(str, enum.Enum):
    IEEE = "ieee"
    SATURATE = "saturate"
    SATURATE_ZERO = "saturate_zero"
    SATURATE_SYMMETRIC = "saturate_symmetric"
    WRAP = "wrap"
    WRAP_SIGN_MAGNITUDE = "wrap_sign_magnitude"

    def __str__(self):
        return self.value


FIXED_ONLY = (Overflow.SATURATE_ZERO, Overflow.SATURATE_SYMMETRIC, Overflow.WRAP, Overflow.WRAP_SIGN_MAGNITUDE)

# mode -> (nearest, k0, ks, kl): increment when (nearest ? f > 1/2 : False) or
# (nearest ? f == 1/2 : f > 0) and (k0 ^ (ks & sign) ^ (kl & lsb)).
MODE_BITS = {
    Rounding.NEAREST_EVEN: (1, 0, 0, 1),    # tie -> make lsb even
    Rounding.NEAREST_AWAY: (1, 1, 0, 0),    # tie -> away from zero
    Rounding.NEAREST_ZERO: (1, 0, 0, 0),    # tie -> toward zero
    Rounding.NEAREST_UP: (1, 1, 1, 0),      # tie -> toward +inf: magnitude up iff positive
    Rounding.NEAREST_DOWN: (1, 0, 1, 0),    # tie -> toward -inf: magnitude up iff negative
    Rounding.TOWARD_ZERO: (0, 0, 0, 0),
    Rounding.AWAY_FROM_ZERO: (0, 1, 0, 0),
    Rounding.UP: (0, 1, 1, 0),
    Rounding.DOWN: (0, 0, 1, 0),
    Rounding.ODD: (0, 1, 0, 1),             # inexact -> force lsb to 1
}

# IEEE 754 §7.4: which modes give ±max (not ±inf) on overflow, per sign (0 = positive).
_OVERFLOW_TO_MAX = {
    Rounding.TOWARD_ZERO: (True, True),
    Rounding.ODD: (True, True),
    Rounding.DOWN: (True, False),
    Rounding.UP: (False, True),
}


def overflow_to_max(mode: Rounding, sign: int) -> bool:
    """Whether IEEE 754 §7.4 overflow gives ±max (else ±inf) for this mode and sign."""
    return _OVERFLOW_TO_MAX.get(mode, (False, False))[sign]


def as_rounding(value) -> Rounding:
    """Normalise a rounding argument (enum or string) or raise a ValueError naming the choices."""
    try:
        return Rounding(value)
    except ValueError:
        from ._validate import ROUNDING_ALIASES, did_you_mean

        choices = [m.value for m in Rounding]
        hint = did_you_mean(value, choices, ROUNDING_ALIASES)
        raise ValueError(f"rounding={value!r}: unknown mode{hint}; expected one of {', '.join(choices)}") from None


def as_overflow(value) -> Overflow:
    """Normalise an overflow argument (enum or string) or raise a ValueError naming the choices."""
    try:
        return Overflow(value)
    except ValueError:
        from ._validate import OVERFLOW_ALIASES, did_you_mean

        choices = [m.value for m in Overflow]
        hint = did_you_mean(value, choices, OVERFLOW_ALIASES)
        raise ValueError(f"overflow={value!r}: unknown rule{hint}; expected one of {', '.join(choices)}") from None
