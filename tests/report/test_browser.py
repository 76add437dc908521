"""The report and the annotation page in headless Chromium: no console errors, the elements the
scripts build exist, a screenshot is taken, and the annotation page's own marks (driven by its
#selftest hook: a drag, a click, a second click, 'done') give a labels file `nex annotate agree`
accepts. Skips where Chromium is absent (Debian: apt-get install chromium).

Set NEX_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import html as htmlmod
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import build_run, needs, viewer_data

CHROMIUM = os.environ.get("NEX_CHROMIUM") or next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
              needs("matplotlib")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


def chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                          capture_output=True, text=True, timeout=180)
    return proc


def console_lines(stderr: str) -> list[str]:
    """Messages the page wrote to its console (Chromium logs them as ...:CONSOLE...)."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def screenshot(url: str, tmp: Path, name: str, size="1280,2000") -> Path:
    out = tmp / f"{name}.png"
    proc = chromium(url, tmp, f"--screenshot={out}", f"--window-size={size}")
    assert out.is_file() and out.stat().st_size > 10_000, proc.stderr[-2000:]
    assert not console_lines(proc.stderr), console_lines(proc.stderr)
    keep = os.environ.get("NEX_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(keep) / out.name)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from nexscore.analysis.exploration import analyse_exploration, write_exploration

    root = tmp_path_factory.mktemp("browser")
    r = build_run(root, n_samples=5)
    write_exploration(r, analyse_exploration(r, n_boot=50))
    return r


def test_report_in_chromium(run, tmp_path):
    from nexscore.report import build_report

    path = build_report(run, max_problems=3, use_tokenizer=False).path
    data = viewer_data(path.read_text())
    url = path.resolve().as_uri()
    proc = chromium(url, tmp_path, "--dump-dom", "--virtual-time-budget=3000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not console_lines(proc.stderr), console_lines(proc.stderr)
    dom = proc.stdout
    assert re.search(r'id="js-ok"[^>]*data-ok="1"', dom), "the viewer script did not finish"
    assert dom.count("<option") == len(data["responses"])
    first = next(r for r in data["responses"] if r["has_phases"])       # the viewer opens on it
    text = re.search(r'<div class="text" id="text">(.*?)</div>', dom, re.S).group(1)
    assert text.count('class="tok ') == len(first["tokens"])
    assert re.findall(r'class="tok (\w)', text) == [
        row[2] for row in first["rows"] for _ in range(row[0])]            # each token has its row's phase
    trace = re.search(r'<div id="trace">(.*?)</div>', dom, re.S).group(1)
    assert trace.count('class="row"') == len(first["rows"]) and "<path" in trace
    for sid in ("selection", "gmf", "viewer", "neurons", "exploration"):
        assert f'id="{sid}"' in dom
    shot = screenshot(url, tmp_path, "report")
    assert shot.stat().st_size > 10_000


def test_annotation_page_in_chromium(run, tmp_path):
    from nexscore.analysis.annotation import agreement
    from nexscore.report.annotate import export_annotation

    r = export_annotation(run, tmp_path / "ann", n=3, seed=1, use_tokenizer=False)
    url = r["path"].resolve().as_uri()
    proc = chromium(url + "#selftest", tmp_path, "--dump-dom", "--virtual-time-budget=3000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not console_lines(proc.stderr), console_lines(proc.stderr)
    dom = proc.stdout
    assert dom.count('class="card') == 3
    assert 'id="download"' in dom
    m = re.search(r'<pre id="selftest" data-ok="1">(.*?)</pre>', dom, re.S)
    assert m, "the page's self-test did not run"
    labels = json.loads(htmlmod.unescape(m.group(1)))
    first = labels["responses"][0]
    n = first["n_tokens"]
    expect = list(range(1, min(n - 1, 5) + 1))
    assert first["marked_tokens"] == expect and first["done"] is True           # drag 1..5; click, unclick 0
    assert first["spans"] == [[1, expect[-1] + 1]]
    assert all(not x["marked_tokens"] and not x["done"] for x in labels["responses"][1:])
    assert labels["format"] == "nexscore-annotation/1" and labels["page_id"] == r["page_id"]
    assert len(re.findall(r'class="tok m"', dom)) == len(expect)
    lab = tmp_path / "labels.json"
    lab.write_text(json.dumps(labels))
    res = agreement(run, lab, n_shuffles=10)
    assert res["n_responses"] == 1 and res["responses"][0]["index"] == first["index"]
    screenshot(url, tmp_path, "annotate", size="1100,1300")
