"""The package (nexscore/__init__.py): after `import nexscore`, each stage's library function is
reachable as nexscore.<stage>.run / build, its package imported on first use."""

from __future__ import annotations

import nexscore
from nexscore import analysis, core, rank, report, select
from nexscore.analysis import exploration
from nexscore.neurons import ablate_experiment, transfer_experiment


def test_stage_functions_are_reachable_from_the_package():
    assert nexscore.core.run is core.run and nexscore.select.run is select.run
    assert nexscore.report.build is report.build and nexscore.rank.run is rank.run
    assert callable(exploration.run) and analysis is nexscore.analysis
    assert callable(ablate_experiment) and callable(transfer_experiment)
    assert select.run.__module__ == "nexscore.select.run" and report.build.__module__ == "nexscore.report.build"
    assert nexscore.study.run.__module__ == "nexscore.study.run"
