"""Notebooks are executed, not just stored: each runs top to bottom on small data."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.integration

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, workdir: Path) -> str:
    """Run notebooks/<name> in `workdir` with a real kernel; the text its cells printed."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))


def test_quickstart_notebook_runs_end_to_end(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("TFZOO_QUICKSTART_DATASET", "synthetic_fashion_mnist")
    monkeypatch.setenv("TFZOO_QUICKSTART_DIR", str(tmp_path))
    monkeypatch.setenv("TFZOO_DATA_DIR", str(data_dir))
    assert "REST answers match the in-process call" in execute("quickstart.ipynb", tmp_path)
    assert (tmp_path / "models" / "cnn" / "1" / "saved_model.pb").is_file()
    assert os.listdir(tmp_path / "runs" / "cnn")


def test_reinforcement_learning_notebook_trains_serves_and_plays_cartpole(tmp_path, monkeypatch):
    monkeypatch.setenv("TFZOO_RL_EPOCHS", "1")
    monkeypatch.setenv("TFZOO_RL_STEPS", "2000")
    monkeypatch.setenv("TFZOO_RL_DIR", str(tmp_path))
    assert "served episodes equal the in-process ones" in execute("reinforcement_learning.ipynb", tmp_path)
    assert (tmp_path / "cartpole.gif").read_bytes()[:6] == b"GIF89a"
    assert (tmp_path / "models" / "dqn" / "1" / "saved_model.pb").is_file()


def test_compression_notebook_compresses_compares_and_serves(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("TFZOO_COMPRESSION_DATASET", "synthetic_fashion_mnist")
    monkeypatch.setenv("TFZOO_COMPRESSION_EPOCHS", "2")
    monkeypatch.setenv("TFZOO_COMPRESSION_DIR", str(tmp_path))
    monkeypatch.setenv("TFZOO_DATA_DIR", str(data_dir))
    outputs = execute("compression.ipynb", tmp_path)
    assert "served int8 answers equal LiteRT's in-process ones" in outputs
    for method in ("tflite_dynamic", "tflite_int8", "keras_int8", "prune"):
        assert f"\n{method} " in outputs and (tmp_path / "models" / f"cnn_{method}" / "1").is_dir()
