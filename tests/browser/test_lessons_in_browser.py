"""Every lesson, opened in JupyterLab in a real (headless) browser, runs all its cells without an error,
renders every plotly figure and widget it outputs, and its interactive widgets answer a control change through
the kernel. Screenshots of each lesson's widgets and figures go to the folder named by `screenshots`
(browser-screenshots/).

How many figures must render is read from the executed notebook itself (its outputs of plotly's mime type, once
the kernel is idle and every cell has run), so a lesson that adds a figure needs no edit here. Each new lesson
must add an entry to LESSONS (a test fails otherwise) naming the widgets to drive, so every widget joins this test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the fixtures skip the test with the reason; this module must still import
    PlaywrightTimeout = TimeoutError

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_MS = 600_000  # a lesson's "Run All" in the smoke profile takes well under a minute
RENDER_TIMEOUT_MS = 60_000  # from the end of Run All until every figure and widget has rendered

# per lesson: which interactive widgets (by CSS class) to drive; figures are counted from the notebook's outputs
LESSONS = {
    "00_orientation.ipynb": {"widgets": []},
    "01_baseline_gpt.ipynb": {"widgets": []},
    "02_kv_cache.ipynb": {"widgets": ["kv-calculator"]},
    "03_gqa.ipynb": {"widgets": ["kv-explorer"]},
    "04_mla.ipynb": {"widgets": []},
    "05_rope_absorption.ipynb": {"widgets": []},  # its cache-growth widget becomes a static figure when done
    "06_dense_to_moe.ipynb": {"widgets": []},
    "07_deepseekmoe.ipynb": {"widgets": ["expert-routing"]},
    "08_load_balancing.ipynb": {"widgets": []},  # its expert-load widget becomes a static figure when training ends
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

# a code cell JupyterLab runs: an empty one keeps executionCount null even after Run All
JS_RUNNABLE = """(cell) => cell.type === 'code' && cell.sharedModel.getSource().trim() !== ''"""

# Run All is over: the kernel is idle and every cell has run (or one raised, which stops Run All there). The
# kernel is briefly idle between two cells too, so idle alone would catch Run All halfway.
JS_SETTLED = f"""(path) => {{
    const panel = ({JS_PANEL})(path);
    const kernel = panel.sessionContext.session?.kernel;
    if (kernel && kernel.status !== 'idle') return false;
    const cells = panel.content.model.cells;
    let unrun = false, failed = false;
    for (let i = 0; i < cells.length; i++) {{
        const cell = cells.get(i);
        if (!({JS_RUNNABLE})(cell)) continue;
        if (cell.executionCount === null) unrun = true;
        for (let j = 0; j < cell.outputs.length; j++) {{
            if (cell.outputs.get(j).type === 'error') failed = true;
        }}
    }}
    return !unrun || failed;
}}"""

JS_CELL_REPORT = f"""(path) => {{
    const cells = ({JS_PANEL})(path).content.model.cells;
    const report = {{errors: [], unrun: []}};
    for (let i = 0; i < cells.length; i++) {{
        const cell = cells.get(i);
        if (!({JS_RUNNABLE})(cell)) continue;
        if (cell.executionCount === null) report.unrun.push(i);
        for (let j = 0; j < cell.outputs.length; j++) {{
            const out = cell.outputs.get(j).toJSON();
            if (out.output_type === 'error') report.errors.push(`cell ${{i}}: ${{out.ename}}: ${{out.evalue}}`);
        }}
    }}
    return report;
}}"""

# how many outputs of the executed notebook are of each kind that must render in the page
JS_OUTPUT_COUNTS = f"""(path) => {{
    const cells = ({JS_PANEL})(path).content.model.cells;
    const counts = {{plotly: 0, widgets: 0}};
    for (let i = 0; i < cells.length; i++) {{
        const cell = cells.get(i);
        if (cell.type !== 'code') continue;
        for (let j = 0; j < cell.outputs.length; j++) {{
            const data = cell.outputs.get(j).toJSON().data || {{}};
            if ('application/vnd.plotly.v1+json' in data) counts.plotly++;
            if ('application/vnd.jupyter.widget-view+json' in data) counts.widgets++;
        }}
    }}
    return counts;
}}"""

# what the page shows now: traces per plotly figure (a FigureWidget is one too), rendered widget views,
# and whether a widget still says it is loading
JS_RENDERED = f"""(path) => {{
    const node = ({JS_PANEL})(path).node;
    return {{
        plots: Array.from(node.querySelectorAll('.js-plotly-plot')).map(el => (el.data || []).length),
        widgets: node.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').length,
        loading: node.innerText.includes('Loading widget...'),
    }};
}}"""

# the snapshot once every counted output has rendered (figures with their traces), else false
JS_ALL_RENDERED = f"""([path, expected]) => {{
    const seen = ({JS_RENDERED})(path);
    const drawn = seen.plots.filter(n => n > 0).length;
    const done = drawn >= expected.plotly && drawn === seen.plots.length
        && seen.widgets >= expected.widgets && !seen.loading;
    return done ? seen : false;
}}"""


def wait_until_rendered(page, path: str, lesson: str) -> dict:
    """Wait until every plotly output of the notebook is a figure with traces and every widget has rendered."""
    expected = page.evaluate(JS_OUTPUT_COUNTS, path)
    try:
        handle = page.wait_for_function(JS_ALL_RENDERED, arg=[path, expected], timeout=RENDER_TIMEOUT_MS)
    except PlaywrightTimeout:
        seen = page.evaluate(JS_RENDERED, path)
        pytest.fail(
            f"{lesson}: after {RENDER_TIMEOUT_MS // 1000} s the notebook has {expected['plotly']} plotly outputs "
            f"and {expected['widgets']} widget outputs, but the page shows figures with traces {seen['plots']} "
            f"(one number per .js-plotly-plot), {seen['widgets']} rendered widgets"
            + (" and a widget still loading" if seen["loading"] else "")
        )
    return {"expected": expected, **handle.json_value()}


def test_every_lesson_has_a_browser_spec():
    lessons = sorted(p.name for p in (ROOT / "lessons").glob("*.ipynb"))
    assert lessons == sorted(LESSONS), "add each new lesson (its plots and widgets) to LESSONS"


def drive_context_then_preset(page, lesson: str, widget: str, prefix: str, preset: dict,
                              expect: str | None = None) -> None:
    """Change the widget's context length, then its preset; the readout (computed in the kernel) must follow."""
    root = page.locator(f".{widget}").first
    readout = root.locator(f".{prefix}-readout")
    before = readout.inner_text()
    box = root.locator(f".{prefix}-context input")
    box.fill("32768")
    box.press("Enter")
    page.wait_for_function("([el, old]) => el.innerText !== old", arg=[readout.element_handle(), before],
                           timeout=30_000)
    after = readout.inner_text()
    assert "32,768" in after, f"{lesson}: {widget} readout did not show the new context: {after!r}"
    root.locator(f".{prefix}-preset select").select_option(**preset)
    page.wait_for_function("([el, old]) => el.innerText !== old", arg=[readout.element_handle(), after],
                           timeout=30_000)
    if expect is not None:
        assert expect in readout.inner_text(), f"{lesson}: {widget} readout lacks {expect!r} after the preset"


def drive_kv_calculator(page, lesson: str) -> None:
    drive_context_then_preset(page, lesson, "kv-calculator", "kv", dict(index=1))


def drive_kv_explorer(page, lesson: str) -> None:
    """Picking DeepSeek-V2 must switch the formula to MLA's latent + rope key."""
    drive_context_then_preset(page, lesson, "kv-explorer", "kvx", dict(label="DeepSeek-V2"), "60 × (512 + 64)")


def drive_expert_routing(page, lesson: str) -> None:
    """Picking the second MoE layer must re-render the readout (a kernel round trip), the token grid and the
    domain map."""
    root = page.locator(".expert-routing").first
    readout = root.locator(".expert-routing-readout")
    before = readout.inner_text()
    assert "MoE layer 0" in before, f"{lesson}: the readout does not start at the first MoE layer: {before!r}"
    root.locator(".expert-routing-layer select").select_option(index=1)
    page.wait_for_function("([el, old]) => el.innerText !== old", arg=[readout.element_handle(), before],
                           timeout=30_000)
    assert "MoE layer 1" in readout.inner_text(), f"{lesson}: the readout did not follow the layer"
    for chart in (".expert-routing-chart", ".expert-routing-domains"):  # .gtitle is SVG: textContent, not innerText
        title = root.locator(f"{chart} .gtitle").element_handle()
        page.wait_for_function("(el) => el.textContent.includes('layer 1')", arg=title, timeout=30_000)


DRIVERS = {"kv-calculator": drive_kv_calculator, "kv-explorer": drive_kv_explorer,
           "expert-routing": drive_expert_routing}


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_lesson_runs_and_its_widgets_render(lesson, lab, browser, screenshots):
    spec = LESSONS[lesson]
    for old in screenshots.glob(f"{Path(lesson).stem}-*.png"):  # a figure removed since must not linger
        old.unlink()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        path = f"lessons/{lesson}"
        # a workspace of its own, reset: no panels restored from the previous lesson's page
        page.goto(f"{lab}/lab/workspaces/{Path(lesson).stem}/tree/{path}?reset")
        page.wait_for_function(f"(path) => !!window.jupyterapp && !!({JS_PANEL})(path)", arg=path,
                               timeout=120_000)
        page.evaluate(JS_RUN_ALL, path)
        page.wait_for_function(JS_SETTLED, arg=path, timeout=RUN_TIMEOUT_MS)
        report = page.evaluate(JS_CELL_REPORT, path)
        assert not report["errors"], f"{lesson}: cells raised errors: {report['errors']}"
        assert not report["unrun"], f"{lesson}: cells never ran (an earlier cell stopped Run All?): {report['unrun']}"

        rendered = wait_until_rendered(page, path, lesson)
        print(f"{lesson}: {rendered['expected']['plotly']} plotly outputs, figures with traces {rendered['plots']}, "
              f"{rendered['widgets']} widgets rendered")
        content = page.content()
        assert "Error displaying widget" not in content, f"{lesson}: a widget failed to display"
        assert not re.search(r"Failed to (load|render) (model|widget)", content), f"{lesson}: widget error"

        for widget in spec["widgets"]:
            element = page.locator(f".{widget}").first
            element.wait_for(state="visible", timeout=60_000)
            element.scroll_into_view_if_needed()
            element.screenshot(path=str(screenshots / f"{Path(lesson).stem}-{widget}-before.png"))
            DRIVERS[widget](page, lesson)
            element.screenshot(path=str(screenshots / f"{Path(lesson).stem}-{widget}-after.png"))
        plots = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot")
        for i in range(plots.count()):  # every figure: a person checks them (labels, titles, clipping)
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
