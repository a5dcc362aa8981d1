"""Unit tests for transformer_challenges.vision (tiny ViT on scikit-learn's digits)."""
import pytest
import torch

from transformer_challenges import vision
from transformer_challenges.model import Block
from transformer_challenges.positional import sinusoidal_2d


def test_load_digits_shapes_range_and_split():
    x_tr, y_tr, x_te, y_te = vision.load_digits(seed=0, test_fraction=0.25)
    # scikit-learn ships 1,797 8x8 digit images with pixel values 0..16.
    assert x_tr.shape[0] + x_te.shape[0] == 1797
    assert x_te.shape[0] == round(1797 * 0.25)
    assert x_tr.shape[1:] == (1, 8, 8) and x_tr.dtype == torch.float32
    assert float(x_tr.min()) == 0.0 and float(x_tr.max()) == 1.0
    assert set(y_tr.tolist()) == set(range(10))
    again = vision.load_digits(seed=0)
    assert torch.equal(again[0], x_tr) and torch.equal(again[3], y_te)
    other = vision.load_digits(seed=1)
    assert not torch.equal(other[1], y_tr)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_load_digits_bad_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        vision.load_digits(test_fraction=fraction)


def test_patch_embedding_matches_manual_patches():
    torch.manual_seed(0)
    pe = vision.PatchEmbedding(image_size=8, patch_size=2, in_channels=1, d_model=16)
    assert pe.n_patches == 16 and pe.grid == 4
    img = torch.randn(3, 1, 8, 8)
    out = pe(img)
    assert out.shape == (3, 16, 16)
    # Patch (r, c) in row-major order = linear map of the flattened 2x2 pixel block.
    w = pe.proj.weight.reshape(16, -1)
    for r, c in [(0, 0), (1, 2), (3, 3)]:
        block = img[:, 0, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(3, -1)
        torch.testing.assert_close(out[:, 4 * r + c], block @ w.T + pe.proj.bias)


def test_patch_embedding_errors():
    with pytest.raises(ValueError, match="not divisible"):
        vision.PatchEmbedding(8, 3, 1, 16)
    with pytest.raises(ValueError, match="patch_size"):
        vision.PatchEmbedding(8, 0, 1, 16)
    pe = vision.PatchEmbedding(8, 2, 1, 16)
    with pytest.raises(ValueError, match="expected images"):
        pe(torch.zeros(2, 1, 6, 6))


@pytest.mark.parametrize("position", ["learned", "sinusoidal2d", "none"])
def test_tinyvit_forward_and_structure(position):
    torch.manual_seed(0)
    m = vision.TinyViT(position=position)
    assert m(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    assert all(isinstance(b, Block) and not b.attn.causal for b in m.blocks)
    assert isinstance(m.cls_token, torch.nn.Parameter)
    if position == "learned":
        assert isinstance(m.pos_emb, torch.nn.Parameter) and m.pos_emb.shape == (16, 64)
    else:
        assert not hasattr(m, "pos_emb")
    if position == "sinusoidal2d":
        torch.testing.assert_close(m.pos_table, sinusoidal_2d(4, 4, 64))


def test_tinyvit_without_position_is_permutation_invariant():
    # With no position information, shuffling patches cannot change the [CLS] output;
    # with learned positions it does.
    torch.manual_seed(0)
    img = torch.rand(2, 1, 8, 8)
    perm = torch.randperm(16)

    def shuffle(images):
        patches = images.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 1, 16, 2, 2)[:, :, perm]
        return patches.reshape(2, 1, 4, 4, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 1, 8, 8)

    for position, invariant in [("none", True), ("learned", False)]:
        m = vision.TinyViT(position=position).eval()
        if position == "learned":
            torch.nn.init.normal_(m.pos_emb, std=1.0)
        same = torch.allclose(m(img), m(shuffle(img)), atol=1e-5)
        assert same is invariant


def test_tinyvit_errors():
    with pytest.raises(ValueError, match="position"):
        vision.TinyViT(position="rope")
    with pytest.raises(ValueError, match="not divisible"):
        vision.TinyViT(image_size=8, patch_size=3)
    with pytest.raises(ValueError, match="n_heads"):
        vision.TinyViT(d_model=64, n_heads=5)


def test_train_classifier_learns_and_accuracy():
    x_tr, y_tr, x_te, y_te = vision.load_digits(seed=0)
    torch.manual_seed(0)
    m = vision.TinyViT(d_model=32, n_heads=2, n_layers=1)
    before = vision.accuracy(m, x_te, y_te)
    losses = vision.train_classifier(m, x_tr, y_tr, steps=80, batch_size=64, lr=1e-2, seed=0)
    assert len(losses) == 80
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    after = vision.accuracy(m, x_te, y_te)
    assert after > before + 0.3 and 0.0 <= after <= 1.0


def test_train_classifier_and_accuracy_errors():
    m = vision.TinyViT(d_model=16, n_heads=2, n_layers=1)
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="steps"):
        vision.train_classifier(m, x, y, steps=0, batch_size=2)
    with pytest.raises(ValueError, match="lr"):
        vision.train_classifier(m, x, y, steps=1, batch_size=2, lr=0)
    with pytest.raises(ValueError, match="same"):
        vision.train_classifier(m, x, y[:3], steps=1, batch_size=2)
    with pytest.raises(ValueError, match="same"):
        vision.accuracy(m, x, y[:2])


def _reference_loop(model, x, y, steps, batch_size, lr, seed, replacement):
    """The training loop written out by hand with torch.optim.AdamW (the pre-refactor code)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        if replacement:
            idx = torch.randint(0, x.shape[0], (batch_size,), generator=gen)
        else:
            idx = torch.randperm(x.shape[0], generator=gen)[:batch_size]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("replacement", [True, False])
def test_minibatch_train_matches_a_hand_written_adamw_loop(replacement):
    x = torch.randn(40, 1, 8, 8)
    y = torch.randint(0, 10, (40,))
    torch.manual_seed(0)
    a = vision.TinyViT(d_model=16, n_heads=2, n_layers=1)
    b = vision.TinyViT(d_model=16, n_heads=2, n_layers=1)
    b.load_state_dict(a.state_dict())
    got = vision.minibatch_train(a, lambda idx: torch.nn.functional.cross_entropy(a(x[idx]), y[idx]),
                                 40, steps=5, batch_size=8, lr=1e-2, seed=3, replacement=replacement)
    want = _reference_loop(b, x, y, steps=5, batch_size=8, lr=1e-2, seed=3, replacement=replacement)
    assert got == want
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    if replacement:   # train_classifier is this loop, with replacement and cross-entropy
        c = vision.TinyViT(d_model=16, n_heads=2, n_layers=1)
        c.load_state_dict(b.state_dict())
        d = vision.TinyViT(d_model=16, n_heads=2, n_layers=1)
        d.load_state_dict(b.state_dict())
        assert (vision.train_classifier(c, x, y, steps=3, batch_size=8, lr=1e-2, seed=4)
                == _reference_loop(d, x, y, steps=3, batch_size=8, lr=1e-2, seed=4, replacement=True))


def test_minibatch_train_errors():
    m = vision.TinyViT(d_model=16, n_heads=2, n_layers=1)
    with pytest.raises(ValueError, match="n_examples"):
        vision.minibatch_train(m, lambda idx: idx.sum(), 0, steps=1, batch_size=1)
    with pytest.raises(ValueError, match="lr"):
        vision.minibatch_train(m, lambda idx: idx.sum(), 4, steps=1, batch_size=1, lr=-1.0)
    with pytest.raises(ValueError, match="batch_loss"):
        vision.minibatch_train(m, None, 4, steps=1, batch_size=1)
