"""Charts drawn by the server as SVG: no script, nothing fetched, every label escaped. Colours
and sizes are presentation attributes, not style, so the strict Content-Security-Policy holds."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 720
HEIGHT = 160
PAD_LEFT = 44
PAD_BOTTOM = 22


def bars(
    values: Sequence[float],
    labels: Sequence[str],
    *,
    title: str,
    every: int = 1,
    marker: tuple[int, str] | None = None,
    colors: Sequence[str] | None = None,
) -> Markup:
    """A bar chart; ``labels[i]`` shown under every ``every``-th bar; ``marker`` draws a
    vertical dashed line before bar i with a caption (the Portal's 3.5 s budget)."""
    top = max(values, default=0) or 1
    inner_w = WIDTH - PAD_LEFT - 8
    inner_h = HEIGHT - PAD_BOTTOM - 10
    step = inner_w / max(len(values), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{PAD_LEFT}" y1="{10 + inner_h}" x2="{WIDTH - 8}" y2="{10 + inner_h}" '
        'stroke="#9aa5b1" stroke-width="1"/>',
        f'<text x="{PAD_LEFT - 6}" y="16" text-anchor="end" font-size="11" fill="#52606d">'
        f"{escape(_number(top))}</text>",
        f'<text x="{PAD_LEFT - 6}" y="{10 + inner_h}" text-anchor="end" font-size="11" '
        'fill="#52606d">0</text>',
    ]
    for i, value in enumerate(values):
        height = inner_h * value / top
        x = PAD_LEFT + i * step
        color = colors[i] if colors else "#2f6fdf"
        parts.append(
            f'<rect x="{x + step * 0.12:.1f}" y="{10 + inner_h - height:.1f}" '
            f'width="{step * 0.76:.1f}" height="{height:.1f}" fill="{escape(color)}">'
            f"<title>{escape(labels[i])}: {escape(_number(value))}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
                f'font-size="10" fill="#52606d">{escape(labels[i])}</text>'
            )
    if marker is not None:
        index, caption = marker
        x = PAD_LEFT + index * step
        parts.append(
            f'<line x1="{x:.1f}" y1="8" x2="{x:.1f}" y2="{10 + inner_h}" stroke="#c2410c" '
            'stroke-width="1.5" stroke-dasharray="4 3"/>'
            f'<text x="{x - 4:.1f}" y="18" text-anchor="end" font-size="11" fill="#c2410c">'
            f"{escape(caption)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every piece of text above is escaped)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2f}"
