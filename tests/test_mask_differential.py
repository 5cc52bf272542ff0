"""The fast masker (`Masker.mask`: a cache keyed by the digit-folded message) against the
reference (`Masker.mask_reference`: one `re.sub` of the combined regex): equal on every line of
the 16 loghub samples, on their digit-redrawn copies, and on generated lines.

The masked text is the dedup key and is stored in bundles: any difference here would silently
change what a detector sees.
"""
import random

import pytest
from conftest import LOGHUB_SYSTEMS, examples, loghub_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.runtime.formats import parse_format
from detector.runtime.mask import DEFAULT_RULES, Masker, _FastMask, digit_fold

CASES = {"generated": 0, "generated_variants": 0, "custom_rules": 0}
GENERATED_EXAMPLES = examples(3000)
CUSTOM_EXAMPLES = examples(1000)


def _redraw(text: str, rng: random.Random) -> str:
    return "".join(str(rng.randrange(10)) if c in "0123456789" else c for c in text)


def test_default_rules_fold_every_digit_but_a_zero_before_x():
    fold = digit_fold(Masker.default().pattern)
    assert fold is not None and fold.target == "1" and fold.keep == {"0": frozenset("xX")}


@pytest.mark.parametrize("pattern, foldable", [
    (r"\d+", True), (r"[0-9a-f]{8}", True), (r"\w+\s[^\s]", True), (r"(?<![\w.])\d", True),
    (r"0[xX]", True), (r"(?:ab|0z)+", True), (r"(a)?(?(1)b|c)", True),
    (r"[1-5]", False), (r"[0-5]x", False), (r"7", False), (r"0\d", False), (r"0[x\d]", False),
    (r"(\d)\1", False), (r"(?i)0x", False), (r"[^0]", False), (r"(?:0|a)x", False), (r"0x?", False),
])
def test_digit_fold_refuses_what_it_cannot_prove(pattern, foldable):
    assert (digit_fold(pattern) is not None) == foldable


def test_all_loghub_samples_and_their_redrawn_copies_mask_as_the_reference():
    """Every message and every whole line of the 16 samples, then 3 copies with digits redrawn,
    all through one Masker (so copies hit entries made by other digits)."""
    masker = Masker.default()
    rng = random.Random(16)
    checked = 0
    for system in LOGHUB_SYSTEMS:
        path = loghub_file(system)
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        messages = [r.message for r in parse_format(f"loghub:{system}").records(lines)]
        for copy in range(4):
            for text in messages + lines:
                text = text if copy == 0 else _redraw(text, rng)
                assert masker.mask(text) == masker.mask_reference(text), (system, text)
                checked += 1
    assert checked == 16 * 4 * 4000
    info = masker.cache_info()
    assert info.hits > info.misses  # the redrawn copies were answered from the cache


# Pieces that exercise the rules: digits, hex, 0x/0X, separators, dates, units, words, unicode.
TOKENS = ["0x", "0X", "0", "00", "x", "X", "blk_", "blk_-", "http://", "https://a.b/", ".com", ".local",
          "@", ":", "::", ".", "..", "/", "//", "\\", "C:\\", "~", "-", "+", "_", ",", ";", "=", "'", '"',
          "<", ">", "(", ")", "[", "]", "{", "}", "KB", "MiB", "B", "ms", "Mon", "Sep", "Jan", "PDT", "UTC",
          "T", " ", "  ", "\t", "a", "ab", "deadbeef", "fe80", "core", "en", "task_", "ID", "é", "\u00a0",
          "\u2028", "\u0663", "\u00b2", "\x00", "\r", "1", "7", "9", "12", "255", "2005", "10.0.0.1", "2024-01-31",
          "12:00:01", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"]
piece = st.one_of(st.sampled_from(TOKENS), st.text(alphabet="0123456789abcdefxXABCDEF.:-/ _", min_size=1, max_size=12),
                  st.text(min_size=1, max_size=4))
line = st.lists(piece, max_size=30).map("".join)


@settings(max_examples=GENERATED_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=line, seed=st.integers(0, 2**32 - 1))
def _generated_lines(text, seed):
    masker = Masker.default()  # a fresh cache: the variants hit the entry the first line made
    assert masker.mask(text) == masker.mask_reference(text)
    rng = random.Random(seed)
    for _ in range(3):
        variant = _redraw(text, rng)
        assert masker.mask(variant) == masker.mask_reference(variant), variant
        CASES["generated_variants"] += 1
    CASES["generated"] += 1


def test_generated_lines_and_digit_variants_mask_as_the_reference():
    _generated_lines()
    assert CASES["generated"] >= GENERATED_EXAMPLES and CASES["generated_variants"] >= 3 * GENERATED_EXAMPLES


# Rules where a kept digit matters (no number rule behind `0[xX]` to match `1x` the same way):
# one kept digit with two follow characters (the default rules' fast path) and two kept digits.
ZERO_X = Masker.from_rules([{"name": "zero", "pattern": r"0[xX]"}, {"name": "digits", "pattern": r"\d{2,3}"}])
TWO_KEPT = Masker.from_rules(DEFAULT_RULES[:3] + [{"name": "code", "pattern": r"\b7z[a-z]+"},
                                                   {"name": "zero", "pattern": r"0[xX]"},
                                                   {"name": "digits", "pattern": r"\d{2,3}"}])
custom_texts = st.lists(st.lists(st.sampled_from(["7z", "8z", "7Z", "0x", "5x", "0X", "00x", "z", "x", "1", "22", "333",
                                                  "4444", " ", "ab", "-", ".", "\x00"]), max_size=20).map("".join),
                        min_size=1, max_size=5)


@settings(max_examples=CUSTOM_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=custom_texts)
def _custom_rules(texts):
    for rules in (ZERO_X, TWO_KEPT):
        masker = Masker.from_json(rules.to_json())
        for text in texts:
            assert masker.mask(text) == masker.mask_reference(text), text
    CASES["custom_rules"] += 1


def test_custom_rules_with_kept_digits_mask_as_the_reference():
    assert digit_fold(ZERO_X.pattern).keep == {"0": frozenset("xX")}
    assert digit_fold(TWO_KEPT.pattern).keep == {"7": frozenset("z"), "0": frozenset("xX")}
    assert ZERO_X.mask.__func__ is _FastMask._mask_two_follow and TWO_KEPT.mask.__func__ is _FastMask._mask_follow
    _custom_rules()
    assert CASES["custom_rules"] >= CUSTOM_EXAMPLES


def _fold_by_definition(text: str, fold) -> bytes:
    """DigitFold's definition, one character at a time."""
    out = []
    for i, c in enumerate(text):
        if c in "0123456789":
            c = c if c in fold.keep and text[i + 1:i + 2] in fold.keep[c] else fold.target
        out.append(c)
    return "".join(out).encode("utf-8", "surrogatepass")


@settings(max_examples=CUSTOM_EXAMPLES, deadline=None)
@given(text=st.one_of(line, custom_texts.map(" ".join)))
def test_fold_keys_are_the_definition(text):
    raw = text.encode("utf-8", "surrogatepass")
    for rules in (Masker.default(), ZERO_X, TWO_KEPT):
        fast = rules.mask.__self__
        expected = _fold_by_definition(text, fast.fold)
        assert fast._restore(raw, raw.translate(fast.table)) == expected
        if fast.mask.__func__ is _FastMask._mask_two_follow:
            assert fast._key_two_follow(raw) == expected


def test_rules_that_cannot_fold_still_mask_as_the_reference_through_a_plain_cache():
    masker = Masker.from_rules([{"name": "low", "pattern": r"\b[1-5]+\b"}, {"name": "twice", "pattern": r"(\w)\1"}])
    assert digit_fold(masker.pattern) is None
    for text in ["a 12 b 67", "aa 11 b", "x 55 66 x", "9 19 91"]:
        assert masker.mask(text) == masker.mask_reference(text)
        assert masker.mask(text) == masker.mask_reference(text)  # from the cache
    assert masker.cache_info().hits == 4


def test_lone_surrogates_and_non_ascii_digits_mask_as_the_reference():
    masker = Masker.default()
    for text in ["a\ud800 12 ms", "\udcff0x12", "\u0663\u0664 items", "x\u00b2 0x\u0663f", "caf\u00e9 0 x 0X1"]:
        assert masker.mask(text) == masker.mask_reference(text), text


def test_the_cache_is_bounded_and_the_rules_do_not_change():
    fast = _FastMask(Masker.default().regex, cache_size=50)
    for n in range(1000):
        fast.mask(f"user{'x' * (n % 97)} took {n} ms")
    assert fast.cached.cache_info().currsize == 50
    stored = Masker.default().to_json()
    assert Masker.from_json(stored).version == Masker.default().version
