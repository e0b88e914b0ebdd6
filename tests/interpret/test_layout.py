"""The layout holds: every module imports alone (no cycles), interpretation writes through
`fastlight.interpret.media`, task modules hold no command line, and each task's interpretation
lives in `fastlight.interpret.<task>`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastlight

SRC = Path(fastlight.__file__).parent


@pytest.mark.slow  # imports every library fastlight uses: ~10-25 s
def test_every_module_imports_alone_without_a_cycle():
    # One interpreter (torch is imported once), fastlight's own modules forgotten before each import:
    # each is then the first fastlight module imported, as in a fresh process.
    code = textwrap.dedent("""
        import importlib, json, pkgutil, sys
        import fastlight
        names = [m.name for m in pkgutil.walk_packages(fastlight.__path__, "fastlight.") if m.name != "fastlight.__main__"]
        cycles = {}
        for name in names:
            for loaded in [m for m in sys.modules if m == "fastlight" or m.startswith("fastlight.")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except ImportError as e:
                if "partially initialized" in str(e) or "circular import" in str(e):
                    cycles[name] = str(e)
        print(json.dumps({"n": len(names), "cycles": cycles}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["n"] > 30 and result["cycles"] == {}


def calls_and_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    return names


def test_tasks_and_interpretation_write_images_and_tables_only_through_media():
    for path in [*SRC.joinpath("tasks").glob("*.py"), *SRC.joinpath("interpret").glob("*.py")]:
        if path.name != "media.py":
            used = calls_and_imports(path) & {"log_image", "log_table", "WandbLogger"}
            assert not used, f"{path.name} calls {used} itself; use fastlight.interpret.media"


def test_task_modules_hold_no_command_line_and_no_checkpoint_loading_of_their_own():
    for path in SRC.joinpath("tasks").glob("*.py"):
        used = calls_and_imports(path)
        assert "argparse" not in used, f"{path.name} parses arguments; verbs live in fastlight/cli/"
        assert "load_task" not in path.read_text(), path.name  # fastlight.runs.load_run is the one way


def test_each_tasks_interpretation_has_its_module_and_the_old_homes_are_gone():
    for task in ("collab", "tabular", "vision"):
        assert (SRC / "interpret" / f"{task}.py").is_file()
    assert not (SRC / "models" / "collab_interpret.py").exists()
    assert not (SRC / "tracking" / "interpretation.py").exists()
    from fastlight.models.embeddings import SigmoidRange
    from fastlight.models.mnist import MLP, Logistic
    from fastlight.models.vision import SigmoidRange as VisionSigmoidRange
    from fastlight.tasks.mnist import MLP as OldMLP

    assert VisionSigmoidRange is SigmoidRange and OldMLP is MLP and Logistic.__module__ == "fastlight.models.mnist"
