"""The ranking report in a real browser: headless Chromium with the network cut off loads the page
served by the API with no console errors, every figure is drawn (non-empty in the DOM), and the
screenshot is not blank."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.app.test_api_rankings import complete, replicates_for, start, world  # noqa: F401 - `world` is a fixture
from tests.utils.browser import Browser

FIGURES_JS = """JSON.stringify([...document.querySelectorAll('figure[data-figure]')].map(f => {
  const svg = f.querySelector('svg'); const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  return {name: f.dataset.figure, width: box.width, height: box.height,
          marks: svg ? svg.querySelectorAll('path, use, rect, text').length : 0};
}))"""


@pytest.mark.integration
def test_report_renders_in_headless_chromium_with_every_figure(api, world, sessions, tmp_path):  # noqa: F811
    rid = start(api, world).json()["id"]
    complete(sessions, rid, replicates=replicates_for)
    page = api.get(f"/v1/rankings/{rid}/report", headers=world["h"])
    assert page.status_code == 200
    path = tmp_path / "report.html"
    path.write_text(page.text, encoding="utf-8")
    with Browser(width=1200, height=900) as b:
        b.load(path.as_uri())
        import json

        figures = json.loads(b.evaluate(FIGURES_JS))
        png = b.screenshot()
        errors = b.console_errors()
    assert errors == []
    assert [f["name"] for f in figures] == ["fused", "scatter", "p_above", "spread"]
    for f in figures:
        assert f["width"] > 100 and f["height"] > 100 and f["marks"] > 20, f
    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    assert img.shape[0] > 900 and img.std() > 10  # the whole page, not one flat colour
    assert (img < 128).mean() > 0.005  # ink: text, bars, the heat map
