"""The ranking report: one self-contained HTML page (inline SVG figures drawn by matplotlib, inline
CSS, no scripts, fonts or remote assets), readable on a closed hospital network.

`render_report` takes plain data (`ReportData`, built by app.services.report from the registry)
and returns the page; nothing here touches the database.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_LOCK = threading.Lock()  # matplotlib's rcParams are process-global: one figure at a time
_XML_HEAD = re.compile(r"^.*?(?=<svg)", re.S)


@dataclass
class ModelRow:
    """One ranked model as the report shows it."""

    model_id: str
    name: str
    rank: int
    fused: float
    grtd: float
    lbtc: float
    baselines: dict[str, float | None]
    checkpoint_sha256: str
    code_version: str
    numeric_mode: str
    device: str | None
    scored_at: str | None
    uncertainty: dict[str, Any] | None = None
    fused_replicates: list[float] | None = None


@dataclass
class ReportData:
    ranking_id: str
    status: str
    created_at: str
    pilot_set_name: str
    n_cases: int
    labels: dict[str, Any]
    K: int
    alpha: float
    alpha_pinned: bool
    a: float
    b: float
    config: dict[str, Any]
    config_hash: str
    models: list[ModelRow]
    missing: list[str]
    uncertainty: dict[str, Any]
    evaluation: dict[str, Any] | None = None
    generated_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text  # no "-0.0000"


def _svg(fig: Any, salt: str) -> str:
    """The figure as an inline <svg> element (ids salted per figure so that two figures never clash)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = _XML_HEAD.sub("", buf.getvalue(), count=1)
    return text.replace("<svg ", '<svg role="img" ', 1)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasSVG(fig)
    return fig


def _fused_bars(models: Sequence[ModelRow]) -> Any:
    fig = _figure(7.0, 0.55 * len(models) + 1.3)
    ax = fig.add_subplot()
    names = [m.name for m in models][::-1]
    vals = [m.fused for m in models][::-1]
    ivs = [(m.uncertainty or {}).get("fused_interval") for m in models][::-1]
    ax.barh(names, vals, color="#4c78a8", height=0.6)
    if all(iv for iv in ivs):
        lo = [max(v - iv[0], 0.0) for v, iv in zip(vals, ivs)]
        hi = [max(iv[1] - v, 0.0) for v, iv in zip(vals, ivs)]
        ax.errorbar(vals, names, xerr=[lo, hi], fmt="none", ecolor="#222", capsize=4, lw=1.2)
        ax.set_title("Fused score with its 95% interval over pilot-case half-samples", fontsize=10)
    else:
        ax.set_title("Fused score (no interval: see the uncertainty note)", fontsize=10)
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("fused score S (min-max over the models compared)")
    return fig


def _scatter(models: Sequence[ModelRow]) -> Any:
    fig = _figure(6.0, 4.6)
    ax = fig.add_subplot()
    for m in models:
        u = m.uncertainty or {}
        gi, li = u.get("grtd_interval"), u.get("lbtc_interval")
        xerr = [[max(m.grtd - gi[0], 0.0)], [max(gi[1] - m.grtd, 0.0)]] if gi else None
        yerr = [[max(m.lbtc - li[0], 0.0)], [max(li[1] - m.lbtc, 0.0)]] if li else None
        ax.errorbar([m.grtd], [m.lbtc], xerr=xerr, yerr=yerr, fmt="o", ms=7, capsize=3, lw=1)
        ax.annotate(m.name, (m.grtd, m.lbtc), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("GRTD (global, decoder stages; closer to 0 is better)")
    ax.set_ylabel("LBTC (local, encoder stages; higher is better)")
    ax.set_title("Global against local topology", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def _heatmap(models: Sequence[ModelRow], p_above: Mapping[str, Mapping[str, float | None]]) -> Any:
    n = len(models)
    fig = _figure(1.0 + 0.75 * n, 0.6 + 0.65 * n)
    ax = fig.add_subplot()
    ids = [m.model_id for m in models]
    grid = [[math.nan if i == j else (p_above.get(i, {}).get(j) if p_above.get(i, {}).get(j) is not None else math.nan)
             for j in ids] for i in ids]
    im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdBu_r")
    for r in range(n):
        for c in range(n):
            v = grid[r][c]
            if not math.isnan(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if abs(v - 0.5) > 0.3 else "black")
    names = [m.name for m in models]
    ax.set_xticks(range(n), names, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_title("P(row model ranks above column model)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def _spread(models: Sequence[ModelRow]) -> Any:
    fig = _figure(7.0, 0.5 * len(models) + 1.4)
    ax = fig.add_subplot()
    data = [m.fused_replicates or [] for m in models][::-1]
    ax.boxplot(data, orientation="horizontal", tick_labels=[m.name for m in models][::-1], widths=0.5, showfliers=True)
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("fused score in each half-sample of the pilot cases")
    ax.set_title("Spread over the pilot cases", fontsize=10)
    return fig


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _figure_block(name: str, caption: str, svg: str) -> str:
    return f'<figure data-figure="{_e(name)}">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;color:#1b1f24;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555} table{border-collapse:collapse;margin:.5rem 0;font-size:13px} th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f4f6f8} code{font-size:12px}
figure{margin:1rem 0} figure svg{max-width:100%;height:auto} figcaption{color:#555;font-size:12px}
.verdict{padding:.6rem .8rem;border-radius:6px;margin:1rem 0} .stable{background:#e6f4ea;border:1px solid #9bd3ae}
.unstable{background:#fdecea;border:1px solid #f1a7a0} .none{background:#f4f6f8;border:1px solid #ccc}
pre{background:#f4f6f8;padding:.6rem;overflow:auto;font-size:12px}
"""


def _verdict(data: ReportData) -> str:
    u = data.uncertainty
    if not u.get("available"):
        return f'<div class="verdict none">No uncertainty for this ranking: {_e(u.get("reason", "unknown"))}</div>'
    top = next((m for m in data.models if m.model_id == u.get("top_model")), None)
    p1 = (top.uncertainty or {}).get("p_rank1") if top else None
    word, cls = ("Stable", "stable") if u.get("stable") else ("Not stable", "unstable")
    return (
        f'<div class="verdict {cls}"><strong>{word}.</strong> {_e(top.name if top else "?")} ranks first in '
        f'{_num(100 * (p1 or 0.0), 0)}% of {u.get("n_replicates_used")} half-samples of the {u.get("n_cases")} pilot cases '
        f'(stable at ≥ {_num(100 * u.get("stable_threshold", 0.9), 0)}%).'
        + (f' Note: {_e(u["note"])}.' if u.get("note") else "")
        + "</div>"
    )


def render_report(data: ReportData) -> str:
    """The report page of one ranking (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    u = data.uncertainty
    figures = []
    with _LOCK:
        figures.append(_figure_block("fused", "Fused ranking; whiskers: 95% intervals.", _svg(_fused_bars(data.models), "fused")))
        figures.append(_figure_block("scatter", "GRTD against LBTC; whiskers: 95% intervals.", _svg(_scatter(data.models), "scatter")))
        if u.get("available") and len(data.models) > 1:
            figures.append(_figure_block("p_above", "Share of half-samples in which the row model ranks above the column model.",
                                         _svg(_heatmap(data.models, u.get("p_above") or {}), "p_above")))
        if u.get("available"):
            figures.append(_figure_block("spread", "Fused score in each half-sample: how much the ranking depends on which cases are in the pilot set.",
                                         _svg(_spread(data.models), "spread")))
    rows = []
    for m in data.models:
        mu = m.uncertainty or {}
        iv = mu.get("fused_interval")
        ri = mu.get("rank_interval")
        rows.append([
            str(m.rank), _e(m.name), _num(m.fused),
            f"[{_num(iv[0], 3)}, {_num(iv[1], 3)}]" if iv else "–",
            f"{ri[0]}–{ri[1]}" if ri else "–",
            _num(mu.get("p_rank1"), 2) if mu else "–",
            _num(m.grtd), _num(m.lbtc),
        ])
    ranking_table = _table(["rank", "model", "fused", "fused 95%", "rank 95%", "P(rank 1)", "GRTD", "LBTC"], rows)
    base_names = sorted({b for m in data.models for b in m.baselines})
    baselines_table = (
        _table(["model", *base_names], [[_e(m.name), *(_num(m.baselines.get(b)) for b in base_names)] for m in data.models])
        if base_names else "<p>No baselines were computed (config <code>baselines: false</code>).</p>"
    )
    label_rows = [[_e(k), _e(v)] for k, v in sorted(data.labels.items(), key=lambda kv: str(kv[1]))]
    task = _table(["", ""], [
        ["foreground classes K", str(data.K)],
        ["alpha", f"{_num(data.alpha)}{' (pinned)' if data.alpha_pinned else f' = sigmoid({_num(data.a, 2)} (ln K − {_num(data.b, 3)}))'}"],
        ["pilot cases", str(data.n_cases)],
    ]) + _table(["label", "value"], label_rows)
    prov = _table(["model", "checkpoint sha256", "code version", "numeric mode", "device", "scored"], [
        [_e(m.name), f"<code>{_e(m.checkpoint_sha256)}</code>", _e(m.code_version), _e(m.numeric_mode), _e(m.device or "–"),
         _e(m.scored_at or "–")] for m in data.models
    ])
    if data.evaluation:
        ev = data.evaluation
        metric_rows = [[_e(name), str(r.get("n_models", "–")), _num(r.get("weighted_tau"), 3), _num(r.get("kendall_tau"), 3),
                        _num(r.get("spearman"), 3), _num(r.get("top1_regret"), 4)] for name, r in ev["metrics"].items()]
        evaluation = (
            f'<p class="meta">Evaluation {_e(ev["id"])} of {_e(ev["created_at"])}, against fine-tuning results of '
            f'{len(ev["truth"])} model(s).</p>'
            + _table(["score", "models", "weighted τ", "Kendall τ-b", "Spearman ρ", "top-1 regret"], metric_rows)
        )
    else:
        evaluation = "<p>No fine-tuning results were posted for this ranking (<code>POST /v1/rankings/{id}/evaluation</code>).</p>"
    missing = (f'<p class="meta">Not scored (left out): {_e(", ".join(data.missing))}</p>' if data.missing else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>TopoRank report {_e(data.ranking_id)}</title><style>{_CSS}</style></head>
<body>
<h1>TopoRank ranking report</h1>
<p class="meta">Ranking <code>{_e(data.ranking_id)}</code> ({_e(data.status)}), started {_e(data.created_at)};
pilot set “{_e(data.pilot_set_name)}”; generated {_e(data.generated_at)}.</p>
{_verdict(data)}
<h2>Ranking</h2>
{ranking_table}
{missing}
{"".join(figures)}
<h2>Baselines</h2>
{baselines_table}
<h2>Task</h2>
{task}
<h2>Config</h2>
<p class="meta">config hash <code>{_e(data.config_hash)}</code></p>
<pre>{_e(json.dumps(data.config, indent=2, sort_keys=True))}</pre>
<h2>Provenance</h2>
{prov}
<h2>Evaluation against fine-tuning</h2>
{evaluation}
</body></html>
"""
