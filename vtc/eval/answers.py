"""Scoring a generated answer: the option letter of a multiple-choice answer, or a short-answer match.

Letter extraction (:func:`extract_letter`), for a question with ``n`` options (valid letters ``A`` ..
the ``n``-th letter). The rules are tried in order; the first that finds a valid letter wins:

1. The whole answer is one letter, in any case, optionally in brackets and followed by ``.`` or ``:``
   (``"B"``, ``"b"``, ``"(C)"``, ``"D."``).
2. An explicit cue: ``answer``/``option``/``choice`` (any case), optionally ``is`` or ``:``, then an
   upper-case letter standing alone (``"The answer is (B)"``, ``"Best option: C"``), or a lower-case
   one that ends the answer or is followed by punctuation (``"answer: b"``, not ``"answer is a cat"``).
3. The first upper-case letter in brackets: ``"(B)"``, ``"[B]"``.
4. The answer starts with an upper-case letter followed by ``.``, ``)``, ``:`` or ``,``
   (``"B. red"``, ``"C) blue"``).
5. The first upper-case letter standing alone as a word (``"red A"``, the tiny models' format), where
   ``A`` and ``I`` followed by a lower-case word are read as English (``"A man walks"``, ``"I think"``).
   Letters beyond the options are never taken (``"E"`` with four options).
6. No letter: the option texts. The normalised answer (see below) equal to one option's, or exactly
   one option's normalised text found in it as whole words (an option contained in a longer matched
   option does not count) gives that option's letter.
7. Otherwise no letter (``""``): the sample counts as wrong.

Short answers (questions without options) are compared after normalisation (:func:`normalise`):
lower case, punctuation removed, the articles ``a``/``an``/``the`` dropped, number words zero to ten
written as digits, whitespace collapsed. The answer is correct when its normalised text, or that of its
first clause (up to the first ``.``, ``,``, ``;``, ``!``, ``?`` or line break), equals the normalised
reference or one of the accepted alternatives.
"""

from __future__ import annotations

import re
import string

LETTERS = string.ascii_uppercase
NUMBER_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
ARTICLES = {"a", "an", "the"}

_WHOLE_LETTER = re.compile(r"[\(\[]?\s*([A-Za-z])\s*[\)\]]?\s*[.:]?")
_CUE = re.compile(
    r"(?i:answer|option|choice)(?:\s+(?i:is))?\s*[:\-]?\s*[\(\[]?"
    r"(?:([A-Z])(?![A-Za-z0-9])|([a-z])(?=[\)\].,;:!?]|\s*$))"
)
_BRACKETED = re.compile(r"[\(\[]([A-Z])[\)\]]")
_LEADING = re.compile(r"([A-Z])\s*[.):,]")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")
_PUNCT = re.compile(r"[^\w\s]")
_CLAUSE = re.compile(r"[.,;!?\n]")


def _clean(text: str) -> str:
    return re.sub(r"[*_`]", "", text).strip()


def _english_word(text: str, match: re.Match) -> bool:
    """``A``/``I`` used as a word: followed by whitespace and a lower-case letter."""
    return match.group(1) in "AI" and re.match(r"\s+[a-z]", text[match.end() :]) is not None


def extract_letter(text: str, options: list[str] | tuple[str, ...]) -> str:
    """The option letter the answer ``text`` names, or ``""`` (rules in the module docstring)."""
    valid = LETTERS[: len(options)]
    text = _clean(text)
    if not text or not valid:
        return ""
    whole = _WHOLE_LETTER.fullmatch(text)
    if whole and whole.group(1).upper() in valid:
        return whole.group(1).upper()
    for m in _CUE.finditer(text):
        letter = (m.group(1) or m.group(2)).upper()
        if letter in valid:
            return letter
    for m in _BRACKETED.finditer(text):
        if m.group(1) in valid:
            return m.group(1)
    leading = _LEADING.match(text)
    if leading and leading.group(1) in valid:
        return leading.group(1)
    for m in _STANDALONE.finditer(text):
        if m.group(1) in valid and not _english_word(text, m):
            return m.group(1)
    return letter_by_text(text, options)


def letter_by_text(text: str, options: list[str] | tuple[str, ...]) -> str:
    """The letter of the one option whose text the answer gives (rule 6), or ``""``."""
    said = normalise(text)
    norms = [normalise(o) for o in options]
    for letter, norm in zip(LETTERS, norms, strict=False):
        if norm and said == norm:
            return letter
    padded = f" {said} "
    found = [i for i, norm in enumerate(norms) if norm and f" {norm} " in padded]
    found = [i for i in found if not any(j != i and f" {norms[i]} " in f" {norms[j]} " for j in found)]
    return LETTERS[found[0]] if len(found) == 1 else ""


def normalise(text: str) -> str:
    """Lower case, no punctuation or articles, number words as digits, single spaces."""
    words = _PUNCT.sub(" ", str(text).lower()).split()
    return " ".join(NUMBER_WORDS.get(w, w) for w in words if w not in ARTICLES)


def short_answer_correct(prediction: str, accepted: list[str] | tuple[str, ...]) -> bool:
    """Whether the normalised prediction (or its first clause) equals a normalised accepted answer."""
    targets = {normalise(a) for a in accepted} - {""}
    first = next((c for c in _CLAUSE.split(prediction) if c.strip()), "")
    return normalise(prediction) in targets or normalise(first) in targets


def score(prediction: str, options: list[str] | tuple[str, ...], answer: str,
          accepted: list[str] | tuple[str, ...] = ()) -> tuple[str, bool]:
    """``(extracted, correct)``: the letter (multiple choice) or the normalised answer, and whether it is right."""
    if options:
        letter = extract_letter(prediction, options)
        return letter, bool(letter) and letter == answer
    return normalise(prediction), short_answer_correct(prediction, [answer, *accepted])


def letter_of_index(index: int | str, n: int) -> str:
    """``0`` (or ``"0"``) -> ``"A"``, checked against ``n`` options."""
    i = int(index)
    if not 0 <= i < n:
        raise ValueError(f"answer: index {i} is out of range for {n} options")
    return LETTERS[i]


def letter_of_text(answer: str, options: list[str] | tuple[str, ...]) -> str:
    """The letter of the option whose text is ``answer`` (exact, then normalised)."""
    for i, option in enumerate(options):
        if option == answer:
            return LETTERS[i]
    for i, option in enumerate(options):
        if normalise(option) == normalise(answer):
            return LETTERS[i]
    raise ValueError(f"answer: {answer!r} is not one of the options {list(options)}")


def letter_of_letter(answer: str, n: int) -> str:
    """``"B"``, ``"(B)"``, ``"B."`` or ``"B. text"`` -> ``"B"``, checked against ``n`` options."""
    m = re.match(r"\s*\(?([A-Za-z])(?:[\s.):]|$)", str(answer))
    if not m or m.group(1).upper() not in LETTERS[:n]:
        raise ValueError(f"answer: expected an option letter among {LETTERS[:n]}, got {answer!r}")
    return m.group(1).upper()
