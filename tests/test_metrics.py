"""core/quality/metrics.py."""
import numpy as np
import pytest

from iqa_map.core.quality.metrics import roc_auc


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 200).astype(float)  # many ties
    label = rng.random(200) < 0.3
    pos, neg = score[label], score[~label]
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert roc_auc(score, label) == pytest.approx(brute)
    assert roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
