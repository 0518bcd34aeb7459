"""An interactive morph viewer: one static, self-contained HTML page.

Per identity (a *card*) a slider steps through the frames of a morph, and the condition mix
of the shown frame (``age: 65% child / 35% adolescent``) is printed under it in an
``aria-live`` region.  Every frame is embedded as a ``data:`` URI and CSS and JavaScript are
inline, so the page opens from disk (``file://``), from a USB stick or as an e-mail
attachment; a Content-Security-Policy forbids every other source, so it never fetches anything.

Keyboard: a focused slider steps with the arrow keys, Home and End; with the focus elsewhere
the same keys step the card that holds the focus, else the card used last.

A card may be *hidden* (``hidden=True``, the quiz of a teaching set): its captions are not in
the page's visible text until the learner presses "Reveal" for the shown frame, and they hide
again when the frame changes.  They are still in the page's data (view the source), so the page
is a self-check, not an exam.

:func:`viewer_html` is pure (cards in, HTML string out); :func:`write_viewer` writes the page
atomically.  :func:`quiz_card` builds the quiz card (:func:`synth.synthesis.morph.morph_card` a morph's).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from synth.conditions import ConditionSpace
from synth.synthesis.errors import SynthesisError
from synth.utils.io import atomic_write_text

__all__ = [
    "ViewerCard",
    "DEFAULT_FRAMES",
    "frame_times",
    "mix_caption",
    "labels_caption",
    "image_data_uri",
    "quiz_card",
    "viewer_html",
    "write_viewer",
    "generator_note",
]

DEFAULT_FRAMES = 21  # t = 0, 0.05, ..., 1: the mix moves in 5 % steps


@dataclass
class ViewerCard:
    """One slider: ``frames`` (uint8 [H, W, 3] arrays, PIL images or ``data:`` URIs) with one
    caption each.  ``hidden``: captions stay hidden until "Reveal" (a quiz).  ``subtitle`` is
    plain text; its line breaks are kept."""

    title: str
    frames: Sequence[Any]
    captions: Sequence[str]
    subtitle: str = ""
    slider_label: str = "Frame"
    hidden: bool = False
    frame_names: Sequence[str] = field(default_factory=list)  # e.g. quiz numbers; default "k / n"

    def __post_init__(self) -> None:
        if len(self.frames) == 0:
            raise SynthesisError(f"viewer card {self.title!r}: no frames")
        if len(self.captions) != len(self.frames):
            raise SynthesisError(f"viewer card {self.title!r}: {len(self.frames)} frames but {len(self.captions)} captions")
        if self.frame_names and len(self.frame_names) != len(self.frames):
            raise SynthesisError(f"viewer card {self.title!r}: {len(self.frames)} frames but {len(self.frame_names)} frame names")


# ----------------------------------------------------------------------------------------
# Captions


def _percentages(weights: Sequence[float]) -> list[int]:
    """Whole percentages that sum to 100 (largest remainder), e.g. (0.62, 0.38) -> [62, 38],
    (1/3, 1/3, 1/3) -> [34, 33, 33] (ties go to the first level)."""
    total = float(sum(weights)) or 1.0
    raw = [100.0 * w / total for w in weights]
    pct = [int(math.floor(r + 1e-9)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - pct[i]), i))
    for i in order[: 100 - sum(pct)]:
        pct[i] += 1
    return pct


def mix_caption(space: ConditionSpace, vec: np.ndarray, factors: Sequence[str] | None = None,
                order: Mapping[str, Sequence[str]] | None = None) -> str:
    """``age: 62% child / 38% adolescent`` (one part per factor in ``factors``, default all,
    joined by `` · ``); a hard level is just ``age: child``.  ``order``: per factor, the levels
    to name first (a morph's start and end), else level order.  Levels under 0.5 % are left out."""
    soft = space.decode_soft(np.asarray(vec))
    parts = []
    for name in factors or space.names:
        levels = list(space.factor(name).levels)
        first = [lv for lv in (order or {}).get(name, ()) if lv in levels]
        ranked = first + [lv for lv in levels if lv not in first]
        mix = [(lv, soft[name][lv]) for lv in ranked if lv in soft[name]]
        pct = _percentages([w for _, w in mix])
        shown = [(lv, p) for (lv, _), p in zip(mix, pct) if p > 0]
        if len(shown) == 1:
            parts.append(f"{name}: {shown[0][0]}")
        else:
            parts.append(f"{name}: " + " / ".join(f"{p}% {lv}" for lv, p in shown))
    return " · ".join(parts)


def labels_caption(labels: Mapping[str, str], names: Sequence[str] | None = None) -> str:
    """``disease: syndrome_a · age: child``."""
    return " · ".join(f"{n}: {labels[n]}" for n in (names or list(labels)))


# ----------------------------------------------------------------------------------------
# Frames


def frame_times(n: int) -> list[float]:
    """``n`` evenly spaced positions from 0 to 1, the ends exact."""
    if n < 2:
        raise SynthesisError(f"--html-frames {n}: need at least 2")
    ts = [k / (n - 1) for k in range(n)]
    ts[0], ts[-1] = 0.0, 1.0
    return ts


def image_data_uri(img: Any, fmt: str = "png", quality: int = 90) -> str:
    """A frame as ``data:image/png;base64,...`` (or JPEG); a string is taken as a URI already."""
    if isinstance(img, str):
        if not img.startswith("data:image/"):
            raise SynthesisError("viewer frames must be images or data:image/ URIs (the page embeds every frame)")
        return img
    im = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
    buf = io.BytesIO()
    fmt = fmt.lower()
    if fmt in ("jpg", "jpeg"):
        im.convert("RGB").save(buf, format="JPEG", quality=quality)
        mime = "image/jpeg"
    elif fmt == "png":
        im.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        raise SynthesisError(f"viewer image format {fmt!r}: use png or jpeg")
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _size(img: Any) -> tuple[int, int] | None:
    if isinstance(img, Image.Image):
        return img.size
    if isinstance(img, np.ndarray) and img.ndim >= 2:
        return int(img.shape[1]), int(img.shape[0])
    return None


def quiz_card(images: Sequence[Any], answers: Sequence[str], names: Sequence[str], title: str = "Quiz",
              subtitle: str = "") -> ViewerCard:
    """The quiz images with their answers hidden until "Reveal"; ``names`` label each image
    (``image 3 of 12``, the number on the answer sheet)."""
    return ViewerCard(title=title, subtitle=subtitle, frames=list(images), captions=list(answers),
                      slider_label="Quiz image", hidden=True, frame_names=list(names))


# ----------------------------------------------------------------------------------------
# The page

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

CSS = """
:root{color-scheme:light}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222;background:#fafafa;line-height:1.4}
h1{font-size:1.5em;margin:0 0 .3em}
.intro{max-width:60em;color:#444}
.cards{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.card{background:#fff;border:1px solid #ccc;border-radius:8px;padding:.8em 1em;box-sizing:content-box;width:var(--w,256px);max-width:calc(100% - 2em)}
.card.current{border-color:#36c;box-shadow:0 0 0 2px #36c3}
.card h2{font-size:1.05em;margin:0}
.card .sub{font-size:.85em;color:#555;margin:.1em 0 .5em;white-space:pre-line}
.card img{display:block;image-rendering:crisp-edges;image-rendering:pixelated;background:#eee;width:100%;height:auto}
.card label{display:block;font-size:.85em;color:#333;margin-top:.5em}
.card input[type=range]{width:100%;margin:.2em 0}
.row{display:flex;justify-content:space-between;align-items:baseline;gap:.5em;font-size:.8em;color:#666}
.caption{font-size:.95em;font-weight:600;min-height:1.4em;margin:.2em 0}
.caption.hidden-answer{color:#777;font-weight:400;font-style:italic}
button{font:inherit;padding:.2em .9em;border-radius:4px;border:1px solid #888;background:#f3f3f3;cursor:pointer}
button:disabled{cursor:default;opacity:.6}
:focus-visible{outline:3px solid #36c;outline-offset:2px}
.help{font-size:.85em;color:#555;margin-top:1.5em}
kbd{border:1px solid #aaa;border-bottom-width:2px;border-radius:3px;padding:0 .35em;background:#fff;font:inherit;font-size:.95em}
"""

JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("viewer-data").textContent);
  var cards = [];
  var current = 0;

  function show(ci, k) {
    var c = cards[ci], d = data.cards[ci];
    var n = d.frames.length;
    k = Math.max(0, Math.min(n - 1, k));
    var changed = k !== c.k;
    c.k = k;
    c.slider.value = String(k);
    c.img.src = d.frames[k];
    c.img.alt = d.title + ", " + d.names[k];
    c.pos.textContent = d.names[k];
    if (d.hidden) {
      if (changed) { c.revealed = false; }
      c.caption.textContent = c.revealed ? d.captions[k] : "Answer hidden: press Reveal";
      c.caption.classList.toggle("hidden-answer", !c.revealed);
      c.reveal.disabled = c.revealed;
      c.slider.setAttribute("aria-valuetext", d.names[k]);
    } else {
      c.caption.textContent = d.captions[k];
      c.slider.setAttribute("aria-valuetext", d.names[k] + ": " + d.captions[k]);
    }
    c.el.setAttribute("data-frame", String(k));
  }

  function setCurrent(ci) {
    if (cards[current]) { cards[current].el.classList.remove("current"); }
    current = ci;
    cards[ci].el.classList.add("current");
  }

  Array.prototype.forEach.call(document.querySelectorAll(".card"), function (el, ci) {
    var c = {
      el: el, k: -1, revealed: false,
      slider: el.querySelector("input[type=range]"),
      img: el.querySelector("img"),
      caption: el.querySelector(".caption"),
      pos: el.querySelector(".pos"),
      reveal: el.querySelector("button.reveal")
    };
    cards.push(c);
    c.slider.addEventListener("input", function () { setCurrent(ci); show(ci, parseInt(c.slider.value, 10)); });
    c.slider.addEventListener("change", function () { show(ci, parseInt(c.slider.value, 10)); });
    el.addEventListener("focusin", function () { setCurrent(ci); });
    el.addEventListener("pointerdown", function () { setCurrent(ci); });
    if (c.reveal) {
      c.reveal.addEventListener("click", function () {
        setCurrent(ci); c.revealed = true; show(ci, c.k);
      });
    }
    show(ci, 0);
  });
  if (cards.length) { setCurrent(0); }

  document.addEventListener("keydown", function (ev) {
    if (ev.defaultPrevented || ev.altKey || ev.ctrlKey || ev.metaKey || !cards.length) { return; }
    var t = ev.target;
    if (t && t.tagName === "INPUT" && t.type === "range") { return; }  // the slider steps itself
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) { return; }
    var ci = current;
    var owner = t && t.closest ? t.closest(".card") : null;
    if (owner) { ci = cards.map(function (c) { return c.el; }).indexOf(owner); }
    var c = cards[ci], n = data.cards[ci].frames.length, k = c.k;
    if (ev.key === "ArrowRight") { k += 1; }
    else if (ev.key === "ArrowLeft") { k -= 1; }
    else if (ev.key === "Home") { k = 0; }
    else if (ev.key === "End") { k = n - 1; }
    else { return; }
    ev.preventDefault();
    setCurrent(ci);
    show(ci, k);
  });
  document.documentElement.setAttribute("data-ready", "1");
})();
"""


def _json_script(obj: Any) -> str:
    """JSON safe inside <script>: no ``</script>`` or ``<!--`` can end it early."""
    s = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def viewer_html(
    cards: Sequence[ViewerCard],
    title: str = "Morph viewer",
    intro: str = "",
    footer: str = "",
    image_format: str = "png",
    display_size: int = 256,
) -> str:
    """The page as a string (pure: nothing is read or written).

    ``intro`` and ``footer`` are plain text (escaped).  Frames smaller than ``display_size``
    are shown enlarged by a whole factor (32 px -> 256 px) with crisp pixels; larger ones at
    their own size (narrowed on small screens)."""
    if not cards:
        raise SynthesisError("the viewer needs at least one card")
    data = {"title": title, "cards": []}
    body = []
    for ci, card in enumerate(cards):
        n = len(card.frames)
        uris = [image_data_uri(f, image_format) for f in card.frames]
        names = list(card.frame_names) or [f"frame {k + 1} of {n}" for k in range(n)]
        data["cards"].append({"title": card.title, "frames": uris, "captions": [str(c) for c in card.captions],
                              "names": names, "hidden": bool(card.hidden)})
        size = _size(card.frames[0]) or (display_size, display_size)
        k = max(1, -(-display_size // max(size)))  # a whole factor keeps the pixels square
        w, h = size[0] * k, size[1] * k
        wh = f' width="{w}" height="{h}"'
        sid = f"slider-{ci}"
        cap_id = f"caption-{ci}"
        # what shows before the script runs (or without it): frame 1, its caption unless hidden
        first_cap = "Answer hidden: press Reveal" if card.hidden else card.captions[0]
        reveal = (f'<button type="button" class="reveal" aria-controls="{cap_id}">Reveal</button>' if card.hidden else "")
        body.append(
            f'<section class="card{" quiz" if card.hidden else ""}" id="card-{ci}" aria-labelledby="title-{ci}" data-frame="0" '
            f'style="--w:{w}px">'
            f'<h2 id="title-{ci}">{html.escape(card.title)}</h2>'
            + (f'<p class="sub">{html.escape(card.subtitle)}</p>' if card.subtitle else "")
            + f'<img src="{uris[0]}" alt="{html.escape(card.title + ", " + names[0])}"{wh}>'
            f'<label for="{sid}">{html.escape(card.slider_label)}</label>'
            f'<input type="range" id="{sid}" min="0" max="{n - 1}" step="1" value="0" '
            f'aria-describedby="{cap_id}">'
            f'<div class="row"><span class="pos">{html.escape(names[0])}</span>{reveal}</div>'
            f'<p class="caption{" hidden-answer" if card.hidden else ""}" id="{cap_id}" aria-live="polite" aria-atomic="true">'
            f"{html.escape(first_cap)}</p>"
            "</section>"
        )
    quiz_note = ""
    if any(c.hidden for c in cards):
        quiz_note = (" Quiz: each image's answer stays hidden until you press <b>Reveal</b>; it hides again on the next"
                     " image. This is a self-check, not an exam: the answers are inside this file.")
    help_text = ("Drag a slider, or focus it and use <kbd>&larr;</kbd> <kbd>&rarr;</kbd> to step, <kbd>Home</kbd> and "
                 "<kbd>End</kbd> for the first and last frame. With the focus elsewhere the keys move the highlighted card."
                 + quiz_note)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        + (f'<p class="intro">{html.escape(intro)}</p>\n' if intro else "")
        + '<main class="cards">\n' + "\n".join(body) + "\n</main>\n"
        f'<p class="help">{help_text}</p>\n'
        + (f'<p class="help"><small>{html.escape(footer)}</small></p>\n' if footer else "")
        + f'<script type="application/json" id="viewer-data">{_json_script(data)}</script>\n'
        f"<script>{JS}</script>\n</body></html>\n"
    )


def generator_note(settings: Mapping[str, Any]) -> str:
    """``Generator: PATH, KIMG kimg, SHA-256 ...`` from a network record, or ``""``."""
    if not settings.get("network"):
        return ""
    kimg = settings.get("network_kimg")
    sha = settings.get("network_sha256")
    return f"Generator: {settings['network']}" + (f", {kimg:g} kimg" if isinstance(kimg, (int, float)) else "") + \
        (f", SHA-256 {sha}" if sha else "")


def write_viewer(path: str | Path, cards: Sequence[ViewerCard], **kwargs) -> Path:
    """Write :func:`viewer_html` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    atomic_write_text(path, viewer_html(cards, **kwargs))
    return path
