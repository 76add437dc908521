"""`nex rank`: score every variant of a family on the same unlabeled prompts, without labels.

For each variant, one at a time (so memory stays that of one model): load it, sample N traces on
the same K prompts, capture them, learn NEX weights on that variant's own pool, and score
(NEX under another calibration, e.g. weights learned on the base variant or on every variant
together, is computed once every variant is done: `rank.calibration`):

    NEX            = mean Good-Mass Fraction of the variant's traces (higher = predicted better)
    self_certainty = mean over traces of the mean token self-certainty   (higher = better)
    entropy        = mean over traces of the mean token entropy          (lower = better)
    perplexity     = mean over traces of exp(-mean token log p)          (lower = better)
    length         = mean response length in tokens                      (shorter = better)

Where the task checks answers, each variant also answers a separate labelled set greedily
(`nexscore.evaluate`), and every score is compared with accuracy across variants: Spearman,
Kendall, top-1 regret, with percentile bootstrap intervals over the unlabeled prompts.

The stage is `run(variants, out, settings) -> RankResult` (what `nex rank` calls);
`rank_variants` does the work once the variants are named.

RANK_DIR/variants/<name>/ is an ordinary run directory (run.json, candidates.jsonl, cache/,
weights.npz) plus accuracy.json and variant.json (the variant's finished, self-calibrated
result); a variant with variant.json is not computed again, whatever the calibration asked.
RANK_DIR/rank.json is rewritten after every variant; its "nex" is NEX under the calibration
asked for (null until it is computed), its "nex_self" the self-calibrated NEX when they differ.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..cache.writer import read_signals
from ..capture import CapturePolicy, capture_candidates
from ..capture.selection import DEFAULT_SELECTION
from ..core import learn_weights, mean_score, save_weights, score_responses
from ..core.calibrate import DEFAULT_SPLIT_SEED
from ..errors import InputError, NexError, check_at_least
from ..evaluate import evaluate
from ..generate import Settings, generate_run
from ..io import write_json
from ..merge.build import FAMILY_JSON, family_variants
from ..models import load_model
from ..rundir import CACHE, WEIGHTS, check_same_settings, fingerprint, read_candidates
from ..tasks import LABELED_SEED, load_task
from . import calibration, metrics

RANK_JSON = "rank.json"
VARIANT_JSON = "variant.json"
VARIANTS = "variants"
# name -> (label, orientation: +1 when higher predicts a better variant)
SCORES = {
    "nex": ("NEX (mean GMF)", +1),
    "self_certainty": ("mean self-certainty", +1),
    "entropy": ("mean entropy", -1),
    "perplexity": ("mean perplexity", -1),
    "length": ("mean length", -1),
}
# beside them when NEX is not self-calibrated: the self-calibrated NEX, for comparison
SELF_NEX = "nex_self"
SELF_NEX_SCORE = ("NEX, self-calibrated (mean GMF)", +1)


# settings that change how a ranking runs, not its results (left out of the settings digest)
RUN_ONLY = ("batch_size", "capture_batch_size", "n_boot", "device", "mlp_spec")
# settings of the calibration: they change rank.json's NEX, not any variant's traces or variant.json,
# so a ranking is re-scored under another calibration without sampling again
CALIBRATION = ("calibrate", "calibrate_on", "weights", "split_seed")


@dataclass
class RankSettings:
    task: str
    task_options: dict
    prompts: int = 32
    n: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 160
    seed: int = 0                       # sampling seed
    labeled: int = 64                   # labelled problems for accuracy (0: none)
    labeled_seed: int = LABELED_SEED    # task seed of the labelled set (rg tasks): clear of the prompts' seed
    block_size: int | None = None       # tokens per row: rows "tokens:N" (give either; neither: CapturePolicy's)
    k: int | None = None
    selection: str = DEFAULT_SELECTION
    batch_size: int = 64
    capture_batch_size: int = 16
    device: str = "cpu"
    dtype: str = "float32"
    n_boot: int = 1000
    mlp_spec: str | None = None         # --mlp-spec file: where the MLPs are, not what they compute
    calibrate: str | None = None        # self | split | pooled | file (None: file with weights, else self)
    calibrate_on: str = "self"          # self | pooled | a variant's name (`rank.calibration`)
    weights: str | None = None          # weights file of --calibrate file
    split_seed: int = DEFAULT_SPLIT_SEED
    rows: str | None = None             # row policy of the capture: tokens:N | steps[:M] (`capture.rows`)

    def __post_init__(self):
        """The row policy resolved once made (rows its canonical spelling, block_size N for
        tokens:N, None for steps): rank.json records the rows used, the digest is the same
        before and after `check`, and the default is CapturePolicy's, not a second one here.
        InputError for a bad --rows, or --block-size and --rows that disagree."""
        policy = self.capture_policy()
        self.rows, self.block_size = policy.rows, policy.block_size

    def check(self) -> None:
        check_at_least("--prompts", self.prompts)
        check_at_least("--n", self.n)
        check_at_least("--labeled", self.labeled, 0)
        check_at_least("--boot", self.n_boot, 0)

    def capture_policy(self) -> CapturePolicy:
        """The capture policy of every variant's traces (resolved; InputError for a bad --rows, or
        --block-size and --rows that disagree)."""
        return CapturePolicy(k=self.k, selection=self.selection, block_size=self.block_size, rows=self.rows,
                             batch_size=self.capture_batch_size).resolved()

    def digest(self) -> str:
        """What a finished variant's result depends on (device/dtype/batching aside)."""
        return fingerprint(asdict(self), ignore=RUN_ONLY + CALIBRATION)


@dataclass
class RankResult:
    """What `run` wrote: rank.json (`path`) and its content (`doc`: settings, one entry per
    variant, the comparison of every score with accuracy)."""

    doc: dict
    path: Path
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict]:
        """The variants that could not be scored (each with its error)."""
        return [r for r in self.doc["variants"] if r.get("status") != "done"]

    @property
    def calibration_error(self) -> str | None:
        """Why NEX could not be computed under the calibration asked for (None when it was)."""
        cal = self.doc.get("calibration") or {}
        return cal.get("error") if cal.get("status") == "failed" else None


@dataclass
class VariantInput:
    name: str
    spec: str                           # what load_model gets
    recipe: dict | None = None          # from family.json


def expand_inputs(items: list[str]) -> list[VariantInput]:
    """VARIANT arguments to named variants: a family directory (family.json) gives its finished
    variants; NAME=SPEC names a model spec; a bare spec is named after its directory or file."""
    out: list[VariantInput] = []
    for item in items:
        name, spec = None, item
        if "=" in item and not Path(item).exists():
            name, spec = item.split("=", 1)
        p = Path(spec).expanduser()
        if name is None and p.is_dir() and (p / FAMILY_JSON).is_file():
            found = family_variants(p)
            if not found:
                raise InputError(f"{p}: the family has no finished variant (see {p / FAMILY_JSON})")
            out += [VariantInput(n, str(v["path"]), v.get("recipe")) for n, v in found.items()]
            continue
        if name is None:
            name = p.name if (p.exists() and p.name) else spec
            if p.suffix.lower() == ".gguf":
                name = p.stem
        name = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name).strip("._") or "model"
        out.append(VariantInput(name, spec))
    seen: dict[str, int] = {}
    for v in out:
        if v.name in seen:
            raise InputError(f"two variants are named '{v.name}'; name them with NAME=SPEC")
        seen[v.name] = 1
    if not out:
        raise InputError("no variants given: pass model specs, NAME=SPEC pairs or a family directory")
    return out


def _tasks(settings: RankSettings):
    task = load_task(settings.task, **settings.task_options)
    labeled = None
    offset = 0
    if settings.labeled > 0 and getattr(task, "can_check", True):
        try:
            labeled = load_task(settings.task, **{**settings.task_options, "seed": settings.labeled_seed})
        except NexError:                # a task without seeds (a JSONL file): the problems after the K prompts
            labeled, offset = task, settings.prompts
        if labeled is not task and settings.task_options.get("seed", 0) == settings.labeled_seed:
            offset = settings.prompts   # same seed as the prompts: take the problems after them
    return task, labeled, offset


def _per_trace_scores(cache_dir: Path, weights: np.ndarray, n_tokens: np.ndarray) -> dict[str, np.ndarray]:
    from ..select.baselines import trace_stats  # deferred: the select package loads scipy.stats (0.4 s)

    gmf = score_responses(cache_dir, weights).astype(np.float64)
    signals, ptr = read_signals(cache_dir)
    st = trace_stats({k: np.asarray(v) for k, v in signals.items() if k in ("entropy", "logprob",
                                                                            "self_certainty")}, ptr)
    out = {"nex": gmf, "length": np.asarray(n_tokens, np.float64)}
    if st.self_certainty is not None:
        out["self_certainty"] = st.self_certainty
    if st.mean_entropy is not None:
        out["entropy"] = st.mean_entropy
    if st.perplexity is not None:
        out["perplexity"] = st.perplexity
    return out


def _per_prompt(values: np.ndarray, problem_ids: list[str], order: list[str]) -> tuple[list, list]:
    pos = {p: i for i, p in enumerate(order)}
    sums, counts = np.zeros(len(order)), np.zeros(len(order))
    for v, p in zip(values, problem_ids):
        if np.isfinite(v):
            sums[pos[p]] += v
            counts[pos[p]] += 1
    return sums.tolist(), counts.tolist()


def _mean(v: np.ndarray) -> float:
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def score_variant(v: VariantInput, vdir: Path, settings: RankSettings, *, log=None,
                  progress: Callable[[str, int], Callable[[int], None]] | None = None) -> dict:
    """Generate, capture, learn, score and evaluate one variant into vdir; returns variant.json's content."""
    prog = progress or (lambda desc, total: (lambda n=1: None))
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    task, labeled, offset = _tasks(settings)
    vdir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    loaded = load_model(v.spec, device=settings.device, dtype=settings.dtype, mlp_spec=settings.mlp_spec)
    seconds["load"] = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        gen = Settings(n_problems=settings.prompts, n=settings.n, temperature=settings.temperature,
                       top_p=settings.top_p, max_new_tokens=settings.max_new_tokens, seed=settings.seed,
                       batch_size=settings.batch_size)
        generate_run(vdir, task, loaded, gen, model_spec=v.spec,
                     progress=lambda desc, total: prog(f"{v.name}: {desc}", total))
        seconds["generate"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        cache_dir = vdir / CACHE
        cands = read_candidates(vdir)
        if not (cache_dir / "manifest.json").is_file():
            capture_candidates(loaded, cands, cache_dir, policy=settings.capture_policy(),
                               on_progress=prog(f"{v.name}: capturing", len(cands)))
        seconds["capture"] = time.perf_counter() - t0

        acc_doc = None
        if labeled is not None:
            t0 = time.perf_counter()
            acc_path = vdir / "accuracy.json"
            problems = labeled.problems(offset + settings.labeled)[offset:]
            ev = evaluate(loaded, labeled, problems, max_new_tokens=settings.max_new_tokens,
                          batch_size=settings.batch_size,
                          on_progress=prog(f"{v.name}: accuracy", len(problems)))
            acc_doc = {**ev.to_json(), "task": labeled.config(len(problems)), "offset": offset,
                       "problem_ids": ev.problem_ids, "answers": ev.answers}
            write_json(acc_path, acc_doc)
            seconds["evaluate"] = time.perf_counter() - t0
        info = dict(loaded.info)
    finally:
        del loaded
        gc.collect()

    t0 = time.perf_counter()
    weights = learn_weights(cache_dir)
    save_weights(vdir / WEIGHTS, weights)
    problem_ids = [c.problem_id for c in cands]
    n_tokens = np.array([len(c.response_ids) for c in cands], np.float64)
    per_trace = _per_trace_scores(cache_dir, weights, n_tokens)
    seconds["learn_score"] = time.perf_counter() - t0
    order = list(dict.fromkeys(problem_ids))
    per_prompt = {}
    for name, vals in per_trace.items():
        s, c = _per_prompt(vals, problem_ids, order)
        per_prompt[name] = {"sum": s, "count": c}
    seconds["total"] = time.perf_counter() - t_all
    values = {name: _mean(vals) for name, vals in per_trace.items()}
    values["nex"] = mean_score(per_trace["nex"].astype(np.float32))
    known = [c.correct for c in cands if c.correct is not None]
    doc = {
        "name": v.name, "spec": v.spec, "recipe": v.recipe, "status": "done", "settings_digest": settings.digest(),
        "model": {k: info.get(k) for k in ("id", "source", "path", "architecture", "n_layers", "intermediate_size",
                                           "file_sha256")},
        "scores": values,
        "n_traces": len(cands),
        "n_scored": int(np.isfinite(per_trace["nex"]).sum()),
        "sampled_accuracy": (sum(known) / len(known)) if known else None,
        "accuracy": None if acc_doc is None else {k: acc_doc[k] for k in ("accuracy", "ci95", "n_problems",
                                                                          "n_correct", "mean_tokens", "seconds")},
        "per_prompt": {"problem_ids": order, **per_prompt},
        "seconds": {k: round(x, 2) for k, x in seconds.items()},
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(vdir / VARIANT_JSON, doc)
    return doc


def _read_variant(vdir: Path) -> dict | None:
    try:
        return json.loads((vdir / VARIANT_JSON).read_text())
    except (OSError, ValueError):
        return None


def summarise(results: list[dict], settings: RankSettings) -> dict:
    """rank.json's comparison part: every score against accuracy over the finished variants."""
    done = [r for r in results if r.get("status") == "done"]
    names = [r["name"] for r in done]
    acc = np.array([(r.get("accuracy") or {}).get("accuracy", math.nan) if r.get("accuracy") else math.nan
                    for r in done], np.float64)
    have_acc = bool(np.isfinite(acc).any())
    out = {"n_variants": len(done), "best": None, "scores": {}}
    if have_acc:
        out["best"] = names[int(np.nanargmax(acc))]
    table = dict(SCORES)
    if any(SELF_NEX in (r.get("scores") or {}) for r in done):
        table[SELF_NEX] = SELF_NEX_SCORE
    for key, (label, sign) in table.items():
        raw = np.array([r["scores"].get(key, math.nan) if r["scores"].get(key) is not None else math.nan
                        for r in done], np.float64)
        oriented = sign * raw
        entry = {"label": label, "orientation": sign, "pick": metrics.pick(oriented, names),
                 "spearman": None, "kendall": None, "regret": None}
        if have_acc:
            entry.update(spearman=metrics.spearman(oriented, acc), kendall=metrics.kendall(oriented, acc),
                         regret=metrics.top1_regret(oriented, acc))
            ok = [all(key in (r.get("per_prompt") or {}) for r in done)]
            if ok[0] and len(done) >= 2:
                pids = done[0]["per_prompt"]["problem_ids"]
                if all(r["per_prompt"]["problem_ids"] == pids for r in done):
                    sums = sign * np.array([r["per_prompt"][key]["sum"] for r in done], np.float64)
                    counts = np.array([r["per_prompt"][key]["count"] for r in done], np.float64)
                    entry.update(metrics.bootstrap_metrics(sums, counts, acc, n_boot=settings.n_boot))
        out["scores"][key] = entry
    return out


def score_variant_task(item: tuple) -> dict:
    """score_variant(v, vdir, settings) as one task of a distributed map: a variant that fails
    gives its "failed" result (as in `rank_variants`), so the others are kept."""
    v, vdir, settings = item
    try:
        return score_variant(v, Path(vdir), settings)
    except Exception as exc:  # noqa: BLE001 - one bad variant must not lose the others
        return _failed(v, exc)


def _failed(v: VariantInput, exc: BaseException) -> dict:
    msg = str(exc).strip() if isinstance(exc, NexError) else f"{type(exc).__name__}: {str(exc).strip()}"
    msg = msg.splitlines()[0] if msg else type(exc).__name__
    return {"name": v.name, "spec": v.spec, "recipe": v.recipe, "status": "failed",
            "error": f"variant '{v.name}': {msg}", "scores": {}}


def rank_variants(variants: list[VariantInput], rank_dir, settings: RankSettings, *, overwrite: bool = False,
                  log: Callable[[str], None] | None = None, progress=None, variant_map=None) -> dict:
    """Score every variant (resuming finished ones), then NEX under the calibration the settings
    ask for (`rank.calibration`), then compare the scores with accuracy. variant_map(fn, items):
    computes the variants still to do as [fn(item) for item in items], e.g. spread over Ray
    actors (`nex rank --ray`); default one after another here."""
    settings.check()
    cal_plan = calibration.plan(settings.calibrate, settings.calibrate_on, settings.weights, [v.name for v in variants])
    say = log or (lambda msg: None)
    rank_dir = Path(rank_dir)
    if rank_dir.exists() and not rank_dir.is_dir():
        raise InputError(f"{rank_dir}: is a file, expected a rank directory")
    old = None
    if (rank_dir / RANK_JSON).is_file():
        try:
            old = json.loads((rank_dir / RANK_JSON).read_text())
        except ValueError:
            old = None
    digest = settings.digest()
    if old and old.get("settings_digest") not in (None, digest) and not overwrite:
        check_same_settings(old.get("settings"), asdict(settings), where=rank_dir, what="a ranking", source=RANK_JSON,
                            ignore=RUN_ONLY + CALIBRATION,
                            fix="use the same settings to resume, another --out, or --overwrite to start again")
    if overwrite and (rank_dir / VARIANTS).is_dir():
        shutil.rmtree(rank_dir / VARIANTS)
    rank_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    cal_record = {**cal_plan.record(), "status": "done" if cal_plan.is_default else "pending"}
    calibrated: dict[str, calibration.Scored] = {}

    def shown() -> list[dict]:
        """The results as rank.json shows them: NEX under the calibration asked for."""
        if cal_plan.is_default:
            return results
        return [_with_calibrated_nex(r, calibrated.get(r["name"])) for r in results]

    def save():
        view = shown()
        doc = {"format": 1, "settings": asdict(settings), "settings_digest": digest, "calibration": cal_record,
               "variants": [{k: r.get(k) for k in ("name", "spec", "recipe", "status", "error", "scores",
                                                   "accuracy", "sampled_accuracy", "n_traces", "n_scored",
                                                   "seconds", "model")} for r in view],
               "comparison": summarise(view, settings),
               "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        write_json(rank_dir / RANK_JSON, doc)
        # per-prompt sums stay in variants/<name>/variant.json
        return doc

    kept: dict[int, dict] = {}
    for i, v in enumerate(variants):
        vdir = rank_dir / VARIANTS / v.name
        prev = _read_variant(vdir)
        if prev and prev.get("status") == "done" and prev.get("settings_digest") == digest and prev.get("spec") == v.spec:
            kept[i] = prev
        elif prev and prev.get("spec") not in (None, v.spec):
            shutil.rmtree(vdir)         # another model under this name: its traces are not reusable
    computed: dict[int, dict] = {}
    todo = [i for i in range(len(variants)) if i not in kept]
    if variant_map is not None and todo:
        say(f"computing {len(todo)} variant(s) at once: {', '.join(variants[i].name for i in todo)}")
        docs = variant_map(score_variant_task, [(variants[i], rank_dir / VARIANTS / variants[i].name, settings)
                                                for i in todo])
        computed = dict(zip(todo, docs))
    for i, v in enumerate(variants):
        vdir = rank_dir / VARIANTS / v.name
        if i in kept:
            say(f"[{i + 1}/{len(variants)}] {v.name}: done earlier, kept")
            results.append(kept[i])
            continue
        say(f"[{i + 1}/{len(variants)}] {v.name}: {v.spec}")
        try:
            doc = computed[i] if i in computed else score_variant(v, vdir, settings, log=say, progress=progress)
            if doc.get("status") == "failed":
                raise _Reported(doc)
            s = doc["seconds"]
            acc = (doc.get("accuracy") or {}).get("accuracy")
            say(f"    NEX {doc['scores']['nex']:.4f}" + (f", accuracy {acc:.3f}" if acc is not None else "")
                + f"  ({s.get('total', 0):.0f} s: " + ", ".join(f"{k} {x:.0f} s" for k, x in s.items() if k != "total")
                + ")")
        except KeyboardInterrupt:
            save()
            raise
        except Exception as exc:  # noqa: BLE001 - one bad variant must not lose the others
            doc = exc.doc if isinstance(exc, _Reported) else _failed(v, exc)
            say(f"[red]variant '{v.name}' failed: {doc['error'].removeprefix(f'variant {chr(39)}{v.name}{chr(39)}: ')}"
                "[/red]")
            gc.collect()
        results.append(doc)
        save()
    if not cal_plan.is_default:
        say(f"calibration: {cal_plan.mode} on {cal_plan.on}")
        try:
            cal_record, scored = calibration.calibrate(
                results, {v.name: rank_dir / VARIANTS / v.name for v in variants}, cal_plan, rank_dir,
                weights_file=settings.weights, split_seed=settings.split_seed, progress=progress)
            calibrated.update(scored)
        except NexError as exc:
            cal_record = calibration.failed_record(cal_plan, exc)
            say(f"[red]calibration failed: {cal_record['error']}[/red]")
    return save()


class _Reported(Exception):
    """A variant computed elsewhere (`variant_map`) that failed there: its result, to report here."""

    def __init__(self, doc: dict):
        super().__init__(doc.get("error"))
        self.doc = doc


def _with_calibrated_nex(result: dict, scored: "calibration.Scored | None") -> dict:
    """A finished variant's result with "nex" under the calibration asked for (None until it is
    computed) and its self-calibrated NEX as "nex_self"."""
    if result.get("status") != "done":
        return result
    scores = {**result["scores"], SELF_NEX: result["scores"].get("nex"), "nex": None}
    per_prompt = {k: v for k, v in (result.get("per_prompt") or {}).items() if k != "nex"}
    if "nex" in (result.get("per_prompt") or {}):
        per_prompt[SELF_NEX] = result["per_prompt"]["nex"]
    if scored is not None:
        scores["nex"] = mean_score(scored.gmf.astype(np.float32))
        order = per_prompt.get("problem_ids") or list(dict.fromkeys(scored.problem_ids))
        sums, counts = _per_prompt(scored.gmf.astype(np.float64), scored.problem_ids, order)
        per_prompt["nex"] = {"sum": sums, "count": counts}
    return {**result, "scores": scores, "per_prompt": per_prompt}


def run(variants: list[str], out, settings: RankSettings, *, overwrite: bool = False,
        log: Callable[[str], None] | None = None,
        progress: Callable[[str, int], Callable[[int], None]] | None = None, variant_map=None) -> RankResult:
    """`nex rank`: name the variants (`expand_inputs`: model specs, NAME=SPEC or family
    directories), then score and compare them all into `out` (`rank_variants`, which takes
    variant_map). A variant that fails is recorded in rank.json and listed by
    `RankResult.failed`; the others are kept."""
    settings.check()
    items = expand_inputs(list(variants))
    calibration.plan(settings.calibrate, settings.calibrate_on, settings.weights, [v.name for v in items])
    if log:
        log(f"ranking {len(items)} variant(s): {', '.join(v.name for v in items)}")
    t0 = time.perf_counter()
    doc = rank_variants(items, out, settings, overwrite=overwrite, log=log, progress=progress, variant_map=variant_map)
    return RankResult(doc, Path(out) / RANK_JSON, time.perf_counter() - t0)
