"""Masking: variable parts of a log message (numbers, ids, addresses, paths, times) -> `<*>`.

The masked message is the deduplication key of the whole pipeline, so the rules are data: a
versioned list stored in the workspace at first ingest and copied into every bundle, so that a
deployed detector masks exactly as the labels were made.

The rules were tuned on the 16 loghub-2k samples against loghub's own EventTemplates
(`bench/mask.py`). Every word that holds a digit is a variable (`en0`, `L3`, `ssh2`; of `IMB-MPI1`
only `MPI1`, so the words around it stay), as log parsers treat it: a digit that changes must
never make a new masked text, since each new text costs `score` an embedding. The events this
merges on loghub differ only in such a word (interfaces `en0`/`awdl0`, `IPV4`/`IPV6`), and no
other masked text covers two events; what still splits an event is words (user names, class
names) that no regex should guess at.

Speed. `Masker.mask_reference` is the definition: one `re.sub` of the combined
regex. `Masker.mask` gives exactly its output, faster, through a bounded cache keyed by the
message with its digits *folded*: the regex is analysed once (`digit_fold`), and when no rule
tells one ASCII digit from another (or only a digit literal right before fixed non-digit
characters does, as `0[xX]` in the hex rule: such a digit is kept where that character
follows), every other digit is replaced by one digit. The regex then takes the same path
through the folded message as through the original, so the match spans are the same; a cached
answer is the masked text itself when no folded digit survived masking (the usual case: the
digits were inside variables), else the spans, re-applied to the original. `1234 ms` and
`9876 ms` share one entry; `12 ms` and `123 ms` do not (digit counts matter to the rules).
Rules that cannot be folded safely (a back-reference, a digit range like `[1-5]`) still get
the cache, keyed by the message as it is. The rules themselves are untouched, so neither their
stored form nor `version` changes.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Callable

try:  # the regex parser: re._parser from Python 3.11, sre_parse before
    import re._parser as _sre_parse
    from re import _constants as _sre
except ImportError:  # pragma: no cover
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

from detector.core import LogdistillError

PLACEHOLDER = "<*>"
MASK_CACHE_SIZE = 100_000  # entries of the folded-message cache of one Masker (about 50 MB when full)
# A message longer than MASK_LIMIT characters is masked as its first MASK_LIMIT characters and one
# `<*>` for the rest: the rules' regex takes time quadratic in the length of some tokens (a long run
# of `é` or `/` takes seconds), so a 10 MB line would take days. No loghub line is that long
# (the longest, in HDFS: 2,521). Messages longer than CACHE_LIMIT bypass the cache, which would
# otherwise hold up to MASK_CACHE_SIZE of them.
MASK_LIMIT = 4096
CACHE_LIMIT = 1024

# Where a variable may start, checked once per position before any rule is tried (this is
# most of the speed: inside words and in plain words nothing else runs). Not inside a word,
# not on white space, and only in a token holding a digit or an address/path character, or
# at a capitalized three-letter word followed by a space (a weekday or month name).
DEFAULT_START = r"(?<![A-Za-z0-9_])(?=\S*?[\d/\\@:.~]|[A-Z][a-z]{2}\s)"

# Order matters: the alternation tries rules left to right at each position, so specific
# shapes (URLs, UUIDs, IPs with ports, timestamps) come before the generic number rule.
DEFAULT_RULES: list[dict[str, str]] = [
    {"name": "url", "pattern": r"\b[a-zA-Z][a-zA-Z0-9+.\-]*+://[^\s\"'<>]+"},
    {"name": "email", "pattern": r"\b[\w.+\-]++@[\w\-]+(?:\.[\w\-]+)+\b"},
    {"name": "uuid", "pattern": r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"},
    {"name": "datetime", "pattern": r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:[-T ]\d{1,2}[:.]\d{2}[:.]\d{2}(?:[.,]\d+)?|[T_]\d[\w,.%+\-]*+)?"},
    {"name": "text_date", "pattern": r"\b(?=[A-Z][a-z]{2}\b)(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),?\s+)?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{1,2}(?:,?\s+\d{4})?(?:\s+\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?)?(?:\s+(?:UTC|GMT|[A-Z]{1,3}[DS]T))?(?:\s+\d{4})?\b"},
    {"name": "mac", "pattern": r"\b[0-9a-fA-F]{2}(?:[:-][0-9a-fA-F]{2}){5,}\b"},
    {"name": "time", "pattern": r"\b\d{1,2}:\d{2}(?::\d{2})?(?:[.,:]\d+)?\b"},
    {"name": "ipv4", "pattern": r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"},
    {"name": "ipv6", "pattern": r"(?<![\w.])(?=[0-9a-fA-F]{0,4}:)(?:(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}|(?:[0-9a-fA-F]{1,4}:){1,7}:(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,6})?)(?![\w:])"},
    {"name": "hostname", "pattern": r"\b[A-Za-z0-9][A-Za-z0-9\-]*+(?:\.[A-Za-z0-9\-]++)*\.(?:com|net|org|edu|gov|mil|int|info|biz|io|local|localdomain|lan|ac|cn|hk|tw|jp|kr|in|ru|de|uk|fr|it|nl|eu|us|br|mx|ca|au)(?::\d{1,5})?(?![\w\-])"},
    {"name": "block_id", "pattern": r"\bblk_-?\d+\b"},
    {"name": "windows_path", "pattern": r"\b[A-Za-z]:\\[^\s,;\"']+"},
    {"name": "unix_path", "pattern": r"(?<![\w.])(?:\.{1,2}|~)?(?:/+[\w.\-@+$~]+)+/*"},
    {"name": "hex", "pattern": r"\b0[xX][0-9a-fA-F]+\b"},
    {"name": "hex_word", "pattern": r"\b(?=[a-fA-F]*+\d)[0-9a-fA-F]{8,}+\b"},
    {"name": "size", "pattern": r"(?<![\w.])\d+(?:\.\d+)?\s?(?:[KMGTP]i?B|B)\b"},
    {"name": "number", "pattern": r"(?<![A-Za-z0-9_])[-+]?\d+(?:\.\d+)*\w*"},
    {"name": "digit_word", "pattern": r"\b(?=\w*?\d)\w++"},
]


@dataclass(frozen=True)
class Masker:
    """Named regex rules applied in one pass by one compiled regex; `version` identifies them."""

    rules: tuple[tuple[str, str], ...]
    start: str = DEFAULT_START

    def __reduce__(self):  # pickled as its rules (the compiled regex and the cache are rebuilt)
        return (type(self), (self.rules, self.start))

    @classmethod
    def default(cls) -> "Masker":
        return cls.from_rules(DEFAULT_RULES)

    @classmethod
    def from_rules(cls, rules: list[dict[str, str]], start: str = DEFAULT_START) -> "Masker":
        masker = cls(tuple((r["name"], r["pattern"]) for r in rules), start)
        try:
            masker.regex
        except re.error as e:
            raise LogdistillError(f"masking rules do not compile: {e}") from None
        return masker

    @classmethod
    def from_json(cls, text: str) -> "Masker":
        """Rules as stored by `to_json` (in a workspace or a bundle)."""
        try:
            data = json.loads(text)
            return cls.from_rules(data["rules"], data["start"])
        except (ValueError, KeyError, TypeError) as e:
            raise LogdistillError(f"stored masking rules are unreadable ({type(e).__name__}: {e})") from None

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "start": self.start, "rules": self.rule_dicts()}, indent=1)

    def rule_dicts(self) -> list[dict[str, str]]:
        return [{"name": n, "pattern": p} for n, p in self.rules]

    @property
    def pattern(self) -> str:
        """The one regex: the start check, then the rules as an alternation; a run of variables
        separated by white space is one match (so `blk_1 blk_2 blk_3` and `blk_1` both give `<*>`)."""
        alternation = "|".join(f"(?:{p})" for _, p in self.rules)
        return f"{self.start}(?:{alternation})(?:\\s+(?:{alternation}))*"

    @property
    def version(self) -> str:
        # A hash of the whole pattern, so a change in how rules combine is a new version too.
        return hashlib.sha256(self.pattern.encode()).hexdigest()[:12]

    @property
    def regex(self) -> re.Pattern[str]:
        # Cached on the frozen instance: the alternation is compiled once per Masker.
        compiled = self.__dict__.get("_regex")
        if compiled is None:
            compiled = re.compile(self.pattern)
            object.__setattr__(self, "_regex", compiled)
        return compiled

    def mask_reference(self, message: str) -> str:
        """The definition of masking: every match of the combined regex becomes `<*>`, then strip
        (past MASK_LIMIT characters the rest of a message is one more `<*>`). `mask` returns
        exactly this, faster; this stays the reference it is tested against."""
        return _mask_long(self.regex, message)

    @property
    def mask(self) -> Callable[[str], str]:
        """message -> masked text (as `mask_reference`), through this Masker's folded-message cache."""
        fast = self.__dict__.get("_fast")
        if fast is None:
            fast = _FastMask(self.regex, MASK_CACHE_SIZE)
            object.__setattr__(self, "_fast", fast)
        return fast.mask

    def cache_info(self) -> functools._CacheInfo:
        """hits, misses, maxsize, currsize of the folded-message cache (hits: no regex ran)."""
        self.mask  # noqa: B018 (creates the cache)
        return self.__dict__["_fast"].cached.cache_info()


# ---------------------------------------------------------------------------- digit folding

@dataclass(frozen=True)
class DigitFold:
    """How to fold a message's ASCII digits without changing what a regex matches.

    Every ASCII digit becomes `target`, except a digit `d` followed by a character of
    `keep[d]` (a rule spells `d` literally there), which stays as it is.
    """

    target: str
    keep: dict[str, frozenset[str]]


_DIGITS = frozenset(range(ord("0"), ord("9") + 1))
_UNIFORM = (_sre.ANY, _sre.AT)  # treat all ASCII digits alike (AT: boundaries; every digit is \w)


def digit_fold(pattern: str) -> DigitFold | None:
    r"""The fold under which `pattern` matches identically, or None where there is none.

    Walks the parsed regex. A digit literal is allowed only when a literal or a class of fixed
    non-digit characters follows it directly (it is then kept before those characters); a
    class must hold all ten digits or none (`\d`, `\w`, `[0-9a-f]`, `[^\s]` are fine,
    `[1-5]` is not); back-references compare text and forbid folding, as does IGNORECASE
    together with a digit literal (its follow set would be case-folded). Any construct this
    walk does not know also forbids it.
    """
    try:
        parsed = _sre_parse.parse(pattern)
    except re.error:
        return None
    keep: dict[str, set[str]] = {}
    ignorecase = bool(parsed.state.flags & re.IGNORECASE)

    def fixed_chars(item) -> set[str] | None:
        """The characters one item matches, when it is a literal or a class of literals."""
        op, av = item
        if op == _sre.LITERAL:
            return {chr(av)}
        if op == _sre.IN and all(o == _sre.LITERAL for o, _ in av):
            return {chr(c) for _, c in av}
        return None

    def class_ok(items) -> bool:
        for op, av in items:
            if op in (_sre.LITERAL, _sre.NOT_LITERAL) and av in _DIGITS:
                return False
            if op == _sre.RANGE:
                lo, hi = av
                if lo <= ord("9") and hi >= ord("0") and not (lo <= ord("0") and hi >= ord("9")):
                    return False
            elif op not in (_sre.LITERAL, _sre.NOT_LITERAL, _sre.NEGATE, _sre.CATEGORY):
                return False
        return True

    def walk(items) -> bool:
        nonlocal ignorecase
        items = list(items)
        for i, (op, av) in enumerate(items):
            if op == _sre.LITERAL:
                if av in _DIGITS:
                    follow = fixed_chars(items[i + 1]) if i + 1 < len(items) else None
                    if not follow or any(c.isdigit() for c in follow):
                        return False
                    keep.setdefault(chr(av), set()).update(follow)
            elif op == _sre.NOT_LITERAL:
                if av in _DIGITS:
                    return False
            elif op == _sre.IN:
                if not class_ok(av):
                    return False
            elif op in _UNIFORM:
                pass
            elif op == _sre.BRANCH:
                if not all(walk(branch) for branch in av[1]):
                    return False
            elif op == _sre.SUBPATTERN:
                ignorecase |= bool(av[1] & re.IGNORECASE)
                if not walk(av[3]):
                    return False
            elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, getattr(_sre, "POSSESSIVE_REPEAT", None)):
                if not walk(av[2]):
                    return False
            elif op == getattr(_sre, "ATOMIC_GROUP", None):
                if not walk(av):
                    return False
            elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
                if not walk(av[1]):
                    return False
            elif op == _sre.GROUPREF_EXISTS:  # the condition asks whether a group took part, not what it holds
                if not walk(av[1]) or (av[2] is not None and not walk(av[2])):
                    return False
            else:  # GROUPREF (a back-reference compares text) and anything unknown
                return False
        return True

    try:
        if not walk(parsed.data) or (keep and ignorecase):
            return None
    except Exception:  # a parser this walk does not understand: no folding, never a wrong one
        return None
    target = next((d for d in "1234567890" if d not in keep), None)
    if target is None:
        return None
    return DigitFold(target, {d: frozenset(chars) for d, chars in keep.items()})


class _FastMask:
    """`regex.sub("<*>", m).strip()` through an LRU cache keyed by the digit-folded message.

    The key is the message's UTF-8 bytes with the digits folded by `bytes.translate` (ASCII
    digits are single bytes in UTF-8, so positions in the decoded key match the message's);
    a digit to keep is put back where its follow character comes next (`0` before `x`/`X`).
    """

    def __init__(self, regex: re.Pattern[str], cache_size: int):
        self.regex = regex
        self.fold = digit_fold(regex.pattern)
        self.cached = functools.lru_cache(maxsize=cache_size)(self._mask_key)
        if self.fold is None:
            self.mask = self._mask_unfolded
            return
        self.table = bytes.maketrans(b"0123456789", self.fold.target.encode() * 10)
        before: dict[str, set[int]] = {}  # follow character -> the digits kept right before it
        for digit, chars in self.fold.keep.items():
            for char in chars:
                before.setdefault(char, set()).add(ord(digit))
        if any(ord(c) > 127 for c in before):  # a follow character of several UTF-8 bytes
            self.fold, self.mask = None, self._mask_unfolded
            return
        # as ints: `120 in raw` is a memchr, `b"x" in raw` first fails an int conversion (several times slower)
        self.follow = [(ord(c), frozenset(d)) for c, d in sorted(before.items())]
        if len(self.fold.keep) == 1:  # one kept digit (the default rules: 0): restored by bytes.replace
            digit = next(iter(self.fold.keep)).encode()
            self.keep_table = bytes.maketrans(b"0123456789".replace(digit, b""), self.fold.target.encode() * 9)
            self.pairs = [(digit + bytes([c]), b"\0" + bytes([c])) for c, _ in self.follow]
            self.final_table = bytes.maketrans(digit + b"\0", self.fold.target.encode() + digit)
        if not self.follow:
            self.mask = self._mask_plain
        elif len(self.follow) == 2 and len(self.fold.keep) == 1:
            self.mask = self._mask_two_follow
        else:
            self.mask = self._mask_follow

    def _mask_key(self, key: str | bytes) -> str | tuple[int, ...]:
        """The masked key, when it shows no folded digit; else the match spans, flattened."""
        text = key if self.fold is None else key.decode("utf-8", "surrogatepass")
        spans: list[int] = []
        for match in self.regex.finditer(text):
            spans += match.span()
        masked = _apply(text, spans)
        if self.fold is None or self.fold.target not in masked:
            return masked
        return tuple(spans)

    def _mask_unfolded(self, message: str) -> str:
        if len(message) > CACHE_LIMIT:
            return _mask_long(self.regex, message)
        answer = self.cached(message)
        return answer if answer.__class__ is str else _apply(message, answer)

    def _restore(self, raw: bytes, key: bytes) -> bytes:
        """Put the kept digits of `raw` back into its folded `key`."""
        out = bytearray(key)
        for char, digits in self.follow:
            at = raw.find(char, 1)
            while at > 0:
                if raw[at - 1] in digits:
                    out[at - 1] = raw[at - 1]
                at = raw.find(char, at + 1)
        return bytes(out)

    def _mask_plain(self, message: str) -> str:
        if len(message) > CACHE_LIMIT:
            return _mask_long(self.regex, message)
        answer = self.cached(message.encode("utf-8", "surrogatepass").translate(self.table))
        return answer if answer.__class__ is str else _apply(message, answer)

    def _mask_follow(self, message: str) -> str:
        if len(message) > CACHE_LIMIT:
            return _mask_long(self.regex, message)
        raw = message.encode("utf-8", "surrogatepass")
        key = raw.translate(self.table)
        if any(char in raw for char, _ in self.follow):
            key = self._restore(raw, key)
        answer = self.cached(key)
        return answer if answer.__class__ is str else _apply(message, answer)

    def _key_two_follow(self, raw: bytes) -> bytes:
        # The default rules' case (`0` kept before `x` or `X`), every step a C call: fold all
        # digits but 0, mark each `0x`/`0X` as NUL + x, fold 0, turn the marks back into 0.
        (a, _), (b, _) = self.follow
        if a in raw or b in raw:
            if 0 in raw:  # a NUL of its own: the slow way
                return self._restore(raw, raw.translate(self.table))
            (pair_a, mark_a), (pair_b, mark_b) = self.pairs
            return raw.translate(self.keep_table).replace(pair_a, mark_a).replace(pair_b, mark_b).translate(self.final_table)
        return raw.translate(self.table)

    def _mask_two_follow(self, message: str) -> str:
        if len(message) > CACHE_LIMIT:
            return _mask_long(self.regex, message)
        answer = self.cached(self._key_two_follow(message.encode("utf-8", "surrogatepass")))
        return answer if answer.__class__ is str else _apply(message, answer)


def _mask_long(regex: re.Pattern[str], message: str) -> str:
    """`message` masked by `regex` without a cache; past MASK_LIMIT characters the rest is one `<*>`."""
    if len(message) <= MASK_LIMIT:
        return regex.sub(PLACEHOLDER, message).strip()
    return f"{regex.sub(PLACEHOLDER, message[:MASK_LIMIT]).strip()} {PLACEHOLDER}"


def _apply(text: str, spans) -> str:
    """`text` with each (start, end) span (flattened, in order) replaced by `<*>`, stripped."""
    if not spans:
        return text.strip()
    parts = [text[:spans[0]]]
    for i in range(1, len(spans) - 1, 2):
        parts.append(text[spans[i]:spans[i + 1]])
    parts.append(text[spans[-1]:])
    return PLACEHOLDER.join(parts).strip()
