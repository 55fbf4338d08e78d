"""Token merging (A1111's token_merging_ratio): off is the plain picture to the bit, on it
attends over fewer tokens and keeps the picture, and removing it leaves the UNet as it was."""

import numpy as np
import pytest
import torch

from modules.generation import token_merging
from modules.generation.params import GenerationParams
from modules.generation.runner import Runner


def generate(runner, **values):
    params = GenerationParams.create(**{"prompt": "a red circle", "width": 64, "height": 64, "steps": 4, "seed": 5, **values})
    return [np.asarray(im, dtype=np.int16) for batch in runner.txt2img(params, params.seed) for im in batch.images]


def self_attention(unet):
    from diffusers.models.attention import BasicTransformerBlock

    return [m.attn1 for m in unet.modules() if isinstance(m, BasicTransformerBlock)]


def processors(unet):
    return {name: id(p) for name, p in unet.attn_processors.items()}


class Spy:
    """An attention processor that records how many tokens each self-attention call sees."""

    def __init__(self, inner):
        self.inner = inner
        self.tokens: list[int] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        if encoder_hidden_states is None:
            self.tokens.append(hidden_states.shape[1])
        return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs)


@pytest.fixture(scope="module")
def runner(demo_model):
    return Runner(demo_model)


@pytest.mark.parametrize("h, w, dtype", [(8, 8, torch.float32), (9, 5, torch.float32), (7, 12, torch.float16)])
def test_merging_tokens_that_are_equal_loses_nothing(h, w, dtype):
    """Each 2x2 window's tokens equal: merged, attended (identity here) and unmerged, every
    token is itself again (a wrong destination would be another window's), whatever the grid (odd sizes included) and the float type."""
    window = torch.randn(2, -(-h // 2), -(-w // 2), 16)
    x = window.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w].reshape(2, h * w, 16).to(dtype)
    split = token_merging.split_tokens(h, w, 2, 2, generator=torch.Generator().manual_seed(3))
    r = int(h * w * 0.5)
    merge = token_merging.Merge.match(x, split, r)
    fewer = merge.merge(x)
    assert fewer.shape == (2, h * w - r, 16)
    torch.testing.assert_close(merge.unmerge(fewer), x)  # up to the mean's rounding


def test_off_removed_and_zero_are_the_plain_picture_to_the_bit(runner, demo_model):
    unet = demo_model.unet
    before, hooks = processors(unet), len(unet._forward_pre_hooks)
    plain = generate(runner, batch_size=2)
    with token_merging.merging(unet, 0) as handle:
        assert handle is None and processors(unet) == before
        assert all(np.array_equal(a, b) for a, b in zip(plain, generate(runner, batch_size=2)))
    handle = token_merging.apply(unet, 0.5)
    merged = generate(runner, batch_size=2)
    cross = [k for k in before if "attn2" in k]
    assert cross and all(processors(unet)[k] == before[k] for k in cross)  # cross-attention untouched
    handle.remove()
    assert processors(unet) == before and len(unet._forward_pre_hooks) == hooks
    assert all(np.array_equal(a, b) for a, b in zip(plain, generate(runner, batch_size=2)))
    assert not any(np.array_equal(a, b) for a, b in zip(plain, merged))


def test_half_merged_keeps_the_picture(runner, demo_model):
    """At 128 px (a 16x16 latent; at 64 px the 8x8 latent has too few tokens to merge half
    without losing the picture) merging half the tokens changes the image but keeps it: measured
    mean 5.3/255 and luminance correlation 0.98, where another seed's image is 32/255 and 0.27."""
    size = {"prompt": "a yellow triangle", "width": 128, "height": 128, "steps": 6}
    plain = generate(runner, **size)[0].astype(np.float64)
    with token_merging.merging(demo_model.unet, 0.5):
        merged = generate(runner, **size)[0].astype(np.float64)
    assert not np.array_equal(plain, merged)
    assert np.abs(plain - merged).mean() < 12
    assert np.corrcoef(plain.mean(-1).ravel(), merged.mean(-1).ravel())[0, 1] > 0.9


@pytest.mark.parametrize("width, height", [(96, 64), (72, 72)])
def test_attention_runs_on_fewer_tokens_at_any_size(runner, demo_model, width, height):
    """Batch 2 with CFG at a non-square size, odd latent sides included: the highest level's
    self-attention sees N - int(N/2) tokens, the lower level all of its own, and the picture
    has the size asked for."""
    attns = self_attention(demo_model.unet)
    originals = [a.processor for a in attns]
    spies = [Spy(p) for p in originals]
    try:
        for a, s in zip(attns, spies):
            a.set_processor(s)
        with token_merging.merging(demo_model.unet, 0.5, random_destinations=True):
            images = generate(runner, width=width, height=height, batch_size=2, cfg_scale=7)
    finally:
        for a, p in zip(attns, originals):
            a.set_processor(p)
    n = (height // 8) * (width // 8)
    seen = {t for s in spies for t in s.tokens}
    assert n - int(n * 0.5) in seen and n not in seen
    assert all(im.shape == (height, width, 3) for im in images) and len(images) == 2


@pytest.mark.parametrize("random_destinations", [False, True])
def test_the_same_seed_gives_the_same_picture(runner, demo_model, random_destinations):
    with token_merging.merging(demo_model.unet, 0.5, random_destinations=random_destinations):
        a = generate(runner, seed=11)
        b = generate(runner, seed=11)
    assert np.array_equal(a[0], b[0])


def test_bad_settings_and_applying_twice_are_refused(demo_model):
    unet = demo_model.unet
    before, hooks = processors(unet), len(unet._forward_pre_hooks)
    with pytest.raises(ValueError):
        token_merging.apply(unet, 0.95)
    with token_merging.merging(unet, 0.3):
        with pytest.raises(ValueError):
            token_merging.apply(unet, 0.3)
    assert processors(unet) == before and len(unet._forward_pre_hooks) == hooks
