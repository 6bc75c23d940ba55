import numpy as np
import pytest

from srood_lib import outliers


def _images(n=3, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_patch_shuffle_permutes_patches_and_keeps_pixels():
    imgs = _images()
    out = outliers.patch_shuffle(imgs, grid=2, rng=np.random.default_rng(1))
    assert out.shape == imgs.shape
    for a, b in zip(imgs, out):
        assert sorted(a.reshape(-1, 3).tolist()) == sorted(b.reshape(-1, 3).tolist())
        patches_a = {a[r:r + 4, c:c + 4].tobytes() for r in (0, 4) for c in (0, 4)}
        patches_b = {b[r:r + 4, c:c + 4].tobytes() for r in (0, 4) for c in (0, 4)}
        assert patches_a == patches_b
    assert not np.array_equal(out, imgs)


def test_patch_shuffle_needs_a_dividing_grid():
    with pytest.raises(ValueError, match="divide"):
        outliers.patch_shuffle(_images(size=10), grid=3, rng=np.random.default_rng(0))


def test_vflip_is_upside_down():
    imgs = _images()
    assert np.array_equal(outliers.vflip(imgs)[:, 0], imgs[:, -1])


def test_synthetic_outliers_are_deterministic_in_the_seed():
    imgs = _images(n=4)
    a = outliers.synthetic_outliers(imgs, outliers.OUTLIER_KINDS, seed=3)
    b = outliers.synthetic_outliers(imgs, outliers.OUTLIER_KINDS, seed=3)
    c = outliers.synthetic_outliers(imgs, outliers.OUTLIER_KINDS, seed=4)
    assert set(a) == set(outliers.OUTLIER_KINDS)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["noise"], c["noise"])
    assert a["noise"].dtype == np.uint8 and 5 < np.abs(a["noise"].astype(int) - imgs).mean() < 40


def test_unknown_kind_names_the_choices():
    with pytest.raises(ValueError, match="patch_shuffle"):
        outliers.synthetic_outliers(_images(), ["rotate"], seed=0)


def test_invert_rot90_and_big_jigsaw_are_what_they_say():
    imgs = _images(n=2)
    out = outliers.synthetic_outliers(imgs, ["invert", "rot90", "patch_shuffle_2"], seed=0)
    assert np.array_equal(out["invert"].astype(int), 255 - imgs.astype(int))
    # a quarter turn counter-clockwise: the top row becomes the left column, read bottom to top
    assert np.array_equal(out["rot90"][:, ::-1, 0], imgs[:, 0, :])
    assert out["patch_shuffle_2"].shape == imgs.shape and out["patch_shuffle_2"].dtype == np.uint8
