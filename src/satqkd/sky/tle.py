"""Strict checks of a NORAD two-line element set (TLE) before SGP4 reads it.

SGP4 readers (``sgp4.io.twoline2rv``, skyfield) read the TLE by *fixed columns* and check little:
a B* shifted by one column is read as ten times the drag term, a misplaced decimal point in the
inclination is read as another orbit, a mistyped digit goes unnoticed. :func:`check_tle` checks
every fixed column of the format and the modulo-10 checksum of each line, and raises
:class:`TLEError` naming the line and the (1-based) column.

Format (columns 1-based, inclusive), after Hoots & Roehrich, *Spacetrack Report #3* (1980), and
the CelesTrak description (T.S. Kelso, "NORAD Two-Line Element Set Format",
https://celestrak.org/columns/v04n03/)::

    line 1: 1 NNNNNC NNNNNAAA NNNNN.NNNNNNNN +.NNNNNNNN +NNNNN-N +NNNNN-N N NNNNN
            1    line number "1"            19-20 epoch year, 21-32 epoch day of year
            3-7  satellite number           34-43 dn/dt /2 (rev/day²), point at 35
            8    classification (U, C, S)   45-52 d²n/dt² /6, 54-61 B* (assumed-point
            10-17 international designator        mantissa, sign, exponent digit)
            63   ephemeris type             65-68 element set number, 69 checksum
    line 2: 2 NNNNN NNN.NNNN NNN.NNNN NNNNNNN NNN.NNNN NNN.NNNN NN.NNNNNNNNNNNNNN
            3-7 satellite number, 9-16 inclination (deg, point at 12), 18-25 RAAN (point at 21),
            27-33 eccentricity (assumed leading point), 35-42 argument of perigee (point at 38),
            44-51 mean anomaly (point at 47), 53-63 mean motion (rev/day, point at 55),
            64-68 revolution number, 69 checksum

Checksum: the sum of all digits of columns 1–68, plus 1 for each minus sign, modulo 10.

Example::

    >>> l1 = "1 41731U 16051A   16353.90152003  .00000364  00000-0  17957-4 0  9993"
    >>> l2 = "2 41731  97.3699 267.4500 0013200 178.5836 246.0824 15.23915303 19063"
    >>> check_tle(l1, l2)["inclination_deg"]
    97.3699
"""

from __future__ import annotations

import re

__all__ = ["TLEError", "tle_checksum", "check_tle"]


class TLEError(ValueError):
    """A TLE line breaks the fixed-column format; ``line`` (1 or 2) and ``column`` (1-based) say where."""

    def __init__(self, line: int, column: int, message: str):
        self.line, self.column = line, column
        super().__init__(f"TLE line {line}, column {column}: {message}")


def tle_checksum(line: str) -> int:
    """Modulo-10 checksum of columns 1–68: digits count their value, '-' counts 1, all else 0."""
    return sum(int(c) if c.isdigit() else (1 if c == "-" else 0) for c in line[:68]) % 10


# (first column, last column, regex, what) — columns 1-based inclusive
_DIG = r"[0-9]"
_FIELDS_1 = [
    (1, 1, r"1", "line number must be '1'"),
    (3, 7, r"[0-9A-Z][0-9]{4}", "satellite number must be 5 digits (or Alpha-5)"),
    (8, 8, r"[UCS ]", "classification must be U, C or S"),
    (10, 17, r"[0-9 ]{2}[0-9 ]{3}[A-Z ]{3}", "international designator must be YYNNNPPP"),
    (19, 32, r"[0-9]{5}\.[0-9]{8}", "epoch must be YYDDD.DDDDDDDD"),
    (34, 43, r"[ +-]\.[0-9]{8}", "first derivative of the mean motion must be ±.NNNNNNNN"),
    (45, 52, r"[ +-][0-9]{5}[+-][0-9]", "second derivative of the mean motion must be ±NNNNN±N (assumed point)"),
    (54, 61, r"[ +-][0-9]{5}[+-][0-9]", "B* drag term must be ±NNNNN±N (assumed point)"),
    (63, 63, r"[0-9 ]", "ephemeris type must be a digit"),
    (65, 68, r"[ 0-9]{3}[0-9]", "element set number must be digits"),
    (69, 69, _DIG, "checksum must be a digit"),
]
_FIELDS_2 = [
    (1, 1, r"2", "line number must be '2'"),
    (3, 7, r"[0-9A-Z][0-9]{4}", "satellite number must be 5 digits (or Alpha-5)"),
    (9, 16, r"[ 0-9]{2}[0-9]\.[0-9]{4}", "inclination must be NNN.NNNN degrees (point in column 12)"),
    (18, 25, r"[ 0-9]{2}[0-9]\.[0-9]{4}", "right ascension of the node must be NNN.NNNN degrees (point in column 21)"),
    (27, 33, r"[0-9]{7}", "eccentricity must be 7 digits (assumed leading point)"),
    (35, 42, r"[ 0-9]{2}[0-9]\.[0-9]{4}", "argument of perigee must be NNN.NNNN degrees (point in column 38)"),
    (44, 51, r"[ 0-9]{2}[0-9]\.[0-9]{4}", "mean anomaly must be NNN.NNNN degrees (point in column 47)"),
    (53, 63, r"[ 0-9][0-9]\.[0-9]{8}", "mean motion must be NN.NNNNNNNN rev/day (point in column 55)"),
    (64, 68, r"[ 0-9]{4}[0-9]", "revolution number must be digits"),
    (69, 69, _DIG, "checksum must be a digit"),
]
_BLANKS = {1: (2, 9, 18, 33, 44, 53, 62, 64), 2: (2, 8, 17, 26, 34, 43, 52)}


def _check_line(line: str, n: int) -> None:
    if len(line) != 69:
        raise TLEError(n, min(len(line), 69) + 1 if len(line) < 69 else 70,
                       f"a TLE line has 69 characters, this one has {len(line)}")
    for c in _BLANKS[n]:
        if line[c - 1] != " ":
            raise TLEError(n, c, f"must be blank, found {line[c - 1]!r} (a field is shifted)")
    for a, b, pattern, what in _FIELDS_1 if n == 1 else _FIELDS_2:
        field = line[a - 1 : b]
        if re.fullmatch(pattern, field) is None:
            raise TLEError(n, a, f"{what}; found {field!r} in columns {a}–{b}")
    want = tle_checksum(line)
    if int(line[68]) != want:
        raise TLEError(n, 69, f"checksum is {line[68]} but columns 1–68 sum to {want} (mod 10): a character is wrong")


def _assumed_point(field: str) -> float:
    """'±NNNNN±N' → ±0.NNNNN × 10^(±N)."""
    sign = -1.0 if field[0] == "-" else 1.0
    return sign * float("0." + field[1:6]) * 10.0 ** int(field[6:8])


def check_tle(line1: str, line2: str) -> dict:
    """Check a TLE column by column and return its elements; raise :class:`TLEError` on the first fault.

    Trailing/leading whitespace is stripped first (as the config layer does). Checks, per line:
    length 69, the blank separator columns, every field's fixed format (digits, sign and decimal
    point positions; see the module docstring), the checksum (column 69); then across lines: the
    same satellite number, and physical ranges (inclination 0–180°, RAAN/argument of perigee/mean
    anomaly < 360°, mean motion 0.05–17 rev/day, i.e. above ~150 km and below ~0.1 sidereal
    rev/day: the limit the config layer already applies).

    Returns a dict: ``satnum``, ``epoch_year``, ``epoch_day``, ``ndot``, ``nddot``, ``bstar``
    (1/earth radii), ``inclination_deg``, ``raan_deg``, ``eccentricity``, ``arg_perigee_deg``,
    ``mean_anomaly_deg``, ``mean_motion_rev_per_day``.
    """
    l1, l2 = str(line1).strip(), str(line2).strip()
    _check_line(l1, 1)
    _check_line(l2, 2)
    if l1[2:7] != l2[2:7]:
        raise TLEError(2, 3, f"satellite number {l2[2:7]!r} differs from line 1's {l1[2:7]!r}")
    el = {
        "satnum": l1[2:7],
        "epoch_year": int(l1[18:20]),
        "epoch_day": float(l1[20:32]),
        "ndot": float(l1[33:43].replace(" ", "")),
        "nddot": _assumed_point(l1[44:52]),
        "bstar": _assumed_point(l1[53:61]),
        "inclination_deg": float(l2[8:16]),
        "raan_deg": float(l2[17:25]),
        "eccentricity": float("0." + l2[26:33]),
        "arg_perigee_deg": float(l2[34:42]),
        "mean_anomaly_deg": float(l2[43:51]),
        "mean_motion_rev_per_day": float(l2[52:63]),
    }
    if not 1.0 <= el["epoch_day"] < 367.0:
        raise TLEError(1, 21, f"epoch day of year {el['epoch_day']:g} must lie in [1, 367)")
    if not el["inclination_deg"] <= 180.0:
        raise TLEError(2, 9, f"inclination {el['inclination_deg']:g}° must lie in [0, 180]")
    for key, col in (("raan_deg", 18), ("arg_perigee_deg", 35), ("mean_anomaly_deg", 44)):
        if not el[key] < 360.0:
            raise TLEError(2, col, f"{key.removesuffix('_deg').replace('_', ' ')} {el[key]:g}° must be < 360")
    if not 0.05 <= el["mean_motion_rev_per_day"] <= 17.0:
        raise TLEError(2, 53, f"mean motion {el['mean_motion_rev_per_day']:g} rev/day must lie in [0.05, 17]")
    return el
