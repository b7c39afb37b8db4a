"""pipelines.metrics against hand-computed cases: mean IoU and mAP@0.5."""
import numpy as np
import pytest

from pipelines import metrics

A, B = [0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]


def test_mean_iou_of_a_confusion_matrix_skips_classes_absent_from_truth_and_prediction():
    # class 0: TP 2, FP 0, FN 1 -> 2/3; class 1: TP 1, FP 1, FN 0 -> 1/2; class 2 never occurs.
    confusion = np.array([[2, 1, 0], [0, 1, 0], [0, 0, 0]])
    assert float(metrics.mean_iou(confusion)) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_the_keras_metric_accumulates_the_same_confusion_over_batches():
    metric = metrics.MeanIoU(num_classes=3)
    one_hot = np.eye(3, dtype=np.float32)
    metric.update_state(np.array([[0, 0]]), one_hot[[[0, 1]]])  # pixel (true 0, predicted 1) and (0, 0)
    metric.update_state(np.array([[0, 1]]), one_hot[[[0, 1]]])
    assert float(metric.result()) == pytest.approx((2 / 3 + 1 / 2) / 2)
    metric.reset_state()
    metric.update_state(np.array([[2]]), one_hot[[[2]]])
    assert float(metric.result()) == 1.0


def test_box_iou_of_disjoint_nested_and_half_overlapping_boxes():
    ious = metrics.box_iou([[0, 0, 1, 1]], [A, B, [0, 0, 0.5, 1.0], [2, 2, 3, 3]])
    np.testing.assert_allclose(ious, [[0.25, 0.25, 0.5, 0.0]])


def test_average_precision_takes_the_precision_envelope():
    # hits, miss, hit over 2 truths: (R, P) = (.5, 1), (.5, .5), (1, 2/3) -> .5 * 1 + .5 * 2/3
    ap = metrics.average_precision(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_map_counts_a_far_box_and_a_duplicate_as_false_positives():
    truths = [{"boxes": [A, B], "classes": [0, 0]}]
    found = [{"boxes": [A, [0.6, 0.0, 0.9, 0.3], B, A], "scores": [0.9, 0.8, 0.7, 0.6], "classes": [0, 0, 0, 0]}]
    result = metrics.mean_average_precision(found, truths, num_classes=1)
    assert result["map"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_map_needs_the_right_class_and_iou_at_least_the_threshold():
    truths = [{"boxes": [[0, 0, 1, 1]], "classes": [1]}]
    half = [0.0, 0.0, 0.5, 1.0]  # IoU exactly 0.5 with the truth
    wrong_class = [{"boxes": [half], "scores": [0.9], "classes": [0]}]
    right_class = [{"boxes": [half], "scores": [0.9], "classes": [1]}]
    assert metrics.mean_average_precision(wrong_class, truths, num_classes=2) == {"map": 0.0, "ap": [None, 0.0]}
    assert metrics.mean_average_precision(right_class, truths, num_classes=2)["map"] == 1.0
    assert metrics.mean_average_precision(right_class, truths, num_classes=2, iou_threshold=0.6)["map"] == 0.0


def test_map_averages_classes_over_images_and_ignores_classes_without_truth():
    truths = [{"boxes": [A], "classes": [0]}, {"boxes": [B], "classes": [2]}, {"boxes": np.zeros((0, 4)),
                                                                               "classes": []}]
    found = [{"boxes": [A], "scores": [0.5], "classes": [0]},
             {"boxes": [A, B], "scores": [0.9, 0.4], "classes": [2, 2]},  # a miss ranked above the hit
             {"boxes": [B], "scores": [0.95], "classes": [0]}]  # a false positive on an empty image
    result = metrics.mean_average_precision(found, truths, num_classes=3)
    # class 0: FP (.95) then TP (.5) -> precision 1/2 at recall 1; class 2: FP then TP -> 1/2
    assert result["ap"] == [pytest.approx(0.5), None, pytest.approx(0.5)]
    assert result["map"] == pytest.approx(0.5)


def test_classifier_curves_match_counts_made_by_hand():
    """The confusion matrix, macro F1 and per-threshold counts of ClassifierCurves against direct counting."""
    import keras

    from pipelines.metrics import ClassifierCurves

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    probabilities = rng.dirichlet(np.ones(3), 200).astype(np.float32)
    probabilities[labels == 2, 2] += 1.0  # class 2 is easy
    probabilities /= probabilities.sum(1, keepdims=True)
    metric = ClassifierCurves(3)
    for rows in (slice(0, 120), slice(120, 200)):  # two batches accumulate
        metric.update_state(labels[rows], probabilities[rows])
    predicted = probabilities.argmax(1)
    confusion = np.array([[np.sum((labels == t) & (predicted == p)) for p in range(3)] for t in range(3)])
    assert np.array_equal(np.asarray(metric.confusion), confusion)
    precision = np.diag(confusion) / confusion.sum(0)
    recall = np.diag(confusion) / confusion.sum(1)
    assert float(metric.result()) == pytest.approx(np.mean(2 * precision * recall / (precision + recall)), rel=1e-5)
    curves = metric.curves()
    for c in range(3):
        for k in (0, 30, 50, 77, 100):
            called = probabilities[:, c] >= k / 100
            assert curves["tp"][c, k] == np.sum(called & (labels == c))
            assert curves["fp"][c, k] == np.sum(called & (labels != c))
            assert curves["fn"][c, k] == np.sum(~called & (labels == c))
    assert curves["recall"][2, 50] > curves["recall"][0, 50]  # the easy class is found at a high threshold
    metric.reset_state()
    assert not np.asarray(metric.positives).any() and keras.ops.convert_to_numpy(metric.confusion).sum() == 0
