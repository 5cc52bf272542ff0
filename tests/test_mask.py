"""Masking rules: each kind of variable becomes `<*>`, words stay, and on real logs no two
loghub events share a masked text."""
import csv
import re
from collections import defaultdict

import pytest
from conftest import LOGHUB_SYSTEMS, loghub_file

from detector.core import LogdistillError
from detector.runtime.formats import parse_format
from detector.runtime.mask import DEFAULT_RULES, PLACEHOLDER, Masker

MASK = Masker.default()


@pytest.mark.parametrize("message, masked", [
    ("fetch http://example.org/a?b=1 failed", "fetch <*> failed"),
    ("mail to ops+alerts@example.co.uk bounced", "mail to <*> bounced"),
    ("instance 3f2504e0-4f89-11d3-9a0c-0305e82c3301 spawned", "instance <*> spawned"),
    ("at 2005-06-03-15.42.50.675872 start", "at <*> start"),
    ("on 2024/01/31 12:00:01,123 done", "on <*> done"),
    ("Sat Sep 10 14:00:00 PDT 2005 status", "<*> status"),
    ("took 00:01 here", "took <*> here"),
    ("from 10.250.19.102:54106 ok", "from <*> ok"),
    ("peer fe80::1ff:fe23:4567:890a up", "peer <*> up"),
    ("v6(en0:2607:f140:6000:8:c6b3:1ff:fecd:467f)", "<*>(<*>:<*>)"),
    ("BSSID changed to 00:a2:ee:1a:71:8c", "BSSID changed to <*>"),
    ("Resolved MSRA-SA-41.fareast.corp.microsoft.com to /default-rack", "Resolved <*> to <*>"),
    ("Receiving block blk_-1608999687919862906 src", "Receiving block <*> src"),
    ("Deleting blk_1 blk_2 blk_3", "Deleting <*>"),
    (r"open C:\Windows\System32\x.dll failed", "open <*> failed"),
    ("chdir(/bgl/apps/SWL//2005.09.20-18.06.01) failed", "chdir(<*>) failed"),
    ("loading ./runtime_malloc", "loading <*>"),
    ("register 0x1f3a bad", "register <*> bad"),
    ("sha 9f86d081884c7d659a2feaa0c55ad015 mismatch", "sha <*> mismatch"),
    ("task_1445144423722_0020_m_000000 Task Transitioned", "<*> Task Transitioned"),
    ("Block broadcast_10_piece0 stored (estimated size 2.1 KB, free 4 MB)", "Block <*> stored (estimated size <*>, free <*>)"),
    ("domain storage1024 gone; timeout of 10000ms", "domain <*> gone; timeout of <*>"),
    ("retry -3 of +7 in 1.5 s", "retry <*> of <*> in <*> s"),
    ("L3 EDRAM error(s) on R27-M1-NF-C:J13-U11", "<*> EDRAM error(s) on <*>-<*>-NF-C:<*>-<*>"),
    ("core files for program IMB-MPI1.exe", "core files for program IMB-<*>.exe"),
    ("Shutting down DataNode at dn-3/10.0.0.3", "Shutting down DataNode at dn-<*>/<*>"),
    ("Failed password for root from <*> port <*> ssh2", "Failed password for root from <*> port <*> <*>"),
    ("Dir file [2017-07-03_13,48,39.362458]", "Dir file [<*>]"),
    ("changes-since=2017-05-16T05%3A54%3A58.530160%2B00%3A00 HTTP", "changes-since=<*> HTTP"),
])
def test_each_kind_of_variable_is_masked(message, masked):
    assert MASK.mask(message) == masked


@pytest.mark.parametrize("message", [
    "instruction cache parity error corrected",
    "MDNS: IPV Addr",
    "Processing the event EventType: CONTAINER_REMOTE_CLEANUP",
    "I/O error, TCP/IP stack, read/write",
    "May I ask what happened",
])
def test_words_are_not_variables(message):
    assert MASK.mask(message) == message


def test_a_token_that_holds_a_digit_is_a_variable_whatever_its_digits():
    """Re-drawn digits never make a new masked text (each one would cost an embedding in `score`)."""
    assert MASK.mask("Link Up on en0") == MASK.mask("Link Up on awdl7")
    assert MASK.mask("L3 EDRAM error(s) (dcr 0x0157)") == MASK.mask("L8 EDRAM error(s) (dcr 0x0951)")
    assert MASK.mask("scratchpad portion of L3.........0 (0)") == MASK.mask("scratchpad portion of L9.........7 (2)")


def test_rules_round_trip_as_versioned_data():
    stored = MASK.to_json()
    again = Masker.from_json(stored)
    assert again == MASK and again.version == MASK.version and again.pattern == MASK.pattern
    changed = Masker.from_rules([r for r in DEFAULT_RULES if r["name"] not in ("number", "digit_word")])
    assert changed.version != MASK.version
    assert changed.mask("error 42") == "error 42"  # without the rules that take a bare number


def test_rules_are_one_compiled_regex_used_for_every_call():
    assert MASK.regex is MASK.regex
    assert MASK.regex.sub(PLACEHOLDER, "x 12 y") == "x <*> y"


@pytest.mark.parametrize("stored, message", [
    ("not json", "unreadable"),
    ('{"rules": []}', "unreadable"),
    ('{"start": "", "rules": [{"name": "bad", "pattern": "(unclosed"}]}', "do not compile"),
])
def test_broken_stored_rules_are_a_user_error(stored, message):
    with pytest.raises(LogdistillError, match=message):
        Masker.from_json(stored)


def _samples():
    for system in LOGHUB_SYSTEMS:
        path = loghub_file(system)
        records = list(parse_format(f"loghub:{system}").records(path.open(encoding="utf-8", errors="replace")))
        with open(f"{path}_structured.csv", encoding="utf-8", errors="replace", newline="") as f:
            events = [row["EventId"] for row in csv.DictReader(f)]
        assert len(records) == len(events)
        yield system, [r.message for r in records], events


def _templates(system: str) -> dict[str, str]:
    with open(f"{loghub_file(system)}_templates.csv", encoding="utf-8", errors="replace", newline="") as f:
        return {row["EventId"]: row["EventTemplate"] for row in csv.DictReader(f)}


def _template_words(template: str) -> str:
    """A loghub template with every token that holds a digit made a variable (`en0`, `IPV4`)."""
    return re.sub(r"[\w\-]*\d[\w\-]*", PLACEHOLDER, template)


def test_no_masked_text_merges_two_loghub_events_and_splits_stay_few():
    """Fidelity on all 16 samples (bench/mask.py prints the details): over-masking merges
    events, under-masking leaves ids in. The only merges allowed are of events whose templates
    differ in nothing but a token that holds a digit (an interface `en0`/`awdl0`, `IPV4`/`IPV6`):
    the same words about another instance, which need no second label."""
    total_texts = total_events = 0
    for system, messages, events in _samples():
        templates = _templates(system)
        events_of = defaultdict(set)
        for message, event in zip(messages, events):
            events_of[MASK.mask(message)].add(event)
        merged = {text: ids for text, ids in events_of.items()
                  if len({_template_words(templates[i]) for i in ids}) > 1}
        assert not merged, (system, list(merged.items())[:3])
        total_texts += len(events_of)
        total_events += len(set(events))
    assert total_events == 1363
    assert total_texts < 1.35 * total_events, total_texts


def test_start_check_is_only_a_speed_up_on_real_logs():
    """The token check before the rules changes no result against the bare word-boundary check."""
    plain = Masker(MASK.rules, start=r"(?<![A-Za-z0-9_])(?=\S)")
    for _, messages, _ in _samples():
        for message in messages:
            assert MASK.mask(message) == plain.mask(message), message
