"""core.weights: the weights formula, the weights file with the record of the model its cache
came from (`nex learn` writes it; plain readers still see arrays), and damaged weights files
refused on load with one clear line (issue 14)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from conftest import assert_one_line_error, learnable_cache, random_weights, run_nex
from damage import weights_file
from nexscore.core import learn_weights, weights_from_masses
from nexscore.core.weights import load_weights, save_weights, weights_model
from nexscore.errors import WeightsError
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


def test_weights_file_holds_what_np_savez_writes(tmp_path):
    """The copy-free npz writer gives the same entries as np.savez, byte for byte."""
    w = np.random.default_rng(0).standard_normal(1 << 22).astype(np.float32)
    extra = {"grid": np.arange(6).reshape(2, 3)[:, ::2]}
    save_weights(tmp_path / "w.npz", w, model={"id": "m"}, **extra)
    np.savez(tmp_path / "ref.npz", weights=w, model_json=np.array('{"id": "m"}'), **extra)
    ours, ref = zipfile.ZipFile(tmp_path / "w.npz"), zipfile.ZipFile(tmp_path / "ref.npz")
    assert sorted(ours.namelist()) == sorted(ref.namelist())
    for name in ref.namelist():
        assert ours.read(name) == ref.read(name), name


# ---------------------------------------------------------------------------- damaged weights files
@pytest.fixture
def weights(tmp_path):
    """Weights learned on a cache whose learning credits neurons."""
    w = learn_weights(learnable_cache(tmp_path / "c"))
    assert w.any()
    return w


@pytest.mark.parametrize("kind, needle", [
    ("nan", "not finite"), ("inf", "not finite"), ("zero", "every weight is 0"), ("long", "shape (4"),
    ("short", "shape ("), ("float64", "dtype float64"), ("int", "dtype int32"), ("2d", "shape (2048, 2048)"),
    ("truncated", "weights"), ("no_array", "no 'weights' array"),
])
def test_damaged_weights_are_refused_on_load(tmp_path, weights, kind, needle):
    """Before: NaN weights made every GMF 0.0, inf every score NaN; zeros and arrays longer
    than 2^22 were accepted, all with exit 0."""
    path = tmp_path / "w.npz"
    weights_file(path, kind, weights, np.random.default_rng(1))
    with pytest.raises(WeightsError, match="w.npz") as err:
        load_weights(path)
    assert needle in str(err.value)


def test_weights_header_cannot_size_an_allocation(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(tmp_path / "w.npz", "w") as z:
        z.writestr("weights.npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(WeightsError, match=r"shape \(1000000000000,\)"):
        load_weights(tmp_path / "w.npz")


def test_weights_checksum_is_verified(tmp_path, weights):
    np.savez(tmp_path / "w.npz", weights=weights)
    data = bytearray((tmp_path / "w.npz").read_bytes())
    data[len(data) // 2] ^= 0x40                   # inside the array's bytes
    (tmp_path / "w.npz").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="CRC"):
        load_weights(tmp_path / "w.npz")


def test_weights_npy_and_byte_order(tmp_path, weights):
    np.save(tmp_path / "w.npy", weights.astype(">f4"))
    got = load_weights(tmp_path / "w.npy")
    assert got.dtype == np.float32 and got.dtype.isnative and np.array_equal(got, weights)


def test_zero_weights_cli(tmp_path):
    cache = learnable_cache(tmp_path / "c")
    np.savez(tmp_path / "zero.npz", weights=np.zeros(1 << 22, np.float32))
    assert_one_line_error(run_nex("score", cache, "-w", tmp_path / "zero.npz"), "every weight is 0",
                          "--allow-zero-weights")
    proc = run_nex("score", cache, "-w", tmp_path / "zero.npz", "--allow-zero-weights")
    assert proc.returncode == 0 and "NEX 0.000000" in proc.stdout
    w = np.zeros(1 << 22, np.float32)
    w[[3, 9]] = [np.nan, np.inf]
    np.savez(tmp_path / "nan.npz", weights=w)
    assert_one_line_error(run_nex("score", cache, "-w", tmp_path / "nan.npz"), "2 weight(s) are not finite")
