"""nexscore: NEX (Neuron Explore-Exploit) scoring of reasoning traces from a model's own neurons.

    >>> import nexscore
    >>> w = nexscore.learn_weights("runs/demo/cache")        # label-free, on the pool itself
    >>> gmf = nexscore.score_responses("runs/demo/cache", w)  # Good-Mass Fraction per response

Each step of `nex` is a library function with a result object, in the package of its stage:

    >>> from nexscore import core, select, report
    >>> core.run("runs/demo/cache", "out/").nex_score       # `nex run`
    >>> select.run("runs/demo").paths                        # `nex select`
    >>> report.build("runs/demo").path                       # `nex report`
"""

import importlib

from .errors import NexError

__version__ = "0.1.0"

_CORE = {"learn_weights", "score_responses", "nex_score", "segment", "load_weights",
         "save_weights", "log_gap"}
# the packages of the pipeline's stages: `nexscore.select.run(...)` works after `import nexscore`
_STAGES = {"generate", "capture", "core", "select", "report", "analysis", "rank", "neurons", "merge", "study"}


def __getattr__(name):
    # The core and the stages are imported on first use so that `import nexscore` (and the
    # CLI) start fast.
    if name in _CORE:
        return getattr(importlib.import_module(f"{__name__}.core"), name)
    if name in _STAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'nexscore' has no attribute {name!r}")


__all__ = sorted(_CORE | {"NexError", "__version__"})
