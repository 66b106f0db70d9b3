"""The wheel maps every top-level folder into `minmo_lightning` and ships the recipes and tokenizer."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("*.whl"))


def test_wheel_holds_one_namespace_and_the_recipes(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"minmo_lightning"}, top
    for expected in (
        "minmo_lightning/components/llm/hf_causal_lm.py",
        "minmo_lightning/datamodules/__init__.py",
        "minmo_lightning/evaluation/__init__.py",
        "minmo_lightning/recipes/tiny/stage1a_prealign.yaml",
        "minmo_lightning/recipes/minmo/stage1a_prealign.yaml",
        "minmo_lightning/components/llm/assets/tiny_tokenizer/tokenizer.json",
    ):
        assert expected in names, expected
    recipes = {n for n in names if n.startswith("minmo_lightning/recipes/") and n.endswith(".yaml")}
    assert len(recipes) == len(list((REPO / "recipes").rglob("*.yaml")))


def test_installed_wheel_imports_from_itself(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import minmo_lightning.components.llm.hf_causal_lm as h; from importlib import resources; "
        f"assert h.__file__.startswith({str(target)!r}), h.__file__; "
        "assert resources.files('minmo_lightning.recipes').joinpath('tiny/stage1c_sft.yaml').is_file(); "
        "assert h.resolve_tokenizer_path(h.TINY_TOKENIZER).is_dir()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env={"PYTHONPATH": str(target)})
