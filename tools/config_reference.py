#!/usr/bin/env python3
"""Print the configuration reference (Markdown) from the settings model, for the README.

python tools/config_reference.py            # print
python tools/config_reference.py --check    # exit 1 when README.md's copy is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edge.config import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def _default(field: Any) -> str:
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return ""
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


def rows(model: type[BaseModel], prefix: str, section: str) -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))
        sub = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is not None and name != "tls":
            table = f"[[{name}]]" if prefix == "" and name == "sources" else f"[{prefix}{name}]"
            out += rows(sub, f"{prefix}{name}.", table)
            continue
        key = f"`{name}`"
        desc = (field.description or "").replace("|", "\\|")
        if name == "tls":
            desc += " Table keys: `ca` (CA certificate), `cert`, `key` (client certificate and key, both or neither)."
        out.append(f"| {section or '(top level)'} | {key} | {_default(field)} | {desc} |")
    return out


def reference() -> str:
    lines = ["| section | key | default | meaning |", "|---|---|---|---|", *rows(Settings, "", "")]
    return "\n".join(lines)


def main() -> int:
    text = reference()
    if "--check" in sys.argv:
        readme = README.read_text()
        current = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip() if BEGIN in readme else ""
        if current != text:
            print("README.md configuration reference is stale: run `python tools/config_reference.py --write`")
            return 1
        return 0
    if "--write" in sys.argv:
        readme = README.read_text()
        head, rest = readme.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
        return 0
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
