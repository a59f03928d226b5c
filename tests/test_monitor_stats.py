"""Drift statistics: each metric against a direct computation from the same bins, defined results
at the edges, and the false-alarm rate on data that did not drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.stats.contingency import association

from models import profile
from monitor import stats
from store.features import FeatureSchema

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

    # Wasserstein: each side's mass at its own bin means, from the per-bin sums.
    def means(counts: np.ndarray, sums: list[float]) -> np.ndarray:
        return np.asarray(sums) / np.where(counts > 0, counts, 1)

    direct = sps.wasserstein_distance(means(b, base["sums"]), means(q, prof["sums"]), b, q) / base["std"]
    assert got["wasserstein"].value == pytest.approx(direct, abs=TOL)

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
    p_base, q_batch = np.asarray(base["counts"]) / sum(base["counts"]), np.asarray(prof["counts"]) / prof["n"]
    # The 'other' bin, empty in the baseline, is weighed by its pooled share.
    reference = np.where(p_base > 0, p_base, (q_batch * prof["n"]) / (prof["n"] + sum(base["counts"])))
    assert got["cohens_w"].value == pytest.approx(np.sqrt(np.sum((q_batch - p_base) ** 2 / reference)), abs=TOL)
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
        schema = FeatureSchema.from_json(
            {"columns": [{"name": "x", "kind": "numeric"}, {"name": "k", "kind": "categorical"}]})
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

    from models import performance

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


def test_wasserstein_from_bin_means_is_close_to_the_exact_distance() -> None:
    """A 4% rescale of lognormal data: the distance of the raw values, within a few percent."""
    rng = np.random.default_rng(21)
    train, batch = rng.lognormal(size=50_000), rng.lognormal(size=50_000) * 1.04
    base = profile._numeric_baseline("x", "feature", train)
    got = _metrics(stats.compare_column(base, profile.count_numeric(batch, base["edges"]), stats.DriftConfig()))
    exact = sps.wasserstein_distance(train, batch) / train.std(ddof=1)
    assert got["wasserstein"].value == pytest.approx(exact, rel=0.1)
    assert got["drift"].status != "alert"  # a 4% rescale is below the alert threshold


def test_cohens_w_does_not_grow_with_the_batch_size() -> None:
    base = {"column_name": "c", "role": "feature", "kind": "categorical", "counts": [5000, 3000, 2000, 0],
            "null_count": 0, "categories": ["a", "b", "c"]}
    shares = np.array([0.45, 0.3, 0.25, 0.0])
    w = [float(stats.cohens_w(base["counts"], shares * n)) for n in (500, 100_000)]
    v = [stats.chi_square(base["counts"], shares * n)[2] for n in (500, 100_000)]
    assert w[0] == pytest.approx(w[1], rel=1e-12) and v[1] > 1.2 * v[0]


def test_holm_and_benjamini_hochberg_equal_their_definitions() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    order = np.argsort(p)
    holm = np.minimum(1, np.maximum.accumulate((5 - np.arange(5)) * p[order]))
    assert stats.adjust(p, "holm")[order] == pytest.approx(holm)
    bh = np.minimum.accumulate((5 * p[order] / np.arange(1, 6))[::-1])[::-1]
    assert stats.adjust(p, "bh")[order] == pytest.approx(np.minimum(bh, 1))
    assert stats.adjust([], "holm").size == 0


def test_the_chi_square_p_value_holds_at_small_expected_counts() -> None:
    """Batches of 30 rows of a column with rare categories: the test rejects at most alpha of the
    time (the raw chi-square on sparse cells rejects far more)."""
    rng = np.random.default_rng(5)
    probs = np.array([0.6, 0.2, 0.1, 0.04, 0.03, 0.02, 0.01])
    base = rng.multinomial(5000, probs)
    draws = rng.multinomial(30, probs, size=3000)
    merged = np.array([stats.chi_square(base, d)[1] for d in draws])
    raw = np.array([sps.chi2_contingency(np.vstack([base, d])[:, (base + d) > 0], correction=False).pvalue
                    for d in draws])
    alpha = 0.01
    assert (merged < alpha).mean() <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / len(draws))
    assert (raw < alpha).mean() > (merged < alpha).mean()
    table = stats.merge_sparse(np.vstack([base, draws[0]]).astype(float))
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    assert expected.min() >= stats.MIN_EXPECTED


def test_the_null_rate_test_is_fishers_exact_test() -> None:
    assert stats.null_test(3, 1000, 9, 100) == pytest.approx(sps.fisher_exact([[3, 997], [9, 91]]).pvalue)
    assert stats.null_test(0, 1000, 0, 100) == 1.0


def test_a_check_raises_false_alarms_at_most_alpha_across_all_its_features() -> None:
    """20 features of 200-row batches, none drifted: the share of checks flagging any feature,
    or warning of any, stays within its level (plus three standard errors)."""
    config = stats.DriftConfig(alpha=0.05, warning_alpha=0.2, simulations=50)
    rng = np.random.default_rng(12)
    schema = FeatureSchema.from_json({"columns": [{"name": f"x{i}", "kind": "numeric"} for i in range(14)]
                                     + [{"name": f"k{i}", "kind": "categorical"} for i in range(6)]})

    def frame(n: int) -> pd.DataFrame:
        data = {f"x{i}": rng.lognormal(size=n) if i % 2 else rng.normal(size=n) for i in range(14)}
        data.update({f"k{i}": rng.choice(list("abcdef"), size=n, p=[.5, .3, .1, .05, .03, .02]) for i in range(6)})
        return pd.DataFrame(data)

    base = profile.baseline(frame(5000), schema, _no_scores(5000))
    known = {f"k{i}": list("abcdef") for i in range(6)}
    runs = 120
    checks = [stats.check(base, profile.profile_features(frame(200), base, known), config) for _ in range(runs)]
    alarms, warned = sum(bool(c.drifted) for c in checks), sum(bool(c.drifted or c.warnings) for c in checks)
    assert alarms / runs <= config.alpha + 3 * np.sqrt(config.alpha * (1 - config.alpha) / runs)
    assert warned / runs <= config.warning_alpha + 3 * np.sqrt(config.warning_alpha * 0.8 / runs)


def test_a_shift_of_a_fifth_of_a_standard_deviation_is_found_at_10k_rows() -> None:
    rng = np.random.default_rng(13)
    base = profile._numeric_baseline("x", "feature", rng.normal(size=20_000))
    other = profile._numeric_baseline("y", "feature", rng.normal(size=20_000))
    profiles = {"x": profile.count_numeric(rng.normal(size=10_000) + 0.2, base["edges"]),
                "y": profile.count_numeric(rng.normal(size=10_000), other["edges"])}
    checked = stats.check([base, other], profiles, stats.DriftConfig())
    assert checked.drifted == ["x"]
    floors = _metrics([r for r in checked.results if r.column_name == "x"])
    assert 0 < floors["wasserstein_noise_floor"].value < 0.05  # sampling noise at 10k rows is small


def test_output_drift_on_an_in_sample_baseline_is_a_warning_unless_asked() -> None:
    rng = np.random.default_rng(14)
    out = {**profile._numeric_baseline(profile.PREDICTION, "output", rng.beta(8, 2, size=5000)),
           "source": "in_sample"}
    seen = {profile.PREDICTION: profile.count_numeric(rng.beta(4, 2, size=2000), out["edges"])}
    checked = stats.check([out], seen, stats.DriftConfig())
    assert checked.outputs_drifted == [] and checked.warnings == [profile.PREDICTION]
    assert "in-sample" in checked.notes[0]
    assert stats.check([out], seen, stats.DriftConfig(in_sample_output_alerts=True)).outputs_drifted
    assert stats.check([{**out, "source": "validation"}], seen, stats.DriftConfig()).outputs_drifted


def test_a_baseline_without_bin_sums_says_what_it_cannot_compute() -> None:
    base, prof = _numeric(6, shift=1.0)
    checked = stats.check([{**base, "sums": None}], {"x": prof}, stats.DriftConfig())
    got = _metrics(checked.results)
    assert got["wasserstein"].value is None and got["wasserstein"].status == "n/a"
    assert got["drift"].status == "alert"  # the other distances still judge it
    assert "per-bin sums" in checked.notes[0]


def test_noise_floors_are_what_sampling_noise_reads_at_the_batch_size() -> None:
    """The floor of each distance is its mean over quiet batches of that size: checked against
    direct draws from the same bins, and shrinking as 1/sqrt(n) for Wasserstein."""
    rng = np.random.default_rng(15)
    base = profile._numeric_baseline("x", "feature", rng.lognormal(size=20_000))
    at = stats.bin_positions(base["counts"], base["sums"], base["edges"])
    assert at is not None
    small, large = (stats.noise_floors(base, n, stats.DriftConfig(simulations=2000), at) for n in (100, 10_000))
    assert small["wasserstein"] / large["wasserstein"] == pytest.approx(10, rel=0.15)
    shares = np.asarray(base["counts"]) / sum(base["counts"])
    direct = [sps.wasserstein_distance(at, at, shares, rng.multinomial(100, shares)) / base["std"]
              for _ in range(2000)]
    assert small["wasserstein"] == pytest.approx(np.mean(direct), rel=0.05)
    assert small["psi"] > large["psi"] > 0 and small["ks"] > large["ks"] > 0
