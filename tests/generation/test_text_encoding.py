"""The prompt encoder on the tiny model: weights, chunks, BREAK, the comma wrap, embeddings,
and the per-step conditioning (prompt editing, alternation, AND) seen from inside the UNet."""

from dataclasses import dataclass

import pytest
import torch

from modules.generation.conditioning import ScheduledPrompts, StepConditioning
from modules.generation.params import GenerationParams
from modules.generation.runner import Runner
from modules.generation.text_encoding import EncodingOptions, PromptEncoder

ORIGINAL, NO_NORM = EncodingOptions(emphasis="Original"), EncodingOptions(emphasis="No norm")


@pytest.fixture(scope="module")
def encoder(tiny_model):
    return PromptEncoder(tiny_model)


def token_ids(model, text):
    return model.tokenizer(text, add_special_tokens=False).input_ids


def words(n: int) -> str:
    """n single-token words (CLIP tokenizes "cat" as one token)."""
    return " ".join(["cat"] * n)


def test_a_plain_prompt_equals_the_text_encoder_output(encoder, tiny_model):
    ids = tiny_model.tokenizer("a red square", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.inference_mode():
        expected = tiny_model.text_encoder(ids)[0]
    assert torch.equal(encoder.encode("a red square", ORIGINAL).embeds, expected)


def test_a_weighted_token_is_scaled_by_its_weight_before_normalisation(encoder):
    plain = encoder.encode("a cat on a mat", NO_NORM).embeds
    weighted = encoder.encode("a (cat:1.5) on a mat", NO_NORM).embeds
    cat = 2  # BOS, "a", "cat"
    assert torch.allclose(weighted[0, cat], plain[0, cat] * 1.5, atol=1e-6)
    others = [i for i in range(77) if i != cat]
    assert torch.equal(weighted[0, others], plain[0, others])
    # "Original" restores the mean afterwards: every vector is scaled by the same factor c,
    # the weighted one by 1.5 c, and the chunk's mean is the plain one's.
    original = encoder.encode("a (cat:1.5) on a mat", ORIGINAL).embeds
    c = (original[0, 0] / plain[0, 0]).mean()
    assert torch.allclose(original[0, 0], plain[0, 0] * c, atol=1e-5)
    assert torch.allclose(original[0, cat], plain[0, cat] * 1.5 * c, atol=1e-5)
    assert torch.isclose(original.mean(), plain.mean(), atol=1e-6)


def test_ignore_and_none_emphasis(encoder):
    plain = encoder.encode("a cat", ORIGINAL).embeds
    assert torch.equal(encoder.encode("a (cat:1.5)", EncodingOptions(emphasis="Ignore")).embeds, plain)
    literal = encoder.encode("a (cat:1.5)", EncodingOptions(emphasis="None")).embeds
    assert not torch.equal(literal, plain)  # brackets and the number are read as words


def test_long_prompts_are_chunked_not_cut(encoder, tiny_model):
    assert encoder.encode(words(75), ORIGINAL).embeds.shape[1] == 77
    long = encoder.encode(words(150), ORIGINAL).embeds
    assert long.shape[1] == 2 * 77
    # each chunk is its own 77-token CLIP pass: the second half equals a 75-word prompt
    assert torch.equal(long[:, 77:], encoder.encode(words(75), ORIGINAL).embeds)
    assert encoder.encode(words(151), ORIGINAL).embeds.shape[1] == 3 * 77


def test_break_starts_a_new_chunk(encoder):
    split = encoder.encode("a red square BREAK a blue circle", ORIGINAL).embeds
    assert split.shape[1] == 2 * 77
    assert torch.equal(split[:, :77], encoder.encode("a red square", ORIGINAL).embeds)
    assert torch.equal(split[:, 77:], encoder.encode("a blue circle", ORIGINAL).embeds)


def test_a_full_chunk_moves_the_words_after_its_last_comma_to_the_next(encoder, tiny_model):
    prompt = words(70) + ", dog dog dog dog dog dog dog"  # 70 + comma + 7 = 78 tokens
    chunks = encoder.tokenize(prompt, ORIGINAL).chunks
    dog = token_ids(tiny_model, "dog")[0]
    assert len(chunks) == 2
    assert len(chunks[0].tokens) == 71 and chunks[1].tokens == [dog] * 7
    no_wrap = encoder.tokenize(prompt, EncodingOptions(comma_padding_backtrack=0)).chunks
    assert len(no_wrap[0].tokens) == 75 and len(no_wrap[1].tokens) == 3


def test_token_count_counts_full_chunks_as_75(encoder):
    assert encoder.tokenize(words(10), ORIGINAL).token_count == 10
    assert encoder.tokenize(words(80), ORIGINAL).token_count == 80
    assert encoder.tokenize("a BREAK b", ORIGINAL).token_count == 76


@dataclass
class FakeEmbedding:
    name: str
    vectors: torch.Tensor

    def for_width(self, width):
        return self.vectors if self.vectors.shape[-1] == width else None


class FakeLibrary:
    def __init__(self, *embeddings):
        self.by_name = {e.name: e for e in embeddings}

    @property
    def names(self):
        return list(self.by_name)

    def get(self, name):
        return self.by_name.get(name)


def test_an_embedding_name_puts_its_vectors_in_place_of_the_word(tiny_model):
    table = tiny_model.text_encoder.get_input_embeddings().weight
    cat, dog = token_ids(tiny_model, "cat")[0], token_ids(tiny_model, "dog")[0]
    library = FakeLibrary(FakeEmbedding("mystyle", table[cat][None].clone()), FakeEmbedding("twovec", table[[cat, dog]].clone()))
    encoder = PromptEncoder(tiny_model, library)
    assert torch.equal(encoder.encode("a mystyle", ORIGINAL).embeds, encoder.encode("a cat", ORIGINAL).embeds)
    assert torch.equal(encoder.encode("a twovec", ORIGINAL).embeds, encoder.encode("a cat dog", ORIGINAL).embeds)
    assert encoder.tokenize("a twovec, mystyle", ORIGINAL).embeddings == ("twovec", "mystyle")
    # weights apply to an embedding's vectors like to words
    assert torch.equal(encoder.encode("a (mystyle:1.3)", NO_NORM).embeds, encoder.encode("a (cat:1.3)", NO_NORM).embeds)


class UNetSpy:
    """Wraps the UNet and records the text conditioning of every call."""

    def __init__(self, unet):
        self.unet, self.calls = unet, []

    def __call__(self, sample, t, encoder_hidden_states=None, **kw):
        self.calls.append(encoder_hidden_states.clone())
        return self.unet(sample, t, encoder_hidden_states=encoder_hidden_states, **kw)

    def __getattr__(self, name):
        return getattr(self.unet, name)


@pytest.fixture()
def spied(tiny_model, monkeypatch):
    spy = UNetSpy(tiny_model.unet)
    monkeypatch.setattr(tiny_model, "unet", spy)
    return spy


def run(tiny_model, **values):
    params = GenerationParams.create(**{"width": 64, "height": 64, "steps": 10, "sampler_name": "Euler", "seed": 3, **values})
    return [im for b in Runner(tiny_model).txt2img(params, 3) for im in b.images]


def test_prompt_editing_switches_the_conditioning_at_the_step(tiny_model, spied, encoder):
    run(tiny_model, prompt="a [cat:dog:0.5]", negative_prompt="blurry")
    cat, dog, neg = (encoder.encode(t, ORIGINAL).embeds[0] for t in ("a cat", "a dog", "blurry"))
    assert len(spied.calls) == 10
    for step, hidden in enumerate(spied.calls):
        assert torch.equal(hidden[0], neg)  # uncond first
        # A1111's rule: entry [5, "a cat"] holds for steps 0..5 (0-based), then "a dog"
        assert torch.equal(hidden[1], cat if step <= 5 else dog), step


def test_alternation_changes_the_prompt_every_step(tiny_model, spied, encoder):
    run(tiny_model, prompt="[cat|dog]", steps=4)
    cat, dog = encoder.encode("cat", ORIGINAL).embeds[0], encoder.encode("dog", ORIGINAL).embeds[0]
    # schedule [[1,cat],[2,dog],[3,cat],[4,dog]]: steps 0 and 1 -> cat, 2 -> dog, 3 -> cat
    assert [torch.equal(h[1], cat) for h in spied.calls] == [True, True, False, True]
    assert torch.equal(spied.calls[2][1], dog)


def test_and_runs_each_part_and_combines_with_weights(tiny_model, spied, encoder):
    images = run(tiny_model, prompt="a cat AND a dog:0.5", steps=3)
    assert all(h.shape[0] == 3 for h in spied.calls)  # uncond, part 1, part 2
    assert torch.equal(spied.calls[0][2], encoder.encode(" a dog", ORIGINAL).embeds[0])
    plain = run(tiny_model, prompt="a cat", steps=3)
    assert images[0].tobytes() != plain[0].tobytes()


def test_cond_and_uncond_are_padded_to_the_same_chunk_count(tiny_model, spied, encoder):
    run(tiny_model, prompt=words(100), negative_prompt="blurry", steps=2)
    hidden = spied.calls[0]
    assert hidden.shape[1] == 2 * 77
    # the negative prompt's second chunk is the empty prompt's
    assert torch.equal(hidden[0, 77:], encoder.encode("", ORIGINAL).embeds[0])
    assert torch.equal(hidden[0, :77], encoder.encode("blurry", ORIGINAL).embeds[0])


def test_hires_pass_uses_the_hires_timeline(tiny_model, spied, encoder):
    run(tiny_model, prompt="a [cat:dog:1.5]", steps=4, enable_hr=True, hr_scale=1.0, hr_second_pass_steps=4, denoising_strength=1.0)
    cat, dog = encoder.encode("a cat", ORIGINAL).embeds[0], encoder.encode("a dog", ORIGINAL).embeds[0]
    first, second = spied.calls[:4], spied.calls[4:]
    assert all(torch.equal(h[1], cat) for h in first)
    # hires schedule [[2, cat], [4, dog]]: steps 0..2 cat, 3 dog
    assert [torch.equal(h[1], dog) for h in second] == [False, False, False, True]


def test_scheduled_prompts_split_and_schedule():
    s = ScheduledPrompts.build("a [b:c:2] AND d:0.5", "x", 4)
    assert s.parts == ((1.0, ((2, "a b"), (4, "a c"))), (0.5, ((4, " d"),)))
    assert s.negative == ((4, "x"),) and not s.plain


def test_step_conditioning_reuses_built_batches(encoder):
    prompts = ScheduledPrompts.build("a cat", "", 10)
    cond = StepConditioning(encoder, prompts, ORIGINAL, batch=2, with_uncond=True)
    first, _ = cond.at(0)
    assert first.shape == (4, 77, first.shape[-1])
    assert cond.at(9)[0] is first


def test_and_parts_of_different_lengths_repeat_their_last_vector(tiny_model, spied, encoder):
    run(tiny_model, prompt="a cat AND " + words(80), negative_prompt="", steps=1)
    hidden = spied.calls[0]  # uncond, short part, long part
    short = encoder.encode("a cat", ORIGINAL).embeds[0]
    assert hidden.shape[1] == 2 * 77
    assert torch.equal(hidden[1, :77], short)
    assert torch.equal(hidden[1, 77:], short[-1:].repeat(77, 1))  # A1111 stacks AND's parts this way
    assert torch.equal(hidden[0, 77:], encoder.encode("", ORIGINAL).embeds[0])  # uncond: the empty prompt's chunk


def test_padding_chunks_are_encoded_with_the_same_clip_skip(tiny_model, spied, encoder):
    run(tiny_model, prompt=words(100), negative_prompt="blurry", clip_skip=2, steps=1)
    skip2 = EncodingOptions(clip_skip=2)
    assert torch.equal(spied.calls[0][0, 77:], encoder.encode("", skip2).embeds[0])
    assert not torch.equal(spied.calls[0][0, 77:], encoder.encode("", ORIGINAL).embeds[0])


def test_original_emphasis_keeps_the_mean_and_skips_a_mean_that_is_rounding_noise():
    """A1111's mean restore on an ordinary chunk; on vectors whose mean is ~0 (a last layer norm
    without bias, as in the tiny test model) the ratio would be noise, and the vectors would
    blow up to inf: the weights are then applied without the restore."""
    from modules.generation.text_encoding import Chunk, _emphasise

    chunk = Chunk(tokens=[1, 2], weights=[1.3, 1.0])
    generator = torch.Generator().manual_seed(0)
    ordinary = torch.randn(1, 77, 8, generator=generator) + 0.5
    restored = _emphasise(ordinary, chunk, "Original")
    assert torch.allclose(restored.mean(), ordinary.mean(), atol=1e-6) and not torch.equal(restored, ordinary)

    centred = ordinary - ordinary.mean(dim=-1, keepdim=True)  # every vector's mean is 0, up to rounding
    weighted = _emphasise(centred, chunk, "Original")
    assert torch.isfinite(weighted).all() and weighted.abs().max() <= centred.abs().max() * 1.3 + 1e-6
    assert torch.allclose(weighted, _emphasise(centred, chunk, "No norm"))
