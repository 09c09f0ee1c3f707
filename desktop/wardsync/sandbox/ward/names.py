"""Obviously synthetic names for the sandbox ward: nothing here could be a real person.

Every family name starts with a marker (`Zz`, `Test`, `Sample`, `Demo`, `Synth`) so a screen or
a screenshot of sandbox data can never be mistaken for a real record; given names are the
NATO spelling alphabet.
"""

from __future__ import annotations

import re

SYNTHETIC_FAMILY_NAMES: tuple[str, ...] = (
    "Testpatient",
    "Zzsample",
    "Zzexample",
    "Testcase",
    "Samplecase",
    "Demopatient",
    "Synthperson",
    "Zzplaceholder",
)
SYNTHETIC_GIVEN_NAMES: tuple[str, ...] = (
    "Alpha",
    "Bravo",
    "Charlie",
    "Delta",
    "Echo",
    "Foxtrot",
    "Golf",
    "Hotel",
    "India",
    "Juliet",
    "Kilo",
    "Lima",
    "Mike",
    "November",
    "Oscar",
    "Papa",
)
# What makes a family name recognisably synthetic; tests hold every generated name to it.
SYNTHETIC_FAMILY_MARKER = re.compile(r"^(Zz|Test|Sample|Demo|Synth)")

MAX_DISTINCT_NAMES = len(SYNTHETIC_FAMILY_NAMES) * len(SYNTHETIC_GIVEN_NAMES)
