"""KNN and Mahalanobis in the LPIPS backbones' features: shapes, known answers, direction, pytorch-ood agreement."""
import numpy as np
import pytest
import torch

from srood_lib.baselines import features as feat

CFG = {"features": {"k": 1, "n_fit": None, "batch_size": 8, "shrinkage": 0.0}, "seed": 0, "device": "cpu"}


def smooth(n, seed, res=32):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:res, 0:res] / (res - 1)
    out = [np.stack([a * x, b * y, c * (1 - x)], -1) * 0.6 + 0.2 for a, b, c in rng.random((n, 3))]
    return (np.stack(out) * 255).astype(np.uint8)


def noise(n, seed, res=32):
    return np.random.default_rng(seed).integers(0, 256, (n, res, res, 3), dtype=np.uint8)


@pytest.mark.parametrize("net,dim", [("alex", 64 + 192 + 384 + 256 + 256), ("vgg", 64 + 128 + 256 + 512 + 512)])
def test_feature_shape_and_batch_independence(net, dim):
    images = smooth(5, 0)
    z = feat.backbone_features(images, net, batch=2)
    assert z.shape == (5, dim) and z.dtype == torch.float32
    torch.testing.assert_close(z, feat.backbone_features(images, net, batch=5), rtol=1e-4, atol=1e-5)


def test_knn_with_k1_scores_a_training_image_zero_and_noise_higher():
    train = smooth(20, 0)
    det = feat.FeatureKNN(CFG, "alex").fit(train, progress=False)
    assert det.method == "KNN (AlexNet features)"
    np.testing.assert_allclose(det.score(train[:4]), 0.0, atol=1e-3)
    assert det.score(noise(8, 1)).min() > det.score(smooth(8, 5)).max()


def test_mahalanobis_direction_and_shrinkage_when_images_are_fewer_than_dimensions():
    train = smooth(30, 0)  # 30 images, 1,152 dimensions: the sample covariance is singular
    cfg = {**CFG, "features": {**CFG["features"], "shrinkage": "ledoit-wolf"}}
    det = feat.FeatureMahalanobis(cfg, "alex").fit(train, progress=False)
    s_id, s_noise = det.score(smooth(8, 5)), det.score(noise(8, 1))
    assert np.isfinite(s_id).all() and s_noise.min() > s_id.max()


def test_mahalanobis_ranks_like_pytorch_ood_with_one_class_and_no_shrinkage():
    from pytorch_ood.detector import Mahalanobis

    rng = np.random.default_rng(0)
    z_fit = torch.from_numpy(rng.normal(size=(200, 6)) * [1, 2, 3, 1, 1, 0.5]).float()
    z = torch.from_numpy(rng.normal(size=(50, 6)) * 2).float()
    ours = feat.FeatureMahalanobis(CFG, "alex")
    ours._fit_features(z_fit)
    theirs = Mahalanobis(None).fit_features(z_fit, torch.zeros(200, dtype=torch.long)).predict_features(z)
    mine = ours._score_features(z).numpy()
    # pytorch-ood: 0.5 x d^2 under the unnormalised scatter matrix = d^2 under the covariance / (2 N)
    np.testing.assert_allclose(theirs.double().numpy(), mine / (2 * 200), rtol=1e-3)


def test_n_fit_subsamples_and_k_larger_than_the_fit_set_is_refused():
    cfg = {**CFG, "features": {**CFG["features"], "n_fit": 6}}
    det = feat.FeatureKNN(cfg, "alex").fit(smooth(20, 0), progress=False)
    assert det.n_fitted == 6
    with pytest.raises(ValueError, match="lower baselines.features.k"):
        feat.FeatureKNN({**CFG, "features": {**CFG["features"], "k": 50}}, "alex").fit(smooth(10, 0), progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        feat.FeatureKNN(CFG, "vgg").score(smooth(2, 0))


def test_knn_and_mahalanobis_of_one_backbone_share_one_feature_pass(monkeypatch):
    calls = []
    real = feat._backbone_features
    monkeypatch.setattr(feat, "_backbone_features", lambda images, *a: calls.append(len(images)) or real(images, *a))
    monkeypatch.setattr(feat, "_MEMO", type(feat._MEMO)())
    train, test = smooth(12, 0), noise(6, 1)
    knn = feat.FeatureKNN(CFG, "alex").fit(train, progress=False)
    maha = feat.FeatureMahalanobis(CFG, "alex").fit(train, progress=False)
    s_knn, s_maha = knn.score(test), maha.score(test)
    assert calls == [12, 6]                                    # fit images once, test images once, for both
    monkeypatch.setattr(feat, "_MEMO", type(feat._MEMO)())   # the same numbers computed afresh
    np.testing.assert_array_equal(s_knn, knn.score(test))
    np.testing.assert_allclose(s_maha, maha.score(test), rtol=1e-12)
    d = real(test, "alex", "cpu", 8, False).double().numpy() - maha.mean
    np.testing.assert_allclose(s_maha, np.einsum("ij,jk,ik->i", d, maha.precision, d), rtol=1e-9)
