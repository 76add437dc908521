"""analysis.rundir: a run directory that lacks a step, or holds another run's cache, is refused
by every stage that reads it, with the command to run."""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import assert_one_line_error, build_run, run_nex


def _report(run):
    from nexscore.report import build_report
    return build_report(run, use_tokenizer=False)


def _exploration(run):
    from nexscore.analysis.exploration import analyse_exploration
    return analyse_exploration(run, n_boot=10)


def _export(run):
    from nexscore.report.annotate import export_annotation
    return export_annotation(run, run / "ann", n=2, use_tokenizer=False)


@pytest.mark.parametrize("step", [_report, _exploration, _export])
def test_missing_steps_name_the_command_to_run(tmp_path, step):
    from nexscore.errors import InputError

    run = build_run(tmp_path, select=False)
    step(run)                                               # a complete run works
    shutil.move(run / "cache", tmp_path / "cache.bak")
    with pytest.raises(InputError, match=rf"no cache/.*run `nex capture {re.escape(str(run))}` first"):
        step(run)
    (run / "cache.partial").mkdir()
    with pytest.raises(InputError, match="the capture did not finish; run `nex capture"):
        step(run)
    (run / "cache.partial").rmdir()
    shutil.move(tmp_path / "cache.bak", run / "cache")
    (run / "candidates.jsonl").unlink()
    with pytest.raises(InputError, match=r"no candidates.jsonl .*`nex generate .*` first, then `nex capture"):
        step(run)
    with pytest.raises(InputError, match="no such run directory.*nex generate"):
        step(tmp_path / "nowhere")


def test_missing_steps_on_the_command_line(tmp_path):
    run = build_run(tmp_path, select=False)
    shutil.rmtree(run / "cache")
    assert_one_line_error(run_nex("report", run), f"nex capture {run}", "first")
    (run / "candidates.jsonl").unlink()
    assert_one_line_error(run_nex("annotate", "export", run), "nex generate", "candidates.jsonl")


def test_cache_of_another_run_is_refused(tmp_path):
    run = build_run(tmp_path, select=False)
    other = build_run(tmp_path / "o", select=False, n_problems=3)
    shutil.rmtree(run / "cache")
    shutil.copytree(other / "cache", run / "cache")
    from nexscore.errors import RunError
    from nexscore.report import build_report

    with pytest.raises(RunError, match=rf"captured from another run.*nex capture {re.escape(str(run))}"):
        build_report(run, use_tokenizer=False)
