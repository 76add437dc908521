"""nexscore: NEX (Neuron Explore-Exploit) scoring of reasoning traces from a model's own neurons.

    >>> import nexscore
    >>> w = nexscore.learn_weights("runs/demo/cache")        # label-free, on the pool itself
    >>> gmf = nexscore.score_responses("runs/demo/cache", w)  # Good-Mass Fraction per response
"""

from .errors import NexError

__version__ = "0.1.0"

_CORE = {"learn_weights", "score_responses", "nex_score", "segment", "load_weights",
         "save_weights", "log_gap"}


def __getattr__(name):
    # The core is imported on first use so that `import nexscore` (and the CLI) start fast.
    if name in _CORE:
        from . import core
        return getattr(core, name)
    raise AttributeError(f"module 'nexscore' has no attribute {name!r}")


__all__ = sorted(_CORE | {"NexError", "__version__"})
