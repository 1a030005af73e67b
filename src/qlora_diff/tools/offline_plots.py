"""The HTML template of `dvc plots show` and `dvc plots diff` in this project: DVC's own page with vega, vega-lite and
vega-embed inlined instead of loaded from a CDN, so that the plots draw with no network.

The JavaScript comes from vl-convert-python (pinned in requirements.txt), never copied by hand. `.dvc/config` names
the written file (``plots.html_template``), so plain `dvc plots show` uses it. `make setup` runs this module:

    python -m qlora_diff.tools.offline_plots        # writes .dvc/plots/offline.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qlora_diff.core import atomic, paths
from qlora_diff.render import charts

SOURCE = Path(__file__).parent / "templates" / "dvc_plots.html"
MARKER = "<!--VEGA_BUNDLE-->"


def render_template() -> str:
    """DVC's page layout with the bundle inlined; DVC fills ``{plot_divs}`` (and ``{refresh_tag}``) itself, and
    since there is no ``{scripts}`` placeholder it adds no CDN script tags."""
    bundle = charts.javascript_bundle()
    if "</script" in bundle.lower():
        raise ValueError("the vega bundle contains '</script' and cannot be inlined in a <script> element")
    return SOURCE.read_text(encoding="utf-8").replace(MARKER, bundle, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=paths.OFFLINE_PLOTS_PAGE,
                        help=f"where to write the template (default {paths.OFFLINE_PLOTS_PAGE})")
    args = parser.parse_args()
    atomic.write_text(args.out, render_template())
    versions = ", ".join(f"{name} {version}" for name, version in charts.library_versions().items())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB: {versions})")


if __name__ == "__main__":
    main()
