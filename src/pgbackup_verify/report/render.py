"""The one Jinja2 environment of the HTML report, in the manner of pytest-html: templates and
static files are package data (report/templates, report/static), values are autoescaped, and
CSS and JS are inlined from the package because the report is a self-contained file.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

ENV = Environment(
    loader=PackageLoader("pgbackup_verify", "report/templates"),
    autoescape=select_autoescape(enabled_extensions=("html", "j2")),
    # A misspelt field is an error, as it would be in Python, not a silently empty cell.
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@cache
def static(name: str) -> Markup:
    """A file of report/static, trusted as markup: a stylesheet or script inlined into the page."""
    # Our own package file, not data: escaping would break the script's `&&`.
    text = files("pgbackup_verify").joinpath("report", "static", name).read_text(encoding="utf-8")
    return Markup(text.strip())  # noqa: S704


ENV.globals["static"] = static


def render(template: str, /, **context: object) -> Markup:
    """Render a template of report/templates; the result nests unescaped into another template."""
    # Autoescaped output: every value in it is already escaped once.
    return Markup(ENV.get_template(template).render(**context).strip())  # noqa: S704


def render_text(template: str, /, **context: object) -> str:
    """Render markup that leaves the package (pytest-html extras, summary lines) as a plain str.

    A worker's report extras travel to the xdist controller through execnet, which refuses a
    str subclass such as Markup.
    """
    return str(render(template, **context))
