"""core.sanitize: the spec's rules for unusable keys and masses, on a hand-made list."""

from __future__ import annotations

import numpy as np

from nexscore.cache.layout import make_key
from nexscore.core.sanitize import sanitise

F16 = np.float16


def test_sanitise_rules():
    reserved = int(make_key(255, 5))
    far = int(make_key(70, 1))                     # layer 70 is beyond the 2^22 key space
    keys = np.array([1, 2, reserved, 3, far, 4, 5, 6], np.uint32)
    mass = np.array([1, np.nan, 3, 1, 1, 0, -2, 0], F16)
    s = sanitise(keys, mass, np.array([3, 2, 1, 2, 0]))
    np.testing.assert_array_equal(s.keep, [True, True, False, False, False, True, True, True])
    np.testing.assert_array_equal(s.mass, [1, 0, 3, 1, 1, 0, 0, 0])   # NaN and negative -> 0
    # list 0 keeps mass 1; list 1 has an out-of-range key; lists 2, 3 have zero mass; list 4 is empty
    np.testing.assert_array_equal(s.list_ok, [True, False, False, False, False])
