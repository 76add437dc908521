"""core.weights: the weights formula, and the weights file with the record of the model its
cache came from (`nex learn` writes it; plain readers still see arrays)."""

from __future__ import annotations

import numpy as np

from conftest import random_weights
from nexscore.core import weights_from_masses
from nexscore.core.weights import load_weights, save_weights, weights_model
from nexscore.rundir import cache_model_record


def test_weights_formula():
    w = weights_from_masses(np.float32([1, 0, 0, 2]), np.float32([0, 1, 0, 2]))
    np.testing.assert_allclose(w, [np.tanh(np.log((1 + 1e-6) / 1e-6)), np.tanh(np.log(1e-6 / (1 + 1e-6))),
                                   0.0, 0.0], rtol=1e-6)
    assert w.dtype == np.float32 and w[2] == 0


def test_weights_file_keeps_its_model_record_and_stays_readable(tmp_path):
    w = random_weights()
    rec = cache_model_record({"model": {"spec": "x", "id": "tiny", "file_sha256": None}, "layers": 3,
                              "intermediate_size": 32})
    save_weights(tmp_path / "w.npz", w, model=rec)
    save_weights(tmp_path / "plain.npz", w)
    assert np.array_equal(load_weights(tmp_path / "w.npz"), w)
    assert weights_model(tmp_path / "w.npz") == {"id": "tiny", "file_sha256": None, "n_layers": 3,
                                                 "intermediate_size": 32}
    assert weights_model(tmp_path / "plain.npz") is None
    with np.load(tmp_path / "w.npz", allow_pickle=False) as z:       # reference readers see plain arrays
        assert set(z.files) == {"weights", "model_json"} and z["model_json"].dtype.kind == "U"


def test_nex_learn_records_the_model_of_the_cache(tmp_path):
    from typer.testing import CliRunner

    from nexscore.cache.writer import CacheWriter
    from nexscore.cli import app

    rng = np.random.default_rng(0)
    w = CacheWriter(tmp_path / "cache", resume=False)
    for _ in range(3):
        rows = [np.sort(rng.choice(64, 6, replace=False)).astype(np.uint32) + (r % 3 << 16) for r in range(5)]
        w.add(np.concatenate(rows).astype(np.uint32), rng.uniform(0.1, 1, 30).astype(np.float32), [6] * 5, [4] * 5)
    w.finish({"model": {"spec": "default", "id": "tiny-a", "file_sha256": None}, "layers": 3,
              "intermediate_size": 64})
    # random rows credit no neuron here: the record is what this checks, so zero weights are allowed
    res = CliRunner().invoke(app, ["learn", str(tmp_path / "cache"), "--out", str(tmp_path / "w.npz"),
                                   "--allow-zero-weights"])
    assert res.exit_code == 0, res.output
    assert weights_model(tmp_path / "w.npz") == {"id": "tiny-a", "file_sha256": None, "n_layers": 3,
                                                 "intermediate_size": 64}
