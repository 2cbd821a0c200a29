"""Answer scoring for `vtc eval`: letter extraction on tricky outputs, short-answer normalisation."""

from __future__ import annotations

import pytest

from vtc.eval.answers import (
    extract_letter,
    letter_of_index,
    letter_of_letter,
    letter_of_text,
    normalise,
    score,
    short_answer_correct,
)

OPTIONS = ["red", "blue", "green", "dark red"]


@pytest.mark.parametrize(
    ("output", "letter"),
    [
        ("B", "B"),
        ("b", "B"),  # a lone letter in any case
        ("(C)", "C"),
        ("D.", "D"),
        ("  **B**  ", "B"),  # markdown emphasis
        ("red A", "A"),  # the tiny models' format: answer text, then the letter
        ("The answer is (B).", "B"),
        ("The best answer is C", "C"),
        ("Best option: (D) dark red", "D"),
        ("answer: b", "B"),  # lower case after a cue, at the end
        ("the answer is a cat", ""),  # ... but not an article
        ("B. blue", "B"),
        ("C) green", "C"),
        ("I think the answer is B", "B"),  # 'I' followed by a word is the pronoun
        ("A man would say C", "C"),  # 'A' followed by a word is the article
        ("It is B, not C", "B"),  # several letters: the first
        ("E", ""),  # beyond the four options
        ("The answer is E", ""),
        ("blue", "B"),  # no letter: the option text
        ("it looks green to me", "C"),
        ("dark red", "D"),  # 'red' is inside the longer matched option, which wins
        ("red or blue", ""),  # two options named: no answer
        ("", ""),
        ("I don't know", ""),
        ("Bananas", ""),  # capital letters inside words are not letters
    ],
)
def test_letter_extraction(output, letter):
    assert extract_letter(output, OPTIONS) == letter


def test_letter_extraction_without_options_finds_nothing():
    assert extract_letter("A", []) == ""


def test_score_multiple_choice_and_short_answers():
    assert score("blue B", OPTIONS, "B") == ("B", True)
    assert score("C", OPTIONS, "B") == ("C", False)
    assert score("nothing", OPTIONS, "B") == ("", False)
    assert score("Two.", [], "2") == ("2", True)
    assert score("The cat, sitting on a mat", [], "cat") == ("cat sitting on mat", True)  # first clause
    assert score("dog", [], "cat", ("dog",)) == ("dog", True)  # an accepted alternative
    assert not short_answer_correct("a red cat", ["cat"])


def test_normalise():
    assert normalise("  The THREE red-ish Cats! ") == "3 red ish cats"
    assert normalise("an apple") == "apple"


def test_reference_answers_become_letters():
    assert letter_of_index("3", 5) == "D" and letter_of_index(0, 2) == "A"
    assert letter_of_letter("B. right", 4) == "B" and letter_of_letter("(c)", 4) == "C"
    assert letter_of_text("Blue.", ["red.", "blue."]) == "B"
    with pytest.raises(ValueError, match="out of range"):
        letter_of_index(5, 5)
    with pytest.raises(ValueError, match="option letter"):
        letter_of_letter("F", 4)
    with pytest.raises(ValueError, match="not one of the options"):
        letter_of_text("purple", ["red", "blue"])
