"""Runs every code block of README.md as written, so that the README cannot drift.

The blocks run in order, in a scratch clone of the repository's tracked files
(a git repository of its own, its package first on `PYTHONPATH`), with `python`
on the PATH being this interpreter: `sh` blocks through bash, `python` blocks as
files. Afterwards `git status` must be clean there: no documented command writes
into a file the project ships (they write under the ignored `runs/`).
Markers in the README, in an HTML comment before a block, change that:

- `<!-- readme-test: skip, REASON -->`: the block is not run (it installs, needs
  internet or data this test cannot have, or starts a server); it is reported as
  skipped under its name.
- `<!-- readme-test: shorten with ARGS -->`: ARGS is appended to every command of
  the block (e.g. fewer training steps). The README's text before the block must
  say so, in those words, so a reader can shorten it the same way.

`text` and `bibtex` blocks are output, formulas and references, never run.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.conftest import noise_lines

README = REPO_ROOT / "README.md"
RUN = ("sh", "python")
NOT_RUN = ("text", "bibtex")
_MARKER = re.compile(  # A line of its own.
    r"^<!-- readme-test: (?:skip, (?P<reason>.+?)|shorten with (?P<args>.+?)) -->$"
)


@dataclasses.dataclass(frozen=True)
class Block:
    name: str  # '<section slug>-<n>', n counting the section's blocks from 1
    language: str
    code: str
    line: int
    prose: str  # The README's text between the previous block and this one.
    skip: str = None
    shorten: str = None


def _slug(heading):
    return re.sub(r"[^a-z0-9]+", "-", heading.lstrip("#").strip().lower()).strip("-")


def parse_readme(text):
    """The code blocks of a README: fenced ones, and indented ones as `sh`."""
    lines = text.splitlines()
    blocks, counts, prose, marker = [], {}, [], None
    section, index = "top", 0

    def add(language, body, line):
        nonlocal marker, prose
        counts[section] = counts.get(section, 0) + 1
        blocks.append(Block(
            name=f"{section}-{counts[section]}", language=language,
            code="\n".join(body) + "\n", line=line, prose=" ".join(prose),
            skip=marker and marker["reason"], shorten=marker and marker["args"],
        ))
        marker, prose = None, []

    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            start, body = index, []
            index += 1
            while not lines[index].startswith("```"):
                body.append(lines[index])
                index += 1
            add(line[3:].strip(), body, start + 1)
        elif line.startswith("    ") and not lines[index - 1].strip():
            start, body = index, []
            while index < len(lines) and (
                lines[index].startswith("    ") or not lines[index].strip()
            ):
                body.append(lines[index][4:])
                index += 1
            add("sh", [l for l in body if l.strip()], start + 1)
            continue
        elif _MARKER.search(line):
            marker = _MARKER.search(line)
        else:
            if line.startswith("#"):
                section = _slug(line)
            prose.append(line)
        index += 1
    return blocks


BLOCKS = parse_readme(README.read_text())


def _shortened(code, args):
    """`code` with `args` appended to each command, before any comment."""
    commands = code.replace("\\\n", " ").splitlines()
    out = []
    for command in commands:
        if command.strip() and not command.lstrip().startswith("#"):
            command, hash_, comment = command.partition(" #")
            command = f"{command.rstrip()} {args}" + (f"  #{comment}" if hash_ else "")
        out.append(command)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def readme_workspace(tmp_path_factory):
    """The scratch clone the blocks run in (a `pathlib.Path`)."""
    workspace = tmp_path_factory.mktemp("readme")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, check=True,
                             capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO_ROOT / name).is_file():
            (workspace / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, workspace / name)
    _git(workspace, "init", "-q")
    _git(workspace, "add", "-A")
    _git(workspace, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    return workspace


@pytest.fixture(scope="module")
def readme_runs(readme_workspace, tmp_path_factory):
    """Runs the blocks in order; block name -> CompletedProcess."""
    workspace = readme_workspace
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "LRLC_VERBOSE"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(workspace)  # The clone's package, not the installed one.
    runs = {}
    for block in BLOCKS:
        if block.language not in RUN or block.skip:
            continue
        code = _shortened(block.code, block.shorten) if block.shorten else block.code
        if block.language == "python":
            script = bin_dir / f"readme_{block.name}.py"  # Not in the clone.
            script.write_text(code)
            command = ["python", str(script)]
        else:
            command = ["bash", "-e", "-o", "pipefail", "-c", code]
        runs[block.name] = subprocess.run(
            command, cwd=workspace, env=env, capture_output=True, text=True,
            timeout=900,
        )
    runs[_STATUS] = _git(workspace, "status", "--porcelain")
    return runs


_STATUS = "git status"


def _git(workspace, *args):
    return subprocess.run(["git", *args], cwd=workspace, check=True,
                          capture_output=True, text=True)


def test_every_block_has_a_known_language():
    unknown = [(b.name, b.language) for b in BLOCKS if b.language not in RUN + NOT_RUN]
    assert not unknown, f"README blocks without `sh`, `python`, `text` or `bibtex`: {unknown}"
    assert len([b for b in BLOCKS if b.language in RUN and not b.skip]) >= 10


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.shorten], ids=lambda b: b.name)
def test_shortening_is_written_in_the_readme(block):
    assert block.shorten in " ".join(block.prose.split()).replace("`", ""), (
        f"README line {block.line}: the text before the block does not say "
        f"'{block.shorten}'"
    )


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language in RUN],
                         ids=lambda b: b.name)
def test_readme_block_runs(block, readme_runs):
    if block.skip:
        pytest.skip(f"{block.name} (README line {block.line}): {block.skip}")
    result = readme_runs[block.name]
    assert result.returncode == 0, (
        f"README line {block.line} ({block.name}) failed:\n{block.code}\n"
        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-3000:]}"
    )
    if "scripts/" in block.code:  # The scripts are quiet by default.
        assert noise_lines(result.stderr) == []


def test_readme_commands_write_no_tracked_file(readme_runs):
    assert readme_runs[_STATUS].stdout == "", (
        "README commands changed or created files outside runs/:\n"
        + readme_runs[_STATUS].stdout)


def test_nothing_points_outside_the_repository():
    """No ../shared or SPEC for users: only the Development section may say so."""
    user_facing = README.read_text().split("\n## Development")[0]
    for path in [*(REPO_ROOT / "docs").rglob("*.md"),
                 *(REPO_ROOT / "low_rank_local_connectivity").rglob("*.py"),
                 *(REPO_ROOT / "scripts").glob("*.py")]:
        if path.name != "fault_campaign.py":  # A developer tool (CI's data).
            user_facing += path.read_text()
    assert "../shared" not in user_facing and '"shared"' not in user_facing
    assert not re.search(r"\bSPEC\b", user_facing)


# What the README says its commands print or write, checked on the runs above
# (the scripts' own tests rely on these instead of training again).


def test_quick_start_prints_the_table_the_readme_shows(readme_runs, readme_workspace):
    shown = next(b for b in BLOCKS if b.name == "quick-start-1").code.splitlines()
    printed = readme_runs["quick-start-2"].stdout.splitlines()
    header = printed.index(shown[0])  # The same columns, in the same layout.
    rows = printed[header + 1:header + 3]
    for row, shown_row in zip(rows, shown[1:]):
        preset = shown_row.split()[0]
        assert row.split()[0] == preset and len(row) == len(shown_row), (row, shown_row)
        results = json.loads(
            (readme_workspace / "runs" / "quickstart_try" / preset / "results.json").read_text())
        assert results["train_steps"] == 2
        assert row.split()[1:3] == [f"{results['num_parameters']:,}", "2"]
        assert row.split()[3:] == [f"{results['best_valid']['metrics']['accuracy']:.4f}",
                                   f"{results['test']['accuracy']:.4f}"]


def test_training_benchmark_compares_the_trainer_with_its_step_alone(
        readme_runs, readme_workspace):
    assert readme_runs["performance-2"].returncode == 0
    output_dir = readme_workspace / "runs" / "benchmark" / "training"
    report = json.loads((output_dir / "benchmark.json").read_text())
    assert report["rows"] == []
    (row,) = report["training"]
    assert row["preset"] == "mnist_small_conv" and row["batch_size"] == 128
    assert row["backend"] == report["backend"] == "tensorflow"
    assert row["trainer_examples_per_second"] > 0 and row["step_examples_per_second"] > 0
    assert row["fit_examples_per_second"] > 0
    assert row["ratio"] == row["trainer_examples_per_second"] / row["step_examples_per_second"]
    table = (output_dir / "benchmark.md").read_text()
    assert table.startswith("| preset | backend | batch |")
    assert "| mnist_small_conv | tensorflow | 128 |" in table
