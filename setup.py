"""Build of the optional compiled kernels (everything else is declared in pyproject.toml).

The extension is optional: where no C compiler is found the package installs without it and
nexscore.core.kernels uses its numpy versions (same results, several times slower).
"""

import sys

from setuptools import Extension, setup

# exact float32 arithmetic: no fast-math, no fused multiply-add contraction
FLAGS = [] if sys.platform == "win32" else ["-O3", "-fno-fast-math", "-ffp-contract=off"]

setup(ext_modules=[Extension("nexscore.core._kernels", ["src/nexscore/core/_kernels.c"],
                             extra_compile_args=FLAGS, optional=True)])
