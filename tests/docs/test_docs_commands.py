"""Every command the docs show is run, so the documentation cannot drift from the code.

The blocks checked are the fenced ``sh``, ``bash``, ``console`` and ``python`` blocks of README.md and
docs/*.md. An HTML comment on the line(s) just before a fence says how (README "Documentation check"):

- no comment: the block runs, and must exit 0;
- ``<!-- docs-check: skip (REASON) -->``: not run (real data, hours of compute, a server); counted here;
- ``<!-- docs-check: synopsis -->``: usage lines; every ``bastion CMD --option`` must exist in that
  command's ``--help``;
- ``<!-- docs-check: replace "OLD" "NEW" -->`` (repeatable, with run): exact substring replacement,
  an error if OLD is not in the block. This is the one way sizes are made small.

Each page runs in a fresh folder holding ``runs/demo``, made by ``bastion demo --config
tests/docs/demo-tiny.yaml`` (the real demo takes ~40 min), with ``bastion`` and ``python`` on PATH.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"sh", "bash", "console", "python"}
DIRECTIVE = re.compile(r"<!--\s*docs-check:\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\S*)\s*$")
# The skip count is pinned: a new skip is a conscious change to this number, not a way to hide a failure.
EXPECTED_SKIPS = 12


@dataclass
class Block:
    page: Path
    line: int
    language: str
    text: str
    directives: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"

    @property
    def kind(self) -> str:
        kinds = {d.split()[0] for d in self.directives} - {"replace"}
        if len(kinds) > 1:
            raise ValueError(f"{self.where}: conflicting docs-check directives {sorted(kinds)}")
        return kinds.pop() if kinds else "run"

    def runnable_text(self) -> str:
        """The block with its ``replace`` directives applied; a replacement that matches nothing is an error."""
        text = self.text
        if self.language == "console":  # prompts are commands, the rest is output
            text = "".join(line[2:] + "\n" for line in text.splitlines() if line.startswith("$ "))
        for d in self.directives:
            if d.split()[0] != "replace":
                continue
            args = shlex.split(d)[1:]
            if len(args) != 2:
                raise ValueError(f"{self.where}: replace takes two quoted strings, got {d!r}")
            old, new = args
            if old not in text:
                raise ValueError(f"{self.where}: replace {old!r}: not in the block")
            text = text.replace(old, new)
        return text


def parse_blocks(page: Path) -> list[Block]:
    """The page's fenced command blocks with the directives in the comment lines just above each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, language = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        if language in LANGUAGES:
            directives = []
            k = start - 1
            while k >= 0 and (DIRECTIVE.fullmatch(lines[k].strip()) or not lines[k].strip()):
                if d := DIRECTIVE.fullmatch(lines[k].strip()):
                    directives.insert(0, d.group(1))
                k -= 1
            blocks.append(Block(page, start + 1, language, "\n".join(lines[start + 1 : j]) + "\n", directives))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for page in PAGES for b in parse_blocks(page)]


def test_every_directive_is_known_and_every_skip_gives_a_reason() -> None:
    for b in ALL_BLOCKS:
        assert b.kind in {"run", "skip", "synopsis"}, f"{b.where}: unknown docs-check directive {b.directives}"
        if b.kind == "skip":
            assert re.fullmatch(r"skip \(.+\)", b.directives[0]), f"{b.where}: a skip needs '(reason)'"
        b.runnable_text()  # replacements must match
    skipped = [f"{b.where} {b.directives[0]}" for b in ALL_BLOCKS if b.kind == "skip"]
    assert len(skipped) == EXPECTED_SKIPS, "skipped doc blocks changed:\n" + "\n".join(skipped)
    assert sum(b.kind == "run" for b in ALL_BLOCKS) >= 5


def test_a_directive_is_attached_only_to_the_next_block(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        '<!-- docs-check: replace "--epochs 9" "--epochs 1" -->\n```sh\nbastion train --epochs 9\n```\n\n'
        "text\n```python\nprint(1)\n```\n"
    )
    first, second = parse_blocks(page)
    assert first.directives and first.runnable_text() == "bastion train --epochs 1\n"
    assert second.directives == [] and second.kind == "run"
    page.write_text('<!-- docs-check: replace "--epochs 3" "x" -->\n```sh\nbastion train --epochs 9\n```\n')
    with pytest.raises(ValueError, match="not in the block"):
        parse_blocks(page)[0].runnable_text()


#: Commands of the README's command list the docs check does not run, and why.
NOT_RUN = {"serve": "a server that runs until stopped; tests/unit/deploy covers /v1/predict"}
COMMAND = re.compile(r"(?m)^\s*(?:[A-Z_]+=\S+\s+)*bastion\s+([a-z]+)")


def test_every_command_in_the_readme_list_is_run_by_the_docs_check() -> None:
    """The README's command list is what a new user tries first: each command must run somewhere here
    (``demo`` runs as the ``tiny_demo`` fixture), or be named in ``NOT_RUN`` with the reason."""
    listed = {
        c for b in ALL_BLOCKS if b.kind == "synopsis" and b.page.name == "README.md" for c in COMMAND.findall(b.text)
    }
    run = {c for b in ALL_BLOCKS if b.kind == "run" for c in COMMAND.findall(b.runnable_text())} | {"demo"}
    assert listed >= {"train", "evaluate", "demo", "experiment", "report", "export", "serve"}
    assert sorted(listed - run - set(NOT_RUN)) == []


def _bastion_help(command: str) -> str:
    from typer.testing import CliRunner

    from bastion.cli import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"bastion {command} --help: {result.output}"
    return result.output


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.kind == "synopsis"], ids=lambda b: b.where)
def test_synopsis_options_exist(block: Block) -> None:
    for line in block.text.splitlines():
        words = line.split("#")[0].split()
        if len(words) < 2 or words[0] != "bastion":
            continue
        help_text = _bastion_help(words[1])
        for option in re.findall(r"--[a-z][a-z0-9-]*", line.split("#")[0]):
            assert option in help_text, f"{block.where}: bastion {words[1]} has no option {option}"


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``runs/demo`` as ``make demo`` leaves it, at the tiny size (a fixture, not a doc block)."""
    work = tmp_path_factory.mktemp("docs-demo")
    _run_shell("bastion demo --config tests/docs/demo-tiny.yaml --device cpu --out runs/demo\n", work, "demo fixture")
    return work / "runs" / "demo"


def _environment(work: Path) -> dict[str, str]:
    shims = work / ".bin"
    shims.mkdir(exist_ok=True)
    for name, body in (
        ("bastion", f'exec "{sys.executable}" -m bastion "$@"'),
        ("python", f'exec "{sys.executable}" "$@"'),
    ):
        shim = shims / name
        shim.write_text(f"#!/bin/sh\n{body}\n")
        shim.chmod(0o755)
    for name in ("tests", "bench", "configs"):
        if not (work / name).exists():
            (work / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "100"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return env


def _run_shell(script: str, work: Path, where: str) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=work, env=_environment(work), capture_output=True, text=True
    )
    assert result.returncode == 0, f"{where} failed ({result.returncode}):\n{script}\n{result.stdout}\n{result.stderr}"


def _run_python(code: str, work: Path, where: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=_environment(work), capture_output=True, text=True
    )
    assert result.returncode == 0, f"{where} failed:\n{code}\n{result.stdout}\n{result.stderr}"


RUN_PAGES = sorted({b.page for b in ALL_BLOCKS if b.kind == "run"})


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_commands_run(page: Path, tiny_demo: Path, tmp_path: Path) -> None:
    """A page's blocks run in order in one folder, as a reader would type them."""
    shutil.copytree(tiny_demo, tmp_path / "runs" / "demo")
    for block in (b for b in ALL_BLOCKS if b.page == page and b.kind == "run"):
        text = block.runnable_text()
        if block.language == "python":
            _run_python(text, tmp_path, block.where)
        else:
            _run_shell(text, tmp_path, block.where)
