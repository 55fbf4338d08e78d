"""Extra-network tags: removal from the prompt, argument splitting, LoRA multipliers, warnings for malformed tags."""

from __future__ import annotations

import pytest

from modules.generation.extra_networks import NetworkCall, lora_dyn_dim, lora_multipliers, parse_extra_networks


def test_tags_are_removed_and_returned_in_order():
    prompt, calls, warnings = parse_extra_networks("a cat <lora:fluffy:0.8>, in a hat <hypernet:anime:1><lora:hat>")
    assert prompt == "a cat , in a hat "
    assert calls == [
        NetworkCall("lora", "fluffy", ("0.8",)),
        NetworkCall("hypernet", "anime", ("1",)),
        NetworkCall("lora", "hat"),
    ]
    assert warnings == []


def test_prompt_without_tags_is_untouched():
    text = "a <b> c: (d:1.2) [e:f:3] <not a tag>"
    assert parse_extra_networks(text) == (text, [], [])


def test_named_and_positional_arguments():
    _, [call], _ = parse_extra_networks("<lora:detail:0.5:unet=0.25:dyn=8>")
    assert call.name == "detail"
    assert call.positional == ("0.5",)
    assert call.named == (("unet", "0.25"), ("dyn", "8"))
    assert call.named_dict == {"unet": "0.25", "dyn": "8"}
    assert call.get("dyn") == "8" and call.get("te", "x") == "x"


def test_item_with_two_equals_signs_is_positional_as_in_a1111():
    _, [call], _ = parse_extra_networks("<foo:bar:a=b=c:k=v>")
    assert call == NetworkCall("foo", "bar", ("a=b=c",), (("k", "v"),))


def test_calls_are_hashable_and_accept_a_dict():
    call = NetworkCall("lora", "x", ["1"], {"te": "0.5"})
    assert call.named == (("te", "0.5"),) and call.positional == ("1",)
    assert len({call, NetworkCall("lora", "x", ("1",), (("te", "0.5"),))}) == 1


def test_unknown_kinds_are_removed_and_returned():
    prompt, calls, warnings = parse_extra_networks("x <hypernet:x:1> <mything:abc:key=1> y")
    assert prompt == "x   y"
    assert [c.kind for c in calls] == ["hypernet", "mything"]
    assert calls[1] == NetworkCall("mything", "abc", (), (("key", "1"),))
    assert warnings == []


def test_name_whitespace_is_stripped():
    _, [call], _ = parse_extra_networks("<lora: spaced name :0.7>")
    assert call.name == "spaced name"


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("<lora:n>", (1.0, 1.0)),
        ("<lora:n:0.6>", (0.6, 0.6)),  # unet follows te
        ("<lora:n:0.6:0.2>", (0.6, 0.2)),
        ("<lora:n:0.6:0.2:16>", (0.6, 0.2)),
        ("<lora:n:te=0.3>", (0.3, 0.3)),
        ("<lora:n:unet=0.4>", (1.0, 0.4)),
        ("<lora:n:1:te=0.5>", (0.5, 0.5)),  # named beats positional
        ("<lora:n:1:2:unet=3:te=-1>", (-1.0, 3.0)),
        ("<lyco:n:0.9>", (0.9, 0.9)),
    ],
)
def test_lora_multipliers(tag, expected):
    _, [call], warnings = parse_extra_networks(tag)
    assert warnings == []
    assert lora_multipliers(call) == pytest.approx(expected)


def test_lora_multiplier_default_is_configurable():
    assert lora_multipliers(NetworkCall("lora", "n"), default=0.75) == (0.75, 0.75)


@pytest.mark.parametrize(("tag", "expected"), [("<lora:n>", None), ("<lora:n:1:1:8>", 8), ("<lora:n:dyn=4>", 4)])
def test_lora_dyn_dim(tag, expected):
    _, [call], _ = parse_extra_networks(tag)
    assert lora_dyn_dim(call) == expected


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("<lora:>", "name is missing"),
        ("<lora::1>", "name is missing"),
        ("<lora:te=1>", "name is missing"),
        ("<lora:name:abc>", "'abc' is not a number"),
        ("<lora:name:>", "'' is not a number"),
        ("<lora:name:1:x>", "UNet multiplier 'x' is not a number"),
        ("<lora:name:te=high>", "'high' is not a number"),
        ("<lora:name:nan>", "not a finite number"),
        ("<lora:name:1:1:1.5>", "dyn_dim '1.5' is not an integer"),
        ("<hypernet:name:lots>", "'lots' is not a number"),
        ("<whatever:>", "name is missing"),
    ],
)
def test_malformed_tags_are_dropped_with_a_warning(tag, reason):
    prompt, calls, warnings = parse_extra_networks(f"a {tag} b <lora:good:0.5>")
    assert prompt == "a  b "  # the bad tag never reaches CLIP
    assert calls == [NetworkCall("lora", "good", ("0.5",))]
    assert len(warnings) == 1
    assert tag in warnings[0] and reason in warnings[0]


def test_multiplier_errors_raise_value_error():
    with pytest.raises(ValueError, match="not a number"):
        lora_multipliers(NetworkCall("lora", "n", ("x",)))
