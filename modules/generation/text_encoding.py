"""Prompt text to UNet conditioning the way A1111 does it: weights, 75-token chunks, BREAK,
textual-inversion embeddings, emphasis modes and CLIP skip, for SD 1.x, SD 2.x and SDXL.

No library encodes A1111's syntax, so this module turns one prompt (already free of comments
and extra-network tags) into token chunks of 75 with a weight per token, runs each chunk
through the text encoder wrapped to 77 with BOS/EOS, applies the weights ("emphasis") and
concatenates the chunks. For a plain prompt under 75 tokens the result equals diffusers'
`encode_prompt` exactly. Schedules, alternation and AND are the runner's business: it asks
this module for one plain prompt at a time.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from modules.generation.params import EMPHASIS_MODES
from modules.generation.prompt_parser import parse_prompt_attention

if TYPE_CHECKING:
    from modules.models.embeddings import Embedding, EmbeddingLibrary

log = logging.getLogger(__name__)

CHUNK = 75  # tokens per chunk, before BOS and EOS


@dataclass(frozen=True)
class EncodingOptions:
    """A1111's settings that change how a prompt is encoded (part of the cache key)."""

    clip_skip: int = 1
    emphasis: str = "Original"
    comma_padding_backtrack: int = 20

    def __post_init__(self):
        if self.emphasis not in EMPHASIS_MODES:
            raise ValueError(f"Emphasis mode '{self.emphasis}' not found. Choose one of: {', '.join(EMPHASIS_MODES)}.")


@dataclass(frozen=True)
class Conditioning:
    embeds: torch.Tensor  # [1, 77 * chunks, D]
    pooled: torch.Tensor | None = None  # SDXL: [1, D2], from the first chunk
    zero: bool = False  # SDXL's zeroed empty negative prompt: pad with zeros, not an empty chunk


@dataclass
class Chunk:
    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    inserts: list[tuple[int, "Embedding"]] = field(default_factory=list)  # (position in tokens, embedding)


@dataclass(frozen=True)
class Tokenized:
    chunks: list[Chunk]
    token_count: int  # A1111's counter: full chunks count 75, the last its own length
    embeddings: tuple[str, ...]  # textual-inversion names found, in order of first use
    unfit: tuple[tuple[str, str], ...] = ()  # (embedding name, why it was read as plain words instead)


class Tokenizing:
    """Splits one prompt into weighted 75-token chunks for one tokenizer, A1111's way: BREAK
    closes a chunk, a full chunk moves the words after its last comma (within
    `comma_padding_backtrack` tokens) to the next one, and an embedding's vectors never
    straddle two chunks."""

    def __init__(self, tokenizer, embeddings: "EmbeddingLibrary | None" = None, widths: tuple[int, ...] = ()):
        """`widths`: every text encoder's width; an embedding is used only if it has vectors for
        all of them (SDXL needs both halves, or the two encoders' chunks would not line up)."""
        self.tokenizer = tokenizer
        self.embeddings = embeddings
        self.widths = widths
        self.comma = tokenizer.convert_tokens_to_ids(",</w>")
        self._names: dict[int, list[tuple[tuple[int, ...], str]]] | None = None
        self._names_for: tuple | None = None

    def _embedding_names(self) -> dict[int, list[tuple[tuple[int, ...], str]]]:
        """Token sequences of the embedding names, by first token, longest first."""
        names = tuple(self.embeddings.names) if self.embeddings is not None else ()
        if self._names is None or self._names_for != names:
            table: dict[int, list[tuple[tuple[int, ...], str]]] = {}
            for name in names:
                ids = tuple(self.tokenizer(name, add_special_tokens=False, verbose=False).input_ids)
                if ids:
                    table.setdefault(ids[0], []).append((ids, name))
            for entries in table.values():
                entries.sort(key=lambda e: -len(e[0]))
            self._names, self._names_for = table, names
        return self._names

    def _match(self, names: dict, tokens: list[int], at: int, width: int,
               unfit: list[tuple[str, str]]) -> tuple[int, "Embedding"] | None:
        for ids, name in names.get(tokens[at], ()):
            if tuple(tokens[at : at + len(ids)]) == ids:
                embedding = self.embeddings.get(name)
                reason = None
                if embedding is None:
                    reason = "its file could not be read"
                elif not all(embedding.for_width(w) is not None for w in (*self.widths, width)):
                    reason = "it was made for another kind of model"
                elif embedding.for_width(width).shape[0] > CHUNK:
                    reason = f"it has more than {CHUNK} vectors"
                if reason is None:
                    return len(ids), embedding
                if (name, reason) not in unfit:
                    unfit.append((name, reason))
        return None

    def __call__(self, prompt: str, options: EncodingOptions, width: int) -> Tokenized:
        if options.emphasis == "None":
            parsed = [[prompt, 1.0]]
        else:
            parsed = parse_prompt_attention(prompt)
        texts = [text for text, _ in parsed]
        # verbose=False: no "longer than 77 tokens" warning, chunking is the point
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False).input_ids if texts else []
        chunks: list[Chunk] = []
        chunk = Chunk()
        count = 0
        last_comma = -1
        used: list[str] = []
        unfit: list[tuple[str, str]] = []
        names = self._embedding_names() if self.embeddings is not None else {}  # once per prompt, not per token

        def close(last: bool = False) -> None:
            nonlocal chunk, count, last_comma
            count += len(chunk.tokens) if last else CHUNK
            chunks.append(chunk)
            chunk, last_comma = Chunk(), -1

        for tokens, (text, weight) in zip(ids, parsed):
            if text == "BREAK" and weight == -1:
                close()
                continue
            at = 0
            while at < len(tokens):
                token = tokens[at]
                if token == self.comma:
                    last_comma = len(chunk.tokens)
                elif len(chunk.tokens) == CHUNK and last_comma >= 0 and CHUNK - last_comma <= options.comma_padding_backtrack:
                    keep = last_comma + 1  # the words after the last comma start the next chunk
                    tail = Chunk(chunk.tokens[keep:], chunk.weights[keep:], [(p - keep, e) for p, e in chunk.inserts if p >= keep])
                    chunk.tokens, chunk.weights = chunk.tokens[:keep], chunk.weights[:keep]
                    chunk.inserts = [(p, e) for p, e in chunk.inserts if p < keep]
                    close()
                    chunk = tail
                if len(chunk.tokens) == CHUNK:
                    close()
                found = self._match(names, tokens, at, width, unfit) if names else None
                if found is None:
                    chunk.tokens.append(token)
                    chunk.weights.append(weight)
                    at += 1
                    continue
                length, embedding = found
                vectors = embedding.for_width(width).shape[0]
                if len(chunk.tokens) + vectors > CHUNK:
                    close()
                chunk.inserts.append((len(chunk.tokens), embedding))
                chunk.tokens += [0] * vectors
                chunk.weights += [weight] * vectors
                if embedding.name not in used:
                    used.append(embedding.name)
                at += length
        if chunk.tokens or not chunks:
            close(last=True)
        return Tokenized(chunks, count, tuple(used), tuple(unfit))

    def chunk_ids(self, chunk: Chunk) -> list[int]:
        """BOS, the chunk's tokens, EOS, then the tokenizer's pad token up to 77 (EOS for
        SD 1.x, "!" for OpenCLIP's tokenizers), as the models were trained."""
        pad = self.tokenizer.pad_token_id
        return [self.tokenizer.bos_token_id, *chunk.tokens, self.tokenizer.eos_token_id] + [pad] * (CHUNK - len(chunk.tokens))


class PromptEncoder:
    """Encodes prompts for one loaded model and remembers the last results.

    Re-encoding the same prompt is waste (at 64 px it is a third of a generation), so results
    are cached per prompt, options and `state` (what the caller knows changes the text
    encoders, e.g. the active LoRAs); the cache dies with the model.
    """

    def __init__(self, model, embeddings: "EmbeddingLibrary | None" = None, cache_size: int = 64):
        self.model = model
        self.embeddings = embeddings
        self._cache: OrderedDict[tuple, Conditioning] = OrderedDict()
        self._cache_size = cache_size
        # SDXL: CLIP-L then OpenCLIP bigG; the SDXL refiner has only bigG (text_encoder None).
        pairs = [(model.tokenizer, model.text_encoder)] if model.text_encoder is not None else []
        if model.is_sdxl:
            pairs.append((model.tokenizer_2, model.text_encoder_2))
        self._encoders = [te for _, te in pairs]
        widths = tuple(te.config.hidden_size for te in self._encoders)
        self._tokenizers = [Tokenizing(tokenizer, embeddings, widths) for tokenizer, _ in pairs]

    def options(self, clip_skip: int = 1, emphasis: str = "Original", comma_padding_backtrack: int = 20) -> EncodingOptions:
        """Options as this model uses them: Clip skip only counts on SD 1.x (see honours_clip_skip)."""
        return EncodingOptions(clip_skip if self.model.honours_clip_skip else 1, emphasis, comma_padding_backtrack)

    def tokenize(self, prompt: str, options: EncodingOptions | None = None) -> Tokenized:
        """The first encoder's chunks: what the token counter shows and which embeddings a prompt uses."""
        return self._tokenizers[0](prompt, options or EncodingOptions(), self._encoders[0].config.hidden_size)

    def encode(self, prompt: str, options: EncodingOptions | None = None, *, negative: bool = False, state: Any = None) -> Conditioning:
        options = options or self.options()
        key = (prompt, options, negative, state, _version(self.embeddings))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        with torch.inference_mode():
            cond = self._encode_sdxl(prompt, options, negative) if self.model.is_sdxl else self._encode_sd(prompt, options)
        self._cache[key] = cond
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return cond

    def empty_chunk(self, like: Conditioning, options: EncodingOptions, state: Any = None) -> torch.Tensor:
        """What a shorter conditioning is padded with: the empty prompt's one chunk, encoded
        with the same options (Clip skip), or zeros for a zeroed SDXL negative."""
        if like.zero:
            return torch.zeros_like(like.embeds[:, : CHUNK + 2])
        return self.encode("", options, state=state).embeds

    # -- the encoders ----------------------------------------------------------------------

    def _encode_sd(self, prompt: str, options: EncodingOptions) -> Conditioning:
        te = self.model.text_encoder
        tokenizing = self._tokenizers[0]
        parts = []
        for chunk in tokenizing(prompt, options, te.config.hidden_size).chunks:
            ids = torch.tensor([tokenizing.chunk_ids(chunk)], device=self.model.device)
            with _inserted(te, chunk):
                if options.clip_skip <= 1:
                    z = te(ids)[0]
                else:
                    z = te.final_layer_norm(te(ids, output_hidden_states=True).hidden_states[-options.clip_skip])
            parts.append(_emphasise(z, chunk, options.emphasis))
        return Conditioning(torch.cat(parts, dim=1).to(self.model.dtype))

    def _encode_sdxl(self, prompt: str, options: EncodingOptions, negative: bool) -> Conditioning:
        """SDXL: penultimate layers of both encoders side by side, chunk by chunk, and the
        second encoder's pooled output of the first chunk (the refiner: bigG's alone, as diffusers'
        img2img pipeline encodes for it). An empty negative prompt becomes zeros, as the SDXL
        base config asks (the refiner's does not)."""
        m = self.model
        if negative and not prompt and m.extra.get("force_zeros_for_empty_prompt", True):
            width = sum(te.config.hidden_size for te in self._encoders)
            embeds = torch.zeros((1, CHUNK + 2, width), dtype=m.dtype, device=m.device)
            pooled = torch.zeros((1, m.text_encoder_2.config.projection_dim), dtype=m.dtype, device=m.device)
            return Conditioning(embeds, pooled, zero=True)
        per_encoder, pooled = [], None
        for tokenizing, te in zip(self._tokenizers, self._encoders):
            chunks = tokenizing(prompt, options, te.config.hidden_size).chunks
            parts = []
            for index, chunk in enumerate(chunks):
                ids = torch.tensor([tokenizing.chunk_ids(chunk)], device=m.device)
                with _inserted(te, chunk):
                    out = te(ids, output_hidden_states=True)
                if index == 0:
                    pooled = out[0]
                parts.append(_emphasise(out.hidden_states[-(options.clip_skip + 1)], chunk, options.emphasis))
            per_encoder.append(parts)
        count = max(len(p) for p in per_encoder)  # the two vocabularies agree, but be safe
        for parts in per_encoder:
            parts += [parts[-1].new_zeros(parts[-1].shape)] * (count - len(parts))
        embeds = torch.cat([torch.cat(parts, dim=1) for parts in per_encoder], dim=-1)
        return Conditioning(embeds.to(m.dtype), pooled.to(m.dtype))


def _version(embeddings) -> Any:
    """What identifies the embeddings' state in the cache key (their files can change)."""
    if embeddings is None:
        return None
    version = getattr(embeddings, "version", None)
    return version if version is not None else tuple(embeddings.names)


DEGENERATE_MEAN = 1e-4  # |mean| below this share of the mean |value| is taken as zero by Original emphasis


def _emphasise(z: torch.Tensor, chunk: Chunk, mode: str) -> torch.Tensor:
    """A1111's emphasis: "Original" multiplies each token's vector by its weight, then scales
    the whole chunk so its mean is what it was; "No norm" only multiplies; "Ignore" and
    "None" leave it."""
    if mode not in ("Original", "No norm"):
        return z
    weights = [1.0, *chunk.weights, *([1.0] * (CHUNK + 1 - len(chunk.weights)))]
    if all(w == 1.0 for w in weights):
        return z
    z = z.float()  # in fp32, as A1111's fp32 multipliers make it: fp16 would turn 1.1 into 1.0996
    multipliers = torch.tensor(weights, dtype=z.dtype, device=z.device).reshape(1, -1, 1)
    if mode == "No norm":
        return z * multipliers
    original_mean = z.mean()
    z = z * multipliers
    new_mean, size = z.mean(), z.abs().mean()
    if not torch.isfinite(new_mean) or min(abs(float(original_mean)), abs(float(new_mean))) <= DEGENERATE_MEAN * float(size):
        # A mean that is rounding noise (an encoder whose last layer norm has no bias, like the
        # tiny test model's): the ratio would be noise too and blow the vectors up to inf/NaN.
        return z
    return z * (original_mean / new_mean)


class _inserted:
    """Puts a chunk's textual-inversion vectors in place of its placeholder tokens while the
    text encoder runs, through a forward hook on its token embedding (removed on exit)."""

    def __init__(self, text_encoder, chunk: Chunk):
        self.module = text_encoder.get_input_embeddings()
        self.chunk = chunk
        self.handle = None

    def _hook(self, module, args, output):
        output = output.clone()
        for position, embedding in self.chunk.inserts:
            vectors = embedding.for_width(output.shape[-1]).to(output.device, output.dtype)
            start = position + 1  # after BOS
            output[:, start : start + vectors.shape[0]] = vectors
        return output

    def __enter__(self):
        if self.chunk.inserts:
            self.handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()


def pad_chunks(conds: Sequence[torch.Tensor], fillers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Bring conditionings to the same number of chunks by appending each one's filler chunk,
    so cond and uncond (and AND's parts) run through the UNet as one batch."""
    longest = max(c.shape[1] for c in conds)
    out = []
    for cond, filler in zip(conds, fillers):
        missing = (longest - cond.shape[1]) // filler.shape[1]
        out.append(torch.cat([cond, *([filler.to(cond.dtype)] * missing)], dim=1) if missing else cond)
    return out
