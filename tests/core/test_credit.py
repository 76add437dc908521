"""core.credit: the reuse credit of a cycle's neurons, computed by hand on two cycles."""

from __future__ import annotations

import numpy as np

from conftest import write_cache
from nexscore.cache import open_cache
from nexscore.core.learn import accumulate


def test_reuse_credit_by_hand(tmp_path, monkeypatch):
    """Two cycles; the one whose reuse is below the median credits its neurons as redundant.

    rows (1 token each): r0 E {1,2} | r1 X {1,2,3} | r2 E {4,5,6} | r3 X {4,7} | r4 X {4,5}
    slopes 2,1,3,1,0 (median 1). Cycle 0: strength 1, consolidation 1-1/2, reuse (1+1)/4.
    Cycle 1: strength 2, consolidation 1-0.5/3, reuse (3+1+1)/(4+2). mu = median reuse.
    """
    rows = [([1, 2], [2, 4], 1), ([1, 2, 3], [1, 1, 2], 1), ([4, 5, 6], [1, 2, 4], 1),
            ([4, 7], [3, 1], 1), ([4, 5], [1, 1], 1)]
    cache = write_cache(tmp_path / "c", [rows])
    import nexscore.core.learn as learn

    monkeypatch.setattr(learn, "segment_batch",
                        lambda slopes, ptr, **kw: np.array([1, 0, 1, 0, 0], bool))
    acc = accumulate(open_cache(cache))
    r0, r1 = 2 / 4, 5 / 6
    mu = float(np.float32((np.float32(r0) + np.float32(r1)) / np.float32(2)))
    red_scale = abs(r0 - mu)                                 # progress < 0: redundant
    eff_scale = (r1 - mu) * (1 - 0.5 / (3 + 1e-6))           # progress > 0 and consolidated
    np.testing.assert_allclose(acc.redundant[[1, 2]], [2 * red_scale, 4 * red_scale], rtol=1e-6)
    np.testing.assert_allclose(acc.effective[[4, 5, 6]], [1 * eff_scale, 2 * eff_scale, 4 * eff_scale],
                               rtol=1e-6)
    assert acc.effective[[1, 2, 3, 7]].sum() == 0 and acc.redundant[[3, 4, 5, 6, 7]].sum() == 0
    w = acc.weights()
    assert w[4] > 0.99 and w[1] < -0.99 and w[3] == 0 and w[7] == 0
