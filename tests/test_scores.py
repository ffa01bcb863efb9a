"""Each score on hand-made logits and embeddings with known results."""

import math

import numpy as np
import pytest

from mnist_curate import scores
from mnist_curate.candidates import rule_masks, suspicion, top_fraction_mask
from mnist_curate.config import CandidatesConfig
from mnist_curate.embed import score_logits


def confident_logits(predicted: list[int], strength: float = 30.0) -> np.ndarray:
    logits = np.zeros((len(predicted), 10))
    logits[np.arange(len(predicted)), predicted] = strength
    return logits


def test_hardness_of_uniform_logits_is_ln10():
    assert scores.hardness(np.zeros((3, 10))) == pytest.approx(np.full(3, math.log(10)))


def test_hardness_of_confident_logits_is_near_zero():
    assert scores.hardness(confident_logits([3, 7])).max() < 1e-9


def test_hardness_survives_extreme_logits():
    logits = np.array([[1000.0, -1000.0] + [0.0] * 8])
    assert np.isfinite(scores.hardness(logits)).all()
    assert scores.hardness(logits)[0] == pytest.approx(0.0, abs=1e-12)


def test_hardness_of_two_way_tie_is_ln2():
    logits = np.full((1, 10), -50.0)
    logits[0, [2, 5]] = 10.0
    assert scores.hardness(logits)[0] == pytest.approx(math.log(2))


def test_mistakenness_of_confident_right_prediction_is_near_0():
    assert scores.mistakenness(confident_logits([4]), np.array([4]))[0] < 1e-9


def test_mistakenness_of_confident_wrong_prediction_is_near_1():
    assert scores.mistakenness(confident_logits([4]), np.array([9]))[0] > 1 - 1e-9


def test_mistakenness_of_uniform_logits_is_near_half():
    # Brain's modulator: with uniform logits argmax is class 0, so label 0 counts as right.
    right = scores.mistakenness(np.zeros((1, 10)), np.array([0]))[0]
    wrong = scores.mistakenness(np.zeros((1, 10)), np.array([1]))[0]
    assert right == pytest.approx(0.45)
    assert wrong == pytest.approx(0.55)


def test_misclassified_samples_score_at_least_half():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 10)) * 4
    labels = rng.integers(0, 10, 500)
    values = scores.mistakenness(logits, labels)
    wrong_mask = logits.argmax(1) != labels
    assert (values[wrong_mask] >= 0.5).all()
    assert (values[~wrong_mask] <= 0.5).all()


def test_margin_is_given_logit_minus_best_other():
    logits = np.array([[1.0, 5.0, 2.0] + [0.0] * 7])
    assert scores.margin(logits, np.array([1]))[0] == pytest.approx(3.0)
    assert scores.margin(logits, np.array([2]))[0] == pytest.approx(-3.0)


def test_self_confidence_is_probability_of_given_label():
    logits = np.log(np.array([[0.7, 0.2, 0.1] + [1e-12] * 7]))
    assert scores.self_confidence(logits, np.array([1]))[0] == pytest.approx(0.2, abs=1e-9)


def test_neighbour_distances_match_sklearn_cosine():
    from sklearn.metrics import pairwise_distances

    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(400, 84)).astype(np.float32)
    centred = embeddings.astype(np.float64)
    centred -= centred.mean(axis=0)
    full = pairwise_distances(centred, metric="cosine")
    np.fill_diagonal(full, np.inf)
    expected = np.sort(full, axis=1)[:, :4]
    assert np.abs(scores.neighbour_cosine_distances(embeddings, 4) - expected).max() < 1e-9


def test_grouped_neighbour_search_matches_sklearn():
    # 3,000 rows take the grouped top-k path (at least 4 * 6 groups of 64 columns).
    from sklearn.metrics import pairwise_distances

    rng = np.random.default_rng(7)
    embeddings = np.maximum(rng.normal(size=(3000, 12)), 0.0)
    embeddings[:, 3] = 0.0  # a dead unit, dropped before the search
    centred = embeddings - embeddings.mean(axis=0)
    full = pairwise_distances(centred, metric="cosine")
    np.fill_diagonal(full, np.inf)
    expected = np.sort(full, axis=1)[:, :4]
    assert np.abs(scores.neighbour_cosine_distances(embeddings, 4) - expected).max() < 1e-9


def test_uniqueness_is_highest_for_the_isolated_sample():
    rng = np.random.default_rng(2)
    cluster = rng.normal(loc=5.0, scale=0.1, size=(50, 8))
    centre_direction = np.zeros((1, 8))
    centre_direction[0, 0] = -40.0
    embeddings = np.vstack([cluster, rng.normal(loc=-5.0, scale=0.1, size=(50, 8)), centre_direction])
    values = scores.uniqueness(embeddings)
    assert values.argmax() == 100
    assert values.max() == pytest.approx(1.0)
    assert (values > 0).all()


def test_uniqueness_skips_nearest_neighbour_like_brain():
    # Rows 60 and 61 are a near-duplicate pair far from the rest. Each is the
    # other's nearest neighbour, which Brain skips, so both score highest.
    rng = np.random.default_rng(3)
    angles = np.concatenate([rng.uniform(0.0, 0.3, 60), [2.0, 2.0001]])
    embeddings = np.column_stack([np.cos(angles), np.sin(angles)]) + 10.0
    values = scores.uniqueness(embeddings)
    assert set(np.argsort(values)[-2:]) == {60, 61}


def test_uniqueness_of_tiny_sets_is_one():
    assert scores.uniqueness(np.eye(3)).tolist() == [1.0, 1.0, 1.0]


def test_representativeness_is_one_minus_brain_value():
    rng = np.random.default_rng(4)
    embeddings = np.vstack([rng.normal(loc=c, scale=1.0, size=(40, 4)) for c in (0.0, 20.0)])
    ours, brain = scores.representativeness(embeddings, n_clusters=2)
    assert np.allclose(ours, 1.0 - brain)
    assert ours.min() == pytest.approx(0.0)
    assert brain.max() == pytest.approx(1.0)
    assert ((ours >= 0) & (ours <= 1)).all()


def test_representativeness_ranks_cluster_centre_above_edge():
    rng = np.random.default_rng(5)
    cluster = rng.normal(scale=1.0, size=(200, 3))
    embeddings = np.vstack([cluster, [[0.0, 0.0, 0.0]], [[6.0, 0.0, 0.0]]])
    ours, _ = scores.representativeness(embeddings, n_clusters=1)
    assert ours[200] > 0.95
    assert ours[201] == pytest.approx(0.0)


def test_label_issues_find_flipped_labels():
    rng = np.random.default_rng(6)
    true_labels = np.repeat(np.arange(10), 60)
    logits = confident_logits(true_labels.tolist(), strength=8.0) + rng.normal(scale=0.5, size=(600, 10))
    given = true_labels.copy()
    flipped_idx = np.arange(0, 600, 50)
    given[flipped_idx] = (given[flipped_idx] + 1) % 10
    issue_mask = scores.label_issues(logits, given, filter_by="prune_by_noise_rate")
    assert issue_mask[flipped_idx].all()
    assert issue_mask.sum() == len(flipped_idx)


def test_label_issues_tolerate_missing_class():
    labels = np.repeat(np.arange(9), 20)
    logits = confident_logits(labels.tolist(), strength=6.0)
    assert scores.label_issues(logits, labels, filter_by="prune_by_noise_rate").shape == (180,)


def test_score_logits_prefer_out_of_fold_rows():
    logits = np.zeros((3, 10))
    oof_logits = np.full((3, 10), np.nan)
    oof_logits[0] = 1.0
    chosen = score_logits(logits, oof_logits)
    assert (chosen[0] == 1.0).all()
    assert (chosen[1:] == 0.0).all()


def test_top_fraction_mask_takes_exact_count():
    values = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    assert top_fraction_mask(values, 0.4).tolist() == [False, True, False, True, False]
    assert not top_fraction_mask(values, 0.0).any()
    assert top_fraction_mask(values, 1.0).all()


def test_rules_need_misclassification_for_mistaken_and_hard():
    n = 100
    splits = np.array(["train"] * n)
    labels = np.zeros(n, dtype=int)
    predictions = np.zeros(n, dtype=int)
    predictions[[0, 1]] = 1
    values = {"mistakenness": np.linspace(0, 1, n), "hardness": np.linspace(1, 0, n),
              "uniqueness": np.linspace(0, 1, n), "label_issue": np.zeros(n, dtype=bool)}
    values["mistakenness"][0] = 2.0
    masks = rule_masks(values, labels, predictions, splits, CandidatesConfig(top_mistakenness=0.05,
                                                                             top_hardness=0.05,
                                                                             top_uniqueness=0.01))
    assert np.flatnonzero(masks["mistaken"]).tolist() == [0]
    assert np.flatnonzero(masks["hard"]).tolist() == [0, 1]
    assert np.flatnonzero(masks["outlier"]).tolist() == [99]
    assert not masks["label_issue"].any()


def test_suspicion_ranks_within_each_split():
    splits = np.array(["train"] * 4 + ["test"] * 2)
    values = {"mistakenness": np.array([0.1, 0.2, 0.3, 0.9, 0.1, 0.2]),
              "hardness": np.array([0.1, 0.2, 0.3, 0.9, 0.1, 0.2]),
              "uniqueness": np.array([0.1, 0.2, 0.3, 0.9, 0.1, 0.2]),
              "representativeness": np.array([0.9, 0.8, 0.7, 0.1, 0.9, 0.8]),
              "label_issue": np.array([False, False, False, True, False, True])}
    result = suspicion(values, splits)
    assert result[3] == pytest.approx(1.0)
    assert result[5] == pytest.approx(1.0)
    assert list(np.argsort(result[:4])) == [0, 1, 2, 3]
