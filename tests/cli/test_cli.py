"""The `fastlight` command: verbs found by scanning fastlight/cli/, fast help, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from fastlight import cli

VERBS = {"compare", "recommend", "predict", "clean"}


def test_help_lists_every_verb_with_its_docstring_line_and_imports_no_deep_learning_library():
    code = textwrap.dedent("""
        import contextlib, io, json, sys
        from fastlight.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main(["--help"])
            except SystemExit:
                pass
        heavy = sorted({"torch", "lightning", "torchvision", "wandb", "pandas"} & set(sys.modules))
        print(json.dumps({"help": out.getvalue(), "heavy": heavy}))
    """)
    result = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert result["heavy"] == []
    for verb in VERBS:
        assert verb in result["help"]
    assert "Recommend movies with a trained collab run" in result["help"]


@pytest.mark.parametrize("verb", sorted(cli.verbs()))  # every verb, whoever added it
def test_each_verbs_help_imports_no_torch(verb):
    code = (f"import sys\nfrom fastlight.cli import main\ntry:\n    main([{verb!r}, '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules, 'lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"
    assert "usage: fastlight " + verb in out


def test_python_dash_m_fastlight_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "fastlight", "--help"], capture_output=True, text=True, check=True).stdout
    assert all(verb in out for verb in VERBS) and "usage: fastlight" in out


def test_a_new_verb_is_a_new_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "hello.py").write_text(textwrap.dedent('''
        """Say hello to a run folder.

        More text that the list of verbs does not show.
        """
        def add_arguments(parser):
            parser.add_argument("run_dir")
            parser.add_argument("--times", type=int, default=1)

        def run(args):
            print("hello " * args.times + args.run_dir)
            return 7
    '''))
    (tmp_path / "_helper.py").write_text('"""Not a verb: a helper module."""\n')
    monkeypatch.setattr(cli, "__path__", [*cli.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "fastlight.cli.hello", raising=False)
    assert cli.verbs()["hello"] == ("hello", "Say hello to a run folder.")
    assert "_helper" not in cli.verbs() and VERBS <= set(cli.verbs())
    assert cli.main(["hello", "r1", "--times", "2"]) == 7
    assert capsys.readouterr().out == "hello hello r1\n"
    sys.modules.pop("fastlight.cli.hello", None)


def test_a_user_mistake_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path), "rows.csv"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "not a fastlight run folder" in err
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"task": "mnist"}))
    assert cli.main(["predict", str(run), "rows.csv"]) == 2
    err = capsys.readouterr().err
    assert "is a mnist run; predict works on runs of " in err and "tabular" in err and "vision" in err


def test_an_unknown_verb_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["restor", "x"])
    assert e.value.code == 2 and "invalid choice: 'restor'" in capsys.readouterr().err


def test_compare_is_fastlight_compare_itself(tmp_path):
    with pytest.raises(SystemExit, match="no run folders"):  # fastlight.compare.main's own message
        cli.main(["compare", str(tmp_path), "--no-html"])
