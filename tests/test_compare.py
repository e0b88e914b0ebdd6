"""fastlight.compare: the ranked table and the HTML report, read from run folders alone.

The runs are real (small MNIST-like runs trained in-process): four completed ones (two learning
rates x two seeds), one that failed on a bad value, and one caught mid-training (its folder as
it is while the job runs: summary.json says "running", metrics.csv has the first epoch only).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from fastlight import compare
from fastlight.tracking import liveness
from fastlight.compare import smooth_loss

BASE = ("task=mnist", "data=synthetic", "data.n_train=2000", "data.noise=1.5", "model=logistic", "optim=sgd",
        "schedule=constant", "trainer.max_epochs=2", "logger=csv", "callbacks.progress_bar=null",
        "trainer.log_every_n_steps=2", "data.steps_per_call=2")  # a training loss every other step
LRS = ("0.003", "0.03")


def train(run_dir: Path, *overrides: str) -> None:
    """One run in-process, as `python train.py` would do it (see conftest.compose_run)."""
    from fastlight import config, run

    run_dir.mkdir(parents=True)
    cfg = config.compose([*BASE, *overrides], run_dir)
    try:
        run.train(cfg)
    except SystemExit:  # a failed single run exits non-zero; its folder is what we compare
        pass


def as_if_still_running(run_dir: Path) -> None:
    """Rewind a finished run's folder to what it held during its first epoch."""
    s = json.loads((run_dir / "summary.json").read_text())
    s.update(status="running", metrics={}, best_epoch=None, wall_time_s=0.0)
    s["optimized_metric"]["value"] = None
    (run_dir / "summary.json").write_text(json.dumps(s))
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if float(r["epoch"] or 0) == 0 and not r.get("test/acc"))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    job = 0
    for lr in LRS:
        for seed in (0, 1):
            train(root / str(job), f"optim.lr={lr}", f"seed={seed}")
            job += 1
    train(root / "4", "optim.lr=-1", "seed=0")
    train(root / "5", "optim.lr=0.01", "seed=0")
    as_if_still_running(root / "5")
    return root


def metrics_rows(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def val_acc(run_dir: Path) -> float:
    return summary(run_dir)["metrics"]["val/acc"]


def test_table_ranks_configurations_and_aggregates_seed_replicates(sweep, capsys):
    compare.main([str(sweep), "--no-html"])
    out = capsys.readouterr().out
    header, *rows = out.split("failed runs:")[0].strip().splitlines()
    assert header.split() == ["rank", "runs", "optim.lr", "val/acc", "↑", "test/acc", "val/loss", "test/loss",
                              "n", "status", "wall"]
    means = {lr: [val_acc(sweep / str(2 * i + s)) for s in (0, 1)] for i, lr in enumerate(LRS)}
    best, worst = sorted(LRS, key=lambda lr: -statistics.fmean(means[lr]))
    assert rows[0].split()[:3] == ["1", "0,1" if best == LRS[0] else "2,3", best]
    for lr, row in zip((best, worst), rows[:2]):
        cell = f"{statistics.fmean(means[lr]):.4g} ± {statistics.stdev(means[lr]):.2g}"
        assert cell in row and "2 completed" in row
    # the running job is ranked on what it logged so far, after the completed ones
    partial = max(float(r["val/acc"]) for r in metrics_rows(sweep / "5") if r["val/acc"])
    assert rows[2].split()[1:4] == ["5", "0.01", f"{partial:.4g}"] and "running" in rows[2]
    assert rows[3].split()[1:3] == ["4", "-1"] and "failed" in rows[3]
    assert "4: optim.lr=-1 must be positive" in out.split("failed runs:")[1]


def test_run_folders_without_replicates_give_one_row_per_run(sweep, capsys):
    compare.main([str(sweep / "0"), str(sweep / "2"), str(sweep / "4"), "--no-html"])
    header, *rows = capsys.readouterr().out.split("failed runs:")[0].strip().splitlines()
    assert "n" not in header.split() and "run" in header.split()
    assert [r.split()[1] for r in rows] == (["0", "2", "4"] if val_acc(sweep / "0") > val_acc(sweep / "2") else ["2", "0", "4"])
    assert [r.split()[2] for r in rows] == [{"0": "0.003", "2": "0.03", "4": "-1"}[r.split()[1]] for r in rows]


def test_html_report_is_self_contained_with_table_charts_and_best_config(sweep, tmp_path):
    out = tmp_path / "r.html"
    compare.main([str(sweep), "--html", str(out)])
    page = out.read_text(encoding="utf-8")
    for outside in ("http://", "https://", "<link", "src=", "@import", "<img"):
        assert outside not in page  # nothing fetched: it opens from disk, offline
    assert re.findall(r"url\((.)", page) and set(re.findall(r"url\((.)", page)) == {"#"}  # in-page references only
    assert len(re.findall(r"<svg", page)) == 2 + 1 + 2  # two curve charts, the loss chart, one per swept param
    rows = {t: len(re.findall(r"<tr>\s*<td", body)) for t, body in
            re.findall(r'<table id="T_(\w+)">(.*?)</table>', page, flags=re.S)}
    assert rows == {"ranked": 4, "runs": 6}  # ranked configurations + every run
    assert page.count('class="curve"') == 2 * 5  # val/acc and val/loss of every run that logged an epoch
    assert page.count('class="loss"') == 5  # the smoothed training loss of every run that trained
    best = max(range(4), key=lambda j: val_acc(sweep / str(j)))
    import html

    assert html.escape((sweep / str(best) / "config.yaml").read_text(), quote=True) in page
    assert "optim.lr=-1 must be positive" in page


def test_smoothed_loss_is_fastais_avg_smooth_loss():
    fastai_learner = pytest.importorskip("fastai.learner")
    import torch

    losses = [2.3 * 0.97**i + 0.2 * math.sin(i) + (0.5 if i == 7 else 0.0) for i in range(60)]
    oracle = fastai_learner.AvgSmoothLoss()  # what Recorder records per batch and plot_loss draws
    expected = []
    for loss in losses:
        oracle.accumulate(SimpleNamespace(loss=torch.tensor(loss)))
        expected.append(float(oracle.value))
    assert smooth_loss(list(range(60)), losses) == pytest.approx(expected, rel=1e-6)
    # metrics.csv may keep every 3rd step only: each value then stands for the 3 steps since the last,
    # as if fastai had seen it at each of them
    held = smooth_loss(list(range(2, 60, 3)), losses[::3])
    oracle.reset()
    for loss in losses[::3]:
        for _ in range(3):
            oracle.accumulate(SimpleNamespace(loss=torch.tensor(loss)))
        expected.append(float(oracle.value))
    assert held == pytest.approx(expected[60:], rel=1e-6)
    assert held != pytest.approx(smooth_loss(list(range(20)), losses[::3]), rel=1e-3)  # the gaps do count


def test_report_draws_each_runs_smoothed_training_loss_from_metrics_csv(sweep):
    run = compare.load_run(sweep / "0", "0")
    steps, smooth = run.smoothed_loss()
    logged = [(int(float(r["step"])), float(r["train/loss"])) for r in metrics_rows(sweep / "0") if r.get("train/loss")]
    assert run.train_loss == logged and len(logged) > 5
    assert smooth == pytest.approx(smooth_loss([s for s, _ in logged], [v for _, v in logged]))
    assert smooth[-1] < smooth[0]  # the run learnt: the smoothed loss went down
    assert max(abs(a - b) for a, b in zip(smooth[1:], smooth[:-1])) < max(abs(a - b) for (_, a), (_, b) in zip(logged[1:], logged[:-1]))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_run_that_died_without_a_word_shows_as_killed(sweep, tmp_path, capsys):
    """summary.json still says "running": its pid is gone on this host, or its heartbeat is stale elsewhere."""
    long_ago = time.time() - 2 * liveness.STALE_AFTER_S
    heartbeat = {"updated_at_s": long_ago, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(long_ago))}
    for name, fields in {"gone": {"pid": dead_pid(), "host": socket.gethostname()},
                         "stale": {"pid": 1, "host": "elsewhere", **heartbeat},
                         "alive": {"pid": os.getpid(), "host": socket.gethostname(), "updated_at_s": time.time()}}.items():
        shutil.copytree(sweep / "5", tmp_path / name)
        s = summary(tmp_path / name)
        s.update(fields)
        (tmp_path / name / "summary.json").write_text(json.dumps(s))
    compare.main([str(tmp_path), "--html", str(tmp_path / "r.html")])
    out = capsys.readouterr().out
    status = {line.split()[1]: line.split()[-2] for line in out.split("killed runs")[0].strip().splitlines()[1:]}
    assert status == {"gone": "killed", "stale": "killed", "alive": "running"}
    stale = time.strftime("%Y-%m-%d %H:%M", time.localtime(long_ago))
    assert f"stale: last reported {stale}" in out
    assert f"last reported {stale}" in (tmp_path / "r.html").read_text()


def test_report_and_compare_import_each_alone_without_a_cycle():
    for module, other in (("fastlight.tracking.report", "fastlight.compare"), ("fastlight.compare", "fastlight.tracking.report")):
        code = f"import sys, {module}; print({other!r} in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False", module
    import ast

    tree = ast.parse(Path(compare.__file__).with_name("tracking").joinpath("report.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("fastlight") for m in imported)  # not even under TYPE_CHECKING


def test_compare_imports_no_deep_learning_library():
    code = "import sys, fastlight.compare, fastlight.tracking.report; print(sorted({'torch', 'lightning', 'wandb'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_folder_without_runs_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no run folders"):
        compare.main([str(tmp_path)])


# --- the report in a real browser -----------------------------------------------------------


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless chromium driven through the DevTools protocol over a pipe (its fds 3 and 4)."""

    def __init__(self, exe: str):
        self.profile = tempfile.mkdtemp(prefix="fl-chromium-")
        cmd_r, self._w = os.pipe()
        self._r, ans_w = os.pipe()

        def in_child():  # chromium reads commands from fd 3 and answers on fd 4
            a, b = os.dup(cmd_r), os.dup(ans_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
                 "--window-size=1280,1600", "about:blank"]
        self.proc = subprocess.Popen([exe, *flags], preexec_fn=in_child, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(cmd_r)
        os.close(ans_w)
        self._buf, self._id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.time() > deadline:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode()[-2000:]}")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: bool = False, timeout: float = 60):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._w, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout
        while (reply := self._next(deadline)).get("id") != self._id:
            self.events.append(reply)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def open(self, path: Path) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=True)
        deadline = time.time() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._next(deadline))

    def js(self, expression: str):
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)["result"]["value"]

    def errors(self) -> list[str]:
        found = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(p["exceptionDetails"].get("exception", {}).get("description") or p["exceptionDetails"]["text"])
            elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert", "warning"):
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                found.append(p["entry"]["text"])
        return found

    def screenshot(self):
        from matplotlib.image import imread

        png = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"}, session=True)["data"])
        return imread(io.BytesIO(png), format="png")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    exe = chromium()
    if exe is None:
        if os.environ.get("FASTLIGHT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (FASTLIGHT_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    b = Browser(exe)
    yield b
    b.close()


def test_report_renders_in_a_headless_browser_without_errors(sweep, browser, tmp_path):
    report = tmp_path / "report.html"
    compare.main([str(sweep), "--html", str(report)])
    browser.open(report)
    assert browser.errors() == []
    assert browser.js("performance.getEntriesByType('resource').length") == 0  # nothing fetched
    assert browser.js("document.querySelectorAll('#T_runs tbody tr').length") == 6
    assert browser.js("Array.from(document.querySelectorAll('#T_runs tbody tr')).map(r => r.cells[0].textContent.trim())"
                      ".sort().join()") == "0,1,2,3,4,5"
    # the curves were drawn: every completed run's line spans its two epochs on screen
    widths = browser.js("Array.from(document.querySelectorAll('svg.curves')[0].querySelectorAll('g.curve'))"
                        ".map(p => p.getBoundingClientRect().width)")
    assert len(widths) == 5 and sum(w > 100 for w in widths) == 4
    # every run that trained has its smoothed loss drawn across the chart
    widths = browser.js("Array.from(document.querySelectorAll('svg.losses g.loss')).map(p => p.getBoundingClientRect().width)")
    assert len(widths) == 5 and sum(w > 300 for w in widths) == 4
    assert 0.3 < min(widths) / max(widths) < 0.6  # the job caught in its first epoch has half the steps
    # one chart per swept parameter (optim.lr, seed), a point per run with a value
    assert browser.js("document.querySelectorAll('svg.scatter').length") == 2
    assert browser.js("document.querySelectorAll('svg.scatter g.point').length") == 2 * 5
    image = browser.screenshot()
    ink = (image[..., :3] < 0.9).any(axis=-1)
    assert 0.02 < ink.mean() < 0.8  # neither blank nor a solid block
    blue = (abs(image[..., 0] - 0x1F / 255) < 0.03) & (abs(image[..., 1] - 0x77 / 255) < 0.03) & (abs(image[..., 2] - 0xB4 / 255) < 0.03)
    assert blue.sum() > 50  # the best run's colour is on screen (swatch, curve, points)


def test_the_browser_check_does_catch_page_errors(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><p>x</p><script>console.error('boom'); notAFunction();</script></body></html>")
    browser.open(page)
    errors = browser.errors()
    assert any("boom" in e for e in errors) and any("notAFunction" in e for e in errors)
