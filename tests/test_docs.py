"""The documentation stays true: README.md and docs/**/*.md link only to files that exist, every `csil-diag …`
command line in them parses with the CLI's own parser (nothing runs: click's make_context invokes no callback),
and the README stays short."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import warnings
from pathlib import Path

import pytest
import typer

from csil_diag.cli import app

try:  # typer ≥ 0.2x parses with its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # older typer: click itself
    from click import UsageError

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>```|~~~)(?P<info>[^\n]*)\n(?P<body>.*?)^[ \t]*(?P=fence)[ \t]*$", re.M | re.S
)
INLINE_CODE = re.compile(r"(?<!`)`(?P<code>[^`]+)`(?!`)")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
PLACEHOLDER = re.compile(r"<(?P<name>[A-Za-z][\w.-]*)>")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
CONTROL = {"|", "||", "&", "&&", ";", ";;", "(", ")", "<", ">", ">>", "2>", "&>"}


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _blank(match: re.Match[str]) -> str:
    """The match replaced by as many newlines as it held, so later offsets keep their line numbers."""
    return "\n" * match.group(0).count("\n")


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link outside code."""
    prose = FENCE.sub(_blank, text)
    prose = INLINE_CODE.sub(lambda m: " " * len(m.group(0)) if "\n" not in m.group(0) else _blank(m), prose)
    return [(_line_of(prose, m.start()), m.group("target")) for m in LINK.finditer(prose)]


def commands(text: str) -> list[tuple[int, str]]:
    """(line, command) of every `csil-diag …` line in ```bash blocks (backslash continuations joined) and of every
    inline code span that starts with `csil-diag `."""
    found: list[tuple[int, str]] = []
    for block in FENCE.finditer(text):
        if block.group("info").strip().split(" ")[0] not in ("bash", "sh", "shell", "console"):
            continue
        first = _line_of(text, block.start("body"))
        lines = block.group("body").split("\n")
        i = 0
        while i < len(lines):
            start, line = i, lines[i]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
            words = line.strip()
            while ENV_ASSIGNMENT.match(words):
                words = words.split(None, 1)[1] if " " in words else ""
            if words.startswith("csil-diag ") or words == "csil-diag":
                found.append((first + start, words))
    prose = FENCE.sub(_blank, text)
    for span in INLINE_CODE.finditer(prose):
        code = " ".join(span.group("code").split())
        if code.startswith("csil-diag "):
            found.append((_line_of(prose, span.start()), code))
    return found


def split_command(line: str) -> list[str]:
    """Shell words of the first simple command on the line, without comments, redirections or what follows a pipe;
    placeholders such as `<run>` become concrete words (`run`)."""
    line = PLACEHOLDER.sub(lambda m: m.group("name"), line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    for token in lexer:
        if token in CONTROL:
            break
        words.append(token)
    return words


def _unparsed(ctx) -> list[str]:
    """The words a group left for its subcommand (click keeps the subcommand's name apart, as protected args)."""
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            protected = ctx.protected_args
    return [*protected, *ctx.args]


def parse(words: list[str]) -> None:
    """Parse `csil-diag <words…>` the way the CLI would, group by group, without invoking anything; raise
    UsageError (BadParameter, MissingParameter, NoSuchOption, …) on a line the CLI would refuse."""
    cmd = typer.main.get_command(app)
    name, args = "csil-diag", words[1:]
    parents: list = []
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        while True:
            try:
                ctx = cmd.make_context(name, list(args), parent=parents[-1] if parents else None)
            except typer.Exit:  # --help: printed and exited, so the line is a valid one
                return
            parents.append(ctx)
            if not hasattr(cmd, "resolve_command"):  # a command, not a group
                return
            rest = _unparsed(ctx)
            if not rest:
                # A group invoked with options and no subcommand (`csil-diag demos --task lift …`) is valid only
                # where the group itself runs (invoke_without_command); otherwise click would print its usage.
                if not cmd.invoke_without_command:
                    raise UsageError(f"{name}: a subcommand is missing", ctx)
                return
            name, sub, args = cmd.resolve_command(ctx, rest)
            if sub is None:
                raise UsageError(f"no such command {rest[0]!r}", ctx)
            cmd = sub


def _usage_error(words: list[str]) -> str | None:
    try:
        parse(words)
    except UsageError as e:
        return e.format_message() or f"{type(e).__name__} (a group needs a subcommand)"
    return None


def test_readme_is_short() -> None:
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail into docs/"


def test_docs_exist() -> None:
    assert (ROOT / "docs" / "README.md").is_file()
    assert len(doc_files()) > 2


def test_relative_links_resolve() -> None:
    broken = []
    for path in doc_files():
        for line, target in links(path.read_text(encoding="utf-8")):
            if re.match(r"^(https?:|mailto:)", target) or target.startswith("#"):
                continue
            file_part = target.split("#", 1)[0]
            if not (path.parent / file_part).exists():
                broken.append(f"{_rel(path)}:{line}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_command_lines_parse() -> None:
    bad, n = [], 0
    for path in doc_files():
        for line, command in commands(path.read_text(encoding="utf-8")):
            n += 1
            try:
                words = split_command(command)
            except ValueError as e:  # unbalanced quotes
                bad.append(f"{_rel(path)}:{line}: {command}\n    {e}")
                continue
            error = _usage_error(words)
            if error is not None:
                bad.append(f"{_rel(path)}:{line}: {command}\n    {error}")
    assert n > 20, f"only {n} csil-diag command lines found in the docs"
    assert not bad, "command lines the CLI refuses:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "line",
    [
        "csil-diag entropy --task lift --demos d.hdf5 --out runs/x --steps many",  # not an integer
        "csil-diag entropy --task lift --demos d.hdf5",  # --out missing
        "csil-diag entropy --task lift --demos d.hdf5 --out runs/x --no-such-option 1",
        "csil-diag demos nosuch data/x.hdf5",
        "csil-diag probe",  # a group that needs a subcommand
        "csil-diag vla eval --episodes 3",  # --task missing
    ],
)
def test_bad_lines_are_refused(line: str) -> None:
    assert _usage_error(split_command(line)) is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```bash\ncsil-diag demos --task lift \\\n    --n 5 --out d.hdf5   # a comment\n```\n", ["--n", "5"]),
        ("Run `csil-diag demos info data/x.hdf5` first.\n", ["info"]),
    ],
)
def test_commands_are_found(text: str, expected: list[str]) -> None:
    found = commands(text)
    assert len(found) == 1
    words = split_command(found[0][1])
    assert all(w in words for w in expected)
    assert "#" not in " ".join(words)
    assert _usage_error(words) is None


@pytest.mark.parametrize(
    "line",
    [
        "csil-diag demos --task lift --n 50 --out data/lift.hdf5",  # a group that runs itself (invoke_without_command)
        "csil-diag vla eval --task lift --episodes 5",  # a subcommand two levels down
        "csil-diag entropy --help",
        "CSIL_DIAG_XLA_CACHE=off csil-diag bench --point --demos data/lift_img.hdf5 > bench.log  # comment",
        "csil-diag report runs/a runs/b --out <report>.pdf",  # a placeholder becomes a concrete word
    ],
)
def test_good_lines_parse(line: str) -> None:
    found = commands(f"```bash\n{line}\n```\n")
    assert len(found) == 1
    assert _usage_error(split_command(found[0][1])) is None
