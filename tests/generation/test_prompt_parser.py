"""A1111 prompt syntax: the upstream doctest table (reference section 6) plus the extra verified rows, exact outputs."""

from __future__ import annotations

import pytest

from modules.generation.prompt_parser import (
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_prompt_attention,
    schedule_index,
    split_and,
    strip_comments,
)

ALTERNATE_A_B = [[i, "a" if i % 2 else "(b:1.1)"] for i in range(1, 11)]

# Rows 1-14 of the oracle, steps = 10.
SCHEDULES_10 = [
    ("test", [[10, "test"]]),  # 1
    ("a [b:3]", [[3, "a "], [10, "a b"]]),  # 2
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),  # 3
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),  # 4
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),  # 5
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),  # 6
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),  # 7
    ("a [unbalanced", [[10, "a [unbalanced"]]),  # 8
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),  # 9
    # 10: the upstream doctest expects [[5, 'a  c'], [10, 'a {b|d{ c']] ("not handling this right now") and fails on
    # A1111 v1.10.1 itself: the '|' outside a valid [a|b] makes the prompt unparseable, so A1111 returns it verbatim.
    # We match what A1111 actually does.
    ("a [{b|d{:.5] c", [[10, "a [{b|d{:.5] c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),  # 11
    ("[a|(b:1.1)]", ALTERNATE_A_B),  # 12
    ("[fe|]male", [[i, "female" if i % 2 else "male"] for i in range(1, 11)]),  # 13
    ("[fe|||]male", [[i, "female" if i % 4 == 1 else "male"] for i in range(1, 11)]),  # 14
]

FANTASY = (
    "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
    "[ in background:0.25] [shoddy:masterful:0.5]"
)

# (prompt, base_steps, hires_steps, expected): rows 15-16 and the extra verified schedule rows.
SCHEDULES_OTHER = [
    ("a [b:.5] c", 10, 10, [[10, "a b c"]]),  # 15: a base-pass fraction is over before hires starts
    ("a [b:1.5] c", 10, 10, [[5, "a  c"], [10, "a b c"]]),  # 16
    (
        FANTASY,
        100,
        None,
        [
            [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
            [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
            [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
            [75, "fantasy landscape with a lake and an oak in background masterful"],
            [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
        ],
    ),
    ("a [fantasy:cyberpunk:16] landscape", 20, None, [[16, "a fantasy landscape"], [20, "a cyberpunk landscape"]]),
    (
        "[cow|horse] in a field",
        4,
        None,
        [[1, "cow in a field"], [2, "horse in a field"], [3, "cow in a field"], [4, "horse in a field"]],
    ),
    ("a [b:c:0.5]", 20, None, [[10, "a b"], [20, "a c"]]),
    ("a [b:c:1.5]", 20, 10, [[5, "a b"], [10, "a c"]]),
    ("a [b:c:5]", 20, 10, [[10, "a c"]]),
    ("a [b:c:25]", 20, 10, [[5, "a b"], [10, "a c"]]),
]


@pytest.mark.parametrize(("prompt", "expected"), SCHEDULES_10)
def test_schedules_doctest_table(prompt, expected):
    assert get_learned_conditioning_prompt_schedules([prompt], 10)[0] == expected


@pytest.mark.parametrize(("prompt", "base", "hires", "expected"), SCHEDULES_OTHER)
def test_schedules_verified_rows(prompt, base, hires, expected):
    assert get_learned_conditioning_prompt_schedules([prompt], base, hires)[0] == expected


# Further behaviour checked against A1111's parser (lark grammar) during development.
SCHEDULES_MORE = [
    ("[a:b:3]:", [[3, "a:"], [10, "b:"]]),  # literal text after a construct
    ("[a:3]]", [[3, "]"], [10, "a]"]]),
    ("[[a:3]", [[3, "["], [10, "[a"]]),
    ("[a [b:2]:3]", [[2, ""], [3, ""], [10, "a b"]]),  # every edit point is an entry, even one that changes nothing
    ("[[a:b:1]:2]", [[1, ""], [2, ""], [10, "b"]]),
    ("(([cat:dog:5])), x", [[5, "((cat)), x"], [10, "((dog)), x"]]),
    ("([cat:dog:5]:1.2)", [[5, "(cat:1.2)"], [10, "(dog:1.2)"]]),
    ("[a:b:c:3]", [[10, "[a:b:c:3]"]]),  # too many colons: literal
    ("[a:b:3x]", [[10, "[a:b:3x]"]]),  # 'when' must be a number
    ("\\[a:3]", [[10, "\\[a:3]"]]),  # escapes are kept for parse_prompt_attention
    ("a|b [c:3]", [[10, "a|b [c:3]"]]),  # a '|' outside [a|b]: unparseable, nothing scheduled
    ("[a|b]]", [[i, ("a" if i % 2 else "b") + "]"] for i in range(1, 11)]),
    ("[a:b:-2]", [[10, "b"]]),
    ("[a:b:1e1]", [[10, "a"]]),  # no '.', so an absolute step (10)
    ("[a:b:0]", [[10, "b"]]),
    ("[a:b:99]", [[10, "a"]]),
    ("[a:b:1e999]", [[10, "a"]]),
    ("a\\", [[10, "a\\"]]),  # nothing to escape: unparseable, returned verbatim
]


@pytest.mark.parametrize(("prompt", "expected"), SCHEDULES_MORE)
def test_schedules_more(prompt, expected):
    assert get_learned_conditioning_prompt_schedules([prompt], 10)[0] == expected


def test_schedules_several_prompts_keep_order_and_share_results():
    prompts = ["a [b:3]", "x", "a [b:3]"]
    res = get_learned_conditioning_prompt_schedules(prompts, 10)
    assert res == [[[3, "a "], [10, "a b"]], [[10, "x"]], [[3, "a "], [10, "a b"]]]
    res[0][0][1] = "changed"
    assert res[2][0][1] == "a "  # no aliasing between equal prompts


@pytest.mark.parametrize(
    ("prompt", "old", "expected"),
    [
        ("a [b:c:0.5]", True, [[5, "a b"], [10, "a c"]]),
        ("a [b:c:3]", True, [[3, "a b"], [10, "a c"]]),
        ("a [b:c:1.0]", True, [[1, "a b"], [10, "a c"]]),  # old rule: 1.0 is not below 1, so step 1
        ("a [b:c:1.0]", False, [[10, "a b"]]),  # new rule: 1.0 is the whole run
        ("a [b:c:0.3]", True, [[3, "a b"], [10, "a c"]]),
    ],
)
def test_old_scheduling(prompt, old, expected):
    assert get_learned_conditioning_prompt_schedules([prompt], 10, use_old_scheduling=old)[0] == expected


def test_old_scheduling_ignores_the_hires_timeline():
    assert get_learned_conditioning_prompt_schedules(["a [b:c:0.5]"], 20, 10, use_old_scheduling=True)[0] == [
        [10, "a b"],
        [20, "a c"],
    ]


# Rows 17-22 and the extra verified attention rows.
ATTENTION = [
    ("normal text", [["normal text", 1.0]]),  # 17
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),  # 18
    ("(unbalanced", [["unbalanced", 1.1]]),  # 19
    ("\\(literal\\]", [["(literal]", 1.0]]),  # 20
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),  # 21
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",  # 22
        [
            ["a ", 1.0],
            ["house", 1.5730000000000004],
            [" ", 1.1],
            ["on", 1.0],
            [" a ", 1.1],
            ["hill", 0.55],
            [", sun, ", 1.1],
            ["sky", 1.4641000000000006],
            [".", 1.1],
        ],
    ),
    ("a ((word))", [["a ", 1.0], ["word", 1.2100000000000002]]),
    ("a [word]", [["a ", 1.0], ["word", 0.9090909090909091]]),
    ("[[word]]", [["word", 0.8264462809917354]]),
    ("a (word:0.25)", [["a ", 1.0], ["word", 0.25]]),
    ("anime_\\(character\\)", [["anime_(character)", 1.0]]),
    ("a BREAK b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("a (b:1.2) BREAK c", [["a ", 1.0], ["b", 1.2], ["", 1.0], ["BREAK", -1], ["c", 1.0]]),
    ("(a BREAK b:1.2)", [["a", 1.2], ["BREAK", -1.2], ["b", 1.2]]),
    ("(word:-1)", [["word", -1.0]]),
    ("(a:1.2:3)", [["a:1.2", 3.0]]),
    ("a b)", [["a b)", 1.0]]),
    ("a]", [["a]", 1.0]]),
    ("", [["", 1.0]]),
    ("a \\\\ b", [["a \\ b", 1.0]]),
    # Checked against A1111's algorithm during development:
    ("a BREAKfast", [["a BREAKfast", 1.0]]),  # BREAK must be a whole word
    ("a break b", [["a break b", 1.0]]),  # and uppercase
    ("a\\x", [["ax", 1.0]]),  # a backslash before anything else is dropped
    ("a:b", [["a:b", 1.0]]),
    ("x:1.5)", [["x:1.5)", 1.0]]),  # a weight with nothing open is text
    ("[a:1.5]", [["a:1.5", 0.9090909090909091]]),  # weights only work with ()
    ("(a:.)", [["a:.", 1.1]]),  # A1111 crashes on float('.'); we keep the text and close the bracket at the end
]


@pytest.mark.parametrize(("text", "expected"), ATTENTION)
def test_parse_prompt_attention(text, expected):
    got = parse_prompt_attention(text)
    assert [t for t, _w in got] == [t for t, _w in expected]
    assert [w for _t, w in got] == pytest.approx([w for _t, w in expected])


def test_attention_weights_are_bit_exact_where_the_oracle_prints_long_floats():
    got = dict(map(tuple, parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")))
    assert got["house"] == 1.5730000000000004 and got["sky"] == 1.4641000000000006


def test_multicond_weights_and_texts():
    res, flat, indexes = get_multicond_prompt_list(["a cat :1.2 AND a dog AND a penguin :2.2"])
    assert res == [[(0, 1.2), (1, 1.0), (2, 2.2)]]
    assert flat == ["a cat", " a dog", " a penguin"]
    assert indexes == {"a cat": 0, " a dog": 1, " a penguin": 2}


def test_multicond_shares_identical_texts_across_prompts():
    res, flat, indexes = get_multicond_prompt_list(["a cat AND a dog:0.03", "a cat:2 AND ANDROID AND x"])
    assert res == [[(0, 1.0), (1, 0.03)], [(0, 2.0), (2, 1.0), (3, 1.0)]]
    assert flat == ["a cat", " a dog", " ANDROID", " x"]
    assert indexes == {t: i for i, t in enumerate(flat)}


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("ANDROID AND x", [("ANDROID", 1.0), (" x", 1.0)]),  # \b keeps ANDROID whole
        ("a and b", [("a and b", 1.0)]),  # lowercase is text
        ("a cat AND a dog:0.03", [("a cat", 1.0), (" a dog", 0.03)]),
        ("a:-1.5 AND b: .5 AND c:1.", [("a", -1.5), (" b", 0.5), (" c", 1.0)]),
        ("a:x AND (b:1.2)", [("a:x", 1.0), (" (b:1.2)", 1.0)]),
        ("AND", [("", 1.0), ("", 1.0)]),
        ("", [("", 1.0)]),
        ("two\nlines :2", [("two\nlines", 2.0)]),
    ],
)
def test_split_and(prompt, expected):
    assert split_and(prompt) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no comment", "no comment"),
        ("a cat # fluffy", "a cat "),
        ("a cat\n# a whole line\nin a hat", "a cat\nin a hat"),
        ("# first\nsecond", "second"),
        ("first\n   # indented comment line", "first"),
        ("a # x\nb # y", "a \nb "),
        ("#", ""),
        ("a\n\nb", "a\n\nb"),  # blank lines that are not comments stay
    ],
)
def test_strip_comments(text, expected):
    assert strip_comments(text) == expected


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0), (2, 0), (3, 0), (4, 1), (9, 1), (10, 1), (11, 1)],  # end_at_step is inclusive; past the end: the last
)
def test_schedule_index(step, expected):
    schedule = get_learned_conditioning_prompt_schedules(["a [b:3]"], 10)[0]
    assert schedule_index(schedule, step) == expected


def test_schedule_index_follows_a1111_step_numbering():
    # Entries end at 1-based step numbers while sampling steps count from 0, so (as in A1111) the first entry is used
    # twice: an alternation runs cow, cow, horse, cow.
    schedule = get_learned_conditioning_prompt_schedules(["[cow|horse]"], 4)[0]
    assert [schedule[schedule_index(schedule, s)][1] for s in range(4)] == ["cow", "cow", "horse", "cow"]
