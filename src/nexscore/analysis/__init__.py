"""Analyses of a run: the inverted U of exploration (`exploration`) and the human check of the
E/X phases (`annotation`). `rundir` reads a run directory once for them and for the report."""

from .rundir import RunData, open_run, require_run

__all__ = ["RunData", "open_run", "require_run"]
