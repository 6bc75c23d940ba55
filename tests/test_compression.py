import numpy as np
import pytest

from srood_lib.compression import jpeg_roundtrip, png_bits_per_dim


def _smooth(n=2, size=32):
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 8, y * 8, (x + y) * 4], -1).clip(0, 255).astype(np.uint8)
    return np.stack([base] * n)


def test_jpeg_roundtrip_is_lossy_but_close_and_deterministic():
    imgs = _smooth()
    a, b = jpeg_roundtrip(imgs), jpeg_roundtrip(imgs)
    assert a.shape == imgs.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    err = np.abs(a.astype(int) - imgs).mean()
    assert 0 < err < 10


def test_chroma_subsampling_blurs_colour_edges():
    img = np.zeros((1, 16, 16, 3), np.uint8)
    img[:, :, ::2, 0] = 255  # one-pixel red stripes: chroma detail that 4:2:0 cannot keep
    full = np.abs(jpeg_roundtrip(img, subsampling="4:4:4").astype(int) - img).mean()
    sub = np.abs(jpeg_roundtrip(img, subsampling="4:2:0").astype(int) - img).mean()
    assert sub > full


def test_png_bits_per_dim_ranks_noise_above_flat():
    flat = np.full((1, 32, 32, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    bpd_flat, bpd_noise = png_bits_per_dim(flat)[0], png_bits_per_dim(noise)[0]
    assert bpd_flat < 1 < 7.5 < bpd_noise


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="uint8"):
        jpeg_roundtrip(np.zeros((1, 4, 4, 3), np.float32))
