"""Numbers for people: shares, areas and counts as the report and the coverage lines print them.

Why one module: a share of 99.98 % printed as "100.0 %", 0.16 ha printed in km² or a density as
"4.861e+04" misleads however right the figure behind it is. Shares round to one decimal but never
to 100 % or 0 % unless they are; areas take the unit that fits their size; numbers are plain digits.
"""

from __future__ import annotations

import math

#: (upper bound in m², unit, m² per unit): m² below a hectare, ha below 100 km², then km².
AREA_UNITS: tuple[tuple[float, str, float], ...] = ((1e4, "m²", 1.0), (1e8, "ha", 1e4), (math.inf, "km²", 1e6))


def percent(n: float, total: float) -> str:
    """``n`` of ``total`` as a percentage with one decimal, more where one would round to 100 or 0.

    >>> percent(9998, 10000), percent(1, 10000), percent(165, 1000), percent(5, 5), percent(0, 5)
    ('99.98 %', '0.01 %', '16.5 %', '100 %', '0 %')
    """
    if not total:
        return "-"
    if n == total or n == 0:
        return f"{100 * n / total:.0f} %"
    p = 100 * n / total
    for digits in range(1, 8):
        text = f"{p:.{digits}f}"
        if 0 < float(text) < 100:
            return f"{text} %"
    return f"{p:.8f} %"


def area_unit(largest_m2: float) -> tuple[str, float]:
    """The unit for areas up to ``largest_m2`` and its size in m².

    >>> area_unit(1600), area_unit(4.2e6), area_unit(3e9)
    (('m²', 1.0), ('ha', 10000.0), ('km²', 1000000.0))
    """
    for bound, unit, size in AREA_UNITS:
        if not largest_m2 < 0 and largest_m2 < bound:
            return unit, size
    return AREA_UNITS[-1][1], AREA_UNITS[-1][2]


def plain_number(v: float, significant: int = 4) -> str:
    """``v`` with about ``significant`` significant digits, in plain digits (no exponent), thousands separated.

    >>> plain_number(48610.37), plain_number(0.00123456), plain_number(12.3456), plain_number(0)
    ('48,610', '0.001235', '12.35', '0')
    """
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if v == 0:
        return "0"
    digits = max(0, significant - 1 - math.floor(math.log10(abs(v))))
    return f"{v:,.{digits}f}"
