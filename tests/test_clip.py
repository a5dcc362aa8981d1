"""Tests for transformer_challenges.clip (the "beyond language" chapter's CLIP-style model)."""
import math

import pytest
import torch
import torch.nn.functional as F

from transformer_challenges import clip


def _reference_loss(img, txt, scale):
    """CLIP's pseudo-code (Radford et al. 2021, Fig. 3), written with explicit log-softmax."""
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = scale * img @ txt.T
    n = logits.shape[0]
    loss_i = -torch.log_softmax(logits, dim=1)[range(n), range(n)].mean()
    loss_t = -torch.log_softmax(logits, dim=0)[range(n), range(n)].mean()
    return (loss_i + loss_t) / 2


def test_clip_loss_matches_reference_and_is_symmetric():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(2, 9, 5, generator=g).unbind(0)
    loss = clip.clip_loss(img, txt, 3.0)
    torch.testing.assert_close(loss, _reference_loss(img, txt, 3.0))
    torch.testing.assert_close(clip.clip_loss(txt, img, 3.0), loss)        # swapping roles
    assert clip.clip_loss(img * 7.0, txt, 3.0).item() == pytest.approx(loss.item(), abs=1e-6)  # scale-free


def test_clip_loss_limits():
    n = 16
    same = torch.ones(n, 4)
    assert clip.clip_loss(same, same, 10.0).item() == pytest.approx(math.log(n), abs=1e-5)
    eye = torch.eye(n)
    assert clip.clip_loss(eye, eye, 100.0).item() < 1e-6
    groups = torch.eye(n // 4).repeat_interleave(4, dim=0)              # 4 pairs per meaning
    assert clip.clip_loss(groups, groups, 100.0).item() == pytest.approx(math.log(4), abs=1e-5)


def test_retrieval_accuracy_known_cases():
    emb = torch.eye(6)
    perfect = clip.retrieval_accuracy(emb, emb, ks=(1, 5))
    assert perfect == {"i2t@1": 1.0, "t2i@1": 1.0, "i2t@5": 1.0, "t2i@5": 1.0}
    # texts in reverse order: exact-pair top-1 fails, but with keys that follow the texts it succeeds
    rev = emb.flip(0)
    assert clip.retrieval_accuracy(emb, rev, ks=(1,))["i2t@1"] == 0.0
    keys = torch.arange(6)
    assert clip.retrieval_accuracy(emb, rev, keys, keys.flip(0), ks=(1,)) == {"i2t@1": 1.0, "t2i@1": 1.0}
    # image 0 resembles text 1 most, then text 0: wrong at k=1, right at k=2
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    r = clip.retrieval_accuracy(img, txt, ks=(1, 2))
    assert r["i2t@1"] == 0.0 and r["i2t@2"] == 1.0


def test_tokenizer_round_trip_and_padding():
    tok = clip.WordTokenizer.from_texts(["a bold seven", "7 written thin"])
    ids = tok.encode(["a bold seven", "7 written thin", "a purple seven"])
    assert ids.shape == (3, 3) and tok.decode(ids[0]) == "a bold seven"
    assert ids[2, 1].item() == tok.UNK
    short = tok.encode(["a"], max_len=4)
    assert short.tolist() == [[tok.stoi["a"], 0, 0, 0]]
    with pytest.raises(ValueError, match="list of texts"):
        tok.encode("a bold seven")


def test_captions_are_seeded_and_consistent():
    labels = torch.tensor([7, 3, 0])
    styles = torch.tensor([1, 0, 1])
    caps = clip.digit_captions(labels, styles, seed=0)
    assert caps == clip.digit_captions(labels, styles, seed=0)
    for cap, y, s in zip(caps, labels.tolist(), styles.tolist()):
        assert clip.STYLES[s] in cap and (clip.NUMBER_WORDS[y] in cap.split() or str(y) in cap.split())
    with pytest.raises(ValueError, match="0..9"):
        clip.digit_captions(torch.tensor([12]), torch.tensor([0]))
    with pytest.raises(ValueError, match="same shape"):
        clip.digit_captions(labels, styles[:2])
    with pytest.raises(ValueError, match="non-empty"):
        clip.digit_captions(labels, styles, templates=[])


def test_held_out_templates_use_known_words_in_unseen_sentences():
    labels = torch.arange(10).repeat(2)
    styles = torch.tensor([0] * 10 + [1] * 10)
    seen = {t.format(style=clip.STYLES[s], word=clip.NUMBER_WORDS[y], num=str(y))
            for t in clip.TEMPLATES for y, s in zip(labels.tolist(), styles.tolist())}
    held = clip.digit_captions(labels.repeat(20), styles.repeat(20), seed=0,
                               templates=clip.HELD_OUT_TEMPLATES)
    assert len(seen) == 100                       # 20 meanings x 5 wordings, all distinct
    assert not set(held) & seen                   # no held-out caption is a training caption
    assert {w for c in held for w in c.split()} <= {w for c in seen for w in c.split()}
    assert len(set(held)) == 20 * len(clip.HELD_OUT_TEMPLATES)


def test_stroke_style_splits_each_class_at_its_median():
    images = torch.zeros(4, 1, 2, 2)
    images[1] += 1.0                                    # more ink than image 0
    images[3] += 0.5
    labels = torch.tensor([0, 0, 1, 1])
    assert clip.stroke_style(images, labels).tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="expected images"):
        clip.stroke_style(images[:, 0], labels)


def test_model_shapes_and_a_few_training_steps_reduce_loss():
    torch.manual_seed(0)
    texts = [f"a {w}" for w in clip.NUMBER_WORDS]
    tok = clip.WordTokenizer.from_texts(texts)
    ids = tok.encode(texts)
    images = torch.rand(10, 1, 8, 8)
    m = clip.CLIPModel(clip.image_encoder(16, d_model=32, n_heads=2, n_layers=1),
                       clip.TextEncoder(tok.vocab_size, 16, d_model=32, n_heads=2, n_layers=1, max_len=4))
    assert m.encode_images(images).shape == (10, 16)
    torch.testing.assert_close(m.encode_texts(ids).norm(dim=-1), torch.ones(10))
    assert m.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    losses = clip.train_clip(m, images, ids, steps=30, batch_size=10, lr=3e-3)
    assert losses[-1] < losses[0] - 0.5


def test_mean_pool_excludes_padding():
    torch.manual_seed(0)
    enc = clip.TextEncoder(vocab_size=6, embed_dim=8, d_model=16, n_heads=2, n_layers=1, max_len=6).eval()
    ids = torch.tensor([[2, 3, 4]])
    padded = torch.tensor([[2, 3, 4, 0, 0]])
    # Attention still sees the padding tokens (there is no key mask); the pooling must not:
    # the output equals the mean over the 3 real positions only.
    x = enc.tok_emb(padded) + enc.pos_emb[:5]
    for block in enc.blocks:
        x = block(x)
    manual = enc.proj(enc.ln_f(x)[:, :3].mean(1))
    torch.testing.assert_close(enc(padded), manual)
    assert enc(ids).shape == (1, 8)


@pytest.mark.parametrize("call, match", [
    (lambda: clip.clip_loss(torch.ones(3, 2), torch.ones(4, 2)), "same shape"),
    (lambda: clip.clip_loss(torch.ones(3, 2), torch.ones(3, 2), 0.0), "logit_scale"),
    (lambda: clip.retrieval_accuracy(torch.ones(3, 2), torch.ones(3, 3)), "embeddings"),
    (lambda: clip.retrieval_accuracy(torch.eye(3), torch.eye(3), ks=(4,)), "k=4"),
    (lambda: clip.retrieval_accuracy(torch.eye(3), torch.eye(3), torch.arange(2), torch.arange(3)), "one key"),
    (lambda: clip.TextEncoder(0), "vocab_size"),
    (lambda: clip.TextEncoder(5, d_model=30, n_heads=4), "divisible"),
    (lambda: clip.image_encoder(0), "embed_dim"),
    (lambda: clip.image_encoder(8, n_classes=3), "n_classes"),
    (lambda: clip.CLIPModel(torch.nn.Identity(), torch.nn.Identity(), init_temperature=0.0), "init_temperature"),
    (lambda: clip.train_clip(None, torch.ones(1, 1, 8, 8), torch.ones(1, 2, dtype=torch.long), 1, 1), "at least 2"),
    (lambda: clip.train_clip(None, torch.ones(2, 1, 8, 8), torch.ones(2, 2, dtype=torch.long), 1, 1, lr=0), "lr"),
    (lambda: clip.train_clip(None, torch.ones(2, 1, 8, 8), torch.ones(2, 2, dtype=torch.long), 0, 1), "steps"),
])
def test_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_text_encoder_rejects_long_input():
    enc = clip.TextEncoder(vocab_size=6, max_len=3)
    with pytest.raises(ValueError, match="max_len"):
        enc(torch.ones(1, 4, dtype=torch.long))
