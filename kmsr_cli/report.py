"""Things a person looks at: labelled side-by-side panels and one self-contained HTML page.

:func:`labelled_strip` puts images side by side under a dark band that names each one (and,
optionally, a figure such as its Y-PSNR), so a comparison PNG says what it shows on its own.
:class:`HtmlReport` collects facts, headings, images and tables and writes a single HTML file
with every image embedded as a PNG data URI: the page can be mailed, attached to a ticket or
opened from an archive without the folder it came from. ``kmsr demo``, ``kmsr bench real
--save`` and ``kmsr adapt`` write their reports with it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import replace_atomically

BAND_BG = (24, 24, 24)
NAME_FG = (235, 235, 235)
FIGURE_FG = (250, 210, 90)
RULE_FG = (90, 90, 90)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def fit_text(draw, text: str, font, width: int) -> str:
    """``text``, cut and ended with an ellipsis where it is wider than ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def band_height(font_size: int = 12) -> int:
    """Height in pixels of the label band :func:`labelled_strip` puts above the panels."""
    from PIL import Image, ImageDraw

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    top, bottom = probe.textbbox((0, 0), "Ag dB", font=_font(font_size))[1::2]
    return bottom - top + 8


def labelled_strip(panels: list[tuple[str, str, np.ndarray]], *, font_size: int = 12) -> np.ndarray:
    """Panels (name, figure, (H, W, 3) uint8) left to right under a band with their labels.

    Each panel keeps its own width; shorter panels are padded at the bottom with the band's
    colour. ``figure`` (for example ``"27.61 dB"``) follows the name in another colour and is
    dropped where a panel is too narrow for both; names too long for their panel end in "…".
    """
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("labelled_strip: no panels")
    arrays = [np.ascontiguousarray(p, dtype=np.uint8) for _, _, p in panels]
    for (name, _, _), a in zip(panels, arrays):
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"labelled_strip: panel {name!r} is {a.shape}, expected (H, W, 3)")
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    top = probe.textbbox((0, 0), "Ag dB", font=font)[1]
    band = band_height(font_size)
    widths = [a.shape[1] for a in arrays]
    strip = Image.new("RGB", (sum(widths), max(a.shape[0] for a in arrays) + band), BAND_BG)
    draw = ImageDraw.Draw(strip)
    gap = 6  # between a name and its figure (the default font's spaces are narrow)
    x0 = 0
    for i, ((name, figure, _), a) in enumerate(zip(panels, arrays)):
        strip.paste(Image.fromarray(a), (x0, band))
        room = a.shape[1] - 8
        fig_w = draw.textlength(figure, font=font) + gap if figure else 0
        if fig_w > room / 2:  # too narrow for both: the name only
            figure, fig_w = "", 0
        shown = fit_text(draw, name, font, int(room - fig_w))
        y = 4 - top
        draw.text((x0 + 4, y), shown, fill=NAME_FG, font=font)
        if figure:
            draw.text((x0 + 4 + draw.textlength(shown, font=font) + gap, y), figure, fill=FIGURE_FG, font=font)
        if i:
            draw.line([(x0, 0), (x0, band - 1)], fill=RULE_FG)
        x0 += a.shape[1]
    return np.asarray(strip)


def png_data_uri(pixels: np.ndarray) -> str:
    """An 8-bit PNG of ``pixels`` (uint8, or floats in [0, 1]) as a ``data:`` URI."""
    from kmsr_ops.image_io import encode_png

    return "data:image/png;base64," + base64.b64encode(encode_png(pixels, bit_depth=8)).decode()


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
img{image-rendering:pixelated;max-width:100%;border:1px solid #ccc}
figure{margin:1em 0} figcaption{color:#555;font-size:90%}
table{border-collapse:collapse;margin:.5em 0} td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #eee}
td.num{text-align:right;font-variant-numeric:tabular-nums} code{background:#f4f4f4;padding:0 .3em}
#kmsr-broken{display:none;background:#fdd;padding:.5em;border:1px solid #c00}"""

# Marks the page with how many of its images the browser could decode, and warns on the page
# when one could not (a report copied without its data, a browser that refuses a data URI).
_IMAGE_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  if (ok < imgs.length) {
    var b = document.getElementById('kmsr-broken');
    b.textContent = (imgs.length - ok) + ' of ' + imgs.length + ' images could not be shown.';
    b.style.display = 'block';
  }
});
</script>"""


@dataclass
class HtmlReport:
    """A report built top to bottom, then written as one HTML file (images embedded)."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def code(self, lines: list[str]) -> None:
        """Commands or other literal text, one per line."""
        self.parts.append("<pre><code>" + html.escape("\n".join(lines)) + "</code></pre>")

    def facts(self, rows: list[tuple[str, object]]) -> None:
        """A two-column table of names and values."""
        body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        self.parts.append(f"<table>{body}</table>")

    def table(self, columns: list[str], rows: list[list[object]]) -> None:
        """A table; numbers are right-aligned (format them before: they are shown as given)."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)

        def cell(v) -> str:
            num = isinstance(v, (int, float)) or (isinstance(v, str) and _looks_numeric(v))
            return f"<td class='num'>{html.escape(str(v))}</td>" if num else f"<td>{html.escape(str(v))}</td>"

        body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def image(self, pixels: np.ndarray, caption: str, *, alt: str | None = None) -> None:
        """An image embedded as a PNG, with a caption under it."""
        self.parts.append(f"<figure><img src='{png_data_uri(pixels)}' alt='{html.escape(alt or caption, quote=True)}'>"
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def image_link(self, href: str, caption: str) -> None:
        """An image beside the page (``href`` relative to it), for pages with many large images."""
        from urllib.parse import quote

        self.parts.append(f"<figure><img src='{html.escape(quote(href), quote=True)}' alt='{html.escape(href, quote=True)}' "
                          f"loading='lazy'><figcaption>{html.escape(caption)}</figcaption></figure>")

    def image_file(self, path: str | Path, caption: str) -> None:
        """An image file (any format kmsr reads) embedded as an 8-bit PNG."""
        from kmsr_ops.image_io import read_image

        pixels = read_image(path, channels="RGB").pixels  # floats in [0, 1]
        self.image(pixels, caption, alt=Path(path).name)

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_STYLE}</style></head>\n<body>\n<h1>{html.escape(self.title)}</h1>\n"
                f"<div id='kmsr-broken'></div>\n{body}\n{_IMAGE_CHECK}\n</body></html>\n")

    def write(self, path: str | Path) -> Path:
        """Write the page atomically (a killed run leaves the previous report or none)."""
        page = self.render()
        path = Path(path)
        replace_atomically(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
        return path


_NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?( dB| s)?$")


def _looks_numeric(s: str) -> bool:
    return bool(_NUMBER.match(s))
