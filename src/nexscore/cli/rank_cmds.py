"""`nex merge` (a family of variants with mergekit) and `nex rank` (rank variants without labels)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import NexError
from ..capture import CapturePolicy
from ..tasks import LABELED_SEED, parse_task_options, with_shots
from .root import app
from ..models.loading import resolve_device_dtype
from .common import console, stage_bars
from .model_options import DEVICE, DTYPE, MLP_SPEC
from .ray_options import RAY, ray_cluster, variant_map

PANEL = "Check and compare models"


class _Failed(NexError):
    exit_code = 1


@app.command(rich_help_panel=PANEL)
def merge(family: Path = typer.Argument(..., help="FAMILY.yaml: checkpoints, derived checkpoints and merge "
                                                  "recipes (format below)."),
          out: Path = typer.Option(..., "--out", "-o", help="Family directory to write (one model directory "
                                                             "per variant, and family.json)."),
          only: Optional[List[str]] = typer.Option(None, "--only", help="Build only this variant (repeatable).")):
    r"""Build a family of model variants with mergekit (needs nexscore\[merge]).

    Every variant is a loadable model directory OUT/<variant>/ with its
    recipe (nexscore_recipe.json, and mergekit_config.yml for mergekit-yaml);
    OUT/family.json maps each variant to its recipe, path and status.
    Checkpoints given as GGUF files (or 'default', the embedded
    SmolLM2-135M-Instruct) are converted to a model directory first.
    Run it again to resume: finished variants with an unchanged recipe are
    kept. A variant that cannot be built (checkpoints of different
    architectures, a recipe mergekit rejects) is reported by name and
    recorded as failed; the others are built.

    FAMILY.yaml (relative paths are relative to the file):

      dtype: float32          # merged weights: float32, bfloat16, float16
      seed: 0                 # mergekit's seed (DARE's random pruning)
      models:                 # default, a .gguf, a directory, a hub id
        base: default
      derive:                 # checkpoints made from another one:
        noisy:                # W + noise * std(W) * N(0,1) on the tensors
          from: base          # whose names contain one of 'modules'
          noise: 1.0
          seed: 0
          modules: \[mlp.]
      variants:
        - model: base         # a checkpoint as it is (not copied)
        - method: linear      # linear, slerp, ties, dare_ties, passthrough
          models: \[base, noisy]
          grid: {t: \[0.1, 0.2, 0.3, 0.5]}  # last model's weight
        - method: slerp
          models: \[base, noisy]
          grid: {t: \[0.25, 0.5]}
        - method: ties        # or dare_ties; the first model is the base
          models: \[base, noisy]
          grid: {weight: \[0.5], density: \[0.5, 0.9]}
          parameters: {normalize: true}     # fixed mergekit parameters
        - method: passthrough
          model: base
          drop: \[15]          # a variant without layer 15
          repeat: \[15]        # a variant with layer 15 twice in a row
        - name: custom        # raw mergekit config, checkpoint names
          config: {merge_method: linear, models: \[{model: base}]}

    Variant names: NAME, or METHOD plus the grid point (linear-t0.1,
    ties-weight0.5-density0.9, drop15, repeat15). For more than two
    models, linear takes 'weights: \[\[w1, w2, w3], ...]' in its grid.
    """
    from ..merge import build_family, read_family   # deferred: the merge package loads only for `nex merge`

    spec = read_family(family)
    err = console(stderr=True)
    err.print(f"family {family}: {len(spec.variants)} variant(s) -> {out}", soft_wrap=True)
    res = build_family(spec, out, spec_file=str(family), only=only, log=lambda m: err.print(m, soft_wrap=True))
    console().print(f"{len(res.built)} built, {len(res.skipped)} kept, {len(res.failed)} failed in "
                    f"{res.seconds:.0f} s; manifest: {out / 'family.json'}", soft_wrap=True)
    if res.failed:
        msgs = "; ".join(res.variants[n]["error"] for n in res.failed)
        raise _Failed(f"{len(res.failed)} variant(s) could not be built: {msgs}. The others are in {out}")


def _f(x, digits=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _ci(ci) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" [{_f(ci[0], 2)}, {_f(ci[1], 2)}]"


def print_rank(doc: dict) -> None:
    from rich.table import Table   # deferred: rich loads to print a result, not for --help

    out = console()
    cal = doc.get("calibration") or {}
    self_nex = any("nex_self" in (r.get("scores") or {}) for r in doc["variants"])
    t = Table(title="Variants", title_justify="left")
    cols = ["variant", "NEX"] + (["NEX self"] if self_nex else []) + ["self-cert.", "entropy", "perplexity", "length",
                                                                    "accuracy", "acc. sampled", "seconds"]
    for col in cols:
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in doc["variants"]:
        if r.get("status") != "done":
            t.add_row(r["name"], *(["failed"] + [""] * (len(cols) - 2)))
            continue
        s = r.get("scores") or {}
        acc = r.get("accuracy") or {}
        t.add_row(r["name"], _f(s.get("nex"), 4), *([_f(s.get("nex_self"), 4)] if self_nex else []),
                  _f(s.get("self_certainty")), _f(s.get("entropy")),
                  _f(s.get("perplexity")), _f(s.get("length"), 1),
                  _f(acc.get("accuracy")) + (f" ({acc.get('n_correct')}/{acc.get('n_problems')})" if acc else ""),
                  _f(r.get("sampled_accuracy")), _f((r.get("seconds") or {}).get("total"), 0))
    out.print(t)
    if cal and (cal.get("calibrate"), cal.get("on")) != ("self", "self"):
        status = f" ({cal['status']}: {cal.get('error', '')})" if cal.get("status") != "done" else ""
        out.print(f"NEX calibrated: --calibrate {cal.get('calibrate')} on {cal.get('on')}{status}", soft_wrap=True)
    comp = doc.get("comparison") or {}
    if comp.get("best") is None:
        out.print("no accuracy (the task cannot check answers, or --labeled 0): scores only")
        return
    t2 = Table(title=f"Scores against accuracy over {comp['n_variants']} variants (best: {comp['best']}); "
                     "95% bootstrap intervals over prompts", title_justify="left")
    for col in ("score", "better when", "Spearman", "Kendall", "top-1 regret", "picks"):
        t2.add_column(col, justify="left" if col in ("score", "better when", "picks") else "right")
    for key, e in comp["scores"].items():
        t2.add_row(e.get("label", key), "higher" if e["orientation"] > 0 else "lower",
                   _f(e.get("spearman"), 2) + _ci(e.get("spearman_ci")), _f(e.get("kendall"), 2) + _ci(e.get("kendall_ci")),
                   _f(e.get("regret")) + _ci(e.get("regret_ci")), str(e.get("pick")))
    out.print(t2)


@app.command(rich_help_panel=PANEL)
def rank(variants: List[str] = typer.Argument(..., help="Variants: a family directory (from `nex merge`), model "
                                                        "specs (a directory, a .gguf, default) or NAME=SPEC."),
         task: str = typer.Option(..., "--task", "-t", help="Problem source, e.g. rg:chain_sum (see `nex tasks`)."),
         task_opt: Optional[List[str]] = typer.Option(None, "--task-opt", help="Task option KEY=VALUE (repeatable)."),
         shots: Optional[int] = typer.Option(None, "--shots", help="Solved examples before each question, for the "
                                             "prompts and the labelled set alike (the task option shots; see `nex "
                                             "tasks NAME`). [default: 0]"),
         prompts: int = typer.Option(32, "--prompts", "-k", help="Unlabeled prompts K, the same for every variant."),
         n: int = typer.Option(4, "--n", "-n", help="Traces sampled per prompt."),
         temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature."),
         top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass."),
         max_new_tokens: int = typer.Option(160, "--max-new-tokens", help="Longest response (sampled and greedy)."),
         seed: int = typer.Option(0, "--seed", help="Sampling seed."),
         labeled: int = typer.Option(64, "--labeled", help="Labelled problems for accuracy (0: no accuracy)."),
         labeled_seed: int = typer.Option(LABELED_SEED, "--labeled-seed", help="Task seed of the labelled set (the "
                                          "prompts use the task's own seed, 0 unless --task-opt seed=...). "
                                          "reasoning-gym seeds item i with seed + i, so a seed near the prompts' "
                                          "(seed 1 against 0) would share all but one problem with them; the "
                                          "default is far from any run's seed."),
         rows: Optional[str] = typer.Option(None, "--rows", help="Row policy of the capture: tokens:N (N response "
                                            "tokens per row) or steps (a row per reasoning step; steps:M cuts lines "
                                            "longer than M tokens at sentence ends). Recorded in rank.json. "
                                            f"[default: {CapturePolicy().row_policy.spec}]"),
         block_size: Optional[int] = typer.Option(None, "--block-size",
                                                  help="Response tokens per cache row: the same as --rows tokens:N."),
         k: Optional[int] = typer.Option(None, "--k", help="Activations kept per token (default of the rule)."),
         selection: str = typer.Option(CapturePolicy().selection, "--selection",
                                       help="Capture rule: global, per_layer, zscore, threshold:X or upper:L."),
         batch_size: int = typer.Option(64, "--batch-size", help="Traces generated together."),
         boot: int = typer.Option(1000, "--boot", help="Bootstrap replicates over prompts (0: none)."),
         calibrate: Optional[str] = typer.Option(None, "--calibrate",
                                                 help="NEX calibration: self, split, pooled or file (below); file "
                                                      "when --weights is given, else self."),
         calibrate_on: str = typer.Option("self", "--calibrate-on",
                                          help="Whose traces NEX learns on: self (each variant its own), pooled "
                                               "(all together) or a variant's name (e.g. base)."),
         weights: Optional[Path] = typer.Option(None, "--weights", "-w",
                                                help="With --calibrate file: score every variant with these "
                                                     "weights (learned on the family's source model; weights whose "
                                                     "model record names another model are refused)."),
         split_seed: int = typer.Option(0, "--split-seed", help="Seed of the halves of the prompts (--calibrate "
                                                                  "split)."),
         device: str = DEVICE, dtype: str = DTYPE, mlp_spec: Optional[Path] = MLP_SPEC,
         out: Path = typer.Option(Path("runs/rank"), "--out", "-o", help="Rank directory to write."),
         overwrite: bool = typer.Option(False, "--overwrite", help="Discard earlier results in OUT and start again."),
         ray: Optional[str] = RAY):
    """Rank model variants by NEX on the same unlabeled prompts, with label-free baselines.

    For every variant, one at a time (memory stays that of one model): sample N traces on the
    same K prompts, capture them, learn NEX weights on that variant's own traces, and score
    NEX = mean GMF. The same traces give the baselines: mean self-certainty, mean entropy,
    mean perplexity and mean length. Where the task checks answers, each variant also answers
    a separate labelled set greedily (--labeled problems, task seed --labeled-seed), and every
    score is compared with accuracy across variants: Spearman and Kendall correlations and the
    top-1 regret (best accuracy minus the accuracy of the variant the score picks), with 95%
    bootstrap intervals over the prompts. Scores are oriented so that the better-predicted
    variant scores higher (entropy, perplexity and length: lower is better).

    Calibration of NEX: --calibrate-on self (default: each variant's own traces), pooled (every
    variant's traces together, learned once) or VARIANT (that variant's traces, e.g. base; every
    variant scored with its weights). --calibrate self scores in-sample; split scores each half
    of the prompts (seeded by --split-seed) with weights learned on the other half only; pooled
    is --calibrate-on pooled; file scores every variant with --weights. Shared weights are in
    the layer numbering of the family's source model: a passthrough variant's layers (one
    dropped or repeated) map to the source layers they copy, and rank.json records each map.
    The NEX column is then the calibrated one and "NEX self" the self-calibrated one; the
    variants are not sampled again when only the calibration changes.

    Writes OUT/rank.json (after every variant), OUT/variants/<name>/ (a run directory per
    variant: candidates.jsonl, cache/, weights.npz, accuracy.json, variant.json); `nex report
    OUT` draws each score against accuracy. Resumable: finished variants are kept, an
    interrupted one resumes its generation and capture. A variant that fails (e.g. it cannot
    be loaded) is reported by name; the others' results are kept.

    With --ray, the variants are computed at once, each as a Ray task
    holding one model (a GPU each where the cluster has GPUs); rank.json is
    the same as without --ray.

    Example: nex rank runs/family --task rg:chain_sum --task-opt min_terms=2 --task-opt
    max_terms=3 --task-opt max_digits=2 --prompts 32 --labeled 64 --out runs/rank
    """
    from .. import rank as ranking   # deferred: numpy and scipy load when the command runs

    with ray_cluster(ray) as cluster:
        if cluster is not None and cluster.gpus and device == "auto":
            device = "cuda"                                 # "auto" means what it means on the workers
        device, dtype = resolve_device_dtype(device, dtype)     # rank.json records what "auto" meant here
        options = with_shots(parse_task_options(task_opt), shots)
        if options.get("shots") == 0:
            del options["shots"]                            # 0 is the task's default: one ranking, not two
        settings = ranking.RankSettings(task=task, task_options=options, prompts=prompts, n=n,
                                        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                                        labeled=labeled, labeled_seed=labeled_seed, block_size=block_size, rows=rows,
                                        k=k, selection=selection, batch_size=batch_size, device=device, dtype=dtype,
                                        n_boot=boot, mlp_spec=str(mlp_spec) if mlp_spec else None, calibrate=calibrate,
                                        calibrate_on=calibrate_on, weights=str(weights) if weights else None,
                                        split_seed=split_seed)
        with stage_bars() as bars:
            result = ranking.run(list(variants), out, settings, overwrite=overwrite, log=bars.log, progress=bars,
                                 variant_map=variant_map(cluster, bars))
    print_rank(result.doc)
    console().print(f"results: {result.path} ({result.seconds:.0f} s); `nex report {out}` for "
                    "the figure", soft_wrap=True)
    if result.calibration_error:
        raise _Failed(f"NEX calibration failed: {result.calibration_error}. The self-calibrated results are in "
                      f"{result.path}")
    if result.failed:
        raise _Failed(f"{len(result.failed)} variant(s) failed: "
                      + "; ".join(r.get("error") or r["name"] for r in result.failed)
                      + f". The other variants' results are in {result.path}")
