"""The page: self-contained HTML with inline CSS and a few lines of plain JavaScript.

Tables whose header is clicked sort by that column (numbers by the ``data-v`` value of a cell,
else its text). On load, the page counts the images that loaded and writes the count into
``<body data-images="loaded/total">`` (a headless browser's ``--dump-dom`` shows it). No URL of
any kind is written: images are PNG data URIs.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1f24;
background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85}main{padding:8px 28px 40px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;margin:16px 0;
padding:10px 18px}h2{font-size:17px;margin:6px 0 10px;color:#1f3a5f}h3{font-size:15px;
margin:14px 0 6px}table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid #e3e6ea;padding:3px 9px;text-align:right;vertical-align:middle}
th{background:#eef1f5;position:sticky;top:0}th.sort{cursor:pointer;user-select:none}
th.sort:after{content:" \\2195";color:#99a}td.t,th.t{text-align:left}
tr:hover td{background:#f3f7fc}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #dde1e6;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:20px}.card span{color:#555;font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots img{max-width:100%;border:1px solid #eee}
dl{display:grid;grid-template-columns:max-content auto;gap:3px 14px;margin:4px 0}
dt{font-weight:600}dd{margin:0;word-break:break-all}.note{color:#666;font-size:12px}
.legend i{display:inline-block;width:14px;height:3px;margin:0 4px 3px 10px}
img.thumb{display:block}code{background:#f0f2f5;padding:0 3px;border-radius:3px}
"""

JS = """
function cellValue(td){var v=td.getAttribute('data-v');if(v!==null&&v!==''&&!isNaN(+v))
return +v;return td.textContent.trim().toLowerCase();}
function sortTable(th){var table=th.closest('table'),body=table.tBodies[0],
col=Array.prototype.indexOf.call(th.parentNode.children,th),asc=th.dataset.dir!=='asc';
th.dataset.dir=asc?'asc':'desc';var rows=Array.prototype.slice.call(body.rows);
rows.sort(function(a,b){var x=cellValue(a.cells[col]),y=cellValue(b.cells[col]);
if(typeof x!==typeof y){x=String(x);y=String(y);}return (x<y?-1:x>y?1:0)*(asc?1:-1);});
rows.forEach(function(r){body.appendChild(r);});}
document.addEventListener('click',function(e){var th=e.target.closest('th.sort');
if(th)sortTable(th);});
window.addEventListener('load',function(){var imgs=Array.prototype.slice.call(document.images),
ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;
document.body.setAttribute('data-images',ok+'/'+imgs.length);});
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: object, digits: int = 3) -> str:
    """A number as the page shows it (``-`` for missing/NaN; integers without decimals)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "-"
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.{digits}f}"
    return str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


@dataclass
class Cell:
    """A table cell with raw HTML (e.g. an image) and the value it sorts by."""

    html: str
    sort: object = ""


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], sortable: bool = True,
          digits: int = 3, cls: str = "") -> str:
    """An HTML table; numbers right-aligned and sorted as numbers, text left-aligned."""
    rows = [list(r) for r in rows]
    text_cols = {k for k in range(len(headers))
                 if any(isinstance(r[k], str) and _number(r[k]) is None and r[k] not in ("", "-")
                        for r in rows)}
    th = "".join(f'<th class="{"sort " if sortable else ""}{"t" if k in text_cols else ""}">'
                 f"{esc(h)}</th>" for k, h in enumerate(headers))
    body = []
    for r in rows:
        cells = []
        for k, v in enumerate(r):
            klass = ' class="t"' if k in text_cols else ""
            if isinstance(v, Cell):
                cells.append(f'<td{klass} data-v="{esc(v.sort)}">{v.html}</td>')
            else:
                n = _number(v)
                sort = "" if n is None else repr(n)
                cells.append(f'<td{klass} data-v="{sort}">{esc(fmt(v, digits))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="{esc(cls)}"><thead><tr>{th}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table>")


def cards(items: Sequence[tuple[str, object, str]]) -> str:
    """Headline numbers: (label, value, tooltip definition)."""
    return '<div class="cards">' + "".join(
        f'<div class="card" title="{esc(tip)}"><b>{esc(fmt(v))}</b><span>{esc(label)}</span>'
        "</div>" for label, v, tip in items) + "</div>"


def definitions(items: Sequence[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"


def image(uri: str, alt: str, cls: str = "") -> str:
    """An ``<img>`` of a data URI (the only kind of image source the page has)."""
    if not uri.startswith("data:image/"):
        raise ValueError("report images must be data URIs")
    return f'<img class="{esc(cls)}" alt="{esc(alt)}" src="{uri}">'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


LEGEND = ('<p class="legend note">outlines: <i style="background:#19c24a"></i>ground truth'
          '<i style="background:#ff3b30"></i>prediction</p>')


@dataclass
class Page:
    """A report page: a title, a subtitle and sections of HTML."""

    title: str
    subtitle: str = ""
    sections: list[tuple[str, str]] = field(default_factory=list)

    def add(self, heading: str, body: str) -> None:
        self.sections.append((heading, body))

    def render(self) -> str:
        parts = "".join(f'<section id="s{k}"><h2>{esc(h)}</h2>{b}</section>'
                        for k, (h, b) in enumerate(self.sections))
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{esc(self.title)}</title><style>{CSS}</style></head>"
                f'<body data-images="loading"><header><h1>{esc(self.title)}</h1>'
                f"<p>{esc(self.subtitle)}</p></header><main>{parts}</main>"
                f"<script>{JS}</script></body></html>\n")
