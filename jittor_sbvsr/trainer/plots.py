"""Line plots as PNG with numpy and Pillow only (no matplotlib at run time)."""
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..utils.files import atomic_save

__all__ = ['line_plot', 'save_line_plot']

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def _fmt(v):
    if v == 0:
        return '0'
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f'{v:.2e}'
    return f'{v:.4g}'


def _nice_ticks(lo, hi, n=5):
    span = hi - lo
    if not span > 0:
        return [lo]
    raw = span / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + 1e-9 * span and len(ticks) < 20:
        ticks.append(0.0 if abs(t) < 1e-12 * step else t)
        t += step
    return ticks or [lo]


def line_plot(series, title='', xlabel='epoch', ylabel='', size=(640, 400), x=None):
    """Draw ``series`` ({label: list of values}) against ``x`` (default 1..n); returns an RGB array.

    Non-finite values are left out; a single point is drawn as a dot.
    """
    w, h = size
    img = Image.new('RGB', (w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 70, 20, 30, 45
    pw, ph = w - left - right, h - top - bottom
    n = max((len(v) for v in series.values()), default=0)
    xs = np.arange(1, n + 1, dtype=np.float64) if x is None else np.asarray(x, np.float64)
    finite = [np.asarray(v, np.float64)[np.isfinite(np.asarray(v, np.float64))] for v in series.values()]
    finite = [f for f in finite if f.size]
    if finite:
        lo = float(min(f.min() for f in finite))
        hi = float(max(f.max() for f in finite))
    else:
        lo, hi = 0.0, 1.0
    if hi - lo <= 1e-12 * max(abs(hi), abs(lo), 1e-30):
        pad = abs(hi) * 0.05 if hi != 0 else 1.0
        lo, hi = lo - pad, hi + pad
    else:
        pad = (hi - lo) * 0.05
        lo, hi = lo - pad, hi + pad
    x_lo = float(xs.min()) if xs.size else 1.0
    x_hi = float(xs.max()) if xs.size else 1.0
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1

    def px(xv, yv):
        return (left + (xv - x_lo) / (x_hi - x_lo) * pw, top + (hi - yv) / (hi - lo) * ph)

    # axes, grid and ticks (whole numbers only on an integer x axis)
    int_x = bool(xs.size) and bool(np.all(xs == np.round(xs)))
    d.rectangle([left, top, left + pw, top + ph], outline=(0, 0, 0))
    for t in _nice_ticks(lo, hi):
        _, yy = px(x_lo, t)
        d.line([left, yy, left + pw, yy], fill=(225, 225, 225))
        d.text((4, yy - 6), _fmt(t), fill=(0, 0, 0), font=font)
    for t in _nice_ticks(x_lo, x_hi, 6):
        if int_x and abs(t - round(t)) > 1e-9:
            continue
        xx, _ = px(t, lo)
        d.line([xx, top, xx, top + ph], fill=(235, 235, 235))
        d.text((xx - 8, top + ph + 6), _fmt(t), fill=(0, 0, 0), font=font)
    d.rectangle([left, top, left + pw, top + ph], outline=(0, 0, 0))
    if title:
        d.text((left, 8), title, fill=(0, 0, 0), font=font)
    if xlabel:
        d.text((left + pw // 2 - 3 * len(xlabel), h - 16), xlabel, fill=(0, 0, 0), font=font)
    if ylabel:
        d.text((left + pw - 6 * len(ylabel), 8), ylabel, fill=(80, 80, 80), font=font)

    # curves and legend
    for i, (label, values) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        v = np.asarray(values, np.float64)
        pts = [px(a, b) for a, b in zip(xs[:len(v)], v) if np.isfinite(b)]
        if len(pts) == 1:
            (cx, cy), = pts
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        elif pts:
            d.line(pts, fill=colour, width=2)
        if len(series) > 1 or label:
            ly = top + 6 + 14 * i
            d.line([left + 8, ly + 6, left + 26, ly + 6], fill=colour, width=2)
            d.text((left + 30, ly), str(label), fill=(0, 0, 0), font=font)
    return np.asarray(img)


def save_line_plot(path, series, **kwargs):
    """``line_plot`` written atomically as a PNG."""
    arr = line_plot(series, **kwargs)
    img = Image.fromarray(arr)
    return atomic_save(path, lambda tmp: img.save(tmp, format='PNG'))
