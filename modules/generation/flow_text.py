"""Prompt text to the conditioning Flux and SD 3/3.5 take (`prompt_embeds`, `pooled_prompt_embeds`).

The CLIP encoders get A1111's syntax: weights (emphasis), 75-token chunks and BREAK, through
modules.generation.text_encoding's tokenizing; the T5 encoder gets the plain text, since T5
was never trained on weights: the words with the weight brackets removed, BREAK dropped.
For a plain prompt under 75 tokens the result equals diffusers' `encode_prompt`.

- Flux: `prompt_embeds` are T5's; the pooled vector is CLIP-L's pooled output of the first chunk.
- SD 3: CLIP-L's and CLIP-G's penultimate layers side by side (chunk by chunk), zero-padded to
  T5's width and followed by T5's tokens; the pooled vector is both CLIPs' projections side by
  side. Without a T5 encoder, T5's part is zeros, as diffusers does.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from modules.generation.prompt_parser import parse_prompt_attention
from modules.generation.text_encoding import CHUNK, EncodingOptions, Tokenizing, _emphasise, _inserted

FLUX_T5_TOKENS = 512  # diffusers' FluxPipeline default max_sequence_length
SD3_T5_TOKENS = 256  # StableDiffusion3Pipeline's


@dataclass(frozen=True)
class FlowConditioning:
    embeds: torch.Tensor  # [1, tokens, D]
    pooled: torch.Tensor  # [1, P]
    clip_chunks: int = 1  # SD 3: how many 77-token CLIP chunks lead the embeds (0 for Flux)


def plain_text(prompt: str) -> str:
    """The prompt without A1111's weight syntax: what T5 reads."""
    parts = parse_prompt_attention(prompt)
    text = "".join(" " if (part == "BREAK" and weight == -1) else part for part, weight in parts)
    return " ".join(text.split())


class FlowPromptEncoder:
    """Encodes prompts for one Flux or SD 3 model and keeps the last results (per prompt,
    options and LoRA state), as PromptEncoder does for the SD families."""

    def __init__(self, model, family: str, cache_size: int = 32):
        self.model = model
        self.family = family
        self.t5_tokens = FLUX_T5_TOKENS if family == "flux" else SD3_T5_TOKENS
        self._clip = [Tokenizing(model.tokenizer)]
        if family == "sd3":
            self._clip.append(Tokenizing(model.tokenizer_2))
        self._cache: OrderedDict[tuple, FlowConditioning] = OrderedDict()
        self._cache_size = cache_size

    @property
    def t5(self) -> tuple[Any, Any]:
        m = self.model
        if self.family == "flux":
            return m.text_encoder_2, m.tokenizer_2
        return m.text_encoder_3, m.tokenizer_3

    def encode(self, prompt: str, options: EncodingOptions, state: Any = None) -> FlowConditioning:
        key = (prompt, options, state)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        with torch.inference_mode():
            cond = self._flux(prompt, options) if self.family == "flux" else self._sd3(prompt, options)
        self._cache[key] = cond
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return cond

    def pair(self, prompt: str, negative: str | None, options: EncodingOptions, state: Any = None
             ) -> tuple[FlowConditioning, FlowConditioning | None]:
        """The prompt's and the negative prompt's conditioning, the same length (SD 3's CLIP part
        is padded with the empty prompt's chunk, as A1111 pads cond and uncond)."""
        cond = self.encode(prompt, options, state)
        if negative is None:
            return cond, None
        uncond = self.encode(negative, options, state)
        if cond.clip_chunks != uncond.clip_chunks:
            empty = self.encode("", options, state)
            cond, uncond = (self._padded(c, max(cond.clip_chunks, uncond.clip_chunks), empty) for c in (cond, uncond))
        return cond, uncond

    def _padded(self, cond: FlowConditioning, chunks: int, empty: FlowConditioning) -> FlowConditioning:
        missing = chunks - cond.clip_chunks
        if missing <= 0:
            return cond
        width = CHUNK + 2
        clip, t5 = cond.embeds[:, : cond.clip_chunks * width], cond.embeds[:, cond.clip_chunks * width :]
        filler = empty.embeds[:, :width]
        return FlowConditioning(torch.cat([clip, *([filler] * missing), t5], dim=1), cond.pooled, chunks)

    # -- the encoders ----------------------------------------------------------------------

    def _clip_chunks(self, index: int, encoder, prompt: str, options: EncodingOptions, hidden: bool):
        """(per-chunk penultimate hidden states with emphasis, or None; the first chunk's pooled output)."""
        tokenizing = self._clip[index]
        parts, pooled = [], None
        for number, chunk in enumerate(tokenizing(prompt, options, encoder.config.hidden_size).chunks):
            ids = torch.tensor([tokenizing.chunk_ids(chunk)], device=self.model.device)
            with _inserted(encoder, chunk):
                out = encoder(ids, output_hidden_states=hidden)
            if number == 0:
                pooled = out[0] if hidden else out.pooler_output
            if not hidden:
                break  # Flux reads CLIP's pooled vector of the first chunk only
            parts.append(_emphasise(out.hidden_states[-2], chunk, options.emphasis))
        return parts, pooled

    def _t5(self, prompt: str, width: int) -> torch.Tensor:
        encoder, tokenizer = self.t5
        m = self.model
        if encoder is None:
            return torch.zeros((1, self.t5_tokens, width), device=m.device, dtype=m.dtype)
        ids = tokenizer(plain_text(prompt), padding="max_length", max_length=self.t5_tokens, truncation=True,
                        add_special_tokens=True, return_tensors="pt").input_ids
        return encoder(ids.to(m.device))[0]

    def _flux(self, prompt: str, options: EncodingOptions) -> FlowConditioning:
        m = self.model
        _, pooled = self._clip_chunks(0, m.text_encoder, prompt, options, hidden=False)
        embeds = self._t5(prompt, m.unet.config.joint_attention_dim)
        return FlowConditioning(embeds.to(m.dtype), pooled.to(m.dtype), 0)

    def _sd3(self, prompt: str, options: EncodingOptions) -> FlowConditioning:
        m = self.model
        l_parts, l_pooled = self._clip_chunks(0, m.text_encoder, prompt, options, hidden=True)
        g_parts, g_pooled = self._clip_chunks(1, m.text_encoder_2, prompt, options, hidden=True)
        count = max(len(l_parts), len(g_parts))
        for parts in (l_parts, g_parts):
            parts += [parts[-1].new_zeros(parts[-1].shape)] * (count - len(parts))
        clip = torch.cat([torch.cat(l_parts, dim=1), torch.cat(g_parts, dim=1)], dim=-1)
        t5 = self._t5(prompt, m.unet.config.joint_attention_dim)
        clip = F.pad(clip.to(t5.dtype), (0, t5.shape[-1] - clip.shape[-1]))
        embeds = torch.cat([clip, t5], dim=-2)
        pooled = torch.cat([l_pooled, g_pooled], dim=-1)
        return FlowConditioning(embeds.to(m.dtype), pooled.to(m.dtype), count)
