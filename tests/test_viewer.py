"""The interactive morph viewer: a static page checked as text, then driven in a real headless
Chromium (Playwright) opened from file://.  The browser test skips, saying how to install one,
when no Chromium or no Playwright is present (``.ci/run`` installs Debian's chromium)."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synth.conditions import ConditionSpace
from synth.synthesis.errors import SynthesisError
from synth.synthesis.viewer import ViewerCard, mix_caption, quiz_card, viewer_html, write_viewer

SPACE = ConditionSpace.default(["disease", "age"], embed_total=32)
KEPT_AGES = ("infant", "older_adult")  # the tiny teaching set: 4 diseases x 2 ages
from tests.helpers import run_synthesis_cli


def solid(k: int, size: int = 8) -> np.ndarray:
    """A frame whose colour encodes k."""
    return np.full((size, size, 3), (k * 37 % 256, 255 - k * 11 % 256, k * 5 % 256), np.uint8)


def page_data(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', text, re.S)
    assert m, "no embedded viewer data"
    return json.loads(m.group(1))


def visible_markup(text: str) -> str:
    """The page without its scripts (what a reader sees before any script runs)."""
    return re.sub(r"<script\b.*?</script>", "", text, flags=re.S)


def decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def hand_made_cards() -> list[ViewerCard]:
    n = 6
    morph = ViewerCard("seed 7", [solid(k) for k in range(n)], [f"age: {100 - 20 * k}% infant / {20 * k}% child" for k in range(n)],
                       subtitle="disease = syndrome_a", slider_label="age (infant to child)")
    other = ViewerCard("seed 8", [solid(10 + k) for k in range(3)], ["stage: early", "stage: 50% early / 50% late", "stage: late"])
    quiz = quiz_card([solid(20 + k) for k in range(3)], ["disease: syndrome_b · age: child", "disease: unaffected · age: infant",
                                                        "disease: syndrome_a · age: older_adult"],
                     [f"image {k + 1} of 3" for k in range(3)], subtitle="Possible answers: ...")
    return [morph, other, quiz]


# ----------------------------------------------------------------------------------------
# The page as text


def test_page_is_self_contained_and_embeds_every_frame():
    cards = hand_made_cards()
    text = viewer_html(cards, title="Morph <test>", intro="a & b", footer="Generator: x.ckpt")
    assert text.startswith("<!DOCTYPE html>") and "Morph &lt;test&gt;" in text and "a &amp; b" in text
    # nothing outside the file: no remote or relative src/href, no external script/style/font
    markup = visible_markup(text)
    assert not re.search(r"""\b(src|href|srcset|poster|data)\s*=\s*(["']?)(?!data:|#)[^"'\s>]""", markup, re.I), \
        re.findall(r"(?:src|href)=\S{0,40}", markup)
    assert "<script src" not in text and not re.search(r"<script(?![^>]*>)", text)
    assert not re.search(r"https?://", text)
    assert "<link" not in text and "@import" not in text and "url(" not in text and "fetch(" not in text
    assert "XMLHttpRequest" not in text and "<script src" not in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text  # the browser refuses anything else
    data = page_data(text)
    assert [len(c["frames"]) for c in data["cards"]] == [6, 3, 3]
    assert len(re.findall(r'<input type="range"', text)) == 3
    assert re.findall(r'max="(\d+)"', text) == ["5", "2", "2"]
    for card, d in zip(cards, data["cards"]):  # frames decode to exactly the given images, in order
        assert all(np.array_equal(decode(u), f) for u, f in zip(d["frames"], card.frames))
        assert d["captions"] == list(card.captions)
    # before any script runs, each card shows frame 1 (shown enlarged, 8 px x 32 = 256 px)
    imgs = re.findall(r'<img src="([^"]+)" alt="[^"]*" width="(\d+)" height="(\d+)"', text)
    assert [u for u, _, _ in imgs] == [d["frames"][0] for d in data["cards"]]
    assert {(w, h) for _, w, h in imgs} == {("256", "256")}
    assert "image-rendering:pixelated" in text
    # accessible basics: a label per slider, a live region per caption
    for ci in range(3):
        assert f'<label for="slider-{ci}">' in text and f'id="slider-{ci}"' in text
        assert re.search(rf'<p class="caption[^"]*" id="caption-{ci}" aria-live="polite"', text)
    assert "Generator: x.ckpt" in text


def test_quiz_answers_are_only_in_the_data_until_revealed():
    cards = hand_made_cards()
    text = viewer_html(cards)
    shown = visible_markup(text)
    for answer in cards[2].captions:
        assert answer not in shown and answer.replace("·", "&middot;") not in shown
    assert "syndrome_b" not in shown and "older_adult" not in shown  # not even in alt text or titles
    assert "Answer hidden: press Reveal" in shown and 'class="reveal"' in shown
    assert cards[0].captions[0] in shown  # a morph card's caption is visible text
    d = page_data(text)["cards"][2]
    assert d["hidden"] is True and d["captions"] == list(cards[2].captions)
    assert "self-check, not an exam" in shown
    # the data cannot end its <script> early, whatever a caption holds
    evil = ViewerCard("t", [solid(0)], ["</script><script>alert(1)</script>"])
    t2 = viewer_html([evil])
    assert t2.count("</script>") == 2 and page_data(t2)["cards"][0]["captions"] == ["</script><script>alert(1)</script>"]


def test_mix_caption_and_card_checks():
    v = SPACE.mix({"disease": "syndrome_a", "age": "child"}, {"disease": "syndrome_a", "age": "adolescent"}, 0.62)
    assert mix_caption(SPACE, v, ["age"]) == "age: 62% child / 38% adolescent"
    assert mix_caption(SPACE, v, ["age"], {"age": ["adolescent", "child"]}) == "age: 38% adolescent / 62% child"
    assert mix_caption(SPACE, v) == "disease: syndrome_a · age: 62% child / 38% adolescent"
    third = SPACE.encode_soft({"disease": "syndrome_a", "age": {"infant": 1 / 3, "child": 1 / 3, "adolescent": 1 / 3}})
    assert mix_caption(SPACE, third, ["age"]) == "age: 34% infant / 33% child / 33% adolescent"  # sums to 100
    assert mix_caption(SPACE, SPACE.encode({"disease": "unaffected", "age": "infant"}), ["age"]) == "age: infant"
    with pytest.raises(SynthesisError, match="captions"):
        ViewerCard("x", [solid(0), solid(1)], ["only one"])
    with pytest.raises(SynthesisError, match="no frames"):
        ViewerCard("x", [], [])
    with pytest.raises(SynthesisError, match="at least one card"):
        viewer_html([])
    with pytest.raises(SynthesisError, match="data:image"):
        viewer_html([ViewerCard("x", ["http://example.org/a.png"], ["a"])])


def test_write_viewer_is_atomic_and_jpeg_works(tmp_path):
    path = write_viewer(tmp_path / "sub" / "v.html", hand_made_cards(), image_format="jpeg")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["v.html"]  # no temporary file left
    assert page_data(path.read_text())["cards"][0]["frames"][0].startswith("data:image/jpeg;base64,")


# ----------------------------------------------------------------------------------------
# Built by `teach make` and `morph --html` (tiny random generator)


@pytest.fixture(scope="module")
def tiny_teach(tmp_path_factory):
    """A tiny teaching set with a quiz: 4 diseases x 2 ages, one image each, 5-frame morphs."""
    from synth.synthesis.engine import Renderer
    from synth.synthesis.teach import make_teaching_set
    from tests.helpers import tiny_generator

    out = tmp_path_factory.mktemp("teach")
    rend = Renderer(tiny_generator(SPACE), psi=0.7, noise_mode="const", mean_w_samples=16, batch=8)
    excl = {"age": {a for a in SPACE.factor("age").levels if a not in KEPT_AGES}}
    res = make_teaching_set(rend, SPACE, out, per_cell=1, seed=3, quiz=True, quiz_per_cell=1, steps=3, exclude=excl,
                            progress=False, viewer_frames=5)
    return out, res, rend


def test_teach_make_writes_the_viewer_with_morphs_and_the_quiz(tiny_teach):
    out, res, rend = tiny_teach
    from synth.synthesis.morph import resolve_morph

    assert res.viewer == "viewer.html"
    text = (out / "viewer.html").read_text()
    data = page_data(text)
    diseases = list(SPACE.factor("disease").levels)
    assert [c["title"].split(" ")[0] for c in data["cards"]] == [*diseases, "Quiz"]
    assert [len(c["frames"]) for c in data["cards"]] == [5] * 4 + [8]
    assert data["cards"][0]["captions"] == ["age: infant", "age: 75% infant / 25% older_adult", "age: 50% infant / 50% older_adult",
                                            "age: 25% infant / 75% older_adult", "age: older_adult"]
    # the end frames of a morph card are the pure-condition images of its seed
    info = json.loads((out / "teach.json").read_text())
    assert info["viewer"] == "viewer.html" and info["viewer_frames"] == 5
    seed = int(re.search(r"seed (\d+)", data["cards"][1]["title"]).group(1))
    spec = resolve_morph(SPACE, "age", None, None, diseases[1])
    for k, lv in ((0, spec.start), (-1, spec.end)):
        pure = rend.images([seed], SPACE.encode({"disease": diseases[1], "age": lv})[None], noise_seed=seed)[0]
        assert np.array_equal(decode(data["cards"][1]["frames"][k]), pure)
    # the quiz card: answer-sheet order, the key's answers, each image the quiz PNG
    with open(out / "answer_key.csv") as f:
        key = list(csv.DictReader(f))
    quiz = data["cards"][-1]
    assert quiz["hidden"] is True
    assert quiz["captions"] == [f"disease: {r['disease']} · age: {r['age']}" for r in key]
    assert quiz["names"][0] == "image 1 of 8 (quiz/001.png)"
    for r, uri in zip(key, quiz["frames"]):
        assert np.array_equal(decode(uri), np.asarray(Image.open(out / r["file"]).convert("RGB")))
    assert not any(c in visible_markup(text) for c in quiz["captions"])
    assert 'href="viewer.html"' in (out / "index.html").read_text()


def test_teach_without_viewer(tmp_path):
    from synth.synthesis.engine import Renderer
    from synth.synthesis.teach import make_teaching_set
    from tests.helpers import tiny_generator

    skin = ConditionSpace.from_levels({"stage": ["early", "late"]}, embed_total=16)
    rend = Renderer(tiny_generator(skin, 1), psi=0.7, noise_mode="const", mean_w_samples=8, batch=8)
    res = make_teaching_set(rend, skin, tmp_path, per_cell=1, steps=2, progress=False, viewer=False)
    assert res.viewer is None and not (tmp_path / "viewer.html").exists()
    assert "viewer.html" not in (tmp_path / "index.html").read_text()
    with pytest.raises(SynthesisError, match="--html-frames"):
        make_teaching_set(rend, skin, tmp_path / "x", per_cell=1, progress=False, viewer_frames=1)
    assert not (tmp_path / "x").exists()


_run = run_synthesis_cli


@pytest.fixture(scope="module")
def faces_ckpt(tmp_path_factory):
    from synth.networks.checkpoint import save_checkpoint
    from tests.helpers import tiny_generator

    path = tmp_path_factory.mktemp("ckpt") / "faces.ckpt"
    save_checkpoint(path, {"G_ema": tiny_generator(SPACE), "space": SPACE})
    return path


def test_cli_morph_html_and_teach_no_html(tmp_path, faces_ckpt):
    out = tmp_path / "m"
    r = _run(["morph", "--network", faces_ckpt, "--from", "child", "--to", "adolescent", "--seeds", "4,9", "--no-video",
              "--html", "--html-frames", "3", "--out", out, "--quiet", "--mean-w-samples", "8"])
    assert r.exit_code == 0, r.output
    assert "viewer.html" in r.output
    data = page_data((out / "viewer.html").read_text())
    assert [c["title"] for c in data["cards"]] == ["seed 4", "seed 9"]
    assert data["cards"][0]["captions"] == ["age: child", "age: 50% child / 50% adolescent", "age: adolescent"]
    info = json.loads((out / "morph.json").read_text())
    assert info["viewer"] == "viewer.html" and info["viewer_frames"] == 3
    assert info["network_sha256"] in (out / "viewer.html").read_text()  # the generator at the foot
    r = _run(["morph", "--network", faces_ckpt, "--no-video", "--seeds", "0", "--out", tmp_path / "plain", "--quiet",
              "--mean-w-samples", "8"])
    assert r.exit_code == 0 and not (tmp_path / "plain" / "viewer.html").exists()
    r = _run(["morph", "--network", faces_ckpt, "--html", "--html-frames", "1", "--out", tmp_path / "bad"])
    assert r.exit_code == 2 and "--html-frames" in r.output and not (tmp_path / "bad").exists()
    r = _run(["teach", "make", "--network", faces_ckpt, "--per-cell", "1", "--steps", "2", "--no-html", "--out", tmp_path / "t",
              "--quiet", "--mean-w-samples", "8", "--exclude-level", "age=child", "--exclude-level", "age=adolescent",
              "--exclude-level", "age=young_adult"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "t" / "viewer.html").exists() and "viewer" not in r.output


# ----------------------------------------------------------------------------------------
# In a real browser

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
INSTALL_HINT = ("install Debian's Chromium (`apt-get install -y --no-install-recommends chromium`; .ci/run does this as root) "
                "or set SYNTH_BROWSER=/path/to/chromium")


def _chromium() -> str | None:
    for cand in (os.environ.get("SYNTH_BROWSER"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    """A headless Chromium with a fresh profile, or a skip that says how to get one."""
    exe = _chromium()
    if exe is None:
        pytest.skip(f"browser test: no Chromium found; {INSTALL_HINT}")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test: the Python package playwright is missing; install the dev extra: "
                    "pip install -c constraints.txt -e '.[dev]' (no `playwright install` needed: the system Chromium is used)")
    pw = sync_playwright().start()
    try:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("chromium-profile")), executable_path=exe,
                                                    headless=True, args=BROWSER_ARGS, timeout=30_000)
    except PlaywrightError as e:
        pw.stop()
        pytest.skip(f"browser test: {exe} did not start under Playwright ({str(e).splitlines()[0]}); {INSTALL_HINT}")
    yield ctx
    ctx.close()
    pw.stop()


def _open(ctx, path: Path):
    page = ctx.new_page()
    problems, remote, answered = [], [], []
    local = ("file:", "data:")
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(local) else None)  # even attempts
    page.on("response", lambda r: answered.append(r.url) if not r.url.startswith(local) else None)
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("html[data-ready='1']", timeout=10_000)
    return page, problems, remote, answered


def test_browser_slider_keys_caption_and_quiz(browser_context, tiny_teach):
    t0 = time.monotonic()
    out, _, _ = tiny_teach
    path = out / "viewer.html"
    data = page_data(path.read_text())
    page, problems, remote, _ = _open(browser_context, path)
    try:
        src = lambda ci: page.get_attribute(f"#card-{ci} img", "src")  # noqa: E731
        caption = lambda ci: page.inner_text(f"#caption-{ci}")  # noqa: E731
        m0, m1 = data["cards"][0], data["cards"][1]
        assert src(0) == m0["frames"][0] and caption(0) == m0["captions"][0]
        # set the slider's value and dispatch an input event, as a drag does
        page.eval_on_selector("#slider-0", "(el) => { el.value = '2'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
        assert src(0) == m0["frames"][2] and caption(0) == m0["captions"][2] == "age: 50% infant / 50% older_adult"
        assert page.get_attribute("#card-0", "data-frame") == "2"
        assert "50% infant" in page.get_attribute("#slider-0", "aria-valuetext")
        # the keyboard on the focused slider
        page.focus("#slider-0")
        page.keyboard.press("ArrowRight")
        assert src(0) == m0["frames"][3] and caption(0) == m0["captions"][3]
        page.keyboard.press("End")
        assert src(0) == m0["frames"][-1] and caption(0) == "age: older_adult"
        page.keyboard.press("Home")
        assert src(0) == m0["frames"][0]
        # with the focus off the sliders the keys step the card used last
        page.click("#title-1")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        assert src(1) == m1["frames"][2] and caption(1) == m1["captions"][2]
        assert src(0) == m0["frames"][0]  # the other card did not move
        page.keyboard.press("ArrowLeft")
        assert src(1) == m1["frames"][1]
        page.keyboard.press("End")
        assert src(1) == m1["frames"][-1] and caption(1) == m1["captions"][-1]
        page.keyboard.press("Home")
        assert src(1) == m1["frames"][0] and src(0) == m0["frames"][0]
        assert page.get_attribute("#caption-1", "aria-live") == "polite"
        assert page.inner_text("label[for=slider-1]").startswith("age")

        # the quiz: no answer in the page's visible text until Reveal, and hidden again on the next image
        qi = len(data["cards"]) - 1
        quiz = data["cards"][qi]
        body = page.inner_text("body")
        assert not [a for a in quiz["captions"] if a in body]
        assert caption(qi) == "Answer hidden: press Reveal" and src(qi) == quiz["frames"][0]
        page.click(f"#card-{qi} button.reveal")
        assert caption(qi) == quiz["captions"][0] and quiz["captions"][0] in page.inner_text("body")
        assert page.is_disabled(f"#card-{qi} button.reveal")
        page.keyboard.press("ArrowRight")  # the quiz card is the current one now
        assert src(qi) == quiz["frames"][1] and caption(qi) == "Answer hidden: press Reveal"
        assert not [a for a in quiz["captions"] if a in page.inner_text("body")]
        assert page.inner_text(f"#card-{qi} .pos") == "image 2 of 8 (quiz/002.png)"
        page.click(f"#card-{qi} button.reveal")
        assert caption(qi) == quiz["captions"][1]
        page.eval_on_selector(f"#slider-{qi}", "(el) => { el.value = '5'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
        assert src(qi) == quiz["frames"][5] and caption(qi) == "Answer hidden: press Reveal"
    finally:
        page.close()
    assert problems == [] and remote == []
    assert time.monotonic() - t0 < 15


def test_browser_blocks_anything_outside_the_page(browser_context, tmp_path):
    """The page's CSP is really enforced: an injected remote image is refused (no request leaves)."""
    path = write_viewer(tmp_path / "v.html", hand_made_cards())
    page, problems, remote, answered = _open(browser_context, path)
    try:
        assert problems == [] and remote == []
        page.evaluate("() => { const i = new Image(); i.src = 'http://127.0.0.1:9/x.png'; document.body.appendChild(i); }")
        page.wait_for_timeout(200)
        assert any("Content Security Policy" in p for p in problems), problems
        assert answered == [] and page.evaluate("() => document.images[document.images.length - 1].naturalWidth") == 0
    finally:
        page.close()
