"""docs/configuration.md is the generated reference of the package defaults, key for key."""
import re
from pathlib import Path

from llm4cdsr.config import default_config
from llm4cdsr.reference import config_reference

ROOT = Path(__file__).resolve().parents[1]


def _leaves(cfg: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        out |= _leaves(value, dotted + ".") if isinstance(value, dict) and value else {dotted}
    return out


def test_the_committed_reference_is_the_generated_one():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == config_reference(), "regenerate it: python -m llm4cdsr.reference > docs/configuration.md"


def test_every_default_key_is_in_the_reference_with_a_meaning():
    text = config_reference()
    rows = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| `")}
    missing = _leaves(default_config()) - set(rows)
    assert not missing, f"keys the reference lacks: {sorted(missing)}"
    silent = [key for key, line in rows.items() if line.rstrip().endswith("| |")]
    assert not silent, f"keys without a comment in the defaults: {silent}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_of_the_readme_and_docs_resolves():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#{1,6} (.*)$", linked.read_text(encoding="utf-8"), re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
