"""Free-text countries: normalization, the curated alias table, pycountry lookups and the near
misses `autocorrect` picks from (all used by the `country` rule)."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

COUNTRY_ALIASES = {
    "us": "USA",
    "u s": "USA",
    "usa": "USA",
    "u s a": "USA",
    "united states": "USA",
    "united states of america": "USA",
    "america": "USA",
    "the united states": "USA",
    "uk": "GBR",
    "u k": "GBR",
    "great britain": "GBR",
    "britain": "GBR",
    "england": "GBR",
    "scotland": "GBR",
    "wales": "GBR",
    "northern ireland": "GBR",
    "united kingdom": "GBR",
    "deutschland": "DEU",
    "germany": "DEU",
    "brd": "DEU",
    "holland": "NLD",
    "the netherlands": "NLD",
    "nederland": "NLD",
    "espana": "ESP",
    "osterreich": "AUT",
    "schweiz": "CHE",
    "suisse": "CHE",
    "russia": "RUS",
    "south korea": "KOR",
    "korea": "KOR",
    "north korea": "PRK",
    "czech republic": "CZE",
    "czechia": "CZE",
    "vietnam": "VNM",
    "iran": "IRN",
    "taiwan": "TWN",
    "bolivia": "BOL",
    "venezuela": "VEN",
    "tanzania": "TZA",
    "syria": "SYR",
    "laos": "LAO",
    "moldova": "MDA",
    "uae": "ARE",
    "u a e": "ARE",
    "ivory coast": "CIV",
    "turkey": "TUR",
    "prc": "CHN",
    "mexico": "MEX",
    "mejico": "MEX",
    "canada": "CAN",
    "italia": "ITA",
    "brasil": "BRA",
}


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return text.strip()


def country_lookup(text: str) -> Any:
    return _country_by_norm(normalize(text))


@functools.lru_cache(maxsize=8192)
def _country_by_norm(norm: str) -> Any:
    import pycountry

    if not norm:
        return None
    code = COUNTRY_ALIASES.get(norm)
    if code:
        return pycountry.countries.get(alpha_3=code)
    compact = norm.replace(" ", "")
    # a code only when written as one token: "N/A" is not Namibia ("U.S." etc. are aliases)
    if len(compact) in (2, 3) and compact.isalpha() and compact == norm:
        found = pycountry.countries.get(**{f"alpha_{len(compact)}": compact.upper()})  # type: ignore[arg-type]
        if found:
            return found
    for country in pycountry.countries:
        names = [country.name, getattr(country, "official_name", ""), getattr(country, "common_name", "")]
        if norm in {normalize(n) for n in names if n}:
            return country
    return None


@functools.lru_cache(maxsize=1)
def country_spellings() -> dict[str, Any]:
    """Normalized spelling → country, for every name and alias known (near-miss candidates)."""
    import pycountry

    names: dict[str, Any] = {}
    for country in pycountry.countries:
        for text in (
            country.name,
            getattr(country, "official_name", ""),
            getattr(country, "common_name", ""),
        ):
            if text:
                names.setdefault(normalize(text), country)
    for alias, code in COUNTRY_ALIASES.items():
        found = pycountry.countries.get(alpha_3=code)
        if found is not None:
            names.setdefault(alias, found)
    return names


@functools.lru_cache(maxsize=4096)
def _near(norm: str, cutoff: float) -> tuple[Any, ...]:
    import difflib

    if len(norm) < 4:  # "ua", "usa": codes and short words are too close to too many others
        return ()
    names = country_spellings()
    close = difflib.get_close_matches(norm, list(names), n=6, cutoff=cutoff)
    return tuple(dict.fromkeys(names[c] for c in close))


def country_near_misses(text: str, cutoff: float) -> list[Any]:
    """The distinct countries whose spellings are within `cutoff` similarity of `text`."""
    return list(_near(normalize(text), cutoff))
