"""Drift statistics: each metric against a direct computation from the same bins, defined results
at the edges, and the false-alarm rate on data that did not drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.stats.contingency import association

from batch import profile
from monitor import stats

TOL = 1e-9


def _numeric(seed: int, *, shift: float = 0.0, scale: float = 1.0, n_base: int = 3000, n: int = 2000,
             nulls: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    base = profile._numeric_baseline("x", "feature", rng.gamma(2.0, size=n_base))
    values = np.concatenate([rng.gamma(2.0, size=n) * scale + shift, [np.nan] * nulls])
    return base, profile.count_numeric(values, base["edges"])


def _metrics(results: list[stats.Result]) -> dict[str, stats.Result]:
    return {r.metric: r for r in results}


@pytest.mark.parametrize("seed,shift,scale", [(0, 0.0, 1.0), (1, 0.4, 1.0), (2, -1.0, 1.7), (3, 3.0, 0.5)])
def test_numeric_metrics_equal_a_direct_computation(seed: int, shift: float, scale: float) -> None:
    base, prof = _numeric(seed, shift=shift, scale=scale, nulls=seed * 5)
    got = _metrics(stats.compare_column(base, prof, stats.DriftConfig()))
    b, q = np.asarray(base["counts"], float), np.asarray(prof["counts"], float)
    p_share, q_share = b / b.sum(), q / q.sum()

    floor_p, floor_q = np.where(p_share == 0, 1e-4, p_share), np.where(q_share == 0, 1e-4, q_share)
    assert got["psi"].value == pytest.approx(np.sum((floor_q - floor_p) * np.log(floor_q / floor_p)), abs=TOL)

    m = (p_share + q_share) / 2
    assert got["jensen_shannon"].value == pytest.approx(np.sqrt((_kl2(p_share, m) + _kl2(q_share, m)) / 2), abs=TOL)

    # Positions: midpoints inside, the batch's extremes for under- and overflow.
    e = np.asarray(base["edges"])
    pos = np.concatenate([[min(prof["min"], e[0])], (e[:-1] + e[1:]) / 2, [max(prof["max"], e[-1])]])
    direct = np.sum(np.abs(np.cumsum(p_share) - np.cumsum(q_share))[:-1] * np.diff(pos)) / base["std"]
    assert got["wasserstein"].value == pytest.approx(direct, abs=TOL)
    assert got["wasserstein"].value == pytest.approx(sps.wasserstein_distance(pos, pos, b, q) / base["std"], abs=TOL)

    # KS from the binned CDFs is the KS of samples that keep only each value's bin.
    bins = np.arange(len(b))
    ks = sps.ks_2samp(np.repeat(bins, b.astype(int)), np.repeat(bins, q.astype(int)), method="asymp")
    assert got["ks"].value == pytest.approx(ks.statistic, abs=TOL)
    assert got["ks_p_value"].value == pytest.approx(ks.pvalue, abs=TOL)

    total_b, total_q = b.sum() + base["null_count"], q.sum() + prof["null_count"]
    assert got["null_rate_change"].value == pytest.approx(prof["null_count"] / total_q - base["null_count"] / total_b,
                                                          abs=TOL)


def test_categorical_metrics_equal_a_direct_computation() -> None:
    rng = np.random.default_rng(7)
    train = pd.Series(rng.choice(list("abcdef"), size=4000, p=[.3, .25, .2, .1, .1, .05]))
    base = profile._categorical_baseline("c", "feature", train)
    batch = rng.choice(list("abcdefz"), size=3000, p=[.2, .2, .2, .15, .1, .05, .1]).astype(object)
    batch[:40] = None
    prof = profile.count_categorical(batch, base["categories"], list("abcdef"))
    got = _metrics(stats.compare_column(base, prof, stats.DriftConfig()))

    table = np.vstack([base["counts"], prof["counts"]]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    chi2 = np.sum((table - expected) ** 2 / expected)
    assert got["chi2"].value == pytest.approx(chi2, abs=TOL * chi2)
    assert got["chi2_p_value"].value == pytest.approx(sps.chi2.sf(chi2, table.shape[1] - 1), abs=TOL)
    assert got["cramers_v"].value == pytest.approx(np.sqrt(chi2 / table.sum()), abs=TOL)
    assert got["cramers_v"].value == pytest.approx(association(table.astype(int), method="cramer", correction=False),
                                                   abs=TOL)
    assert got["unseen_share"].value == pytest.approx(prof["unseen"] / prof["n"], abs=TOL)
    assert prof["unseen"] == int((batch[40:] == "z").sum())
    assert got["drift"].status == "alert"  # 10% never-seen categories


def test_an_all_null_column_gives_a_defined_result() -> None:
    base = profile._numeric_baseline("x", "feature", np.random.default_rng(0).normal(size=500))
    got = _metrics(stats.compare_column(base, profile.count_numeric(np.full(300, np.nan), base["edges"]),
                                        stats.DriftConfig()))
    assert got["psi"].value is None and got["psi"].status == "n/a"
    assert got["null_rate_change"].value == 1.0 and got["drift"].status == "alert"
    empty = profile._numeric_baseline("e", "feature", np.full(50, np.nan))
    both = _metrics(stats.compare_column(empty, profile.count_numeric(np.full(9, np.nan), empty["edges"]),
                                         stats.DriftConfig()))
    assert both["null_rate_change"].value == 0.0 and both["drift"].status == "ok"


def test_a_constant_column_gives_a_defined_result() -> None:
    base = profile._numeric_baseline("k", "feature", np.full(400, 3.0))
    same = _metrics(stats.compare_column(base, profile.count_numeric(np.full(300, 3.0), base["edges"]),
                                         stats.DriftConfig()))
    assert same["wasserstein"].value == 0.0 and same["drift"].status == "ok"
    moved = _metrics(stats.compare_column(base, profile.count_numeric(np.full(300, 4.5), base["edges"]),
                                          stats.DriftConfig()))
    assert moved["wasserstein"].value == pytest.approx(1.5 / 3.0)  # scaled by |mean| when std is 0
    assert moved["drift"].status == "alert"


def test_only_unseen_categories_give_a_defined_result() -> None:
    base = profile._categorical_baseline("c", "feature", pd.Series(["a", "b"] * 100))
    prof = profile.count_categorical(np.array(["z", "y"] * 20, dtype=object), base["categories"], ["a", "b"])
    got = _metrics(stats.compare_column(base, prof, stats.DriftConfig()))
    assert got["unseen_share"].value == 1.0 and got["jensen_shannon"].value == pytest.approx(1.0)
    assert np.isfinite(got["psi"].value) and got["drift"].status == "alert"


def test_no_false_alarms_beyond_alpha_on_random_splits() -> None:
    """Random halves of one sample: a feature may drift by chance at most ``alpha`` of the time,
    even at sizes where noise alone crosses the distance thresholds."""
    config = stats.DriftConfig(alpha=0.05)
    rng = np.random.default_rng(11)
    alarms = trials = noisy = 0
    for _ in range(150):
        data = pd.DataFrame({"x": rng.lognormal(size=600), "k": rng.choice(list("abcde"), size=600)})
        half = rng.permutation(600)
        train, batch = data.iloc[half[:300]], data.iloc[half[300:]]
        schema = {"columns": [{"name": "x", "kind": "numeric"}, {"name": "k", "kind": "categorical"}]}
        base = profile.baseline(train, schema, _no_scores(len(train)))
        prof = profile.profile_features(batch, base, {"k": list("abcde")})
        checked = stats.check(base, prof, config)
        alarms += len(checked.drifted)
        trials += checked.features
        noisy += sum(r.status == "alert" for r in checked.results if r.metric in ("wasserstein", "psi"))
    assert noisy > 0  # the thresholds alone would have raised false alarms
    assert alarms / trials <= config.alpha


def test_tiny_drift_in_a_huge_batch_is_significant_but_not_an_alert() -> None:
    base, prof = _numeric(5, n_base=200_000, n=200_000, scale=1.01)
    got = _metrics(stats.compare_column(base, prof, stats.DriftConfig()))
    assert got["ks_p_value"].value < 0.01 and got["drift"].status != "alert"


def test_thresholds_can_be_set_per_feature() -> None:
    base, prof = _numeric(4, shift=0.5)
    assert _metrics(stats.compare_column(base, prof, stats.DriftConfig()))["drift"].status == "alert"
    lenient = {"x": {m: (50.0, 100.0) for m in stats.DEFAULT_THRESHOLDS}}
    got = _metrics(stats.compare_column(base, prof, stats.DriftConfig(features=lenient)))
    assert got["drift"].status == "ok" and got["wasserstein"].alert == 100.0


def _kl2(a: np.ndarray, c: np.ndarray) -> float:
    """Kullback-Leibler divergence in bits, 0 log 0 = 0."""
    keep = a > 0
    return float(np.sum(a[keep] * np.log2(a[keep] / c[keep])))


def _no_scores(n: int) -> profile.Scores:
    return profile.Scores(prediction=np.zeros(n))


def test_performance_metrics_equal_sklearn() -> None:
    from sklearn import metrics

    from monitor import performance

    rng = np.random.default_rng(3)
    y = rng.gamma(2.0, 10.0, size=500)
    y[:5] = 0.0  # left out of MAPE
    yhat = y + rng.normal(0, 3, size=500)
    got = performance.regression(y, yhat)
    assert got["mae"] == pytest.approx(metrics.mean_absolute_error(y, yhat), abs=TOL)
    assert got["rmse"] == pytest.approx(np.sqrt(metrics.mean_squared_error(y, yhat)), abs=TOL)
    assert got["r2"] == pytest.approx(metrics.r2_score(y, yhat), abs=TOL)
    assert got["mape"] == pytest.approx(metrics.mean_absolute_percentage_error(y[5:], yhat[5:]), abs=TOL)
    proba = rng.dirichlet([1, 1], size=400)
    classes = ["0", "1"]
    truth = np.where(rng.random(400) < proba[:, 1], "1", "0")
    predicted = np.where(proba[:, 1] > 0.5, "1", "0")
    realized = performance.classification(truth.tolist(), predicted.tolist(), proba, classes)
    assert realized["roc_auc"] == pytest.approx(metrics.roc_auc_score(truth == "1", proba[:, 1]), abs=TOL)
    assert realized["brier"] == pytest.approx(metrics.brier_score_loss(truth == "1", proba[:, 1]), abs=TOL)
    # Calibrated probabilities: the estimate (CBPE) lands near the realized accuracy.
    best = (proba[:, 1] > 0.5).astype(int)
    estimate = performance.expected(proba, best)
    assert estimate["accuracy"] == pytest.approx(realized["accuracy"], abs=0.05)
    halves = performance.expected_counts(proba[:150], best[:150]) + performance.expected_counts(proba[150:], best[150:])
    assert performance.expected_from_counts(halves) == pytest.approx(estimate, abs=TOL)  # counts add up by batch
