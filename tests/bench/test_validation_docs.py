"""The committed validation report agrees with its JSON and with the committed analysis code.

`results/validation/v2/results.json` holds the raw numbers of the committed run; the tables in it,
`report.md` beside it and the copy embedded in `docs/validation.md` must all be what the current
`bench/validation/report.py` computes from those raw numbers. (v1's report is kept as committed in
docs/validation-v1.md; the current code renders v2 results only.)
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from bench.validation.report import (
    DOCS_BEGIN,
    DOCS_END,
    build_tables,
    embed_in_docs,
    render_markdown,
)
from bench.validation.run import json_safe

RESULTS = ROOT / "results" / "validation" / "v2"
PLACEHOLDER = "No v2 report yet"


def _embedded() -> str:
    docs = (ROOT / "docs" / "validation.md").read_text()
    return docs.split(DOCS_BEGIN, 1)[1].split(DOCS_END, 1)[0]


def test_committed_tables_are_what_the_analysis_computes_from_the_raw_results() -> None:
    """The committed v2 results (partial while the run goes on) hold the tables the current code computes
    from their raw numbers; before the first results exist, the docs say there is no report."""
    if not (RESULTS / "results.json").is_file():
        assert PLACEHOLDER in _embedded()
        return
    data = json.loads((RESULTS / "results.json").read_text())
    stored = data.pop("tables")
    assert json_safe(build_tables(data)) == stored


def test_committed_report_is_rendered_from_the_results_and_embedded_in_the_docs() -> None:
    if not (RESULTS / "results.json").is_file():
        assert PLACEHOLDER in _embedded()
        return
    data = json.loads((RESULTS / "results.json").read_text())
    tables = data.pop("tables")
    report = (RESULTS / "report.md").read_text()
    rendered = render_markdown(data, tables, machine=None)
    body = lambda text: text[text.index("## Headline"):]
    assert body(rendered) == body(report)
    demoted = "\n".join(("#" + line) if line.startswith("#") else line for line in report.splitlines())
    assert demoted.strip() in _embedded()


def test_embed_in_docs_replaces_only_the_marked_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nintro\n\n{DOCS_BEGIN}\nold\n{DOCS_END}\n\nafter\n")
    embed_in_docs("# Report\n\n## Table\nx\n", page, header="hdr\n\n")
    text = page.read_text()
    assert text.startswith("# Title\n\nintro\n\n") and text.endswith(f"{DOCS_END}\n\nafter\n")
    assert "old" not in text and "## Report" in text and "### Table" in text and "hdr" in text


def test_the_committed_records_reproduce_the_committed_report(tmp_path: Path) -> None:
    """What a clone on another machine does: an empty cache, the committed zoo and records only, no
    compute. The results and the report it writes are the committed ones, byte for byte."""
    import shutil

    from bench.validation.profiles import get_profile
    from bench.validation.run import run

    if not (RESULTS / "results.json").is_file():
        assert PLACEHOLDER in _embedded()
        return
    out = tmp_path / "out"
    out.mkdir()
    for name in ("records.jsonl.gz", "run.json"):
        shutil.copy(RESULTS / name, out / name)
    run(get_profile("v2"), out_dir=out, cache_dir=tmp_path / "cache", say=lambda m: None, compute=False)
    for name in ("results.json", "report.md"):
        assert (out / name).read_bytes() == (RESULTS / name).read_bytes(), name
