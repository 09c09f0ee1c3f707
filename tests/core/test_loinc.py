"""LOINC code syntax and the Mod 10 check digit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wardsync.core.loinc import is_loinc_syntax, loinc_check_digit, loinc_code_problem


def test_known_codes_check() -> None:
    for code in ("2823-3", "2951-2", "2345-7", "718-7", "2524-7", "8867-4", "59408-5"):
        assert loinc_code_problem(code) is None, code
    assert loinc_code_problem("11491-6") is None  # listed as a known bad check digit


@given(st.text(alphabet="0123456789", min_size=1, max_size=7), st.integers(0, 6),
       st.integers(1, 9))
def test_any_single_digit_typo_is_caught(number: str, where: int, shift: int) -> None:
    code = f"{number}-{loinc_check_digit(number)}"
    assert loinc_code_problem(code) is None
    i = where % len(number)
    typo = number[:i] + str((int(number[i]) + shift) % 10) + number[i + 1:]
    assert loinc_code_problem(f"{typo}-{loinc_check_digit(number)}") is not None


def test_syntax() -> None:
    assert is_loinc_syntax("2823-3")
    for bad in ("2823", "2823-33", "12345678-9", "28a3-3", " 2823-3", None):
        assert not is_loinc_syntax(bad)
        assert bad is None or loinc_code_problem(bad) is not None
