"""The docs are true: each query of the SQL cookbook (docs/sql.md) runs on the demo's data and
answers, the generated references match the code, the guides' links resolve, and CI runs the
README's two commands exactly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from demo.run import run_demo
from store import Settings

ROOT = Path(__file__).resolve().parent.parent


def cookbook() -> list[str]:
    """The SQL blocks of the cookbook section of docs/sql.md."""
    guide = (ROOT / "docs" / "sql.md").read_text()
    section = guide.split("\n## SQL cookbook\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def test_the_cookbook_has_five_questions() -> None:
    assert len(cookbook()) == 5


@pytest.fixture
def demo_database(settings: Settings, database_url: str) -> str:
    run_demo(settings, say=lambda line: None, weeks=5)
    return database_url


def test_every_cookbook_query_answers_on_the_demo(demo_database: str) -> None:
    with psycopg.connect(demo_database) as conn:
        for query in cookbook():
            rows = conn.execute(query).fetchall()
            assert rows, f"no rows from:\n{query}"


def test_reference_docs_match_the_code() -> None:
    check = subprocess.run([sys.executable, str(ROOT / "docs" / "generate.py"), "--check"], capture_output=True,
                           text=True, cwd=ROOT, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_ci_runs_the_readme_commands_exactly() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Two commands"):readme.index("## Concepts")]
    commands = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert len(commands) == 2
    for command in commands:
        assert command in ci_lines, f"{command!r} is in the README but .ci/run does not run it"
    assert ci_lines[-1] == commands[-1], "the README's test command is not the last thing .ci/run does"


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_relative_link_in_the_readme_and_guides_resolves() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for document in documents:
        text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (document.parent / path).resolve() if path else document
            if not resolved.exists():
                broken.append(f"{document.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and anchor not in anchors(resolved.read_text()):
                broken.append(f"{document.relative_to(ROOT)}: {target} (no such heading)")
    assert len(documents) > 10
    assert not broken, "\n".join(broken)
