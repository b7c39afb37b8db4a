"""Procedural translation corpus: English dates in many phrasings -> ISO 8601 (`tfzoo_dates`).

    "the twenty-third of March, nineteen ninety-nine"  ->  "1999-03-23"
    "Mar 23rd 1999", "23 MARCH 1999", "March the 23rd, two thousand and five", ...

A phrasing is a template (word order) with a style for the day, the month and the year, and a casing.
One combination in five of (template, day style, month style, year style) is held out: it occurs only
in the `test` split, so the test measures translation of phrasings never seen in training, built from
pieces that were. Dates are uniform over 1900-2099; everything is deterministic per split seed.
"""
from __future__ import annotations

import datetime
import itertools
import zlib

import numpy as np
import tensorflow_datasets as tfds
from typing_extensions import override

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                 "nine": "ninth", "twelve": "twelfth"}
SUFFIXES = {1: "st", 2: "nd", 3: "rd"}

TEMPLATES = ("{day} {month} {year}", "{month} {day}, {year}", "the {day} of {month}, {year}",
             "{month} the {day}, {year}", "{day} of {month} {year}", "{month} {day} {year}")
DAY_STYLES = ("digits", "ordinal_digits", "ordinal_words", "cardinal_words")
MONTH_STYLES = ("full", "short")
YEAR_STYLES = ("digits", "words", "words_and")
CASINGS = ("lower", "title", "upper", "as_is")
PHRASINGS = tuple(itertools.product(TEMPLATES, DAY_STYLES, MONTH_STYLES, YEAR_STYLES))
FIRST, LAST = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
SPLITS = {"train": (60_000, 0), "test": (5_000, 1)}  # examples, seed
SMALL_SPLITS = {"train": (2_000, 0), "test": (200, 1)}


def cardinal(n: int) -> str:
    """0..99 in words: 'twenty-three'."""
    if n < 20:
        return ONES[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] + (f"-{ONES[ones]}" if ones else "")


def ordinal(n: int) -> str:
    """1..99 as an ordinal in words: 'twenty-third'."""
    words = cardinal(n)
    head, _, last = words.rpartition("-")
    last = ORDINAL_WORDS.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return f"{head}-{last}" if head else last


def held_out(phrasing: tuple[str, str, str, str]) -> bool:
    """Whether a phrasing is reserved for the test split (a fixed one in five, by a stable hash)."""
    return zlib.crc32("|".join(phrasing).encode()) % 5 == 0


def spell_day(day: int, style: str) -> str:
    """The day of the month in `style`."""
    if style == "digits":
        return str(day)
    if style == "ordinal_digits":
        return f"{day}{'th' if 10 < day < 14 else SUFFIXES.get(day % 10, 'th')}"
    return ordinal(day) if style == "ordinal_words" else cardinal(day)


def spell_year(year: int, style: str) -> str:
    """The year in `style`: '1999', 'nineteen ninety-nine', 'two thousand and five', 'nineteen oh five'."""
    if style == "digits":
        return str(year)
    century, rest = divmod(year, 100)
    if century == 20 and rest < 10:
        return "two thousand" + (f"{' and' if style == 'words_and' else ''} {ONES[rest]}" if rest else "")
    if rest == 0:
        return f"{cardinal(century)} hundred"
    if rest < 10:
        return f"{cardinal(century)} {'hundred and' if style == 'words_and' else 'oh'} {ONES[rest]}"
    return f"{cardinal(century)} {cardinal(rest)}"


def spell(date: datetime.date, phrasing: tuple[str, str, str, str], casing: str) -> str:
    """`date` in English, with `phrasing` = (template, day style, month style, year style) and `casing`."""
    template, day_style, month_style, year_style = phrasing
    month = date.strftime("%B")
    text = template.format(day=spell_day(date.day, day_style), year=spell_year(date.year, year_style),
                           month=month if month_style == "full" else month[:3])
    return {"lower": text.lower(), "title": text.title(), "upper": text.upper(), "as_is": text}[casing]


def examples(n: int, seed: int, test: bool):
    """`n` (source, ISO target) pairs; held-out phrasings only when `test`, the others only when not."""
    rng = np.random.default_rng(seed)
    phrasings = [p for p in PHRASINGS if held_out(p) == test]
    days = (LAST - FIRST).days + 1
    for _ in range(n):
        date = FIRST + datetime.timedelta(days=int(rng.integers(days)))
        phrasing = phrasings[int(rng.integers(len(phrasings)))]
        yield spell(date, phrasing, CASINGS[int(rng.integers(len(CASINGS)))]), date.isoformat()


class TfzooDates(tfds.core.GeneratorBasedBuilder):
    """English dates in 144 phrasings -> ISO 8601; test phrasings (1 in 5) never occur in train."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    SPLITS = SPLITS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({"source": tfds.features.Text(), "target": tfds.features.Text()}),
            supervised_keys=("source", "target"),
        )

    @override
    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {split: self._generate_examples(n, seed, split == "test") for split, (n, seed) in self.SPLITS.items()}

    def _generate_examples(self, n: int, seed: int, test: bool):
        for i, (source, target) in enumerate(examples(n, seed, test)):
            yield i, {"source": source, "target": target}


class TfzooDatesSmall(TfzooDates):
    """The same corpus, 2,000 train / 200 test pairs: for fast tests."""

    SPLITS = SMALL_SPLITS
