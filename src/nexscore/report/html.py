"""HTML building blocks of the report and the annotation page: escaping, embedded data,
tables, sections, and the pages themselves, filled from the templates in `templates/`
(package data: the page shells, their stylesheets and scripts, fixed fragments). Everything
is inlined into one file: nothing is fetched at view time.

Templates are plain text with `{{name}}` fields and nothing else (no logic); `render` fills
them in one pass. A value is HTML-escaped unless it is `Markup` (markup built here from escaped
pieces, or a stylesheet/script of the package), so user text cannot reach a page unescaped. A
template is used verbatim: fragment files have no final newline, because the page has none there.
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
from importlib import resources

TEMPLATES = "templates"
_FIELD = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")


class Markup(str):
    """Text that is HTML already: `render` inserts it as it is."""


def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def json_script(element_id: str, obj) -> Markup:
    """Data for the page's scripts; '</' is escaped so the data cannot close the element."""
    text = json.dumps(_clean(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("</", "<\\/").replace("<!--", "<\\!--")
    return Markup(f'<script type="application/json" id="{esc(element_id)}">{text}</script>')


def _clean(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            return _clean(obj.item())
        except (TypeError, ValueError):
            return obj
    return obj


def fmt(x, digits: int = 3, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if pct:
        return f"{100 * x:.1f} %"
    return f"{x:.{digits}f}"


def table(headers: list[str], rows: list[list], cls: str = "", row_classes: list[str] | None = None,
          align: str = "") -> str:
    """A table; cells are escaped unless given as ('html', markup). align: one letter per column,
    "l" for left-aligned text (default: first column left, the others right)."""
    def cell(c, tag, j):
        a = ' class="l"' if j < len(align) and align[j] == "l" else ""
        if isinstance(c, tuple) and c and c[0] == "html":
            return f"<{tag}{a}>{c[1]}</{tag}>"
        return f"<{tag}{a}>{esc(c)}</{tag}>"
    head = "".join(cell(h, "th", j) for j, h in enumerate(headers))
    body = []
    for k, r in enumerate(rows):
        rc = f' class="{esc(row_classes[k])}"' if row_classes and row_classes[k] else ""
        body.append(f"<tr{rc}>" + "".join(cell(c, "td", j) for j, c in enumerate(r)) + "</tr>")
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def note(text: str, kind: str = "note") -> str:
    return f'<p class="{kind}">{esc(text)}</p>'


def figure(svg: str | None, caption: str, missing: str) -> str:
    if svg is None:
        return note(missing)
    return f'<figure>{svg}<figcaption>{caption}</figcaption></figure>'


def section(sid: str, title: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{lead_html}{body}</section>'


@functools.cache
def template(name: str) -> str:
    """The text of templates/NAME (package data; read once)."""
    return (resources.files(__package__) / TEMPLATES / name).read_text(encoding="utf-8")


def render(name: str, **values) -> Markup:
    """templates/NAME with each `{{field}}` replaced by its value: `Markup` as it is, anything
    else escaped. A field without a value or a value without a field is a programming error."""
    text = template(name)
    fields = set(_FIELD.findall(text))
    if fields != set(values):
        raise ValueError(f"template {name}: fields {sorted(fields)} but values for {sorted(values)}")

    def value(m: re.Match) -> str:
        v = values[m.group(1)]
        return v if isinstance(v, Markup) else esc(v)
    return Markup(_FIELD.sub(value, text))


def page(title: str, header: str, nav: list[tuple[str, str]], sections: list[str], data_scripts: list[str],
         footer: str) -> str:
    """A whole report page: header, sections, data scripts and footer are HTML; the report's
    stylesheet and the E/X viewer's script are inlined."""
    nav_html = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t in nav)
    return render("report.html", title=title, css=Markup(template("report.css")), nav=Markup(nav_html),
                  header=Markup(header), sections=Markup("".join(sections)), data=Markup("".join(data_scripts)),
                  footer=Markup(footer), js=Markup(template("report.js")))
