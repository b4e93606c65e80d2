"""A small report document (headings, text, tables, images) written as Markdown with PNG files and as one
self-contained HTML page (images inlined), atomically."""

from __future__ import annotations

import base64
import html
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKDOWN = "summary.md"
HTML = "report.html"
PLOTS = "plots"

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{font-size:1.3em;margin-top:1.6em}
h3{font-size:1.1em}table{border-collapse:collapse;margin:.8em 0;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}caption{caption-side:bottom;color:#666;
font-size:.9em;padding-top:.3em;text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
p.note{color:#555;font-size:.92em}
"""


@dataclass
class _Block:
    kind: str  # heading | text | note | table | image
    data: dict[str, Any]


@dataclass
class Document:
    """Blocks in order; `write` renders both formats into one folder."""

    title: str
    blocks: list[_Block] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(_Block("heading", {"text": text, "level": level}))

    def text(self, text: str) -> None:
        self.blocks.append(_Block("text", {"text": text}))

    def note(self, text: str) -> None:
        self.blocks.append(_Block("note", {"text": text}))

    def table(self, headers: list[str], rows: list[list[Any]], caption: str | None = None) -> None:
        self.blocks.append(_Block("table", {"headers": headers, "rows": rows, "caption": caption}))

    def image(self, name: str, png: bytes, alt: str) -> None:
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"image name {name!r} must be letters, digits, '-' and '_'")
        self.blocks.append(_Block("image", {"name": name, "png": png, "alt": alt}))

    # ---- rendering
    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            d = b.data
            if b.kind == "heading":
                out += ["#" * (d["level"]) + " " + d["text"], ""]
            elif b.kind in ("text", "note"):
                out += [("_" + d["text"] + "_") if b.kind == "note" else d["text"], ""]
            elif b.kind == "table":
                out += _md_table(d["headers"], d["rows"])
                if d["caption"]:
                    out += ["", f"_{d['caption']}_"]
                out.append("")
            elif b.kind == "image":
                out += [f"![{d['alt']}]({PLOTS}/{d['name']}.png)", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for b in self.blocks:
            d = b.data
            if b.kind == "heading":
                level = min(max(int(d["level"]), 2), 4)
                body.append(f"<h{level}>{html.escape(d['text'])}</h{level}>")
            elif b.kind == "text":
                body.append(f"<p>{_inline(d['text'])}</p>")
            elif b.kind == "note":
                body.append(f'<p class="note">{_inline(d["text"])}</p>')
            elif b.kind == "table":
                head = "".join(f"<th>{html.escape(str(h))}</th>" for h in d["headers"])
                rows = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in d["rows"]
                )
                caption = f"<caption>{html.escape(d['caption'])}</caption>" if d["caption"] else ""
                body.append(f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif b.kind == "image":
                data = base64.b64encode(d["png"]).decode("ascii")
                body.append(f'<img alt="{html.escape(d["alt"])}" src="data:image/png;base64,{data}">')
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )

    def images(self) -> dict[str, bytes]:
        return {b.data["name"]: b.data["png"] for b in self.blocks if b.kind == "image"}

    def write_into(self, folder: Path) -> list[Path]:
        """Write summary.md, report.html and plots/*.png into an existing folder (each file atomically)."""
        written = [
            write_bytes(folder / MARKDOWN, self.markdown().encode()),
            write_bytes(folder / HTML, self.html().encode()),
        ]
        for name, png in self.images().items():
            written.append(write_bytes(folder / PLOTS / f"{name}.png", png))
        return written


def write_bytes(path: Path, data: bytes) -> Path:
    """Write a file atomically (temporary sibling, then rename), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return str(value)


def _md_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    def esc(v: Any) -> str:
        return _cell(v).replace("|", "\\|")

    out = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return out


def _inline(text: str) -> str:
    """Escape text for HTML, keeping `code` spans and **bold** from the Markdown source readable."""
    out = html.escape(text)
    parts = out.split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
