"""Repository-wide pytest hooks.

nbval (run with --nbval-lax by `python3 course.py test`) compares the stored outputs of cells
marked `nbval-check-output`. Some output kinds are never reproducible byte for byte, so they are
left out of that comparison for every notebook:

- text/html: rich reprs (tables, widget fallbacks) embed ids and styling that change between versions;
- application/vnd.plotly.v1+json: the figure JSON embeds plotly's whole template, which changes with plotly;
- application/vnd.jupyter.widget-view+json: widget model ids are random (nbval skips it too; kept explicit);
- stderr: warnings and progress bars from libraries.
"""

NOTEBOOK_SKIP_COMPARE = (
    "text/html",
    "application/vnd.plotly.v1+json",
    "application/vnd.jupyter.widget-view+json",
    "stderr",
)


def pytest_collectstart(collector):
    path = getattr(collector, "path", None)
    if path is None or path.suffix != ".ipynb" or not hasattr(collector, "skip_compare"):
        return
    missing = tuple(kind for kind in NOTEBOOK_SKIP_COMPARE if kind not in collector.skip_compare)
    collector.skip_compare = tuple(collector.skip_compare) + missing
