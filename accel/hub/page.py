"""The HTML page at ``/``: the catalog and the popular-model ranking, rendered server-side.

Per version: its size, a link to its manifest and the command that installs it
(``accel pull ID@VERSION``, selectable in one click); the ranking as a small bar chart.

Owns markup only; every value is escaped. No JavaScript is needed to read it.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from accel.hub.catalog import Catalog
from accel.schema import RankingEntry
from accel.units import format_bytes

__all__ = ["render_page"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin-bottom:2rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}code{font-size:.9em}
code.pull{background:#f3f5f9;padding:1px 4px;border-radius:3px;user-select:all;white-space:nowrap}
.rankbar{background:#2f6fde;height:.8rem;border-radius:2px;min-width:2px}
td.chart{width:16rem}
"""


def render_page(catalog: Catalog, ranking: list[RankingEntry]) -> str:
    """The whole page as a string."""
    rows = []
    for info in catalog.models.values():
        mid = quote(info.id, safe="")
        versions = "<br>".join(
            f"<code>{escape(v.version)}</code>{' (default)' if v.version == info.default_version else ''}"
            f" &middot; {escape(format_bytes(v.size_bytes))} &middot; {len(v.files)} "
            f"{'file' if len(v.files) == 1 else 'files'} &middot; "
            f'<a class="manifest" href="/api/models/{escape(mid)}/versions/'
            f'{escape(quote(v.version, safe=""))}/manifest">manifest</a> &middot; '
            f'<code class="pull">accel pull {escape(info.id)}@{escape(v.version)}</code>'
            for v in reversed(info.versions)
        )
        rows.append(
            f"<tr><td><code>{escape(info.id)}</code></td><td>{escape(info.name)}</td>"
            f"<td>{escape(info.task or '')}</td><td>{escape(', '.join(info.languages))}</td>"
            f"<td>{versions}</td></tr>"
        )
    top = max((e.request_count for e in ranking), default=0) or 1
    ranks = [
        f"<tr><td>{e.rank}</td><td><code>{escape(e.model_id)}</code></td>"
        f"<td>{e.request_count}</td>"
        f'<td class="chart"><div class="rankbar" style="width:{100 * e.request_count / top:.1f}%">'
        f"</div></td></tr>"
        for e in ranking
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>accel hub</title>
<style>{_STYLE}</style></head><body>
<h1>accel hub</h1>
<h2>Models</h2>
<table id="catalog"><thead><tr><th>id</th><th>name</th><th>task</th><th>languages</th>
<th>versions</th></tr></thead><tbody>
{"".join(rows) or '<tr><td colspan="5">no models published yet</td></tr>'}
</tbody></table>
<h2>Popular models</h2>
<table id="ranking"><thead><tr><th>rank</th><th>model</th><th>requests</th><th></th></tr></thead>
<tbody>
{"".join(ranks) or '<tr><td colspan="4">no usage yet</td></tr>'}
</tbody></table>
<p>API: <a href="/api/models">/api/models</a> &middot;
<a href="/api/model-usage/ranking">/api/model-usage/ranking</a> &middot;
<a href="/openapi.json">/openapi.json</a></p>
</body></html>
"""
