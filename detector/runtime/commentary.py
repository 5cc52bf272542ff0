"""Commentary in a log text: what a line may say about itself beside its event.

A log line is written by whoever controls the logged system, and words added beside its event (that
it is expected, harmless, cleared, a drill) can talk a reader out of it. `core_texts` gives the texts
a judgment must also see so that such words can raise it but not lower it: the text cut where words
added before or after its event would begin (`event_cuts`, by structure alone: what the masker left
as a variable is the event's own data), and the text without what reads as commentary
(`commentary_cuts`: a bracketed aside, a trailing clause, a phrase asserting its own benignity).
Round 0 asks the teacher about them for a text it judged normal and keeps the most suspicious answer
(labeler.label.round0); a bundle scores a new text below its threshold no lower than them
(detector.runtime.bundle). Pure regex: no LLM.
"""
from __future__ import annotations

import re
from functools import lru_cache

from detector.runtime.features import WARNING, severity_class
from detector.runtime.mask import PLACEHOLDER as VARIABLE
from detector.runtime.severity import RuleSet, parse_rules

# Commentary that a line can carry beside its event: an aside in brackets that holds a word and no
# variable; a clause that holds no variable after "; ", " - ", " -- ", a sentence's end (whatever
# precedes the stop) or before a label of two or more words (hyphenated ones too) ending in ":";
# a leading label; and trailing comma clauses of words alone (commas inside the event separate its
# fields, which hold variables or symbols, so only a plain-prose tail goes).
# What the masker left as a variable is the event's own data, so a segment holding one stays.
_ASIDE = re.compile(r"[(\[{][^()\[\]{}]*[)\]}]")
_CLAUSE = re.compile(r"\s+-{1,2}\s+|;\s+|\s*(?<!\.)[.!?](?!\.)\s+(?=[A-Z])"
                     r"|\s+(?=[A-Z][a-z]+(?:-[a-z]+)*(?: [a-z]+(?:-[a-z]+)*){1,5}:\s)")
_LEAD = re.compile(r"^[A-Za-z]+(?: [A-Za-z]+){1,5}:\s+")
_PROSE_TAIL = re.compile(r"(?:,\s+[A-Za-z][A-Za-z' -]*)+[.!]?\s*$")
_WORD = re.compile(r"[A-Za-z]{2,}")


def _squeezed(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _judgeable(candidate: str, masked: str) -> bool:
    """A core worth a question: not the whole text again, and two words at least (less is too little to
    judge alone)."""
    return candidate != _squeezed(masked) and len(_WORD.findall(candidate)) >= 2


def core_text(masked: str) -> str | None:
    """The masked text without commentary-like segments, or None where nothing is taken out or
    fewer than two words would be left (too little to judge alone)."""
    text = _ASIDE.sub(lambda m: m.group(0) if VARIABLE in m.group(0) or not _WORD.search(m.group(0)) else " ",
                      masked)
    first, *rest = _CLAUSE.split(text)
    kept = [clause for clause in rest if VARIABLE in clause]
    if len(kept) < len(rest):  # a clause without the event's data goes; else the text keeps its stops
        text = " ".join([first] + kept)
    text = _LEAD.sub("", text, count=1)
    text = _PROSE_TAIL.sub("", text)
    text = _squeezed(text).strip(" ,;:-")
    return text if _judgeable(text, masked) else None


# A phrase by which a text asserts its own benignity; the event lies before it (a suffix) or after
# the clause it ends (a prefix), whatever separates the two. Beside reassurance: dismissal (safe to
# disregard, can be ignored, a closing "ignore") and rehearsal (a planned drill, a chaos or load test).
_BENIGN = re.compile(
    # the words that lead into the phrase go with it ("which is", "triggered by the", "during a")
    r"\b(?:(?:triggered|caused|generated) )?(?:(?:by|from|during|due to|part of) (?:the |a |an |our )?)?"
    r"(?:(?:which|that|this|it) )?(?:is |are |was )?(?:as )?"
    r"(?:expected|benign|harmless|normal operation|all clear|nothing to (?:do|worry about)"
    r"|no (?:action|alert)s? (?:is )?(?:needed|required)|no impact|false positive"
    r"|(?:safe|fine|ok(?:ay)?) to (?:ignore|disregard|skip)|please (?:ignore|disregard)"
    r"|(?:can|may|should) (?:safely )?be (?:ignored|disregarded)|(?:ignore|disregard)(?= *(?:this|it)? *[.!]? *$)"
    r"|not a real (?:fault|error|issue|problem)|known (?:issue|problem)|ticket closed"
    r"|(?:planned|scheduled) (?:maintenance|failover|outage|downtime|drill|test|exercise)(?: \w+)?(?: in progress)?"
    r"|(?:failover|fire|disaster recovery) drill|(?:chaos|load|smoke|synthetic|canary) test(?:ing)?"
    r"|(?:maintenance|drill|test|exercise) in progress"
    r"|test traffic|handled automatically|auto-recovered)\b", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[,:;|~]|[.!?](?:\s|$)")
_TRAILING_SEPARATORS = re.compile(r"[\s,;:|~/\-(\[{]+$")
_TRAILING_LABEL = re.compile(r"\s*[^\s<>*]+:\s*$")  # "status:" or "SRE-reviewed:" just before the phrase


def _phrase_cuts(base: str) -> list[str]:
    """`base` cut at the phrases asserting its own benignity: the part before the first, less a label
    ending in ":" just before it; the parts after the last one's clause and, unless a variable follows
    it, right after the phrase itself (a prefix may end in no separator). Unchecked, unsqueezed."""
    found = list(_BENIGN.finditer(base))
    if not found:
        return []
    after = base[found[-1].end():]
    end = _CLAUSE_END.search(after)
    right_after = after.strip(" ,;:|~/-")
    return [_TRAILING_SEPARATORS.sub("", _TRAILING_LABEL.sub("", base[:found[0].start()])).strip(),
            after[end.end():].strip(" ,;:|~/-") if end else "",
            "" if right_after.startswith(VARIABLE) else right_after]  # `Expected <*> replicas` is the event


def _worth_asking(cuts: list[str], masked: str) -> list[str]:
    return [c for c in dict.fromkeys(map(_squeezed, cuts)) if _judgeable(c, masked)]


# Where words added beside an event may begin: after a separator (": ", "; ", ", ", a run of symbols
# between spaces such as " - " or " => "), and a separator left at either end of a cut.
_SEPARATOR = re.compile(r"(?:[:;,]|\s[^\w\s<>*\"'(\[{]{1,3})\s+")
_LOOSE_ENDS = re.compile(r"^(?:(?!\S*<\*>)[^\w\s]+\s+)+|(?:\s+(?!\S*<\*>)[^\w\s]+)+$|[:;,]$")
_ADDED_WORDS = 2  # fewer added words are read as the event's own ("error corrected")


def event_cuts(masked: str) -> list[str]:
    """The text cut where words added before or after its event would begin, found by structure
    alone, whatever the words say. A variable is the event's own data, so a text holding one is cut
    right after its last variable (when two words or more follow) and right after the last separator
    before its first variable (when two words or more lead to it). A text holding none has no such
    anchor: it is cut at every word boundary that leaves out two words or more at either end."""
    words = masked.split()
    held = [i for i, word in enumerate(words) if VARIABLE in word]
    if not held:
        cuts = [" ".join(words[:k]) for k in range(len(words) - _ADDED_WORDS, 1, -1)]
        cuts += [" ".join(words[k:]) for k in range(_ADDED_WORDS, len(words) - 1)]
    else:
        cuts = [" ".join(words[:held[-1] + 1])] if len(words) - 1 - held[-1] >= _ADDED_WORDS else []
        lead = " ".join(words[:held[0]]) + " "
        starts = [m.end() for m in _SEPARATOR.finditer(lead)]
        if starts and len(lead[:starts[-1]].split()) >= _ADDED_WORDS:
            cuts.append(lead[starts[-1]:] + " ".join(words[held[0]:]))
    return _worth_asking([_LOOSE_ENDS.sub("", cut) for cut in cuts], masked)


def commentary_cuts(masked: str) -> list[str]:
    """`core_text`, and that core (or the text) cut at a phrase asserting its own benignity
    (`_phrase_cuts`): what reads as commentary taken out. Each has two words at least."""
    core = core_text(masked)
    return _worth_asking(([core] if core else []) + _phrase_cuts(core or masked), masked)


def core_texts(masked: str) -> list[str]:
    """What a judgment of `masked` must also see, so that words added to a line can raise it but not
    lower it: `event_cuts` and `commentary_cuts`."""
    return _worth_asking(event_cuts(masked) + commentary_cuts(masked), masked)


def cuts_worth_asking(masked: str, level: str | None, rules: RuleSet) -> list[str]:
    """The core texts worth a judgment beside `masked`'s own: `commentary_cuts` and, where the text
    shows a fault (a rule of p >= 0.5 found anywhere in it, so that an added "recovered" cannot hide
    its fault words, or a level of warning or worse), also `event_cuts`. The event cuts cost a few
    questions or embeddings per text, so they are kept for the texts whose fault a reassuring clause
    could talk down."""
    if rules.reports_a_fault(masked) or severity_class(level) >= WARNING:
        return core_texts(masked)
    return commentary_cuts(masked)


@lru_cache(maxsize=1)
def shipped_rules() -> RuleSet:
    """The severity rules logdistill ships (prompts/rules.txt): the fault gate of a bundle that carries none."""
    from prompts import default_prompt

    return parse_rules(default_prompt("rules"))
