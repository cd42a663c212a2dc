"""The configuration reference (docs/configuration.md), generated from the package defaults' comments.

    python -m llm4cdsr.reference > docs/configuration.md

Every key of `defaults/<section>.yaml` carries an inline comment giving its type and meaning; this
page lists them per section, with the default, so that the reference can never drift from the code
(a test compares the committed page with this output).
"""
from __future__ import annotations

import re
import sys
from importlib import resources

ORDER = ["top", "data", "embed", "profile", "model", "train", "eval", "run"]
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")


def _rows(text: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """(intro comment lines, [(dotted key, default, comment)]) of one defaults file."""
    intro, rows, parents = [], [], []
    for line in text.splitlines():
        if not rows and line.startswith("#"):
            intro.append(line.lstrip("# ").rstrip())
            continue
        match = _KEY.match(line)
        if not match:
            continue
        depth = len(match["indent"]) // 2
        parents = parents[:depth] + [match["key"]]
        value = match["value"].strip()
        rows.append((".".join(parents), value, (match["comment"] or "").strip()))
    return intro, rows


def config_reference() -> str:
    folder = resources.files("llm4cdsr") / "defaults"
    names = sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
    names = [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]
    out = ["# Configuration reference", "",
           "Generated from the package defaults (`src/llm4cdsr/defaults/*.yaml`) by `python -m llm4cdsr.reference`;",
           "a test keeps this page equal to that output. Layers: package defaults < preset or file (`-c`) <",
           "dotted command-line overrides (`train.lr=5e-4`). Unknown keys and wrong types are errors.", ""]
    for name in names:
        intro, rows = _rows((folder / f"{name}.yaml").read_text(encoding="utf-8"))
        out += [f"## {'top level' if name == 'top' else f'`{name}`'}", ""]
        if intro:
            out += [" ".join(intro), ""]
        out += ["| key | default | type: meaning |", "|---|---|---|"]
        for key, value, comment in rows:
            dotted = key if name == "top" else f"{name}.{key}"
            cell = comment.replace("|", "\\|")
            default = value.replace("|", "\\|") or "(section)"
            out.append(f"| `{dotted}` | `{default}` | {cell} |" if value else f"| `{dotted}` | | {cell} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(config_reference())
