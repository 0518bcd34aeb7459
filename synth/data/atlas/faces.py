"""Stylised frontal faces with known disease x age ground truth.

Each *subject* has a fixed identity (skin tone, hair, face width, eye colour and a few
natural shape traits) and contributes 1-3 images at nearby ages.  Disease cues are
deliberately subtle, overlap between conditions and with normal variation, and change
with age, so a classifier has something real but not trivial to learn:

* ``syndrome_a``: wide mouth and full lips, periorbital fullness, short upturned nose;
  strongest in childhood, fading in adults, where a longer lower face appears.
* ``syndrome_b``: hooded, narrow eyes, long face, small mouth; more visible with age.
* ``other_condition``: weaker versions of both plus its own cue (wide-set,
  down-slanting eyes and heavy brows).
"""
from __future__ import annotations

import math
from typing import Mapping
from dataclasses import dataclass

import numpy as np

from . import draw

__all__ = [
    "AGE_BRACKETS",
    "DISEASES",
    "FaceSubject",
    "FaceImage",
    "STRENGTH",
    "age_bracket",
    "plan_faces",
    "STUDY_COUNTS",
    "render_face",
    "face_geometry",
]

DISEASES = ("syndrome_a", "syndrome_b", "other_condition", "unaffected")
# (level, lower bound inclusive, upper bound exclusive) in years.
AGE_BRACKETS = (
    ("infant", 0.0, 2.0),
    ("child", 2.0, 10.0),
    ("adolescent", 10.0, 20.0),
    ("young_adult", 20.0, 35.0),
    ("older_adult", 35.0, 80.0),
)

# Global strength of each disease cue.  Tuned with tools/calibrate_atlas.py so that a
# small CNN trained on 400 images reaches clearly-above-chance but far-from-perfect
# disease accuracy (see docs/atlas.md).
STRENGTH = {"a": 1.9, "b": 1.0, "other": 2.0}

SKIN_LIGHT = np.array([0.96, 0.81, 0.70], np.float32)
SKIN_MID = np.array([0.80, 0.60, 0.45], np.float32)
SKIN_DARK = np.array([0.38, 0.25, 0.17], np.float32)
HAIR_COLOURS = {
    "black": (0.08, 0.07, 0.07),
    "dark_brown": (0.22, 0.14, 0.09),
    "brown": (0.42, 0.28, 0.16),
    "blonde": (0.82, 0.68, 0.42),
    "red": (0.62, 0.27, 0.13),
}
EYE_COLOURS = {
    "dark": (0.16, 0.10, 0.07),
    "brown": (0.36, 0.22, 0.12),
    "hazel": (0.48, 0.38, 0.20),
    "green": (0.33, 0.48, 0.30),
    "blue": (0.34, 0.50, 0.72),
}
HAIR_STYLES = ("short", "long", "curly", "tied")
GREY_HAIR = np.array([0.80, 0.80, 0.78], np.float32)


def age_bracket(age_years: float) -> str:
    for name, lo, hi in AGE_BRACKETS:
        if lo <= age_years < hi:
            return name
    if age_years >= AGE_BRACKETS[-1][1]:
        return AGE_BRACKETS[-1][0]
    raise ValueError(f"age {age_years} is negative")


@dataclass(frozen=True)
class FaceSubject:
    subject: str
    disease: str
    severity: float
    # identity (constant for the subject)
    skin_tone: float
    hair_colour: str
    hair_style: str
    face_width: float
    eye_colour: str
    eye_spacing: float
    mouth_width: float
    nose_length: float
    lip_fullness: float
    brow_thickness: float
    grey_rate: float
    # how much of each syndrome's cue an other_condition subject shows
    mix_a: float = 0.0
    mix_b: float = 0.0

    def identity_columns(self) -> dict[str, str]:
        return {
            "skin_tone": f"{self.skin_tone:.4f}",
            "hair_colour": self.hair_colour,
            "hair_style": self.hair_style,
            "face_width": f"{self.face_width:.4f}",
            "eye_colour": self.eye_colour,
            "eye_spacing": f"{self.eye_spacing:.4f}",
            "mouth_width": f"{self.mouth_width:.4f}",
            "nose_length": f"{self.nose_length:.4f}",
            "lip_fullness": f"{self.lip_fullness:.4f}",
            "brow_thickness": f"{self.brow_thickness:.4f}",
            "grey_rate": f"{self.grey_rate:.4f}",
        }


@dataclass(frozen=True)
class FaceImage:
    subject: FaceSubject
    age_years: float

    @property
    def age(self) -> str:
        return age_bracket(self.age_years)


def sample_subject(rng: np.random.Generator, name: str, disease: str) -> FaceSubject:
    tone = float(rng.beta(1.5, 1.5))
    if tone > 0.6:
        hair = rng.choice(["black", "dark_brown", "brown"], p=[0.6, 0.35, 0.05])
        eye = rng.choice(["dark", "brown", "hazel"], p=[0.6, 0.35, 0.05])
    else:
        hair = rng.choice(list(HAIR_COLOURS), p=[0.15, 0.3, 0.25, 0.2, 0.1])
        eye = rng.choice(list(EYE_COLOURS), p=[0.15, 0.3, 0.15, 0.15, 0.25])
    if disease == "unaffected":
        severity = 0.0
    else:
        severity = float(rng.uniform(0.35, 1.0))
    mix_a = mix_b = 0.0
    if disease == "other_condition":
        mix_a, mix_b = (float(x) for x in rng.uniform(0.15, 0.5, size=2))
    return FaceSubject(
        subject=name,
        disease=disease,
        severity=severity,
        skin_tone=tone,
        hair_colour=str(hair),
        hair_style=str(rng.choice(HAIR_STYLES)),
        face_width=float(np.clip(rng.normal(1.0, 0.05), 0.86, 1.14)),
        eye_colour=str(eye),
        eye_spacing=float(np.clip(rng.normal(1.0, 0.06), 0.82, 1.18)),
        mouth_width=float(np.clip(rng.normal(1.0, 0.08), 0.78, 1.22)),
        nose_length=float(np.clip(rng.normal(1.0, 0.08), 0.78, 1.22)),
        lip_fullness=float(np.clip(rng.normal(1.0, 0.15), 0.6, 1.4)),
        brow_thickness=float(np.clip(rng.normal(1.0, 0.2), 0.5, 1.5)),
        grey_rate=float(rng.uniform(0.5, 1.3)),
        mix_a=mix_a,
        mix_b=mix_b,
    )


def _age_in(rng: np.random.Generator, bracket: int, lo: float | None = None, hi: float | None = None) -> float:
    _, blo, bhi = AGE_BRACKETS[bracket]
    lo = blo if lo is None else max(lo, blo)
    hi = bhi if hi is None else min(hi, bhi)
    # keep a margin inside the bracket so the rounded CSV value never crosses a boundary
    return float(rng.uniform(lo + 0.01, hi - 0.01))


def _span(bracket: int) -> float:
    # how far apart two photos of one person may be, in years
    return (0.6, 2.5, 3.0, 5.0, 8.0)[bracket]


# The shape of the Williams/22q study's data (docs/atlas.md): a large unaffected pool in every
# age group and small affected cells, rarest for infants and older adults (the study had 39
# Williams and 35 22q older adults against hundreds of children).
STUDY_COUNTS: dict[tuple[str, str], int] = {
    **{(d, a): n for d in ("syndrome_a", "syndrome_b", "other_condition")
       for a, n in zip(("infant", "child", "adolescent", "young_adult", "older_adult"), (6, 30, 20, 12, 4))},
    **{("unaffected", a): 100 for a in ("infant", "child", "adolescent", "young_adult", "older_adult")},
}


def plan_faces(per_cell: int | Mapping[tuple[str, str], int], seed: int) -> list[FaceImage]:
    """Decide every image's subject and age: exactly ``per_cell`` images per disease x age cell
    (a number for every cell, or a map ``(disease, age) -> count``, e.g. :data:`STUDY_COUNTS`).

    Subjects get 1-3 images, usually in one bracket, sometimes straddling the boundary
    with the next bracket (so grouped folds matter).
    """
    rng = np.random.default_rng([int(seed), 0xFACE, 1])
    images: list[FaceImage] = []
    n_sub = 0
    nb = len(AGE_BRACKETS)
    for disease in DISEASES:
        if isinstance(per_cell, Mapping):
            left = [int(per_cell.get((disease, AGE_BRACKETS[b][0]), 0)) for b in range(nb)]
        else:
            left = [int(per_cell)] * nb
        b = 0
        while b < nb:
            if left[b] == 0:
                b += 1
                continue
            k = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
            subj = sample_subject(rng, f"f{n_sub:05d}", disease)
            n_sub += 1
            cross = b + 1 < nb and left[b + 1] > 0 and k > 1 and rng.random() < 0.35
            if cross:
                # first image just below the boundary, the rest just above it
                edge = AGE_BRACKETS[b][2]
                span = _span(b)
                ages = [_age_in(rng, b, edge - span, None)]
                left[b] -= 1
                for _ in range(k - 1):
                    if left[b + 1] == 0:
                        break
                    ages.append(_age_in(rng, b + 1, None, edge + _span(b + 1)))
                    left[b + 1] -= 1
            else:
                k = min(k, left[b])
                a0 = _age_in(rng, b)
                span = _span(b)
                ages = [a0] + [_age_in(rng, b, a0 - span, a0 + span) for _ in range(k - 1)]
                left[b] -= k
            images.extend(FaceImage(subj, float(a)) for a in sorted(ages))
    return images


# ---- age and disease expression ------------------------------------------------------


def growth(age: float) -> float:
    """0 at birth -> 1 at about 18 years (fast early, slow later)."""
    return float(np.clip(age / 18.0, 0.0, 1.0) ** 0.7)


def ageing(age: float) -> float:
    """0 before 35 -> 1 at 75 years: grey hair, wrinkles, thinner lips."""
    return float(np.clip((age - 35.0) / 40.0, 0.0, 1.0))


def disease_expression(s: FaceSubject, age: float) -> tuple[float, float, float, float]:
    """(a, a_long, b, own) cue strengths for this subject at this age."""
    g = growth(age)
    a_curve = 0.45 + 0.55 * math.exp(-(((age - 6.0) / 9.0) ** 2))  # peaks in childhood
    b_curve = 0.3 + 0.7 * g  # becomes more visible with age
    long_curve = float(np.clip((age - 14.0) / 20.0, 0.0, 1.0))
    sev = s.severity
    if s.disease == "syndrome_a":
        return STRENGTH["a"] * sev * a_curve, STRENGTH["a"] * sev * long_curve, 0.0, 0.0
    if s.disease == "syndrome_b":
        return 0.0, 0.0, STRENGTH["b"] * sev * b_curve, 0.0
    if s.disease == "other_condition":
        return (
            STRENGTH["a"] * sev * s.mix_a * a_curve,
            STRENGTH["a"] * sev * s.mix_a * long_curve,
            STRENGTH["b"] * sev * s.mix_b * b_curve,
            STRENGTH["other"] * sev,
        )
    return 0.0, 0.0, 0.0, 0.0


@dataclass
class FaceGeometry:
    """Face layout in face units (head about 0.8 wide, y downwards)."""

    top: float
    centre: float  # widest line of the head, near the eyes
    chin: float
    half_width: float
    jaw_taper: float
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    eye_slant: float
    hood: float
    brow_y: float
    brow_t: float
    nose_y: float
    nose_w: float
    nostril: float
    mouth_y: float
    mouth_w: float
    lip_upper: float
    lip_lower: float
    bags: float


def face_geometry(s: FaceSubject, age: float) -> FaceGeometry:
    """Head proportions from identity, age and disease (no per-image randomness)."""
    g = growth(age)
    old = ageing(age)
    ea, el, eb, eo = disease_expression(s, age)
    top = -0.64
    centre = -0.02 + 0.10 * (1.0 - g)  # infants: big cranium, features low on the head
    lower = (0.40 + 0.18 * g) * (1.0 + 0.10 * eb + 0.07 * el)  # chin grows, long face in b
    chin = centre + lower
    half_width = 0.40 * s.face_width * (1.0 + 0.06 * (1.0 - g)) * (1.0 - 0.03 * eb)
    jaw_taper = 0.16 + 0.20 * g + 0.05 * eb
    eye_y = centre + 0.01
    eye_dx = 0.165 * s.eye_spacing * (1.0 + 0.04 * (1.0 - g)) * (1.0 + 0.10 * eo)
    eye_w = 0.080 * (1.0 + 0.28 * (1.0 - g)) * (1.0 - 0.08 * eb)
    eye_h = 0.047 * (1.0 + 0.30 * (1.0 - g)) * (1.0 - 0.30 * eb) * (1.0 - 0.1 * old)
    eye_slant = math.radians(6.0 * eo)  # down-slanting outer corners
    hood = 0.12 + 0.45 * eb + 0.12 * old
    brow_y = eye_y - 0.095 - 0.02 * g
    brow_t = 0.016 * s.brow_thickness * (0.5 + 0.5 * g) * (1.0 + 0.5 * eo)
    nose_len = (0.13 + 0.08 * g) * s.nose_length * (1.0 - 0.22 * ea)
    nose_y = eye_y + nose_len
    nose_w = 0.055 * (1.0 + 0.15 * ea + 0.1 * g)
    nostril = 0.012 * (1.0 + 1.0 * ea)
    mouth_y = nose_y + (chin - nose_y) * 0.40
    mouth_w = 0.105 * s.mouth_width * (0.85 + 0.15 * g) * (1.0 + 0.28 * ea - 0.20 * eb)
    lips = s.lip_fullness * (1.0 + 0.55 * ea) * (1.0 - 0.35 * old)
    return FaceGeometry(
        top=top, centre=centre, chin=chin, half_width=half_width, jaw_taper=jaw_taper,
        eye_y=eye_y, eye_dx=eye_dx, eye_w=eye_w, eye_h=eye_h, eye_slant=eye_slant, hood=hood,
        brow_y=brow_y, brow_t=brow_t, nose_y=nose_y, nose_w=nose_w, nostril=nostril,
        mouth_y=mouth_y, mouth_w=mouth_w, lip_upper=0.016 * lips, lip_lower=0.022 * lips,
        bags=0.9 * ea,
    )


def skin_rgb(tone: float) -> np.ndarray:
    if tone < 0.5:
        return SKIN_LIGHT + (SKIN_MID - SKIN_LIGHT) * (tone / 0.5)
    return SKIN_MID + (SKIN_DARK - SKIN_MID) * ((tone - 0.5) / 0.5)


def _head_sdf(u, v, gm: FaceGeometry, grow: float = 0.0):
    """Egg-shaped head: upper and lower half-ellipses meeting at the widest line."""
    below = v > gm.centre
    b = np.where(below, gm.chin - gm.centre + grow, gm.centre - gm.top + grow)
    t = np.clip((v - gm.centre) / (gm.chin - gm.centre), 0.0, 1.0)
    a = (gm.half_width + grow) * (1.0 - gm.jaw_taper * t * t)
    return draw.ellipse_sdf(u, v, 0.0, gm.centre, a, b)


# ---- rendering ------------------------------------------------------------------------


def render_face(img_spec: FaceImage, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one face; returns float32 RGB [R, R, 3] in [0, 1]."""
    s = img_spec.subject
    age = img_spec.age_years
    gm = face_geometry(s, age)
    g = growth(age)
    old = ageing(age)
    res = int(resolution)
    x, y = draw.grid(res)

    # nuisance: pose, lighting, background, expression, noise
    rot = math.radians(rng.normal(0.0, 4.0))
    scale = float(rng.uniform(1.28, 1.45))
    sx, sy = rng.normal(0.0, 0.035, size=2)
    sy += 0.08  # the face sits a little below the centre, like aligned face photos
    yaw = float(rng.normal(0.0, 0.02))  # features slide sideways a little: a hint of head turn
    light_dir = rng.uniform(0, 2 * math.pi)
    light = float(rng.uniform(0.05, 0.25))
    smile = float(rng.normal(0.25, 0.35))
    exposure = float(rng.normal(1.0, 0.06))
    noise_sigma = float(rng.uniform(0.004, 0.02))
    curl_phase = float(rng.uniform(0, 6.3))
    # (every random draw above and below happens whatever the subject looks like, so one
    # rng seed gives the same pose/lighting/background for any identity, age or disease)

    c, sn = math.cos(rot), math.sin(rot)
    xs, ys = (x - sx) / scale, (y - sy) / scale
    u = (c * xs + sn * ys).astype(np.float32)
    v = (-sn * xs + c * ys).astype(np.float32)
    aa = 2.0 / res / scale
    uf = u - yaw  # inner features slide with the yaw

    # background: muted colour, vertical gradient and blotchy texture
    bg = rng.uniform(0.25, 0.85, size=3).astype(np.float32)
    bg = 0.6 * bg + 0.4 * bg.mean()
    img = np.empty((res, res, 3), np.float32)
    img[:] = bg
    img *= (1.0 + 0.15 * rng.normal() * y)[..., None]
    img += (0.05 * draw.lowfreq(rng, res, 5))[..., None]

    skin = skin_rgb(s.skin_tone) * np.float32(rng.normal(1.0, 0.03))
    hair_rgb = np.array(HAIR_COLOURS[s.hair_colour], np.float32)
    grey = float(np.clip(old * s.grey_rate * 1.2, 0.0, 0.9))
    hair_rgb = hair_rgb + (GREY_HAIR - hair_rgb) * grey
    hair_amount = 0.35 + 0.65 * min(1.0, age / 3.0)  # infants: sparse hair
    head = _head_sdf(u, v, gm)

    # clothes and neck
    cloth = rng.uniform(0.1, 0.9, size=3).astype(np.float32)
    draw.blend(img, cloth, draw.coverage(draw.ellipse_sdf(u, v, 0.0, 1.30, 0.80, 0.50), aa))
    neck_w = 0.17 * s.face_width * (0.8 + 0.2 * g)
    neck = np.maximum(np.abs(u) - neck_w, gm.centre - v)
    draw.blend(img, skin * 0.82, draw.coverage(np.maximum(neck, v - 1.0), aa))

    # back hair (behind the head)
    hair_tex = 1.0 + 0.08 * np.sin(55.0 * u + 9.0 * v + rng.uniform(0, 6.3)).astype(np.float32)
    hair_col = hair_rgb[None, None, :] * hair_tex[..., None]
    if s.hair_style == "long" and age >= 2:
        back = draw.ellipse_sdf(u, v, 0.0, gm.centre + 0.12, gm.half_width * 1.22, 0.78)
        back = np.maximum(back, v - (gm.chin + 0.22))
        draw.blend(img, hair_col, draw.coverage(back, aa) * hair_amount)
    elif s.hair_style == "curly" and age >= 1:
        ang = np.arctan2(v - gm.centre, u)
        bump = 0.03 * np.sin(14.0 * ang + curl_phase)
        back = draw.ellipse_sdf(u, v, 0.0, gm.centre - 0.08, gm.half_width * 1.28 + bump, 0.64 + bump)
        back = np.maximum(back, v - gm.centre - 0.1)
        draw.blend(img, hair_col, draw.coverage(back, aa) * hair_amount)
    elif s.hair_style == "tied" and age >= 2:
        bun = draw.ellipse_sdf(u, v, 0.0, gm.top - 0.06, 0.16, 0.11)
        draw.blend(img, hair_col, draw.coverage(bun, aa) * hair_amount)

    # ears
    for side in (-1.0, 1.0):
        ear = draw.ellipse_sdf(u, v, side * gm.half_width * 0.98, gm.eye_y + 0.06, 0.055, 0.10)
        draw.blend(img, skin * 0.88, draw.coverage(ear, aa))

    # head with soft edge shading (a hint of roundness) and cheeks
    draw.blend(img, skin, draw.coverage(head, aa))
    rim = draw.coverage(head, aa) * np.clip(1.0 + head / 0.10, 0.0, 1.0)
    draw.blend(img, skin * 0.72, 0.45 * rim)
    cheek = (0.10 + 0.10 * (1.0 - g)) * draw.soft(
        np.minimum(
            draw.ellipse_sdf(uf, v, -gm.eye_dx, gm.mouth_y - 0.06, 0.09, 0.06),
            draw.ellipse_sdf(uf, v, gm.eye_dx, gm.mouth_y - 0.06, 0.09, 0.06),
        ),
        0.08,
    )
    draw.blend(img, skin * np.array([1.05, 0.82, 0.80], np.float32), cheek)

    # wrinkles (drawn before the fringe, which may hide forehead lines)
    wr = old * (0.7 + 0.3 * s.grey_rate)
    if wr > 0.02:
        ink = skin * 0.55
        t = 0.010
        for k in range(3):
            yy = gm.brow_y - 0.07 - 0.045 * k
            draw.blend(img, ink, 0.55 * wr * draw.curve_y(uf, v, -0.16, 0.16, lambda q, yy=yy: yy + 0.5 * q * q, t, aa))
        for side in (-1.0, 1.0):
            x0 = side * (gm.nose_w + 0.03)
            x1 = side * (gm.mouth_w + 0.03)
            f = lambda q, x0=x0, x1=x1: x0 + (x1 - x0) * np.clip((q - gm.nose_y + 0.02) / (gm.mouth_y - gm.nose_y + 0.05), 0, 1) ** 0.8
            draw.blend(img, ink, 0.65 * wr * draw.curve_x(uf, v, gm.nose_y - 0.02, gm.mouth_y + 0.03, f, t, aa))
            ex = side * (gm.eye_dx + gm.eye_w + 0.02)
            for k in (-1, 0, 1):
                draw.blend(img, ink, 0.5 * wr * draw.curve_y(uf, v, min(ex, ex + side * 0.05), max(ex, ex + side * 0.05),
                                                            lambda q, ex=ex, k=k: gm.eye_y + k * 0.6 * side * (q - ex), t * 0.8, aa))

    # eyes: white, iris, pupil, eyelid hood, under-eye fullness
    iris_rgb = np.array(EYE_COLOURS[s.eye_colour], np.float32)
    gaze = rng.normal(0.0, 0.012, size=2)
    for side in (-1.0, 1.0):
        cx = side * gm.eye_dx
        ang = side * gm.eye_slant
        eye = draw.ellipse_sdf(uf, v, cx, gm.eye_y, gm.eye_w, gm.eye_h, ang)
        eye_in = draw.coverage(eye, aa)
        # periorbital fullness: a lit puffy crescent under the eye with a shadow below it
        if gm.bags > 0.01:
            bag = draw.soft(draw.ellipse_sdf(uf, v, cx, gm.eye_y + gm.eye_h + 0.028, gm.eye_w * 1.1, 0.03), 0.035)
            draw.blend(img, np.minimum(skin * 1.15, 1.0), 0.55 * gm.bags * bag)
            sh = draw.soft(draw.ellipse_sdf(uf, v, cx, gm.eye_y + gm.eye_h + 0.06, gm.eye_w * 1.0, 0.012), 0.02)
            draw.blend(img, skin * 0.7, 0.5 * gm.bags * sh)
            lid = draw.soft(draw.ellipse_sdf(uf, v, cx, gm.eye_y - gm.eye_h - 0.02, gm.eye_w * 1.1, 0.025), 0.03)
            draw.blend(img, np.minimum(skin * 1.12, 1.0), 0.45 * gm.bags * lid)
        draw.blend(img, (0.93, 0.92, 0.88), eye_in)
        ir = gm.eye_h * 0.95 + 0.006
        iris = draw.ellipse_sdf(uf, v, cx + gaze[0], gm.eye_y + gaze[1], ir, ir)
        draw.blend(img, iris_rgb, draw.coverage(iris, aa) * eye_in)
        pupil = draw.ellipse_sdf(uf, v, cx + gaze[0], gm.eye_y + gaze[1], ir * 0.45, ir * 0.45)
        draw.blend(img, (0.03, 0.03, 0.03), draw.coverage(pupil, aa) * eye_in)
        # upper lid: covers the top of the eye down to a line set by `hood`
        lid_line = gm.eye_y - gm.eye_h + 2.0 * gm.eye_h * gm.hood
        cover = draw.coverage(v - lid_line, aa) * eye_in
        draw.blend(img, skin * 0.86, cover)
        lash = draw.coverage(np.abs(v - lid_line) - 0.006, aa) * eye_in
        draw.blend(img, (0.06, 0.05, 0.05), 0.8 * lash)
        crease_y = gm.eye_y - gm.eye_h - 0.015 + 0.03 * gm.hood
        crease = draw.curve_y(uf, v, cx - gm.eye_w, cx + gm.eye_w,
                              lambda q, cx=cx, cy=crease_y: cy + 0.8 * (q - cx) ** 2, 0.007, aa)
        draw.blend(img, skin * 0.6, 0.6 * crease)
        # brow
        lift = 0.01 * smile
        brow = draw.curve_y(uf, v, cx - gm.eye_w * 1.2, cx + gm.eye_w * 1.3,
                            lambda q, cx=cx: gm.brow_y - lift + 1.6 * (q - cx) ** 2 + side * 0.08 * (q - cx) * gm.eye_slant,
                            gm.brow_t, aa)
        brow_rgb = np.array(HAIR_COLOURS[s.hair_colour], np.float32) * 0.8
        draw.blend(img, brow_rgb + (GREY_HAIR - brow_rgb) * grey * 0.6, 0.85 * brow * (0.4 + 0.6 * g))

    # nose: bridge shadow, tip, nostrils (more visible when upturned)
    shadow_side = 1.0 if math.cos(light_dir) < 0 else -1.0
    bridge = draw.curve_x(uf, v, gm.eye_y + 0.02, gm.nose_y - 0.01,
                          lambda q: np.full_like(q, shadow_side * gm.nose_w * 0.55), 0.012, aa)
    draw.blend(img, skin * 0.7, 0.35 * bridge)
    tip = draw.soft(draw.ellipse_sdf(uf, v, 0.0, gm.nose_y - 0.012, gm.nose_w * 0.7, 0.03), 0.03)
    draw.blend(img, np.minimum(skin * 1.1, 1.0), 0.5 * tip)
    for side in (-1.0, 1.0):
        nos = draw.ellipse_sdf(uf, v, side * gm.nose_w * 0.5, gm.nose_y + 0.01, 0.02, gm.nostril)
        draw.blend(img, skin * 0.35, 0.85 * draw.coverage(nos, aa))

    # mouth: lips as a bent ellipse (bending = expression), dark line between them
    bend = 2.2 * smile
    vm = v - gm.mouth_y + bend * (uf**2)
    upper = draw.ellipse_sdf(uf, vm, 0.0, -gm.lip_upper * 0.5, gm.mouth_w, gm.lip_upper)
    lower = draw.ellipse_sdf(uf, vm, 0.0, gm.lip_lower * 0.6, gm.mouth_w * 0.9, gm.lip_lower)
    lip_rgb = skin * np.array([0.95, 0.62, 0.62], np.float32)
    draw.blend(img, lip_rgb, draw.coverage(np.minimum(upper, np.maximum(lower, -vm)), aa))
    draw.blend(img, lip_rgb * 1.08, draw.coverage(np.maximum(lower, -vm), aa))
    line = draw.coverage(np.maximum(np.abs(vm) - 0.005, np.abs(uf) - gm.mouth_w * 0.98), aa)
    draw.blend(img, skin * 0.3, 0.9 * line)

    # front hair: fringe over the forehead, hairline recedes a little in older adults
    hairline = gm.top + (0.20 + 0.06 * g) * (1.0 - 0.25 * old * s.grey_rate)
    wave = 0.03 * np.sin(7.0 * u + rng.uniform(0, 6.3))
    front = np.maximum(_head_sdf(u, v, gm, grow=0.035), v - (hairline + wave + 0.18 * u * u))
    draw.blend(img, hair_col, draw.coverage(front, aa) * hair_amount)

    # lighting: directional gradient over the whole picture, exposure, sensor noise
    shade = 1.0 + light * (math.cos(light_dir) * x + math.sin(light_dir) * y)
    img *= (shade * exposure)[..., None]
    img += noise_sigma * rng.standard_normal(img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)
