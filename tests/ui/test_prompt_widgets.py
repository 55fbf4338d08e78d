"""The prompt-row helpers: where a picked LoRA or embedding lands in the prompt."""

from modules.generation.job_prompts import pass_text
from modules.ui.common import counter_html
from modules.ui.extra_networks import append_to_prompt


def test_a_picked_tag_is_appended_and_never_lands_in_a_comment():
    assert append_to_prompt("", "<lora:x:1>") == "<lora:x:1>"
    assert append_to_prompt("a cat  ", "<lora:x:1>") == "a cat <lora:x:1>"
    with_comment = append_to_prompt("a cat # my note", "<lora:x:1>")
    assert with_comment == "a cat # my note\n<lora:x:1>"
    # the tag survives comment stripping and is read as a LoRA call
    warnings: list[str] = []
    assert pass_text(with_comment, "", None, warnings).prompt.strip() == "a cat"
    assert any("'x' not found" in w for w in warnings)


def test_counter_text():
    assert "80/150" in counter_html(80, 150) and "2 chunks of 75 tokens" in counter_html(80, 150)
    assert "1 chunk of 75 tokens" in counter_html(3, 75)
