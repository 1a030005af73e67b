"""Charts without a browser or network: Vega-Lite specs rendered to SVG/PNG by vl-convert, and its JavaScript bundle.

vl-convert-python (PyPI, BSD-3-Clause) compiles Vega, Vega-Lite and vega-embed into one wheel: the same pinned
package draws the pictures in the HTML report and the pull-request comment, and supplies the JavaScript that the
offline `dvc plots` template inlines. The charts reuse the project's DVC plot templates (``.dvc/plots``), filled the
way `dvc plots show` fills them, so a chart looks the same in every place it appears.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import vl_convert
from dvc_render import VegaRenderer
from dvc_render.vega_templates import get_template

from qlora_diff.core import paths

# DVC's plot templates, and ours, declare the Vega-Lite v5 schema: render them with the newest v5 that vl-convert has.
VEGA_LITE_VERSION = "5.21"


def filled_spec(template: str, rows: list[dict], x: str, y: str, title: str, revision: str = "workspace",
                template_dir: Path = paths.PLOT_TEMPLATES) -> dict:
    """A DVC plot template (built-in name or ``<template_dir>/<name>.json``) filled with ``rows``, as a Vega-Lite
    spec; ``revision`` is the value `dvc plots` puts in each row's ``rev`` field."""
    renderer = VegaRenderer([{**row, "rev": revision} for row in rows], title,
                            template=get_template(template, str(template_dir)), x=x, y=y, title=title)
    return renderer.get_filled_template()


def to_svg(spec: dict) -> str:
    return vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE_VERSION)


def to_png(spec: dict, scale: float = 1.0) -> bytes:
    return vl_convert.vegalite_to_png(spec, vl_version=VEGA_LITE_VERSION, scale=scale)


def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one classic script that sets ``window.vegaEmbed`` (and ``vega``,
    ``vegaLite``), with all their dependencies: nothing left to fetch."""
    return vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)


def library_versions() -> dict[str, str]:
    """The JavaScript library versions inside the bundle, for the record."""
    return {"vl-convert-python": version("vl-convert-python"), "vega": vl_convert.get_vega_version(),
            "vega-lite": VEGA_LITE_VERSION, "vega-embed": vl_convert.get_vega_embed_version()}
