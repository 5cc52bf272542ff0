"""`export` and bundle loading: contents, size, and every kind of bad bundle refused in one line."""
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import Cli, loghub_file

from detector.core import LogdistillError
from detector.runtime.bundle import content_hash, load_bundle
from detector.runtime.commentary import core_texts
from detector.training import defaults
from labeler.store.workspace import open_workspace


def test_bundle_holds_everything_and_is_small(bgl_bundle):
    _, path = bgl_bundle
    assert path.stat().st_size <= 50 * 1024 * 1024
    bundle = load_bundle(path)
    meta = bundle.meta
    assert meta["source_domains"] == ["bgl"] and meta["threshold"] == 0.5  # one source: nothing to hold out
    assert meta["input_format"]["name"] == "loghub:BGL" and meta["embedder"]["kind"] == "minilm"
    assert meta["labels"] == "ground-truth" and "training_metrics" in meta
    assert bundle.masker.mask("took 12 ms") == "took <*> ms"
    assert bundle.predict(bundle.rows(["data TLB error interrupt"])).shape == (1,)


def test_int8_bundle_scores_like_the_float32_one(bgl_bundle, tmp_path):
    import onnx

    workspace, path = bgl_bundle
    result = Cli(workspace)("export", "bgl", "--out", tmp_path / "int8.bundle", "--int8")
    assert result.exit_code == 0 and "int8 weights" in result.stdout, result.output
    full, small = load_bundle(path), load_bundle(tmp_path / "int8.bundle")
    assert (full.meta["weights"], small.meta["weights"]) == ("float32", "int8")
    with zipfile.ZipFile(tmp_path / "int8.bundle") as z:
        ops = {node.op_type for node in onnx.load_from_string(z.read("model.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    texts = sorted({full.masker.mask(line) for line in loghub_file("BGL").read_text().splitlines()})
    vectors = full.rows(texts)
    difference = np.abs(full.predict(vectors) - small.predict(vectors))
    assert 0 < difference.max() < 0.01  # quantized, so not identical; close enough not to matter


def rewrite(src, dst, change):
    """Copy a bundle, letting `change(meta, members)` edit it; the stored hash is kept as it was."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(members.pop("meta.json"))
    change(meta, members)
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("meta.json", json.dumps(meta))
        for name, data in members.items():
            z.writestr(name, data)
    return dst


def tampered(meta, members):
    members["mask.json"] = members["mask.json"].replace(b'"number"', b'"numb3r"')


def newer(meta, members):
    meta["format_version"] = 99
    meta["content_sha256"] = content_hash(members, meta)


@pytest.mark.parametrize("case, message", [
    ("truncated", "truncated or corrupt"), ("tampered", "fails its content hash"),
    ("newer", "format version 99"), ("text", "not a logdistill bundle"), ("zip", "not a logdistill bundle"),
    ("missing", "no bundle at")])
def test_bad_bundles_are_one_line_errors(bgl_bundle, tmp_path, case, message):
    _, good = bgl_bundle
    bad = tmp_path / "bad.bundle"
    if case == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "tampered":
        rewrite(good, bad, tampered)
    elif case == "newer":
        rewrite(good, bad, newer)
    elif case == "text":
        bad.write_text("hello\n")
    elif case == "zip":
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("readme.txt", "not a bundle")
    with pytest.raises(LogdistillError, match=message):
        load_bundle(bad)
    result = Cli(tmp_path / "unused.db")("score", bad, loghub_file("BGL"))
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_export_writes_atomically_and_records_the_run(bgl_bundle, tmp_path):
    workspace, _ = bgl_bundle
    cli = Cli(workspace)
    assert cli("export", "bgl", "--out", tmp_path / "missing" / "x.bundle").exit_code == 2
    result = cli("export", "nope", "--out", tmp_path / "x.bundle")
    assert result.exit_code == 2 and "no trained model 'nope'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_moved_workspace_still_finds_its_embedder_and_models(bgl_bundle, tmp_path, monkeypatch):
    """Artifacts are recorded relative to the workspace's folder, not to the directory it was used from."""
    workspace, _ = bgl_bundle
    moved = tmp_path / "elsewhere" / "cache.db"
    moved.parent.mkdir()
    shutil.copyfile(workspace, moved)
    shutil.copytree(workspace.with_name(workspace.name + ".d"), moved.with_name(moved.name + ".d"))
    monkeypatch.chdir(tmp_path)
    original = workspace.with_name(workspace.name + ".d")
    hidden = original.with_name(original.name + ".hidden")
    original.rename(hidden)  # only the copy's files can be found
    try:
        result = Cli(Path("elsewhere/cache.db"))("export", "bgl", "--out", "moved.bundle")
    finally:
        hidden.rename(original)
    assert result.exit_code == 0, result.output
    assert load_bundle(tmp_path / "moved.bundle").meta["model_name"] == "bgl"


def test_train_records_config_provenance_and_metrics(bgl_bundle):
    workspace, _ = bgl_bundle
    with open_workspace(workspace) as ws:
        row = ws.db["models"].get("bgl")
        runs = [r["command"] for r in ws.db.query("select command from runs")]
    config, metrics = json.loads(row["config"]), json.loads(row["metrics"])
    assert config["params"] == {"kind": "linear", "c": defaults.LINEAR_C} and config["labels"] == "ground-truth"
    assert json.loads(row["provenance"])["labels"] == "ground-truth"
    # the linear detector: one weight per input column (MiniLM's 384, the rules' score, the ordinal level) and a bias
    assert metrics["domains"]["bgl"]["texts"] > 100 and metrics["n_parameters"] == 384 + 1 + 1 + 1
    assert "train" in runs and "export" in runs


def test_train_without_labels_or_with_one_class_fails_cleanly(cli, tmp_path):
    logs = tmp_path / "normal.csv"
    logs.write_text("text,label\n" + "".join(f"job {i} finished in {i} s,0\n" for i in range(30))
                    + "".join(f"worker {i} started,0\n" for i in range(30)))
    assert cli("ingest", logs, "--domain", "app", "--format", "csv", "--label-field", "label").exit_code == 0
    assert cli("embed").exit_code == 0
    result = cli("train")
    assert result.exit_code == 2 and "no soft labels" in result.stderr
    result = cli("train", "--labels", "ground-truth")
    assert result.exit_code == 2 and "are normal: a detector needs both classes" in result.stderr
    result = cli("train", "--domains", "nope", "--labels", "ground-truth")
    assert result.exit_code == 2 and "unknown domain 'nope'" in result.stderr


def test_train_right_after_label_run_embeds_what_is_missing(cli):
    """No separate `embed`: train computes the missing vectors, recorded as their own `embed` run."""
    assert cli("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL").exit_code == 0
    assert cli("label", "run", "--no-llm", "--rules").exit_code == 0
    result = cli("train", "--json")
    assert result.exit_code == 0, result.output
    with open_workspace(cli.workspace) as ws:
        runs = [(r["command"], r["status"], json.loads(r["results"] or "null"))
                for r in ws.db.query("select * from runs order by id")]
        vectors = ws.db["embeddings"].count
    assert [c for c, _, _ in runs] == ["ingest", "label run", "embed", "train"]
    assert all(status == "ok" for _, status, _ in runs)
    assert runs[2][2]["computed"] == vectors == 123 and runs[3][2]["model"] == json.loads(result.stdout)["name"]


def test_a_known_text_scores_with_its_label_an_unknown_one_with_the_model(bgl_bundle):
    """The lookup: a text the bundle was trained on gets LOOKUP_WEIGHT of its training label; `lookup=False`
    (`score --no-lookup`) and a text the bundle never saw get the model alone."""
    from detector.runtime.bundle import LOOKUP_WEIGHT

    _, path = bgl_bundle
    with_lookup, model_only = load_bundle(path), load_bundle(path, lookup=False)
    assert model_only.known_labels is None and len(with_lookup.known_labels) == 123  # BGL_2k's unique texts
    known = next(t for t, label in with_lookup.known_labels.items() if label == 1.0)
    unknown = "a message no BGL line ever held <*>"
    assert unknown not in with_lookup.known_labels
    p_model = model_only.score_masked([known, unknown])
    p_lookup = with_lookup.score_masked([known, unknown])
    assert p_lookup[0] == pytest.approx(LOOKUP_WEIGHT * 1.0 + (1 - LOOKUP_WEIGHT) * p_model[0], abs=1e-6)
    assert p_lookup[1] == pytest.approx(p_model[1], abs=1e-7)


@pytest.mark.parametrize("lookup", [True, False])
def test_a_known_text_is_scored_from_the_bundle_as_if_embedded(bgl_bundle, lookup):
    """The bundle carries the model's score of each text it was trained on, per level: looked up, a known
    text gets the score that embedding it gives (within 1e-6), and only new texts reach the embedder
    (the core cut of new texts left out here: test_a_benign_clause_cannot_lower_a_line_s_score)."""
    import dataclasses

    _, path = bgl_bundle
    loaded = load_bundle(path, lookup=lookup)
    bundle = dataclasses.replace(loaded, meta={k: v for k, v in loaded.meta.items() if k != "core_cut"})
    computed = dataclasses.replace(bundle, known_scores=None)
    assert len(bundle.known_scores) == 123
    known = sorted(bundle.known_scores)[:20]
    new = ["a message no BGL line ever held <*>", "fan <*> speed below threshold on node <*>"]
    texts = known + new + known[:3]
    embedded: list[str] = []
    embed = bundle.embedder.embed
    bundle.embedder.embed = lambda batch: embedded.extend(batch) or embed(batch)
    try:
        for level in ("FATAL", "INFO", "WARNING", None):
            levels = [level] * len(texts)
            embedded.clear()
            looked_up = bundle.score_masked(texts, levels)
            assert embedded == new
            assert np.abs(looked_up - computed.score_masked(texts, levels)).max() <= 1e-6
    finally:
        del bundle.embedder.embed
    assert bundle.score_masked(known[:1], ["FATAL"])[0] != bundle.score_masked(known[:1], ["INFO"])[0]


def test_a_bundle_without_known_scores_scores_as_before(bgl_bundle, tmp_path):
    """A bundle exported before the scores table (no member) embeds every text; a table that does not
    fit the model's level columns is refused as an incomplete bundle."""
    from detector.runtime.bundle import KNOWN_SCORES_MEMBER, META_MEMBER

    _, path = bgl_bundle
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    meta = json.loads(members.pop(META_MEMBER))
    table = json.loads(members.pop(KNOWN_SCORES_MEMBER))

    def write(target: Path, extra: dict[str, bytes]) -> Path:
        content = {**members, **extra}
        with zipfile.ZipFile(target, "w") as archive:
            archive.writestr(META_MEMBER, json.dumps({**meta, "content_sha256": content_hash(content, meta)}))
            for name, data in content.items():
                archive.writestr(name, data)
        return target

    old = load_bundle(write(tmp_path / "old.bundle", {}))
    texts = sorted(load_bundle(path).known_scores)[:10]
    assert old.known_scores is None
    assert np.abs(old.score_masked(texts, ["ERROR"] * 10) - load_bundle(path).score_masked(texts, ["ERROR"] * 10)
                  ).max() <= 1e-6
    table["columns"] = table["columns"][:1]
    with pytest.raises(LogdistillError, match="incomplete"):
        load_bundle(write(tmp_path / "bad.bundle", {KNOWN_SCORES_MEMBER: json.dumps(table).encode()}))


def test_a_benign_clause_cannot_lower_a_line_s_score(bgl_bundle):
    """A bundle scores a new text below its threshold no lower than the text's core texts, whatever the
    added words say: no commented copy scores below min(the event's score, the threshold). A text the
    bundle was trained on keeps its score; a bundle exported before (no `core_cut` in its metadata)
    scores the whole text as it did."""
    import dataclasses

    _, path = bgl_bundle
    bundle = load_bundle(path)
    assert bundle.meta["core_cut"] is True
    event = "ciod: failed to read message prefix on control stream <*>"
    commented = [f"Reviewed, all good: {event}", f"{event} confirmed fine by the night shift", f"{event} => auto-closed by the bot",
                 f"{event} (muted until the upgrade)", f"planned failover drill in progress {event}",
                 f"{event}; this is expected and harmless"]
    texts = [event, *commented]
    levels = ["FATAL"] * len(texts)
    scores = bundle.score_masked(texts, levels)
    assert all(s >= min(scores[0], bundle.threshold) - 1e-6 for s in scores[1:]), scores
    before = dataclasses.replace(bundle, meta={k: v for k, v in bundle.meta.items() if k != "core_cut"})
    whole = before.score_masked(texts, levels)
    assert whole[0] == pytest.approx(scores[0], abs=1e-6) and min(whole[1:]) < min(scores[0], bundle.threshold)
    assert np.array_equal(before.score_masked(texts[1:], levels[1:]), whole[1:])
    known = [t for t in sorted(bundle.known_scores) if core_texts(t)][:20]
    assert np.array_equal(bundle.score_masked(known), before.score_masked(known))  # trained on: no cut


def test_score_and_eval_take_no_lookup(bgl_bundle, tmp_path):
    _, path = bgl_bundle
    cli = Cli(tmp_path / "unused.db")
    runs = {flag: cli("eval", path, loghub_file("BGL"), "--json", *flag) for flag in ((), ("--no-lookup",))}
    assert all(r.exit_code == 0 for r in runs.values()), [r.output for r in runs.values()]
    assert json.loads(runs[()].stdout)["domains"]["BGL_2k.log"]["auroc"] == pytest.approx(1.0)  # known texts
    scored = {flag: cli("score", path, loghub_file("BGL"), "--workers", "1", *flag) for flag in ((), ("--no-lookup",))}
    scores = {flag: [json.loads(line)["score"] for line in result.stdout.splitlines()] for flag, result in scored.items()}
    assert len(scores[()]) == len(scores[("--no-lookup",)]) == 2000 and scores[()] != scores[("--no-lookup",)]
    assert all("(0 embeddings)" in result.stderr for result in scored.values())  # every text known to the bundle


def test_train_adapt_takes_unlabeled_domains_and_refuses_bad_ones(tmp_path):
    cli = Cli(tmp_path / "cache.db")
    for args in (("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL"),
                 ("ingest", loghub_file("HDFS"), "--domain", "hdfs", "--format", "loghub:HDFS")):
        assert cli(*args).exit_code == 0
    maidlog = ("--detector", "maidlog", "--epochs", "2")  # --adapt trains its discriminator
    result = cli("train", "--labels", "ground-truth", *maidlog, "--out", "adapted", "--adapt", "hdfs", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["config"]["adapt"] == ["hdfs"] and row["config"]["domains"] == ["bgl"]
    assert cli("export", "adapted", "--out", tmp_path / "adapted.bundle").exit_code == 0
    assert load_bundle(tmp_path / "adapted.bundle").meta["adapt_domains"] == ["hdfs"]
    for args, message in ((("--adapt", "nope", *maidlog), "unknown domain 'nope'"),
                          (("--domains", "bgl", "--adapt", "bgl", *maidlog), "both labeled sources and unlabeled --adapt"),
                          (("--adapt", "hdfs"), "use it with --detector maidlog"),
                          (("--epochs", "3"), "the linear detector takes no --epochs"),
                          (("--detector", "maidlog", "--c", "1"), "the maidlog detector takes no --c"),
                          (("--detector", "forest",), "unknown detector 'forest'")):
        bad = cli("train", "--labels", "ground-truth", *args)
        assert bad.exit_code == 2 and message in bad.stderr and "Traceback" not in bad.output, bad.output


def test_train_level_encoding_one_hot_keeps_a_column_per_level_and_a_bad_one_fails(bgl_bundle, tmp_path):
    workspace, default_bundle = bgl_bundle
    copy = tmp_path / "cache.db"  # the session's workspace stays as it is
    shutil.copyfile(workspace, copy)
    shutil.copytree(workspace.with_name(workspace.name + ".d"), copy.with_name(copy.name + ".d"))
    cli = Cli(copy)
    result = cli("train", "--labels", "ground-truth", "--out", "onehot", "--level-encoding", "one-hot", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["n_parameters"] == 384 + 1 + 6 + 1
    assert cli("export", "onehot", "--out", tmp_path / "onehot.ldb").exit_code == 0
    assert load_bundle(tmp_path / "onehot.ldb").inputs.level_encoding == "one-hot"
    assert load_bundle(default_bundle).inputs.level_encoding == defaults.LEVEL_ENCODING == "ordinal"
    result = cli("train", "--labels", "ground-truth", "--out", "bad", "--level-encoding", "binary")
    assert result.exit_code == 2 and "unknown level encoding 'binary'" in result.stderr
    with open_workspace(copy) as ws:
        assert ws.db["models"].count_where("name = ?", ["bad"]) == 0


def test_a_bundle_masks_by_the_rules_it_was_trained_under(tmp_path):
    """A workspace made under older rules (before a token holding a digit was a variable) exports a
    bundle that masks as it did: `L3` and `L7` stay two texts there, one under the default."""
    from detector.runtime.mask import DEFAULT_RULES, Masker
    from detector.runtime.scorer import CachedScorer

    older = Masker.from_rules([r for r in DEFAULT_RULES if r["name"] != "digit_word"])
    cli = Cli(tmp_path / "old.db")
    with open_workspace(cli.workspace) as ws:
        ws.set_setting("mask_rules", older.to_json())
    for args in (("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL"), ("embed",),
                 ("train", "--labels", "ground-truth", "--out", "bgl"), ("export", "bgl", "--out", tmp_path / "b.ldb")):
        assert cli(*args).exit_code == 0
    bundle = load_bundle(tmp_path / "b.ldb")
    assert bundle.masker.version == older.version != Masker.default().version
    lines = ["L3 EDRAM error(s) (dcr 0x0157) detected and corrected", "L7 EDRAM error(s) (dcr 0x0157) detected and corrected"]
    masked, scores = CachedScorer(bundle).masked_and_scores(lines)
    assert masked[0] != masked[1] and masked == [older.mask(line) for line in lines]
    assert scores == [float(p) for p in bundle.score_masked(masked)]
