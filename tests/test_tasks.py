"""Tasks: generation, answer extraction, rewards and the countdown verifier, against hand-written cases."""

from __future__ import annotations

import json

import pytest

from rldelta.train.tasks import (
    Arith,
    Countdown,
    TaskError,
    completion_text,
    get_task,
    safe_eval,
    to_dataset,
    trl_reward_funcs,
)

# ---- arith ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<answer>42</answer>", "42"),
        ("  <answer> -17 </answer>\n", "-17"),
        ("<answer>+8</answer>", "8"),
        ("<answer>1,234</answer>", "1234"),
        ("first <answer>3</answer> then <answer>5</answer>", "5"),  # the last tag wins
        ("<answer>12 + 3 = 15</answer>", "15"),  # last number inside the tag
        ("<answer>abc</answer> so the result is 9", "9"),  # unusable tag: last number in the text
        ("62 + 26 = 88", "88"),  # no tag at all
        ("10 - 3", "3"),  # a minus after a number is subtraction, not a sign
        ("the answer is -5.", "-5"),
        ("x (2) -4", "4"),  # after ")" too
        ("no numbers here", None),
        ("", None),
        ("<answer></answer>", None),
    ],
)
def test_arith_extract(completion, expected):
    assert Arith().extract_answer(completion) == expected


@pytest.mark.parametrize(
    "completion, answer, correct, formatted",
    [
        ("<answer>42</answer>", "42", 1.0, 1.0),
        ("6 * 7 = 42. <answer>42</answer>", "42", 1.0, 1.0),
        ("<answer>41</answer>", "42", 0.0, 1.0),  # well formed, wrong
        ("42", "42", 1.0, 0.0),  # right number, no tag
        ("<answer>42", "42", 1.0, 0.0),  # unclosed tag: fallback finds the number, format fails
        ("<answer>forty-two</answer>", "42", 0.0, 0.0),
        ("<answer>4</answer><answer>42</answer>", "42", 1.0, 0.0),  # two tags: not the asked-for format
        ("<answer>-3</answer>", "-3", 1.0, 1.0),
        ("<answer>3</answer>", "-3", 0.0, 1.0),
        ("<ANSWER>42</ANSWER>", "42", 1.0, 0.0),  # tags are case-sensitive
    ],
)
def test_arith_rewards(completion, answer, correct, formatted):
    task = Arith()
    assert task.correctness_reward(completion, answer) == correct
    assert task.format_reward(completion) == formatted


def test_arith_answers_match_python_arithmetic():
    task = Arith()
    for ex in task.generate(60, seed=3):
        expr = ex.prompt[0]["content"].removeprefix("What is ").split("?")[0]
        # An independent evaluation of the same text (digits and + - * only, so Python's own rules apply).
        assert set(expr) <= set("0123456789+-* ")
        assert int(ex.answer) == eval(expr)  # noqa: S307 - test-only check on generated digit/operator text
        assert task.correctness_reward(task.reference_completion(ex.answer), ex.answer) == 1.0


def test_arith_difficulty_labels():
    task = Arith()
    for level, (n_operands, digits, ops) in Arith.LEVELS.items():
        for ex in task.generate(10, seed=0, difficulty=level):
            assert ex.difficulty == level
            tokens = ex.prompt[0]["content"].removeprefix("What is ").split("?")[0].split()
            numbers, operators = tokens[::2], tokens[1::2]
            assert len(numbers) == n_operands
            assert all(len(x) <= digits for x in numbers) and set(operators) <= set(ops)


# ---- countdown --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression, ok",
    [
        ("(3 + 5) * 3", True),
        ("3 * (3 + 5)", True),
        ("(5 - 3) * 12", True),  # 24
        ("7 * 3 + 3", True),  # 24, uses 3 twice: it is given twice
        ("3 * 3 * 3 - 3", False),  # 3 given twice, used four times
        ("8 * 3", False),  # 8 not given
        ("24", False),  # a number that is not given
        ("(3 + 5) * 3 + 0", False),  # 0 not given
        ("72 / 3", False),  # division not allowed
        ("2 ** 3", False),
        ("-3 * -8", False),  # unary minus not allowed (and 8 not given)
        ("__import__('os').system('true')", False),
        ("3 + 5 * 3", False),  # 18: right numbers, wrong value
        ("3.0 * 8", False),
        ("True + 23", False),
        ("(3 + 5) * 3 + ", False),  # syntax error
        ("x * 3", False),
        ("", False),
        ("(" * 300 + "3" + ")" * 300, False),  # too long to be an answer
    ],
)
def test_countdown_check(expression, ok):
    assert Countdown().check(expression, target=24, numbers=[3, 5, 3, 7, 12]) is ok


def test_countdown_rewards_and_extraction():
    task = Countdown()
    answer = json.dumps({"target": 24, "numbers": [3, 5, 3, 7], "solution": "(3 + 5) * 3"})
    cases = [
        ("<answer>(3 + 5) * 3</answer>", 1.0, 1.0),
        ("<answer>(3 + 5) * 3 = 24</answer>", 1.0, 1.0),  # a trailing "= target" is allowed
        ("<answer>(3 + 5) × 3</answer>", 1.0, 1.0),  # the multiplication sign people write
        ("I think (3 + 5) * 3 = 24", 1.0, 0.0),  # no tag: last expression in the text
        ("<answer>3 * 8</answer>", 0.0, 1.0),  # well formed, 8 not given
        ("<answer>(3 + 3) * 5</answer>", 0.0, 1.0),  # valid use, value 30
        ("<answer>24</answer>", 0.0, 1.0),  # parses, but 24 is not given
        ("<answer>twenty four</answer>", 0.0, 0.0),
        ("<answer>(3+5)*3</answer><answer>(3+5)*3</answer>", 1.0, 0.0),
        ("", 0.0, 0.0),
    ]
    for completion, correct, formatted in cases:
        assert task.correctness_reward(completion, answer) == correct, completion
        assert task.format_reward(completion) == formatted, completion
    assert task.extract_answer("<answer> (3 + 5) * 3 = 24 </answer>") == "(3 + 5) * 3"
    assert task.extract_answer("nothing useful") is None
    with pytest.raises(TaskError, match="countdown answer"):
        task.correctness_reward("<answer>1 + 2</answer>", "24")


def test_countdown_generated_problems_are_solvable_and_labelled():
    task = Countdown()
    for level in task.difficulties:
        for ex in task.generate(15, seed=5, difficulty=level):
            record = json.loads(ex.answer)
            target, numbers, solution = record["target"], record["numbers"], record["solution"]
            assert ex.difficulty == level
            assert solution.count("+") + solution.count("-") + solution.count("*") == level
            assert len(numbers) == level + 1 + (level >= 2)
            assert target not in numbers and 1 <= target <= task.MAX_TARGET
            assert task.check(solution, target, numbers)
            assert task.correctness_reward(task.reference_completion(ex.answer), ex.answer) == 1.0
            assert str(target) in ex.prompt[0]["content"]


def test_safe_eval():
    assert safe_eval("2 + 3 * 4") == 14
    assert safe_eval("(2 + 3) * 4") == 20
    assert safe_eval("-2 * 3") is None
    assert safe_eval("-2 * 3", allow_unary_minus=True) == -6
    assert safe_eval("2 // 3") is None
    assert safe_eval("open('x')") is None


# ---- generation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["arith", "countdown"])
def test_generation_seeded_and_splits_disjoint(name):
    task = get_task(name)
    a = task.generate(80, seed=7)
    assert a == task.generate(80, seed=7)
    assert a != task.generate(80, seed=8)
    assert task.generate(30, seed=7, difficulty=2) == task.generate(30, seed=7, difficulty=2)
    train = {ex.prompt[0]["content"] for ex in task.generate(400, seed=0, split="train")}
    test = {ex.prompt[0]["content"] for s in range(3) for ex in task.generate(150, seed=s, split="test")}
    assert train and test and not (train & test)
    assert {ex.difficulty for ex in a} == set(task.difficulties)  # mixed when no difficulty is given
    for ex in a:
        assert ex.prompt[0]["role"] == "user" and "<answer>" in ex.prompt[0]["content"]


def test_generation_distinct_when_space_allows():
    exs = Arith().generate(50, seed=0, difficulty=2)
    assert len({ex.prompt[0]["content"] for ex in exs}) == 50


def test_bad_input_errors():
    with pytest.raises(TaskError, match="known tasks: arith, countdown"):
        get_task("gsm8k")
    with pytest.raises(TaskError, match="difficulty 9"):
        Arith().generate(3, seed=0, difficulty=9)
    with pytest.raises(TaskError, match="split"):
        Arith().generate(3, seed=0, split="dev")


# ---- TRL glue ---------------------------------------------------------------------------------------------------


def test_to_dataset_and_trl_reward_funcs():
    task = Arith()
    exs = task.generate(4, seed=0)
    ds = to_dataset(exs)
    assert ds.column_names == ["prompt", "answer", "difficulty"]
    assert ds[0]["prompt"] == exs[0].prompt and ds[0]["answer"] == exs[0].answer
    from trl.data_utils import is_conversational

    assert is_conversational(ds[0])

    correctness, fmt = trl_reward_funcs(task)
    assert correctness.__name__ == "arith_correctness" and fmt.__name__ == "arith_format"
    answers = [ex.answer for ex in exs]
    right = f"<answer>{answers[1]}</answer>"
    conversational = [
        [{"role": "assistant", "content": f"<answer>{answers[0]}</answer>"}],
        [{"role": "assistant", "content": "I do not know"}],
        [{"role": "assistant", "content": right}],
        [{"role": "assistant", "content": f"<answer>{int(answers[3]) + 1}</answer>"}],
    ]
    prompts = [ex.prompt for ex in exs]
    got = correctness(prompts=prompts, completions=conversational, answer=answers, difficulty=[1] * 4)
    assert got == [1.0, 0.0, 1.0 if answers[2] == answers[1] else 0.0, 0.0]
    assert fmt(prompts=prompts, completions=conversational, answer=answers) == [1.0, 0.0, 1.0, 1.0]
    plain = [f"<answer>{a}</answer>" for a in answers]
    assert correctness(prompts=prompts, completions=plain, answer=answers) == [1.0] * 4


def test_completion_text():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "x"}]) == "x"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"
    assert completion_text([]) == ""


def test_digits_reward_is_the_share_of_digit_characters():
    task = get_task("digits")
    assert task.correctness_reward("1234", "x") == 1.0
    assert task.correctness_reward("ab12", "x") == 0.5
    assert task.correctness_reward("", "x") == 0.0
    assert task.correctness_reward("<answer>7</answer>", "7") == pytest.approx(1 / 18)


def test_reward_functions_can_be_chosen():
    task = get_task("arith")
    both = trl_reward_funcs(task)
    only = trl_reward_funcs(task, ["correctness"])
    assert [f.__name__ for f in both] == ["arith_correctness", "arith_format"]
    assert [f.__name__ for f in only] == ["arith_correctness"]
    done = ["<answer>5</answer>", "it is 5", "<answer>4</answer>"]
    assert only[0](completions=done, answer=["5"] * 3) == [1.0, 1.0, 0.0]
