"""`--ray` on a local 2-CPU cluster: the same bytes as the single-process stages."""

from __future__ import annotations

import pytest

from conftest import chain_sum

pytestmark = pytest.mark.usefixtures("one_thread")
TASK = dict(task="rg:chain_sum", task_options={"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2})


def _generate(run_dir, model, **kw):
    from nexscore import generate

    return generate.run(run_dir, model=str(model), problems=5, n=3, max_new_tokens=24, batch_size=4, **TASK, **kw)


def test_generation_on_ray_writes_the_bytes_of_one_process(tmp_path, cluster, chat_model):
    from nexscore.distributed.generation import generate_on_ray

    chain_sum()
    plain = _generate(tmp_path / "plain", chat_model)
    sharded = generate_on_ray(tmp_path / "ray", cluster, model=str(chat_model), problems=5, n=3, max_new_tokens=24,
                              batch_size=4, **TASK)
    assert sharded.n_traces == plain.n_traces == 15
    assert (tmp_path / "ray" / "candidates.jsonl").read_bytes() == (tmp_path / "plain" / "candidates.jsonl").read_bytes()
