"""Token merging (ToMe for Stable Diffusion; A1111's `token_merging_ratio`): fewer tokens in the
UNet's self-attention at the highest resolution, where attention costs the most, for speed at
a small change in the picture.

How (Bolya & Hoffman, "Token Merging for Fast Stable Diffusion", 2023): the self-attention
input's tokens are split into destinations (one per `sx` x `sy` window of the latent) and
sources (the rest); each source is matched to its most similar destination (cosine
similarity) and the `r = int(N * ratio)` best-matched sources are averaged into their
destinations. Attention runs on the remaining `N - r` tokens, then each merged source takes
its destination's output again ("unmerge"), so the block's shape is unchanged.

Why our own instead of the `tomesd` package: tomesd 0.1.3 replaces the class of every
`BasicTransformerBlock` with a copy of an old diffusers forward (which drops diffusers'
newer branches), and draws its destinations from a generator forked from the global RNG that
keeps running across jobs, so the same seed gives a different picture each time. Here a
diffusers attention processor wraps whichever processor each block's `attn1` already has
(SDPA, xformers) and sees exactly the tokens tomesd merges; a forward pre-hook on the UNet
records the latent's size (any aspect ratio, odd sizes included) and the step's timestep.
Nothing is patched and nothing is global: `apply` returns a handle whose `remove` puts the
original processors back.

Destinations are each window's top-left token by default, as A1111 runs tomesd
(`use_rand=False`); `random_destinations=True` picks one at random per window, as the paper
recommends, from a generator seeded with the step's timestep (so the same job gives the same
picture; on CUDA reading the timestep costs one synchronisation per UNet call). Tokens outside
the last whole window of an odd-sized latent are kept as destinations. Cross-attention
(`attn2`) is left alone.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

MAX_RATIO = 0.9  # A1111's slider ends here; the number merged is capped by the sources anyway


@dataclass(frozen=True)
class Split:
    """Which token positions (of an `h` x `w` grid, row-major) are destinations and which sources."""

    dst: torch.Tensor  # (D,) positions, ascending
    src: torch.Tensor  # (S,) positions, ascending


def split_tokens(h: int, w: int, sx: int, sy: int, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> Split:
    """One destination per whole `sx` x `sy` window: the top-left token, or one drawn with
    `generator` (a CPU generator). Tokens in no whole window stay destinations."""
    rows, cols = h // sy, w // sx
    is_src = torch.zeros(h, w, dtype=torch.bool)
    if rows and cols:
        is_src[: rows * sy, : cols * sx] = True
        if generator is None:
            pick = torch.zeros(rows, cols, dtype=torch.long)
        else:
            pick = torch.randint(sx * sy, (rows, cols), generator=generator)
        y = torch.arange(rows)[:, None] * sy + pick // sx
        x = torch.arange(cols)[None, :] * sx + pick % sx
        is_src[y, x] = False
    flat = is_src.flatten()
    return Split(dst=(~flat).nonzero().flatten().to(device), src=flat.nonzero().flatten().to(device))


@dataclass(frozen=True)
class Merge:
    """One batch's merge: per sample, which sources are merged into which destination."""

    split: Split
    kept: torch.Tensor  # (B, S - r) indices into the sources that stay tokens of their own
    merged: torch.Tensor  # (B, r) indices into the sources that are averaged away
    target: torch.Tensor  # (B, r) index into the destinations each merged source joins

    @classmethod
    def match(cls, x: torch.Tensor, split: Split, r: int) -> "Merge":
        """Bipartite soft matching on `x` (B, N, C): the `r` sources most similar (cosine) to
        some destination are merged into it."""
        metric = F.normalize(x, dim=-1)
        scores = metric.index_select(1, split.src) @ metric.index_select(1, split.dst).transpose(1, 2)
        best, target = scores.max(dim=-1)  # (B, S): each source's nearest destination
        order = best.argsort(dim=-1, descending=True, stable=True)
        merged = order[:, :r]
        return cls(split, kept=order[:, r:], merged=merged, target=target.gather(1, merged))

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N - r, C): kept sources, then destinations averaged with what joined them."""
        src = x.index_select(1, self.split.src)
        dst = x.index_select(1, self.split.dst)
        moving = src.gather(1, _along(self.merged, x))
        dst = dst.scatter_reduce(1, _along(self.target, x), moving, reduce="mean", include_self=True)
        return torch.cat([src.gather(1, _along(self.kept, x)), dst], dim=1)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, N - r, C) -> (B, N, C): every token gets its own output back, a merged source its
        destination's."""
        k = self.kept.shape[1]
        unmerged, dst = y[:, :k], y[:, k:]
        src = y.new_empty(y.shape[0], self.split.src.shape[0], y.shape[2])
        src.scatter_(1, _along(self.kept, y), unmerged)
        src.scatter_(1, _along(self.merged, y), dst.gather(1, _along(self.target, y)))
        out = y.new_empty(y.shape[0], self.split.src.shape[0] + self.split.dst.shape[0], y.shape[2])
        out.index_copy_(1, self.split.src, src)
        out.index_copy_(1, self.split.dst, dst)
        return out


def _along(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return index.unsqueeze(-1).expand(-1, -1, like.shape[-1])


class _Plan:
    """What the processors of one `apply` share: the settings, and, set by the UNet's pre-hook
    at each call, the latent's size and the splits made for it."""

    def __init__(self, ratio: float, max_downsample: int, sx: int, sy: int, random_destinations: bool):
        self.ratio, self.max_downsample, self.sx, self.sy = ratio, max_downsample, sx, sy
        self.random_destinations = random_destinations
        self.size: tuple[int, int] | None = None
        self.seed = 0
        self.splits: dict[tuple, Split] = {}

    def before_unet(self, module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        size = (int(sample.shape[-2]), int(sample.shape[-1]))
        if size != self.size or self.random_destinations:
            # Fixed destinations are the same at every step of a size: the splits (copied to the
            # GPU once, which waits for it) are kept until the size changes.
            self.splits = {}
        self.size = size
        if self.random_destinations:
            t = args[1] if len(args) > 1 else kwargs.get("timestep", 0)
            self.seed = round(float(torch.as_tensor(t).flatten()[0]) * 1000) & 0x7FFF_FFFF

    def grid(self, tokens: int) -> tuple[int, int] | None:
        """The (h, w) of the UNet level with `tokens` tokens, if it is one merged at."""
        if self.size is None:
            return None
        h, w = self.size
        for _ in range(int(math.log2(self.max_downsample)) + 1):
            if h * w == tokens:
                return h, w
            h, w = -(-h // 2), -(-w // 2)  # the UNet's stride-2 downsampling rounds up
        return None

    def merge_for(self, x: torch.Tensor) -> Merge | None:
        grid = self.grid(x.shape[1])
        r = int(x.shape[1] * self.ratio)
        if grid is None or r <= 0:
            return None
        key = (grid, x.device)
        split = self.splits.get(key)
        if split is None:
            generator = torch.Generator().manual_seed(self.seed) if self.random_destinations else None
            split = self.splits[key] = split_tokens(*grid, self.sx, self.sy, device=x.device, generator=generator)
        r = min(r, split.src.shape[0])
        return Merge.match(x, split, r) if r > 0 else None


class TokenMergingProcessor:
    """Wraps an `attn1` processor: merges the tokens, lets `inner` attend over fewer, unmerges.
    Calls it passes through unchanged: cross-attention, masks, levels not merged at."""

    def __init__(self, inner, plan: _Plan):
        self.inner = inner
        self.plan = plan

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        if temb is not None:
            kwargs["temb"] = temb
        merge = None
        if encoder_hidden_states is None and attention_mask is None and hidden_states.ndim == 3:
            merge = self.plan.merge_for(hidden_states)
        if merge is None:
            return self.inner(attn, hidden_states, *args, encoder_hidden_states=encoder_hidden_states,
                              attention_mask=attention_mask, **kwargs)
        out = self.inner(attn, merge.merge(hidden_states), *args, attention_mask=None, **kwargs)
        return merge.unmerge(out)


class TokenMerging:
    """The handle `apply` returns: `remove()` puts back the processors it replaced (those still
    in place; one someone else set since is left) and removes the UNet's pre-hook."""

    def __init__(self, wrapped: list[tuple[object, object, TokenMergingProcessor]], hook):
        self._wrapped = wrapped
        self._hook = hook

    @property
    def modules(self) -> int:
        """How many self-attention modules merge tokens."""
        return len(self._wrapped)

    def remove(self) -> None:
        for attn, original, wrapper in self._wrapped:
            if attn.processor is wrapper:
                attn.set_processor(original)
        self._wrapped = []
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def apply(unet, ratio: float, *, max_downsample: int = 1, sx: int = 2, sy: int = 2,
          random_destinations: bool = False) -> TokenMerging:
    """Merge `ratio` of the tokens (0..0.9) in the self-attention of `unet`'s transformer blocks
    at the levels downsampled at most `max_downsample` times (1: the latent's own resolution,
    as A1111; SDXL has no transformer there, so it needs 2 to gain anything)."""
    from diffusers.models.attention import BasicTransformerBlock

    if not 0 <= ratio <= MAX_RATIO:
        raise ValueError(f"Token merging ratio must be between 0 and {MAX_RATIO}, not {ratio}.")
    if max_downsample < 1 or max_downsample & (max_downsample - 1) or sx < 1 or sy < 1:
        raise ValueError("Token merging needs max_downsample a power of two and sx, sy at least 1.")
    plan = _Plan(ratio, max_downsample, sx, sy, random_destinations)
    wrapped = []
    for block in unet.modules():
        if not isinstance(block, BasicTransformerBlock) or block.only_cross_attention:
            continue
        attn = block.attn1
        if isinstance(attn.processor, TokenMergingProcessor):
            for done, original, _ in wrapped:
                done.set_processor(original)
            raise ValueError("Token merging is already applied to this UNet; remove it first.")
        wrapper = TokenMergingProcessor(attn.processor, plan)
        wrapped.append((attn, attn.processor, wrapper))
        attn.set_processor(wrapper)
    hook = unet.register_forward_pre_hook(plan.before_unet, with_kwargs=True)
    return TokenMerging(wrapped, hook)


@contextmanager
def merging(unet, ratio: float, **options) -> Iterator[TokenMerging | None]:
    """Token merging for the `with` block; for `ratio <= 0` nothing is touched (the plain path
    stays bit-identical) and None is given."""
    if ratio <= 0:
        yield None
        return
    handle = apply(unet, ratio, **options)
    try:
        yield handle
    finally:
        handle.remove()
