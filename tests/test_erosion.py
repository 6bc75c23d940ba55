import pytest
import torch
import torch.nn.functional as F

from srood_lib.erosion import (BicubicDownUp, Blackout, Identity, RandomBlackout, apply_random_erosions,
                               erosion_set, parse_erosion)


def images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=g) * 2 - 1


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


ALL_NAMES = ["identity", "bicubic_x2", "bicubic_x4", "blackout_16x16_off0_0", "blackout_8x12_off-4_8",
             "blackout_random_8-16"]


# ---------- names ----------

@pytest.mark.parametrize("name", ALL_NAMES)
def test_name_round_trips(name):
    erosion = parse_erosion(name)
    assert erosion.name == name
    assert parse_erosion(erosion.name) == erosion


def test_parse_builds_the_right_objects():
    assert parse_erosion("identity") == Identity()
    assert parse_erosion("bicubic_x4") == BicubicDownUp(4)
    assert parse_erosion("blackout_16x8_off4_-2") == Blackout(16, 8, 4, -2)
    assert parse_erosion("blackout_16x16") == Blackout(16, 16, 0, 0)  # shorthand, canonical name has the offset
    assert parse_erosion("blackout_16x16").name == "blackout_16x16_off0_0"
    assert parse_erosion("blackout_random_4-12") == RandomBlackout(4, 12)


@pytest.mark.parametrize("bad", ["bicubic", "bicubic_x1", "bicubic_x0", "blackout_0x4", "blackout_random_9-3",
                                 "blur_x2", "Identity", ""])
def test_bad_names_raise(bad):
    with pytest.raises(ValueError):
        parse_erosion(bad)


def test_unknown_name_lists_the_accepted_forms():
    with pytest.raises(ValueError, match="bicubic_x<factor>"):
        parse_erosion("gaussian_blur")


def test_erosion_set_keeps_order_and_rejects_repeats_and_single_strings():
    assert [e.name for e in erosion_set(["bicubic_x4", "bicubic_x2"])] == ["bicubic_x4", "bicubic_x2"]
    with pytest.raises(ValueError, match="listed twice"):
        erosion_set(["bicubic_x2", "bicubic_x2"])
    with pytest.raises(ValueError, match="at least one"):
        erosion_set([])
    with pytest.raises(TypeError, match="wrap it"):
        erosion_set("bicubic_x2")


# ---------- identity ----------

def test_identity_returns_an_equal_copy():
    x = images()
    y = Identity()(x)
    assert torch.equal(x, y)
    y[0, 0, 0, 0] = 0.123
    assert not torch.equal(x, y)  # a copy, not a view of the input


# ---------- bicubic ----------

def test_bicubic_matches_torch_down_up_and_stays_in_range():
    x = images()
    y = BicubicDownUp(4)(x)
    small = F.interpolate(x, size=(8, 8), mode="bicubic", antialias=True, align_corners=False)
    expected = F.interpolate(small, size=(32, 32), mode="bicubic", align_corners=False).clamp(-1, 1)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(y, expected)
    assert y.min() >= -1 and y.max() <= 1


def test_bicubic_removes_detail_and_keeps_constant_images():
    x = images()
    y2, y4 = BicubicDownUp(2)(x), BicubicDownUp(4)(x)
    # Random noise is all high frequency: a stronger down-sampling loses more of it.
    err2, err4 = (y2 - x).pow(2).mean(), (y4 - x).pow(2).mean()
    assert 0 < err2 < err4
    flat = torch.full((2, 3, 16, 16), 0.25)
    assert torch.allclose(BicubicDownUp(4)(flat), flat, atol=1e-5)


def test_bicubic_factor_must_divide_the_size():
    with pytest.raises(ValueError, match="does not divide"):
        BicubicDownUp(3)(images(size=32))


# ---------- fixed blackout ----------

def test_centred_blackout_covers_exactly_the_central_rectangle():
    x = images(size=32)
    y = Blackout(16, 8)(x)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[8:24, 12:20] = True
    assert torch.all(y[:, :, inside] == -1)
    assert torch.equal(y[:, :, ~inside], x[:, :, ~inside])


def test_blackout_offset_moves_the_centre_down_and_right():
    x = torch.zeros(1, 3, 32, 32)
    y = Blackout(16, 16, dy=8, dx=4)(x)
    rows, cols = torch.nonzero(y[0, 0] == -1, as_tuple=True)
    assert (rows.min().item(), rows.max().item()) == (16, 31)
    assert (cols.min().item(), cols.max().item()) == (12, 27)
    # Mask centre minus image centre == (dy, dx)
    assert (rows.float().mean().item() - 15.5, cols.float().mean().item() - 15.5) == (8.0, 4.0)


def test_blackout_odd_margin_rounds_up_left():
    y = Blackout(3, 3)(torch.zeros(1, 3, 8, 8))
    rows, cols = torch.nonzero(y[0, 0] == -1, as_tuple=True)
    assert rows.min().item() == 2 and cols.min().item() == 2


def test_blackout_that_does_not_fit_raises_with_a_fix():
    with pytest.raises(ValueError, match="larger than"):
        Blackout(40, 8)(images(size=32))
    with pytest.raises(ValueError, match="smaller offset"):
        Blackout(16, 16, dy=9)(images(size=32))


# ---------- random blackout ----------

def test_random_blackout_rectangles_have_sizes_in_range_and_lie_inside():
    x = torch.zeros(64, 3, 32, 32)
    y = RandomBlackout(4, 10)(x, seeded(1))
    sizes = set()
    for img in y:
        black = img[0] == -1
        rows = torch.nonzero(black.any(1)).flatten()
        cols = torch.nonzero(black.any(0)).flatten()
        h, w = len(rows), len(cols)
        assert 4 <= h <= 10 and 4 <= w <= 10
        assert black.sum().item() == h * w  # one solid rectangle
        assert rows.max() - rows.min() + 1 == h and cols.max() - cols.min() + 1 == w
        assert torch.all(img[:, black] == -1)  # all channels blacked
        sizes.add((h, w))
    assert len(sizes) > 5  # sizes really vary per image


def test_random_blackout_locations_cover_the_whole_image():
    x = torch.zeros(400, 3, 16, 16)
    y = RandomBlackout(4, 4)(x, seeded(2))
    tops = [torch.nonzero((img[0] == -1).any(1)).min().item() for img in y]
    assert set(tops) == set(range(0, 13))  # every top row from 0 to H - h occurs


def test_random_blackout_is_repeatable_under_a_seed_and_varies_across_seeds():
    x = images(8)
    erosion = RandomBlackout(6, 12)
    a = erosion(x, seeded(5))
    b = erosion(x, seeded(5))
    c = erosion(x, seeded(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_random_blackout_too_large_for_the_image_raises():
    with pytest.raises(ValueError, match="max_size <= 16"):
        RandomBlackout(8, 20)(images(size=16), seeded())


# ---------- random erosion sets (Algorithm 1) ----------

def test_apply_random_erosions_applies_each_images_own_erosion():
    x = images(24)
    erosions = erosion_set(["identity", "bicubic_x4", "blackout_16x16_off0_0"])
    out, index = apply_random_erosions(x, erosions, seeded(3))
    assert index.shape == (24,) and index.dtype == torch.long
    assert set(index.tolist()) == {0, 1, 2}
    for i, k in enumerate(index.tolist()):
        assert torch.allclose(out[i:i + 1], erosions[k](x[i:i + 1]), atol=1e-6)


def test_apply_random_erosions_samples_uniformly():
    x = torch.zeros(3000, 3, 4, 4)
    _, index = apply_random_erosions(x, erosion_set(["identity", "bicubic_x2", "blackout_2x2"]), seeded(4))
    counts = torch.bincount(index, minlength=3).float() / 3000
    assert torch.all((counts - 1 / 3).abs() < 0.04)


def test_apply_random_erosions_is_repeatable_with_a_fresh_generator():
    x = images(16)
    erosions = erosion_set(["bicubic_x2", "blackout_random_4-12", "identity"])
    a, ia = apply_random_erosions(x, erosions, seeded(7))
    b, ib = apply_random_erosions(x, erosions, seeded(7))
    c, ic = apply_random_erosions(x, erosions, seeded(8))
    assert torch.equal(a, b) and torch.equal(ia, ib)
    assert not (torch.equal(a, c) and torch.equal(ia, ic))


def test_apply_random_erosions_accepts_names():
    out, index = apply_random_erosions(images(4), ["bicubic_x2"], seeded())
    assert torch.all(index == 0)
    assert torch.allclose(out, BicubicDownUp(2)(images(4)))


# ---------- input validation and devices ----------

@pytest.mark.parametrize("bad, match", [
    (torch.zeros(3, 32, 32), r"\(N, 3, H, W\)"),
    (torch.zeros(2, 32, 32, 3), r"permute"),
    (torch.full((1, 3, 8, 8), 255.0), r"x / 127.5 - 1"),
    (torch.full((1, 3, 8, 8), float("nan")), r"\[-1, 1\]"),
])
def test_bad_inputs_raise_with_a_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        Identity()(bad)


def test_integer_and_non_tensor_inputs_raise():
    with pytest.raises(TypeError, match="float"):
        Identity()(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        Identity()([[0.0]])


@pytest.mark.parametrize("name", ALL_NAMES)
def test_output_keeps_shape_dtype_and_device(name):
    x = images(2).double()
    y = parse_erosion(name)(x, seeded())
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", ALL_NAMES)
def test_gpu_matches_cpu(name):
    x = images(6)
    erosion = parse_erosion(name)
    cpu = erosion(x, seeded(9))
    gpu = erosion(x.cuda(), seeded(9))
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)
    out_cpu, idx_cpu = apply_random_erosions(x, erosion_set(ALL_NAMES), seeded(9))
    out_gpu, idx_gpu = apply_random_erosions(x.cuda(), erosion_set(ALL_NAMES), seeded(9))
    assert torch.equal(idx_gpu.cpu(), idx_cpu)
    assert torch.allclose(out_gpu.cpu(), out_cpu, atol=1e-5)
