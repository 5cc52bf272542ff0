"""What the demo found: its stages, label quality per round and source, and the unseen system's scores."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Stage:
    name: str
    seconds: float
    summary: str
    llm_calls: int = 0


@dataclass
class DemoReport:
    workdir: str
    stages: list[Stage] = field(default_factory=list)
    label_quality: list[dict] = field(default_factory=list)  # per source domain, after the last round
    rounds: list[dict] = field(default_factory=list)  # per round: re-asked, flips, calls, label quality
    target: dict = field(default_factory=dict)  # name -> per-line metrics on the unseen system
    files: dict = field(default_factory=dict)  # what was written where
    flagged: list[dict] = field(default_factory=list)  # the unseen system's top-scored lines
    sessions: dict = field(default_factory=dict)  # scorer -> per-session metrics on the block sessions
    trades: list[str] = field(default_factory=list)  # what this run gave up for speed, and how to have it

    @property
    def llm_calls(self) -> int:
        return sum(s.llm_calls for s in self.stages)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def to_dict(self) -> dict:
        return {**asdict(self), "llm_calls": self.llm_calls, "seconds": round(self.seconds, 1)}


def markdown_report(report: DemoReport) -> str:
    """The report as Markdown (the CLI prints the same content as rich tables)."""
    lines = ["# logdistill demo report", "",
             f"{len(report.stages)} stages, {report.seconds:.0f} s, {report.llm_calls} LLM calls.", "",
             *[f"Trade: {t}" for t in report.trades], *([""] if report.trades else []),
             "| stage | seconds | LLM calls | result |", "|---|---:|---:|---|"]
    lines += [f"| {s.name} | {s.seconds:.1f} | {s.llm_calls} | {s.summary} |" for s in report.stages]
    if report.rounds:
        columns = list(report.rounds[0])
        lines += ["", "## Rounds (label quality where the source has ground truth)", "",
                  "| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
        lines += ["| " + " | ".join(_fmt(r.get(c)) if isinstance(r.get(c), float) or r.get(c) is None else str(r[c])
                                    for c in columns) + " |" for r in report.rounds]
    lines += ["", "## Label quality on the sources (per unique text; only `hpc` has ground truth)", "",
              "| domain | texts | anomalous | AUROC | precision | recall | F1 |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['domain']} | {r['texts']} | {r['anomalous']} | {_fmt(r['auroc'])} | {_fmt(r['precision'])} "
              f"| {_fmt(r['recall'])} | {_fmt(r['f1'])} |" for r in report.label_quality]
    lines += ["", "## The unseen system (per line)", "",
              "| scorer | AUROC | AUPRC | best F1 | F1 at its threshold (bundle: chosen on held-out sources; "
              "LLM, rules: 0.5) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {_fmt(m['auroc'])} | {_fmt(m['auprc'])} | {_fmt(m['best_f1'])} | {_fmt(m['f1'])} |"
              for name, m in report.target.items()]
    if report.flagged:
        lines += ["", "Highest-scored lines of the unseen system:", ""]
        lines += [f"- {f['score']:.3f} ({'anomalous' if f['truth'] else 'normal'}): `{f['message'][:140]}`"
                  for f in report.flagged]
    if report.sessions:
        some = next(iter(report.sessions.values()))
        lines += ["", "## Sequence faults: storage's HDFS blocks, per session", "",
                  "Every line of a faulty block is routine; the order or the absence of lines is the fault. The "
                  "sequence detector learned every block, without labels; its 0.5 is the 99th percentile of what "
                  f"it learned, so faults as common as these ({some['anomalous']} of {some['sessions']}) can rank "
                  "first and still score below the threshold: rank by `sequence_score` then.", "",
                  f"| scorer | AUROC | best F1 | faulty blocks flagged at the bundle's threshold ({some['threshold']:.3f}) "
                  "| normal blocks flagged | faulty blocks above 95 % of the normal ones |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {name} | {_fmt(m['auroc'])} | {_fmt(m['best_f1'])} | {m['faulty_flagged']} of {m['anomalous']} "
                  f"| {m['normal_flagged']} of {m['sessions'] - m['anomalous']} | {m['caught_at_fpr']} of "
                  f"{m['anomalous']} |" for name, m in report.sessions.items()]
    lines += ["", "## Files", ""] + [f"- {k}: `{v}`" for k, v in report.files.items()]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
