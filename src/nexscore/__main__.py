"""`python -m nexscore ...` is the same as `nex ...`."""

from .cli import main

main()
