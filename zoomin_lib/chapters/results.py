"""The chapters' result tables and claims: measured accuracy with its spread beside the cost of each method.

`result_rows` puts accuracy (mean +- standard deviation over runs, `train.protocol.summarize`) beside
peak memory, FLOPs/MACs and time (`train.profiling.profile_methods`); `above_majority` and
`report_above_majority` say which methods beat the majority class by more than z binomial standard
errors (`beats_chance`, the one rule every chapter uses); `auc_standard_error` is an AUC's standard
error (Hanley & McNeil); `beats` says whether one accuracy beats
another by more than z standard errors of their difference; `pooled_accuracy` and `difference_text` put
a measured difference beside its standard error and the paper's difference (`extra_test_results`: the
same on a test set every run shared; `error_rows` and `predictor_rows`: where the errors lie, per run or per
predictor); `training_curves` and
`constant_loss` give each method's training cross-entropy per epoch beside the loss of the best constant
prediction (a method whose loss stays there has learned nothing from the images).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from zoomin_lib.train.protocol import FoldResult, summarize


def _accuracy_cell(summary: Mapping[str, float]) -> str:
    """'mean ± std' in percent (just the mean for one run)."""
    mean = f"{100 * summary['accuracy_mean']:.1f}"
    return f"{mean} ± {100 * summary['accuracy_std']:.1f}" if summary["runs"] > 1 else mean


def result_rows(
    results: Mapping[str, Sequence[FoldResult]], costs: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One table row per profiled method: measured accuracy (mean ± std over runs), AUC, runs, GFLOPs, GMACs, MiB, ms, mode."""
    rows = []
    for name, cost in costs.items():
        s = summarize(results[name]) if name in results else None
        rows.append({
            "method": name,
            "accuracy % (mean ± std)": "not trained" if s is None else _accuracy_cell(s),
            "AUC": "" if s is None or not np.isfinite(s["auc_mean"]) else s["auc_mean"],
            "runs": "" if s is None else s["runs"],
            "GFLOPs": cost["mflops"] / 1e3,
            "GMACs": cost["mmacs"] / 1e3,
            "peak memory (MiB)": cost["peak_memory_mb"],
            "time (ms)": cost["ms_per_sample"],
            "inference": cost["mode"],
        })
    return rows


def chance_margin(p: float, n: int, z: float = 2.0) -> float:
    """z binomial standard errors of a guesser right with probability p on n test items: z sqrt(max(p (1 - p), 1 / n) / n).

    The floor 1 / n keeps the margin sensible when p is near 0 or 1 (a handful of errors is still noise).
    """
    if n < 1:
        raise ValueError(f"need at least one test item, got n = {n}")
    return z * math.sqrt(max(p * (1 - p), 1.0 / n) / n)


def beats_chance(accuracy: float, p: float, n: int, z: float = 2.0) -> bool:
    """The one rule of the book for "learned something": accuracy beats chance p by more than `chance_margin(p, n, z)`.

    With z = 2, a guesser passes about 2 % of the time.
    """
    return accuracy > p + chance_margin(p, n, z)


def auc_standard_error(labels: Sequence[int] | np.ndarray, auc: float = 0.5) -> float:
    """The standard error of an AUC over binary `labels` (Hanley & McNeil 1982, eq. 2); by default near 0.5.

    Near 0.5 it is about sqrt((n1 + n2 + 1) / (12 n1 n2)) for n1 positives and n2 negatives.
    """
    y = np.asarray(labels).astype(int)  # [n]
    n1, n2 = int((y == 1).sum()), int((y == 0).sum())
    if n1 == 0 or n2 == 0:
        raise ValueError(f"an AUC needs both classes, got {n1} positives and {n2} negatives")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n2 - 1) * (q2 - auc**2)) / (n1 * n2)
    return float(np.sqrt(variance))


def beats(accuracy: float, n: int, baseline: float, n_baseline: int, z: float = 3.0) -> bool:
    """Accuracy (on n test items) beats a baseline's (on n_baseline) by more than z standard errors of the difference.

    The standard error of the difference is sqrt(se^2 + se_baseline^2), each the binomial one of
    `chance_margin` (with its floor of 1 / n). With z = 3 a run no better than the baseline passes
    about 0.1 % of the time.
    """
    return accuracy - baseline > math.hypot(chance_margin(accuracy, n, z), chance_margin(baseline, n_baseline, z))


def pooled_accuracy(runs: Sequence[FoldResult], shared_test_set: bool = False) -> tuple[float, int]:
    """The accuracy over every test evaluation of the runs (each run's weighted by its n_test), and the number of
    distinct test items: the evaluations divided by the repetitions (a repeated cross-validation tests each image
    once per repetition; counting the repeats as new images would understate the standard error). With
    `shared_test_set` every run was tested on the same items (`extra_test_results`): they count once."""
    evaluations = sum(int(r.n_test) for r in runs)
    if evaluations < 1:
        raise ValueError("no test items in these runs")
    accuracy = sum(r.accuracy * r.n_test for r in runs) / evaluations
    if shared_test_set:
        if len({int(r.n_test) for r in runs}) != 1:
            raise ValueError(f"runs on one shared test set must have one n_test, got {sorted({r.n_test for r in runs})}")
        return accuracy, int(runs[0].n_test)
    repetitions = len({int(r.repetition) for r in runs})
    return accuracy, evaluations // repetitions


def extra_test_results(results: Mapping[str, Sequence[FoldResult]]) -> dict[str, list[FoldResult]]:
    """name -> each run's result on the extra test set that every run shared (`run_folds(extra_test=)`), as FoldResults.

    Methods whose runs carry no extra test are left out. Pool them with `shared_test_set=True`.
    """
    out = {}
    for name, runs in results.items():
        if runs and all(r.extra_test is not None for r in runs):
            out[name] = [FoldResult(r.method, r.repetition, r.fold, r.extra_test["accuracy"], r.extra_test["auc"],
                                    r.extra_test["n"], r.extra_test["loss"], [], r.extra_test["confusion"])
                         for r in runs]
    return out


def extra_test_rows(results: Mapping[str, Sequence[FoldResult]]) -> list[dict[str, Any]]:
    """A row per method with an extra test set: pooled accuracy on it, its binomial s.e., each fold's accuracy, their std."""
    rows = []
    for name, runs in extra_test_results(results).items():
        acc, n = pooled_accuracy(runs, shared_test_set=True)
        rows.append({"method": name, "test images": n, "accuracy %": 100 * acc, "s.e. %": 100 * chance_margin(acc, n, 1.0),
                     "per fold %": ", ".join(f"{100 * r.accuracy:.1f}" for r in runs),
                     "std over folds %": 100 * summarize(runs)["accuracy_std"]})
    return rows


def _binary_errors(run: FoldResult, where: str) -> tuple[int, int]:
    """(false positives, false negatives) of a binary run: true class 0 called 1, and 1 called 0."""
    c = np.asarray(run.confusion, dtype=np.int64)  # [2, 2] true x predicted
    if c.shape != (2, 2):
        raise ValueError(f"{where}: needs a binary confusion matrix, got {run.confusion}")
    return int(c[0, 1]), int(c[1, 0])


def error_rows(results: Mapping[str, Sequence[FoldResult]], extra: bool = False,
               key: str = "ce") -> list[dict[str, Any]]:
    """A row per run of a binary task: where its errors lie, beside how far training went and how well it ranks.

    Each row gives the run's last-epoch training `key` (the classification cross-entropy), its test
    accuracy, AUC (None where undefined), false positives (true class 0 called 1) and false negatives,
    from the run's confusion matrix [true][predicted]. With `extra`, the test set is the extra one
    every run shared (`extra_test_results`). A run with AUC near 1 and only false positives ranks the
    images well and errs at the decision threshold.
    """
    source = extra_test_results(results) if extra else results
    rows = []
    for name, runs in source.items():
        for run, trained in zip(runs, results[name]):
            fp, fn = _binary_errors(run, f"{name} fold {run.fold}: error_rows")
            last = trained.history[-1].get(key) if trained.history else None
            rows.append({"method": name, "repetition": run.repetition, "fold": run.fold, "last training loss": last, "accuracy %": 100 * run.accuracy,
                         "AUC": run.auc, "false positives": fp, "false negatives": fn,
                         "test images": int(np.sum(run.confusion))})
    return rows


def predictor_rows(by_predictor: Mapping[str, Mapping[str, Sequence[FoldResult]]],
                   shared_test_set: bool = True) -> list[dict[str, Any]]:
    """A row per predictor and method of a binary task (runs retested by `protocol.retest_runs`).

    `by_predictor` maps a predictor's name to each method's runs. Each row gives the pooled accuracy
    with its binomial s.e. (`pooled_accuracy`: with `shared_test_set`, every run was tested on the same
    images, counted once; without, on its own fold's), each run's accuracy, and the false positives
    and false negatives summed over the runs, from their confusion matrices [true][predicted].
    """
    rows = []
    for label, results in by_predictor.items():
        for name, runs in results.items():
            errors = np.array([_binary_errors(r, f"{label} / {name}: predictor_rows") for r in runs])  # [R, 2]
            acc, n = pooled_accuracy(runs, shared_test_set)
            rows.append({"predictor": label, "method": name, "test images": n, "accuracy %": 100 * acc,
                         "s.e. %": 100 * chance_margin(acc, n, 1.0),
                         "per run %": ", ".join(f"{100 * r.accuracy:.1f}" for r in runs),
                         "false positives": int(errors[:, 0].sum()), "false negatives": int(errors[:, 1].sum())})
    return rows


def difference_text(name: str, runs: Sequence[FoldResult], other: str, other_runs: Sequence[FoldResult],
                    paper_difference: float | None = None, shared_test_set: bool = False) -> str:
    """'A - B = d points, s.e. e (n and m test items)', and whether a paper-sized difference exceeds that s.e."""
    a, n = pooled_accuracy(runs, shared_test_set)
    b, m = pooled_accuracy(other_runs, shared_test_set)
    se = math.hypot(chance_margin(a, n, 1.0), chance_margin(b, m, 1.0))
    text = (f"{name} - {other} = {100 * (a - b):+.1f} points over {n} and {m} test items; standard error of the "
            f"difference {100 * se:.1f} points")
    if paper_difference is not None:
        verdict = "larger" if abs(paper_difference) > 100 * se else "not larger"
        text += (f"; the paper's difference ({paper_difference:+.1f} points) is {verdict} than this standard error, so "
                 f"this test set {'can' if verdict == 'larger' else 'cannot'} resolve a difference of that size")
    return text


def above_majority(
    results: Mapping[str, Sequence[FoldResult]], test_labels: Sequence[int] | np.ndarray, z: float = 0.0
) -> tuple[float, dict[str, float]]:
    """The majority-class rate p of the test labels, and the methods whose mean accuracy beats it (name -> accuracy).

    With z > 0 a method must beat p by more than z binomial standard errors of the n test labels
    (`beats_chance`; z = 2: a classifier as good as the majority rule passes about 2 % of the time).
    """
    labels = np.asarray(test_labels)
    majority = float(np.bincount(labels).max() / labels.size)
    beaten = {name: summarize(runs)["accuracy_mean"] for name, runs in results.items()}
    return majority, {name: acc for name, acc in beaten.items() if beats_chance(acc, majority, labels.size, z)}


def report_above_majority(
    results: Mapping[str, Sequence[FoldResult]], test_labels: Sequence[int] | np.ndarray, rule: str, budget: str,
    z: float = 2.0,
) -> dict[str, float]:
    """Print the majority-class rate (`rule` names it), the methods beyond z standard errors above it and the rest (within `budget`); return the former."""
    majority, learned = above_majority(results, test_labels, z)
    print(f"{rule} rate on this test set: {100 * majority:.1f} % of {len(np.asarray(test_labels))} images")
    print(f"beyond {z:g} standard errors above it: "
          + (", ".join(f"{k} {100 * v:.1f} %" for k, v in learned.items()) if learned else "no method"))
    rest = [k for k in results if k not in learned]
    if rest:
        print(f"not above it within {budget}: {', '.join(rest)}")
    return learned


def training_curves(results: Mapping[str, Sequence[FoldResult]], key: str = "ce") -> dict[str, list[float]]:
    """name -> the per-epoch mean of `key` (the classification cross-entropy) in each method's first run's history.

    Methods whose history lacks `key` (e.g. a run resumed from an older record) are left out.
    """
    curves = {}
    for name, runs in results.items():
        history = runs[0].history if runs else []
        if history and all(key in h for h in history):
            curves[name] = [float(h[key]) for h in history]
    return curves


def constant_loss(labels: Sequence[int] | np.ndarray, n_classes: int,
                  class_weights: Sequence[float] | np.ndarray | None = None) -> float:
    """The training cross-entropy of the best constant prediction on `labels`: the entropy of q, q_k ∝ w_k n_k.

    The weighted cross-entropy of a constant p is sum_i w_{y_i} (-log p_{y_i}) / sum_i w_{y_i}
    (PyTorch's weighted mean), the cross-entropy of q and p; it is smallest, H(q), at p = q. Without
    weights, q is the label frequencies (ln K for K balanced classes).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)  # [K]
    w = np.ones(n_classes) if class_weights is None else np.asarray(class_weights, dtype=np.float64)
    if counts.size != n_classes or w.shape != (n_classes,):
        raise ValueError(f"labels must lie in [0, {n_classes}) and class_weights have {n_classes} entries")
    q = w * counts
    if q.sum() <= 0:
        raise ValueError("no labelled item carries weight")
    q = q[q > 0] / q.sum()
    return float(-(q * np.log(q)).sum())
