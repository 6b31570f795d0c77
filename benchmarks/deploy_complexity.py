"""Deployment complexity: for each deployment guide, the operator's steps and the lines the
operator writes, and the lines one change takes, against the targets of issue 10.

  steps   the guide's "## Step N: ..." headings (docs/kubernetes.md, docs/slurm.md,
          docs/slurm-from-kubernetes.md)
  lines   non-blank, non-comment lines of what the guide has the operator write: helm values,
          jupyterhub_config.py files, the sudoers rule (docs/slurm.md's block), slurm.conf's
          JWT line and the key's Secret (docs/slurm-from-kubernetes.md's blocks)
  change  lines added or changed by a documented change, from the diff of two tested files:
          "add a GPU profile" = helm-values/base.yaml against base.yaml with the GPU profile
          of tests/test_docs.py under hub.config (docs/profiles.md)

Run from the repository: /opt/carta-hub/venv/bin/python benchmarks/deploy_complexity.py
(--detail: lines per block of each file; --markdown: the tables docs/conf.py puts in
docs/deployment-complexity.md at every build).
"""

import argparse
import difflib
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEP = re.compile(r"^## Step (\d+):", re.MULTILINE)
GPU_MARKERS = ("GPU_PROFILE = ", "GPU_PROFILE end")  # as docs/profiles.md includes it


@dataclass(frozen=True)
class Source:
    """Lines the operator writes: a file, or the indented block of a doc holding ``marker``."""

    path: str
    marker: str = ""

    def text(self):
        text = (ROOT / self.path).read_text()
        return code_block(text, self.marker) if self.marker else text

    def __str__(self):
        return f"{self.path} ({self.marker} block)" if self.marker else self.path


@dataclass(frozen=True)
class Guide:
    title: str
    doc: str
    sources: tuple
    max_steps: int
    max_lines: int


GUIDES = [
    Guide(
        "CARTA on Zero-to-JupyterHub",
        "docs/kubernetes.md",
        (
            Source("helm-values/base.yaml"),
            Source("helm-values/oidc.yaml"),
            Source("docs/kubernetes.md", "carta-hub cephfs-volume"),
        ),
        max_steps=5,
        max_lines=40,
    ),
    Guide(
        "CARTA on a Slurm login node",
        "docs/slurm.md",
        (
            Source("jupyterhub_config/slurm-common.py"),
            Source("jupyterhub_config/slurm-pam.py"),
            Source("docs/slurm.md", "Cmnd_Alias"),
        ),
        max_steps=6,
        max_lines=30,
    ),
    Guide(
        "CARTA on Slurm, Hub on Kubernetes",
        "docs/slurm-from-kubernetes.md",
        (
            Source("helm-values/slurm.yaml"),
            Source("helm-values/oidc.yaml"),
            Source("docs/slurm-from-kubernetes.md", "AuthAltTypes=auth/jwt"),
            Source("docs/slurm-from-kubernetes.md", "kubectl create secret generic"),
        ),
        max_steps=5,
        max_lines=40,
    ),
]
MAX_CHANGE = 8


def written(text):
    """The lines an operator writes: neither blank nor comments."""
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def code_block(text, marker):
    """The code block (fenced, or indented 4 spaces) of a Markdown text that holds ``marker``."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if marker in line)
    if not lines[at].startswith("    "):
        start = max(i for i in range(at) if lines[i].startswith("```"))
        end = next(i for i in range(at, len(lines)) if lines[i].startswith("```"))
        return "\n".join(lines[start + 1 : end])
    start, end = at, at + 1
    while start > 0 and lines[start - 1].startswith("    "):
        start -= 1
    while end < len(lines) and lines[end].startswith("    "):
        end += 1
    return "\n".join(line[4:] for line in lines[start:end])


def steps(doc):
    """The guide's step numbers; they must run 1, 2, ... N."""
    numbers = [int(n) for n in STEP.findall((ROOT / doc).read_text())]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"{doc}: steps numbered {numbers}, not 1..N")
    return len(numbers)


def between(text, start, end):
    """The lines after the one holding ``start`` and before the one holding ``end``."""
    lines = text.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if start in line) + 1
    last = next(i for i in range(first, len(lines)) if end in lines[i])
    return "".join(lines[first:last])


def with_gpu_profile(values, profile):
    """``values`` (a helm values text) with ``profile`` added at the top of hub.config."""
    lines = values.splitlines(keepends=True)
    at = lines.index("  config:\n") + 1
    return "".join(lines[:at] + [profile] + lines[at:])


def _indent(line):
    return len(line) - len(line.lstrip())


def changed_lines(before, after):
    """Non-comment lines added or changed from ``before`` to ``after``."""
    diff = difflib.ndiff(before.splitlines(), after.splitlines())
    return len(written("\n".join(line[2:] for line in diff if line.startswith("+ "))))


def gpu_profile_change():
    base = (ROOT / "helm-values" / "base.yaml").read_text()
    profile = between((ROOT / "tests" / "test_docs.py").read_text(), *GPU_MARKERS)
    return changed_lines(base, with_gpu_profile(base, profile))


def blocks(source):
    """Written lines per block: YAML keys two levels deep (three under hub.config), or
    Python ``c.Section``."""
    counts = {}
    stack = []  # (indent, key) of the enclosing YAML keys
    for line in written(source.text()):
        if source.path.endswith(".py"):
            match = re.match(r"c\.(\w+)", line.strip())
            key = f"c.{match.group(1)}" if match else "(other Python)"
        else:
            indent = _indent(line)
            stack = [(i, k) for i, k in stack if i < indent]
            match = re.match(r"\s*([\w.-]+):", line)
            if match:
                stack.append((indent, match.group(1)))
            keys = [k for _, k in stack]
            key = ".".join(keys[: 3 if keys[:2] == ["hub", "config"] else 2]) or line.strip()
        counts[key] = counts.get(key, 0) + 1
    return counts


def measure():
    """``[(title, value, target, detail)]``: each figure with its target and what it counts."""
    rows = []
    for guide in GUIDES:
        per_source = {str(s): len(written(s.text())) for s in guide.sources}
        rows.append((f"{guide.title}: steps", steps(guide.doc), guide.max_steps, guide.doc))
        rows.append(
            (
                f"{guide.title}: lines written",
                sum(per_source.values()),
                guide.max_lines,
                " + ".join(f"{s} {n}" for s, n in per_source.items()),
            )
        )
    rows.append(
        (
            "Add a GPU profile (Kubernetes): lines",
            gpu_profile_change(),
            MAX_CHANGE,
            "diff of helm-values/base.yaml and base.yaml + tests/test_docs.py GPU_PROFILE",
        )
    )
    return rows


def markdown(rows):
    lines = [
        "| figure | measured | target | met | what is counted |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for title, value, target, detail in rows:
        lines.append(f"| {title} | {value} | <= {target} | {_met(value, target)} | {detail} |")
    return "\n".join(lines) + "\n"


def detail_markdown():
    """Where the written lines are: one table per file, the biggest blocks first."""
    out = []
    for source in (s for guide in GUIDES for s in guide.sources):
        out += [f"`{source}`:", "", "| block | lines |", "| --- | ---: |"]
        out += [f"| `{key}` | {count} |" for key, count in _by_size(blocks(source))]
        out.append("")
    return "\n".join(out)


def _by_size(counts):
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _met(value, target):
    return "yes" if value <= target else f"no, {value - target} over"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--detail", action="store_true", help="lines per block of each file")
    args = parser.parse_args()
    rows = measure()
    if args.markdown:
        print(markdown(rows) + "\n" + detail_markdown(), end="")
        return
    for title, value, target, detail in rows:
        print(f"{title:<48} {value:>4}  target <= {target:<3} {_met(value, target)}")
        print(f"    {detail}")
    if args.detail:
        for source in (s for guide in GUIDES for s in guide.sources):
            print(f"\n{source}")
            for key, count in _by_size(blocks(source)):
                print(f"  {count:>3}  {key}")


if __name__ == "__main__":
    main()
