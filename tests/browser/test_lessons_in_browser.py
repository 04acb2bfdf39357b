"""Every lesson, opened in JupyterLab in a real (headless) browser, runs all its cells without an error,
renders its widgets and plotly figures, and its interactive widgets answer a control change through the
kernel. Screenshots of each lesson's widgets go to the folder named by `screenshots` (browser-screenshots/).

Each new lesson must add an entry to LESSONS (a test fails otherwise), so every widget joins this test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_MS = 600_000  # a lesson's "Run All" in the smoke profile takes well under a minute

# per lesson: how many plotly figures must render, and which interactive widgets (by CSS class) to drive
LESSONS = {
    "00_orientation.ipynb": {"plots": 1, "widgets": []},
    "01_baseline_gpt.ipynb": {"plots": 3, "widgets": []},
    "02_kv_cache.ipynb": {"plots": 2, "widgets": ["kv-calculator"]},
}

# the notebook panel of `path`, found by path (a restored workspace may have other panels open)
JS_PANEL = """(path) => Array.from(window.jupyterapp.shell.widgets('main'))
    .find(w => w.context && w.context.path === path && w.content && w.content.model)"""

JS_RUN_ALL = f"""async (path) => {{
    const panel = ({JS_PANEL})(path);
    window.jupyterapp.shell.activateById(panel.id);
    await panel.sessionContext.ready;
    await window.jupyterapp.commands.execute('notebook:run-all-cells');
}}"""

JS_IDLE = f"""(path) => {{
    const kernel = ({JS_PANEL})(path).sessionContext.session?.kernel;
    return !kernel || kernel.status === 'idle';
}}"""

JS_CELL_REPORT = f"""(path) => {{
    const cells = ({JS_PANEL})(path).content.model.cells;
    const report = {{errors: [], unrun: []}};
    for (let i = 0; i < cells.length; i++) {{
        const cell = cells.get(i);
        if (cell.type !== 'code') continue;
        if (cell.executionCount === null) report.unrun.push(i);
        for (let j = 0; j < cell.outputs.length; j++) {{
            const out = cell.outputs.get(j).toJSON();
            if (out.output_type === 'error') report.errors.push(`cell ${{i}}: ${{out.ename}}: ${{out.evalue}}`);
        }}
    }}
    return report;
}}"""

# how many outputs of the notebook are ipywidgets/anywidget views (each must render in the page)
JS_WIDGET_OUTPUTS = f"""(path) => {{
    const cells = ({JS_PANEL})(path).content.model.cells;
    let n = 0;
    for (let i = 0; i < cells.length; i++) {{
        const cell = cells.get(i);
        if (cell.type !== 'code') continue;
        for (let j = 0; j < cell.outputs.length; j++) {{
            const data = cell.outputs.get(j).toJSON().data || {{}};
            if ('application/vnd.jupyter.widget-view+json' in data) n++;
        }}
    }}
    return n;
}}"""

JS_PLOTS = """() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot'))
    .map(el => (el.data || []).length)"""


def test_every_lesson_has_a_browser_spec():
    lessons = sorted(p.name for p in (ROOT / "lessons").glob("*.ipynb"))
    assert lessons == sorted(LESSONS), "add each new lesson (its plots and widgets) to LESSONS"


def drive_kv_calculator(page, lesson: str) -> None:
    """Change the context length and then the preset; the readout (computed in the kernel) must follow."""
    calc = page.locator(".kv-calculator").first
    readout = calc.locator(".kv-readout")
    before = readout.inner_text()
    box = calc.locator(".kv-context input")
    box.fill("32768")
    box.press("Enter")
    page.wait_for_function("([el, old]) => el.innerText !== old", arg=[readout.element_handle(), before],
                           timeout=30_000)
    after = readout.inner_text()
    assert "32,768" in after, f"{lesson}: kv-calculator readout did not show the new context: {after!r}"
    calc.locator(".kv-preset select").select_option(index=1)
    page.wait_for_function("([el, old]) => el.innerText !== old", arg=[readout.element_handle(), after],
                           timeout=30_000)


DRIVERS = {"kv-calculator": drive_kv_calculator}


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_lesson_runs_and_its_widgets_render(lesson, lab, browser, screenshots):
    spec = LESSONS[lesson]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        path = f"lessons/{lesson}"
        # a workspace of its own, reset: no panels restored from the previous lesson's page
        page.goto(f"{lab}/lab/workspaces/{Path(lesson).stem}/tree/{path}?reset")
        page.wait_for_function(f"(path) => !!window.jupyterapp && !!({JS_PANEL})(path)", arg=path,
                               timeout=120_000)
        page.evaluate(JS_RUN_ALL, path)
        page.wait_for_function(JS_IDLE, arg=path, timeout=RUN_TIMEOUT_MS)
        report = page.evaluate(JS_CELL_REPORT, path)
        assert not report["errors"], f"{lesson}: cells raised errors: {report['errors']}"
        assert not report["unrun"], f"{lesson}: cells never ran (an earlier cell stopped Run All?): {report['unrun']}"

        if spec["plots"]:
            page.wait_for_function(f"({JS_PLOTS})().filter(n => n > 0).length >= {spec['plots']}",
                                   timeout=60_000)
        traces = page.evaluate(JS_PLOTS)
        assert len(traces) >= spec["plots"], f"{lesson}: {len(traces)} plotly figures, expected {spec['plots']}"
        assert all(n > 0 for n in traces), f"{lesson}: a plotly figure rendered without traces: {traces}"
        content = page.content()
        assert "Error displaying widget" not in content, f"{lesson}: a widget failed to display"
        assert not re.search(r"Failed to (load|render) (model|widget)", content), f"{lesson}: widget error"
        widgets = page.evaluate(JS_WIDGET_OUTPUTS, path)
        rendered = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output .jupyter-widgets")
        assert rendered.count() >= widgets, f"{lesson}: {widgets} widget outputs, only {rendered.count()} rendered"
        assert "Loading widget..." not in page.inner_text("body"), f"{lesson}: a widget never finished loading"

        for widget in spec["widgets"]:
            element = page.locator(f".{widget}").first
            element.wait_for(state="visible", timeout=60_000)
            element.scroll_into_view_if_needed()
            element.screenshot(path=str(screenshots / f"{Path(lesson).stem}-{widget}-before.png"))
            DRIVERS[widget](page, lesson)
            element.screenshot(path=str(screenshots / f"{Path(lesson).stem}-{widget}-after.png"))
        plots = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot")
        for i in range(min(plots.count(), 6)):
            plots.nth(i).scroll_into_view_if_needed()
            plots.nth(i).screenshot(path=str(screenshots / f"{Path(lesson).stem}-plot{i}.png"))
    except Exception:
        page.screenshot(path=str(screenshots / f"{Path(lesson).stem}-FAILED.png"), full_page=True)
        raise
    finally:
        try:
            page.evaluate(f"(path) => ({JS_PANEL})(path).sessionContext.shutdown()", f"lessons/{lesson}")
        except Exception:
            pass
        page.close()
