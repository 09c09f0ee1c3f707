"""LOINC codes: their syntax and the Mod 10 check digit (LOINC Users' Guide, Appendix C).

A LOINC code is up to seven digits, a hyphen and one check digit ("2823-3"). A mistyped code in
a site's critical-limit table would silently never match a result, so the check digit is
verified wherever codes are typed in.
"""

from __future__ import annotations

import re
from typing import Final

LOINC_CODE: Final = re.compile(r"([0-9]{1,7})-([0-9])")
# LOINC Users' Guide 12 C lists these deprecated codes whose check digit is known to be wrong.
BAD_CHECK_DIGIT_CODES: Final = frozenset({
    "11491-6", "11501-6", "5895-7", "5896-5", "5897-3", "5928-1", "6028-3", "6415-5",
    "6580-7", "6645-7", "6646-5", "6647-3", "6648-1", "6649-9",
})


def is_loinc_syntax(code: object) -> bool:
    """True if `code` has the shape of a LOINC code (digits, '-', one check digit)."""
    return isinstance(code, str) and LOINC_CODE.fullmatch(code) is not None


def loinc_check_digit(number: str) -> int:
    """The LOINC Mod 10 check digit of `number` (LOINC Users' Guide 12 C, steps 1-8)."""
    reversed_digits = number[::-1]
    odd = reversed_digits[0::2]  # 1st, 3rd, ... from the right, kept in that order
    even = reversed_digits[1::2]
    combined = even + str(int(odd) * 2)
    total = sum(int(d) for d in combined)
    return (10 - total % 10) % 10


def loinc_code_problem(code: str) -> str | None:
    """Why `code` is not a valid LOINC code (syntax or check digit), or None if it is."""
    match = LOINC_CODE.fullmatch(code)
    if match is None:
        return f"{code!r} is not a LOINC code (digits, '-', check digit)"
    number, check = match.groups()
    if code not in BAD_CHECK_DIGIT_CODES and loinc_check_digit(number) != int(check):
        return f"{code!r} has a wrong check digit (expected {number}-{loinc_check_digit(number)})"
    return None
