"""Tests of the image suite: determinism, balance, cache checks, what the labels mean, and separability."""

import itertools

import numpy as np
import pytest
from scipy import ndimage

from jaxlab.core import cache
from jaxlab.data import image_tasks, images

TASKS = images.DEFAULT_IMAGE_TASKS
NUM_TRAIN, NUM_TEST = 1000, 300


@pytest.fixture(scope="module")
def suite():
    """Train and test splits of every default task, generated once for the module."""
    return {name: (images.generate_split(name, "train", NUM_TRAIN, seed=0),
                   images.generate_split(name, "test", NUM_TEST, seed=0))
            for name in TASKS}


def _foreground(batch):
    """Pixels that differ from the image's border median by more than 0.25 summed over channels."""
    x = batch.astype(np.float32) / 255
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    background = np.median(border, axis=1)
    return np.abs(x - background[:, None, None, :]).sum(-1) > 0.25, x, background


def _features(batch):
    """Hand-made features for a ridge classifier: coarse pixels, spectrum, foreground map and colour."""
    foreground, x, background = _foreground(batch)
    n = len(x)
    grey = x.mean(-1)
    coarse = x.reshape(n, 8, 4, 8, 4, 3).mean((2, 4)).reshape(n, -1)
    spectrum = np.log1p(np.abs(np.fft.rfft2(grey - grey.mean((1, 2), keepdims=True)))[:, :16, :12]).reshape(n, -1)
    occupancy = foreground.reshape(n, 8, 4, 8, 4).mean((2, 4)).reshape(n, -1)
    colour = (x * foreground[..., None]).sum((1, 2)) / (foreground.sum((1, 2))[:, None] + 1)
    stats = np.concatenate([x.mean((1, 2)), x.std((1, 2)), colour, background, foreground.mean((1, 2))[:, None]], 1)
    return np.concatenate([coarse, spectrum, occupancy, stats], 1)


def _fit_ridge(features, labels, num_classes, l2=10.0):
    """Closed-form ridge regression onto one-hot labels; returns a predict function."""
    mean, std = features.mean(0), features.std(0) + 1e-6

    def design(f):
        return np.concatenate([(f - mean) / std, np.ones((len(f), 1))], 1)

    a = design(features)
    weights = np.linalg.solve(a.T @ a + l2 * np.eye(a.shape[1]), a.T @ np.eye(num_classes)[labels])
    return lambda f: (design(f) @ weights).argmax(1)


def test_same_seed_same_bytes():
    for name in TASKS:
        first, labels_first = images.generate_split(name, "train", 40, seed=3)
        second, labels_second = images.generate_split(name, "train", 40, seed=3)
        assert first.tobytes() == second.tobytes(), name
        assert labels_first.tobytes() == labels_second.tobytes(), name


def test_seeds_and_splits_differ():
    base, _ = images.generate_split("shapes", "train", 40, seed=0)
    other_seed, _ = images.generate_split("shapes", "train", 40, seed=1)
    other_split, _ = images.generate_split("shapes", "test", 40, seed=0)
    assert not np.array_equal(base, other_seed)
    assert not np.array_equal(base, other_split)


def test_shapes_dtypes_and_balance(suite):
    for name, ((train_x, train_y), (test_x, test_y)) in suite.items():
        num_classes = len(images.IMAGE_TASKS[name].class_names)
        assert train_x.shape == (NUM_TRAIN, 32, 32, 3), name
        assert train_x.dtype == np.uint8, name
        assert test_y.dtype == np.int32, name
        for labels in (train_y, test_y):
            counts = np.bincount(labels, minlength=num_classes)
            assert len(counts) == num_classes, name
            assert counts.max() - counts.min() <= 1, (name, counts)


def test_counting_labels_match_components(suite):
    (x, labels), _ = suite["counting"]
    foreground, _, _ = _foreground(x)
    counts = np.array([ndimage.label(mask)[1] for mask in foreground])
    assert np.mean(counts == labels + 1) > 0.95


def test_position_labels_match_centroid(suite):
    (x, labels), _ = suite["position"]
    foreground, _, _ = _foreground(x)
    rows, cols = np.indices((32, 32)) + 0.5
    mass = foreground.sum((1, 2))
    cell = 32 / image_tasks.POSITION_GRID
    row = ((foreground * rows).sum((1, 2)) / mass // cell).astype(int)
    col = ((foreground * cols).sum((1, 2)) / mass // cell).astype(int)
    assert np.mean(row * image_tasks.POSITION_GRID + col == labels) > 0.97


def test_rendered_shape_areas_match_closed_forms():
    n = 1
    radius = np.full(n, 10.0, np.float32)
    centre = np.full(n, 16.0, np.float32)
    angle = np.zeros(n, np.float32)
    expected = {
        "circle": np.pi * 100,
        "ring": np.pi * ((0.96 * 10) ** 2 - (0.40 * 10) ** 2),
        "triangle": 3 * np.sqrt(3) / 4 * 100,
        "square": 2 * 100,
        "hexagon": 3 * np.sqrt(3) / 2 * 100,
        "ellipse": np.pi * 10 * 4.5,
    }
    for name, area in expected.items():
        kind = np.array([image_tasks.SHAPE_NAMES.index(name)])
        coverage = image_tasks.draw_shapes(kind, centre, centre, radius, angle)
        assert abs(coverage.sum() - area) < 0.03 * area, name


def test_identity_affine_reproduces_template():
    rng = np.random.default_rng(0)
    template = rng.random((1, 32, 32)).astype(np.float32)
    zero = np.zeros(1)
    warped = image_tasks.sample_affine(template, np.array([0]), np.ones(1), zero, zero, np.zeros((1, 2)))
    np.testing.assert_allclose(warped[0], template[0], atol=1e-5)
    shifted = image_tasks.sample_affine(template, np.array([0]), np.ones(1), zero, zero, np.array([[1.0, 0.0]]))
    np.testing.assert_allclose(shifted[0, :, 1:], template[0, :, :-1], atol=1e-5)


def test_glyph_templates_distinct():
    templates = image_tasks.glyph_templates("0123456789")
    assert templates.shape == (len(image_tasks.GLYPH_FONTS), 10, 64, 64)
    assert (templates.sum((2, 3)) > 50).all()  # Every glyph has ink.
    for font in templates:
        for a, b in itertools.combinations(range(10), 2):
            assert np.abs(font[a] - font[b]).sum() > 20


def test_each_task_is_learnable(suite):
    """A ridge classifier on simple features beats twice chance on every task's test split."""
    for name, ((train_x, train_y), (test_x, test_y)) in suite.items():
        num_classes = len(images.IMAGE_TASKS[name].class_names)
        predict = _fit_ridge(_features(train_x), train_y, num_classes)
        accuracy = np.mean(predict(_features(test_x)) == test_y)
        assert accuracy > 2.0 / num_classes, (name, accuracy)


def test_label_functions_differ_between_tasks(suite):
    """A classifier trained on one task predicts another task's labels at about chance level."""
    features = {name: (_features(train[0]), train[1], _features(test[0]), test[1])
                for name, (train, test) in suite.items()}
    for source, target in itertools.permutations(TASKS, 2):
        train_f, train_y, _, _ = features[source]
        _, _, test_f, test_y = features[target]
        num_classes = max(train_y.max(), test_y.max()) + 1
        predict = _fit_ridge(train_f, train_y, num_classes)
        accuracy = np.mean(predict(test_f) == test_y)
        chance = 1.0 / len(images.IMAGE_TASKS[target].class_names)
        assert accuracy < chance + 0.1, (source, target, accuracy)


def test_handwritten_digits_is_learnable():
    pytest.importorskip("sklearn")
    train_x, train_y = images.generate_split("handwritten_digits", "train", NUM_TRAIN, seed=0)
    test_x, test_y = images.generate_split("handwritten_digits", "test", NUM_TEST, seed=0)
    accuracy = np.mean(_fit_ridge(_features(train_x), train_y, 10)(_features(test_x)) == test_y)
    assert accuracy > 0.5


def test_cached_task_round_trip_and_corruption(tmp_path):
    task = images.load_image_task("colours", num_train=30, num_test=20, seed=1, root=tmp_path)
    expected, _ = images.generate_split("colours", "train", 30, seed=1)
    np.testing.assert_array_equal(task.train_images, expected)
    assert task.class_names == image_tasks.COLOUR_NAMES
    assert task.test_images.shape == (20, 32, 32, 3)

    directory = cache.artifact_dir(images.artifact_spec("colours", 30, 20, 1), tmp_path)
    path = directory / "test_labels.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(cache.CacheError, match="test_labels.npy has sha256"):
        images.load_image_task("colours", num_train=30, num_test=20, seed=1, root=tmp_path)


def test_suite_sizes_and_bad_arguments(tmp_path):
    tasks = images.load_image_suite(["position"], num_train=18, num_test=9, root=tmp_path)
    assert [task.name for task in tasks] == ["position"]
    assert tasks[0].num_classes == 9
    with pytest.raises(ValueError, match="Unknown image task 'mnist'"):
        images.load_image_task("mnist", root=tmp_path)
    with pytest.raises(ValueError, match="num_train must be an int >= the 10 classes"):
        images.load_image_task("shapes", num_train=5, root=tmp_path)
    with pytest.raises(ValueError, match="Unknown suite size"):
        images.load_image_suite(size="huge", root=tmp_path)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -2"):
        images.generate_split("shapes", "train", 10, seed=-2)
    with pytest.raises(ValueError, match="Unknown split 'val'"):
        images.generate_split("shapes", "val", 10, seed=0)


def test_normalize_images():
    x = np.array([0, 127, 255], np.uint8)
    np.testing.assert_allclose(images.normalize_images(x), [-1.0, 127 / 127.5 - 1, 1.0])
    assert images.normalize_images(x).dtype == np.float32
    with pytest.raises(TypeError, match="expects uint8"):
        images.normalize_images(x.astype(np.float32))
