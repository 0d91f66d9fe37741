"""The documentation cannot drift from the code.

Every fenced Python block of ``docs/*.md`` (and of the files they include) runs, page by page in one
namespace, in a temporary directory: ``>>>`` blocks as doctests, others as scripts. Every YAML block is
a LightningCLI config whose classes are instantiated. The package's own docstring examples run too. The
docs' Sphinx extension fails the build on a missing docstring or a broken reference, and the API
reference covers every public name.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

import lightning_synflow
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # builds the docs with Sphinx and runs their examples

ROOT = REPO_ROOT
DOCS = ROOT / "docs"
DEFAULT_CONFIG = ROOT / "configs" / "digits_synflow.yaml"
OPTIONAL_DEPENDENCIES = ("wandb", "torchvision", "transformers")
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_OPTION = re.compile(r"^:(?P<name>[\w-]+):\s*(?P<value>.*)$")


@dataclass
class Block:
    """One fenced code block: where it is, its language and its text."""

    path: Path
    line: int
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _slice(text: str, options: dict[str, str]) -> tuple[str, int]:
    """The part of ``text`` a myst ``{include}`` takes, and the number of lines skipped before it."""
    start = 0
    if "start-after" in options:
        start = text.index(options["start-after"]) + len(options["start-after"])
    elif "start-line" in options:
        start = len("".join(text.splitlines(keepends=True)[: int(options["start-line"])]))
    end = text.index(options["end-before"], start) if "end-before" in options else len(text)
    return text[start:end], text[:start].count("\n")


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened by ``fence``: the same character, at least as many, nothing else."""
    stripped = line.strip()
    return stripped.startswith(fence) and not stripped.strip(fence[0])


def blocks_of(path: Path, text: Optional[str] = None, first_line: int = 1) -> list[Block]:
    """The fenced blocks of a Markdown file, with those of the files it ``{include}``s in their place."""
    lines = (path.read_text() if text is None else text).splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        fence, info = opening["fence"], opening["info"].strip()
        body: list[str] = []
        while index < len(lines) and not _closes(lines[index], fence):
            body.append(lines[index])
            index += 1
        start = first_line + index - len(body)
        index += 1
        language = info.split()[0] if info else ""
        if language == "{include}":
            included = (path.parent / info.split(maxsplit=1)[1]).resolve()
            options = {m["name"]: m["value"].strip('"') for m in map(_OPTION.match, body) if m}
            part, skipped = _slice(included.read_text(), options)
            found += blocks_of(included, part, skipped + 1)
        else:
            found.append(Block(path, start, language, "\n".join(body) + "\n"))
    return found


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _blocks(languages: tuple[str, ...]) -> list[Block]:
    return [b for page in _pages() for b in blocks_of(page) if b.language in languages]


PYTHON = ("python", "py", "pycon")
YAML = ("yaml", "yml")


def _python_pages() -> list[Path]:
    return [page for page in _pages() if any(b.language in PYTHON for b in blocks_of(page))]


def run_python(blocks: list[Block], namespace: dict[str, Any]) -> None:
    """Run ``blocks`` in order in ``namespace``: ``>>>`` blocks as doctests, the others as scripts."""
    for block in blocks:
        if block.text.lstrip().startswith(">>>"):
            test = doctest.DocTestParser().get_doctest(block.text, namespace, block.where, str(block.path), block.line)
            report: list[str] = []
            runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
            runner.run(test, out=report.append, clear_globs=False)
            namespace.update(test.globs)  # a DocTest runs in a copy of the namespace
            assert runner.failures == 0, f"doctest at {block.where} failed:\n" + "".join(report)
        else:
            # Leading newlines keep the page's line numbers in tracebacks.
            code = compile("\n" * (block.line - 1) + block.text, str(block.path), "exec")
            exec(code, namespace)


def test_the_docs_have_runnable_examples() -> None:
    assert len(_python_pages()) >= 4, "the guide pages should show runnable Python examples"
    assert len(_blocks(YAML)) >= 2, "the guide pages should show YAML configs"


@pytest.mark.parametrize("page", _python_pages(), ids=lambda page: page.name)
def test_python_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    blocks = [b for b in blocks_of(page) if b.language in PYTHON]
    run_python(blocks, {"__name__": f"docs_{page.stem}"})


def instantiate_config(config: Path) -> Any:
    """Parse a YAML config with the package's CLI and build every class in it, without running anything."""
    from lightning.pytorch import LightningDataModule, LightningModule

    from lightning_synflow.cli import SynFlowCLI

    return SynFlowCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=["--config", str(config)],
        run=False,
        auto_configure_optimizers=False,
    )


def _merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` written over it: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in update.items():
        both_maps = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both_maps else value
    return merged


def _callback_args(config: dict[str, Any]) -> Optional[dict[str, Any]]:
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        if isinstance(callback, dict) and callback.get("class_path", "").endswith("SynFlowPruning"):
            return callback.get("init_args") or {}
    return None


@pytest.mark.parametrize("block", _blocks(YAML), ids=lambda block: block.where)
def test_yaml_examples_are_valid_configs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A complete config (with ``model`` and ``data``) is built alone; a fragment within the demo config.

    The demo's own callbacks are dropped first, so the fragment's callback is the only one.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = yaml.safe_load(block.text)
    if not {"model", "data"} <= set(config):
        base = yaml.safe_load(DEFAULT_CONFIG.read_text())
        del base["trainer"]["callbacks"]
        config = _merged(base, config)
    example = tmp_path / "example.yaml"
    example.write_text(yaml.safe_dump(config))
    cli = instantiate_config(example)
    expected = _callback_args(config)
    if expected is not None:
        from lightning_synflow import SynFlowPruning

        (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, SynFlowPruning)]
        for name, value in expected.items():
            if hasattr(type(callback), name):
                assert getattr(callback, name) == value, f"{block.where}: {name}"


def _package_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(lightning_synflow.__path__, "lightning_synflow.")]


def test_package_docstring_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pytest --doctest-modules lightning_synflow``, as one test: every ``>>>`` example in the package passes."""
    monkeypatch.chdir(tmp_path)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    report: list[str] = []
    examples = 0
    for name in ["lightning_synflow", *_package_modules()]:
        try:
            module = importlib.import_module(name)
        except ImportError as error:  # a module of an optional extra that is not installed
            if error.name in OPTIONAL_DEPENDENCIES:
                continue
            raise
        for test in finder.find(module, name):
            examples += len(test.examples)
            runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
    assert examples >= 3


# -- The API reference ------------------------------------------------------------------------------

_AUTOMODULE = re.compile(r"^\.\. automodule:: (?P<module>\S+)\n(?P<options>(?:   :.*\n)*)", re.MULTILINE)


def documented_modules() -> set[str]:
    """Modules whose members the API reference documents (``automodule`` without ``:no-members:``)."""
    text = "\n".join(page.read_text() for page in sorted((DOCS / "api").glob("*.md")))
    return {m["module"] for m in _AUTOMODULE.finditer(text) if ":no-members:" not in m["options"]}


@pytest.mark.parametrize(
    "package",
    [
        "lightning_synflow",
        "lightning_synflow.pruning",
        "lightning_synflow.callback",
        "lightning_synflow.export",
        "lightning_synflow.models",
        "lightning_synflow.data",
    ],
)
def test_every_public_name_is_in_the_api_reference(package: str) -> None:
    module = importlib.import_module(package)
    documented = documented_modules()
    missing = []
    for name in module.__all__:
        if name == "__version__":
            continue
        obj = getattr(module, name)
        defined_in = getattr(obj, "__module__", None)
        if defined_in is None:  # a constant: documented where a documented module assigns it
            holders = [m for m in documented if getattr(importlib.import_module(m), name, None) is obj]
            defined_in = holders[0] if holders else None
        if defined_in not in documented:
            missing.append(f"{package}.{name} (defined in {defined_in})")
    assert not missing, f"not in docs/api/*.md: {missing}"


#: Modules left out of the API reference: implementation details behind the documented ones.
INTERNAL_MODULES = {
    "lightning_synflow.__main__",
    "lightning_synflow.callback.thin",
    "lightning_synflow.callback.distributed",
    "lightning_synflow.callback.sharded",
    "lightning_synflow.callback.upkeep",
    "lightning_synflow.graph",
    "lightning_synflow.graph.analysis",
    "lightning_synflow.graph.groups",
    "lightning_synflow.graph.handlers",
    "lightning_synflow.graph.kinds",
    "lightning_synflow.graph.ops",
    "lightning_synflow.graph.tracker",
    "lightning_synflow.graph.values",
    "lightning_synflow.pruning.checks",
    "lightning_synflow.pruning.cut",
    "lightning_synflow.pruning.distributed",
    "lightning_synflow.pruning.scores",
    "lightning_synflow.pruning.select",
    "lightning_synflow.pruning.sharded",
}


def test_every_module_is_in_the_api_reference_or_internal() -> None:
    """A new module is documented (an ``automodule`` in docs/api/*.md) or named internal above, never forgotten."""
    text = "\n".join(page.read_text() for page in sorted((DOCS / "api").glob("*.md")))
    named = {m["module"] for m in _AUTOMODULE.finditer(text)}
    forgotten = sorted(set(_package_modules()) - named - INTERNAL_MODULES)
    assert not forgotten, f"add to docs/api/*.md (or to INTERNAL_MODULES in this file): {forgotten}"
    assert not named - {"lightning_synflow", *_package_modules()}, "docs/api names a module that does not exist"


_PUBLIC_DIRECTIVE = re.compile(r"^\.\. auto(?:function|class):: lightning_synflow\.(?P<name>\w+)$", re.MULTILINE)


def test_the_public_api_page_documents_every_top_level_name_under_its_short_name() -> None:
    """``docs/api/package.md`` documents ``lightning_synflow.X`` for every ``X`` users import, not the internals."""
    documented = set(_PUBLIC_DIRECTIVE.findall((DOCS / "api" / "package.md").read_text()))
    public = set(lightning_synflow.__all__) - {"__version__"}
    assert public <= documented, f"document these in docs/api/package.md: {sorted(public - documented)}"


# -- The README and the guide pages ------------------------------------------------------------------------

README = ROOT / "README.md"
README_MAX_LINES = 250
CODE_LINE_MAX = 88  # longer lines are cut off in the rendered pages
_TABLE_ROW = re.compile(r"^\|(?P<cells>.*)\|\s*$")
_LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


def table_rows(text: str, header: str) -> list[list[str]]:
    """The body rows of the first Markdown table of ``text`` whose header row starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        match = _TABLE_ROW.match(line)
        if match is None:
            break
        rows.append([cell.strip() for cell in match["cells"].split("|")])
    return rows


def _callback_arguments() -> list[str]:
    from lightning_synflow import SynFlowPruning

    return [name for name in inspect.signature(SynFlowPruning.__init__).parameters if name != "self"]


def test_the_readme_is_a_short_introduction() -> None:
    """At most 250 lines: install first, the argument table, the test and demo commands, links to the docs."""
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "the docs are the full reference; keep the README short"
    assert "pip install lightning-synflow" in text
    assert text.index("## Install") < text.index("SynFlowPruning("), "install comes before the first example"
    assert "example_input_array" in text, "the callback example uses the user's own module"
    assert "safetensors" in text, "the dependency list names every core dependency"
    assert "make test" in text and "make demo" in text
    rows = table_rows(text, "| argument | default | meaning |")
    named = {name.strip("` ") for row in rows for name in row[0].split(",")}
    missing = [name for name in _callback_arguments() if name not in named]
    assert not missing, f"README argument table misses {missing}"


def test_the_readme_shows_every_argument_of_prune() -> None:
    from lightning_synflow import prune

    text = README.read_text()
    signature = text[text.index("prune(model, *") :]
    signature = signature[: signature.index("->")]
    missing = [name for name in inspect.signature(prune).parameters if name != "model" and f"{name}=" not in signature]
    assert not missing, f"the README's prune() signature misses {missing}"


def test_the_readme_links_resolve() -> None:
    broken = [m["target"] for m in _LINK.finditer(README.read_text()) if not (ROOT / m["target"]).exists()]
    assert not broken, f"README links to missing files: {broken}"


def test_the_callback_page_has_an_argument_table() -> None:
    """Every ``SynFlowPruning`` argument has a row (name, default, meaning) in docs/callback.md."""
    rows = table_rows((DOCS / "callback.md").read_text(), "| argument | default | meaning |")
    named = [row[0].strip("` ") for row in rows]
    assert named == _callback_arguments(), "one row per argument, in the signature's order"
    assert all(len(row) == 3 and row[1] and row[2] for row in rows), "each row gives a default and a meaning"


def test_code_lines_fit_the_rendered_page() -> None:
    """Code the reader copies has no line over 88 characters: Python, YAML and shell in the guide pages, shell
    commands in the files they include (benchmark output is quoted as the scripts print it)."""
    long = [
        f"{block.where}+{number}"
        for block in _blocks((*PYTHON, *YAML, "bash", "text"))
        if block.path.parent == DOCS or block.language == "bash"
        for number, line in enumerate(block.text.splitlines())
        if len(line) > CODE_LINE_MAX
    ]
    assert not long, f"wrap these code lines at {CODE_LINE_MAX} characters: {long}"


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ANCHOR = re.compile(r"\]\(#(?P<anchor>[\w-]+)\)")


def _slug(heading: str) -> str:
    """GitHub's (and MyST's) anchor of a heading."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def test_the_benchmark_summary_names_the_section_and_date_of_each_figure() -> None:
    text = (ROOT / "BENCHMARKS.md").read_text()
    anchors = {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("## ")}
    rows = table_rows(text, "| measurement |")
    assert rows, "BENCHMARKS.md opens with a summary table"
    for row in rows:
        source = row[-1]
        linked = {m["anchor"] for m in _ANCHOR.finditer(source)}
        assert linked and linked <= anchors, f"summary row {row[0]!r} links to its section"
        assert _DATE.search(source) or "not measured" in row[1], f"summary row {row[0]!r} names its date"


# -- The docs' Sphinx extension ---------------------------------------------------------------------------

_CONF = """
import sys
sys.path[:0] = [{source!r}, {ext!r}]
extensions = ["sphinx.ext.autodoc", "docstring_check"]
docstring_check_packages = [{package!r}]
autodoc_default_options = {{"members": True, "undoc-members": True}}
nitpicky = True
"""


def _toy_project(root: Path, package: str, module_source: str, page: str) -> Path:
    """A Sphinx project documenting a package whose ``impl`` module holds ``module_source``."""
    source, docs = root / "src", root / "docs"
    (source / package).mkdir(parents=True)
    (source / package / "__init__.py").write_text(f'"""Toy package."""\n\nfrom {package}.impl import helper\n')
    (source / package / "impl.py").write_text(textwrap.dedent(module_source))
    docs.mkdir()
    (docs / "conf.py").write_text(_CONF.format(source=str(source), ext=str(DOCS / "_ext"), package=package))
    (docs / "index.rst").write_text(f"Toy\n===\n\n.. automodule:: {package}.impl\n\n{page}\n")
    return docs


def _sphinx_build(docs: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    from sphinx.cmd.build import build_main

    monkeypatch.setattr(sys, "path", list(sys.path))
    return build_main(["-W", "--keep-going", "-q", "-b", "html", str(docs), str(docs / "_build")])


_DOCUMENTED = '''
    """Implementation."""


    def helper() -> int:
        """Documented."""
        return 1
'''


@pytest.mark.parametrize(
    ("case", "extra_source", "page", "message"),
    [
        ("clean", "", "See :func:`{package}.helper`.", None),
        (
            "undocumented",
            "\n\ndef bare() -> None:\n    return None\n",
            "",
            "function {package}.impl.bare has no docstring",
        ),
        ("broken_reference", "", "See :func:`{package}.nowhere`.", "reference target not found: {package}.nowhere"),
    ],
)
def test_docs_build_fails_on_missing_docstring_or_broken_reference(
    case: str,
    extra_source: str,
    page: str,
    message: Optional[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    package = f"toy_{case}"
    docs = _toy_project(tmp_path, package, textwrap.dedent(_DOCUMENTED) + extra_source, page.format(package=package))
    try:
        status = _sphinx_build(docs, monkeypatch)
    finally:
        for name in [name for name in sys.modules if name.startswith(package)]:
            del sys.modules[name]
    errors = capsys.readouterr().err
    if message is None:
        assert status == 0, errors
    else:
        assert status != 0 and message.format(package=package) in errors, errors


# -- The version, written once --------------------------------------------------------------------------


def test_changelog_and_citation_name_the_package_version() -> None:
    version = lightning_synflow.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    released = re.findall(r"^## \[(\d[^\]]*)\]", changelog, flags=re.MULTILINE)
    assert released and released[0] == version, "the newest CHANGELOG release is the package's __version__"
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert str(citation["version"]) == version
    assert {"message", "title", "authors", "preferred-citation"} <= set(citation)
    paper = citation["preferred-citation"]
    assert "2006.05467" in str(paper.get("identifiers", "")) + str(paper.get("url", ""))
    assert [author["family-names"] for author in paper["authors"]] == ["Tanaka", "Kunin", "Yamins", "Ganguli"]


def test_the_references_multishot_is_described_as_its_current_code_rewinds():
    # Its code since fix 4f834fd rewinds every `.weight`/`.bias` entry; only BatchNorm statistics are not rewound.
    docs = "\n".join(path.read_text() for path in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))])
    flat = " ".join(docs.split())
    assert "so only its optimizer and LR scheduler are reset" not in flat
    assert "ends in `.weight` or `.bias` to its initial value" in flat
    assert "it does not rewind BatchNorm's running statistics" in flat
