"""SynthFaces: procedural, part-annotated face images, drawn in batches with torch.

Every image comes with a label map over PARTS (each pixel has exactly one label), and per-image attributes.
Faces vary in position, scale, rotation, feature sizes and spacing, colours, background, hair style,
mouth (smile / open), eyes (open / closed) and glasses. Shapes are anti-aliased: each part is a soft mask
(a linear ramp of its signed distance, 2.4 pixels wide) composited in painter's order, and the label of a
pixel is the top-most part covering half of it or more.
"""
import functools
import math

import torch

PARTS = ["background", "skin", "hair", "left_eye", "right_eye", "brows", "nose", "mouth", "glasses"]
ATTRIBUTES = ["smile", "mouth_open", "eyes_open", "glasses", "hair_color", "skin_tone", "pose_x", "pose_y", "long_hair"]

_SKIN = torch.tensor([[0.98, 0.85, 0.72], [0.92, 0.72, 0.56], [0.76, 0.54, 0.38], [0.52, 0.36, 0.24], [0.36, 0.24, 0.16]])
_HAIR = torch.tensor([[0.08, 0.06, 0.05], [0.35, 0.22, 0.12], [0.75, 0.58, 0.30], [0.62, 0.25, 0.10], [0.55, 0.55, 0.55]])


def _lerp_palette(palette, t):
    """Colour at position t in [0, 1] along a palette of rows."""
    x = t * (len(palette) - 1)
    i = x.floor().clamp(max=len(palette) - 2).long()
    w = (x - i)[:, None]
    return palette[i] * (1 - w) + palette[i + 1] * w


# Shapes are anti-aliased with a linear coverage ramp across their edge, this many pixels wide.
_EDGE_PX = 2.4
_EYE_RGB, _GLASSES_RGB = [0.08, 0.08, 0.12], [0.15, 0.15, 0.2]
_MOUTH_OPEN_RGB, _LIPS_RGB = [0.3, 0.05, 0.05], [0.75, 0.25, 0.3]


@functools.lru_cache(maxsize=None)
def _colours_on(dev: torch.device) -> dict:
    """The fixed colours as tensors on `dev`, copied there once: on a GPU each copy waits for the queue to drain."""
    rgb = {"eye": _EYE_RGB, "glasses": _GLASSES_RGB, "mouth_open": _MOUTH_OPEN_RGB, "lips": _LIPS_RGB}
    return {"skin": _SKIN.to(dev), "hair": _HAIR.to(dev), **{k: torch.tensor(v, device=dev) for k, v in rgb.items()}}
# Painter's order, bottom up. Past the hair behind the face, it is also the order of PARTS.
_LAYERS = ["hair", "skin", "hair", "left_eye", "right_eye", "brows", "nose", "mouth", "glasses"]


class _Planes:
    """E affine functions of the pixel position per face, f = px * x + py * y + k0, each [N, E].

    Every distance in a face is affine in the pixel position once the face's offset, rotation and scale are known,
    so a shape costs one broadcast add of a row and a column per plane, plus a few passes over its pixels."""

    def __init__(self, px, py, k0):
        self.px, self.py, self.k0 = px, py, k0

    @staticmethod
    def in_face(frame, a_u, a_v, c):
        """a_u * u + a_v * v + c, where (u, v) are the face's own coordinates (centred, upright, unit scale)."""
        cx, cy, cos, sin = frame
        px, py = a_u * cos - a_v * sin, a_u * sin + a_v * cos
        return _Planes(px, py, c - cx * px - cy * py)

    def __getitem__(self, rows):
        return _Planes(self.px[rows], self.py[rows], self.k0[rows])

    def draw(self, axis):
        """Values at every pixel: [N, E, S, S] (axis: the S pixel centres in [-1, 1])."""
        row = torch.addcmul(self.k0[..., None, None], self.px[..., None, None], axis)
        return row + self.py[..., None, None] * axis[:, None]


class SynthFaces(torch.utils.data.Dataset):
    """n faces of size×size pixels, deterministic for `seed`. Items: (image [3,S,S] in [-1,1], labels [S,S] int64).

    Parameters for all n images are drawn up front (a few floats each); pixels are rendered on demand,
    in batches by `render(indices)`, so 50k images cost no memory until used. Rendering all 50k at 64 px takes
    about 15 s on 2 CPU cores (4 s at 32 px); `render(..., device="cuda")` draws on a GPU.
    """

    parts = PARTS
    # Bumped whenever the same seed draws different pixels, so that models cached on older images are retrained.
    renderer_version = 2

    def __init__(self, size: int = 64, n: int = 50000, seed: int = 0):
        if size < 8:
            raise ValueError(f"SynthFaces: size must be >= 8 pixels, got {size}")
        if n < 1:
            raise ValueError(f"SynthFaces: n must be >= 1, got {n}")
        self.size, self.n, self.seed = size, n, seed
        g = torch.Generator().manual_seed(seed)
        u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)  # noqa: E731
        coin = lambda p: (torch.rand(n, generator=g) < p).float()  # noqa: E731
        self.params = {
            "cx": u(-0.12, 0.12), "cy": u(-0.08, 0.1), "scale": u(0.8, 1.1), "angle": u(-0.2, 0.2),
            "face_w": u(0.5, 0.6), "face_h": u(0.66, 0.76),
            "skin_tone": u(0, 1), "hair_color": u(0, 1), "bg_hue": u(0, 1), "bg_light": u(0.25, 0.85),
            "hairline": u(-0.55, -0.3), "long_hair": coin(0.45),
            "eye_dx": u(0.19, 0.27), "eye_y": u(-0.14, -0.02), "eye_r": u(0.07, 0.1), "eyes_open": coin(0.8),
            "brow_gap": u(0.09, 0.14), "nose_len": u(0.08, 0.14), "mouth_y": u(0.3, 0.42), "mouth_w": u(0.14, 0.26),
            "smile": u(-0.3, 1.0), "mouth_open": coin(0.35), "glasses": coin(0.3),
        }

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        img, lab = self.render(torch.tensor([int(i)]))
        return img[0], lab[0]

    def attributes(self, indices=None) -> torch.Tensor:
        """[N, len(ATTRIBUTES)] float attributes, in the order of ATTRIBUTES."""
        idx = torch.arange(self.n) if indices is None else torch.as_tensor(indices)
        p = {k: v[idx] for k, v in self.params.items()}
        return torch.stack([(p["smile"] > 0.3).float(), p["mouth_open"], p["eyes_open"], p["glasses"],
                            p["hair_color"], p["skin_tone"], p["cx"], p["cy"], p["long_hair"]], dim=1)

    # Pixels are drawn about this many at a time (N * size * size): the ~100 passes over them then stay in the CPU's
    # cache, and memory stays bounded. A GPU takes 64x larger chunks.
    render_pixels = 1 << 17

    def render(self, indices, device=None):
        """Images [N,3,S,S] in [-1,1] and label maps [N,S,S] (int64 indices into PARTS), drawn on `device`
        (default CPU; on a GPU a batch costs next to nothing). The same indices give the same pixels anywhere."""
        dev = torch.device(device) if device is not None else torch.device("cpu")
        idx = torch.as_tensor(indices, dtype=torch.long).cpu().reshape(-1)
        faces = self._geometry(idx, dev)
        pixels = self.render_pixels * (64 if dev.type == "cuda" else 1)
        step = max(1, pixels // self.size ** 2)
        if len(idx) <= step:
            return self._draw(faces)
        img = torch.empty(len(idx), 3, self.size, self.size, device=dev)
        labels = torch.empty(len(idx), self.size, self.size, dtype=torch.long, device=dev)
        for i in range(0, len(idx), step):
            img[i:i + step], labels[i:i + step] = self._draw({k: v[i:i + step] for k, v in faces.items()})
        return img, labels

    def _geometry(self, idx, dev):
        """Everything about the faces `idx` but their pixels: each shape as planes (see _Planes) with the per-face
        numbers that turn them into coverage, and the colours of the layers. Small: a few hundred floats a face."""
        # One copy to the device, not one per parameter: each copy from pageable memory waits for the GPU.
        table = torch.stack([v[idx] for v in self.params.values()], 1).to(dev)
        p = {k: table[:, i:i + 1] for i, k in enumerate(self.params)}  # [N, 1] each
        N, S = len(idx), self.size
        frame = (p["cx"], p["cy"], torch.cos(p["angle"]) / p["scale"], torch.sin(p["angle"]) / p["scale"])
        # Coverage is a ramp of the signed distance to a shape's edge; `gain` turns face units into ramp units.
        gain = p["scale"] / (_EDGE_PX * 2 / S)
        cat = lambda *cols: torch.cat(torch.broadcast_tensors(*cols), 1)  # noqa: E731  [N, E]
        zero = torch.zeros_like(gain)
        out = {}

        # Ellipses. To first order, (1 - q) / 2 * min radius is the distance to the edge (q: the squared normalised
        # radius), and only the ramp's few pixels around the edge matter; this keeps the square root out.
        # sqrt(k) scales both axes, so that coverage = clamp(k + 1/2 - q k).
        fw, fh, ex, ey, er, nose = p["face_w"], p["face_h"], p["eye_dx"], p["eye_y"], p["eye_r"], p["nose_len"]
        eye_ry, brow_y, lens_r = er * (0.2 + 0.5 * p["eyes_open"]), ey - p["brow_gap"], er * 1.6
        # face, head (hair cap), long hair, left eye, right eye, left brow, right brow, nose, glasses' bridge
        cx = cat(zero, zero, zero, -ex, ex, -ex, ex, zero, zero)
        cy = cat(zero, zero - 0.08, zero + 0.25, ey, ey, brow_y, brow_y, ey + 0.06 + nose, ey - 0.02)
        rx = cat(fw, fw * 1.12, fw * 1.25, er, er, er * 1.3, er * 1.3, er * 0.55, ex - lens_r)
        ry = cat(fh, fh, fh * 1.1, eye_ry, eye_ry, er * 0.28, er * 0.28, nose * 0.9, zero + 0.014)
        k = torch.minimum(rx, ry) * gain / 2
        g = k.sqrt()
        out["ellipse_u"] = _Planes.in_face(frame, g / rx, 0, -g * cx / rx)
        out["ellipse_v"] = _Planes.in_face(frame, 0, g / ry, -g * cy / ry)
        out["ellipse_top"] = k + 0.5

        # The glasses' rims: rings around the eyes, in ramp units: coverage = clamp(1/2 + width - |d - r|).
        out["ring_u"] = _Planes.in_face(frame, gain, 0, gain * cat(ex, -ex))
        out["ring_v"] = _Planes.in_face(frame, 0, gain, -gain * ey)
        out["ring_r"], out["ring_top"] = gain * lens_r, 0.5 + gain * 0.018

        # The mouth: an ellipse whose v is shifted by a parabola in u, so that a smile bends it up at the corners.
        my, mw = p["mouth_y"], p["mouth_w"]
        mh = 0.025 + 0.06 * p["mouth_open"]
        k = mh * gain / 2
        g = k.sqrt()
        out["mouth_u"] = _Planes.in_face(frame, g / mw, 0, 0)
        out["mouth_v"] = _Planes.in_face(frame, 0, g / mh, -g * my / mh)
        out["mouth_bend"], out["mouth_top"] = p["smile"] * 0.25 * mw / (mh * g), k + 0.5

        # Half-planes: above the hairline (a little below it: the fringe over the face), and below v = -0.1
        # (long hair), as coverage: 1/2 + the signed distance in ramp units.
        out["half"] = _Planes.in_face(frame, 0, gain * cat(zero - 1, zero + 1),
                                     0.5 + gain * cat(p["hairline"] + 0.02, zero + 0.1))
        out["long_hair"], out["glasses"] = p["long_hair"], p["glasses"]
        # light from the top left: the skin's brightness changes by -0.15 x - 0.09 y (image coordinates)
        out["light"] = _Planes(zero - 0.15, zero - 0.09, 0.15 * p["cx"] + 0.09 * p["cy"])

        # Colours, one per layer over the background, as 2 rgb - 1 (the images' range).
        colours = _colours_on(dev)
        skin = _lerp_palette(colours["skin"], p["skin_tone"][:, 0])
        hair = _lerp_palette(colours["hair"], p["hair_color"][:, 0])
        hue = p["bg_hue"][:, 0] * 2 * math.pi
        bg = (p["bg_light"] + torch.stack([torch.cos(hue), torch.cos(hue - 2.09), torch.cos(hue + 2.09)], 1) * 0.25)
        rgb = lambda name: colours[name].expand(N, 3)  # noqa: E731
        mouth = torch.where(p["mouth_open"] > 0.5, rgb("mouth_open"), rgb("lips"))
        layers = [bg.clamp(0, 1), hair, skin, hair, rgb("eye"), rgb("eye"), hair * 0.6, skin * 0.8, mouth,
                  rgb("glasses")]
        out["colours"] = torch.stack(layers, 1) * 2 - 1  # [N, 1 + len(_LAYERS), 3]
        out["skin_light"] = skin * 2
        return out

    def _draw(self, faces):
        """Images and labels for the faces of one chunk, from their geometry."""
        axis = (torch.arange(self.size, device=faces["colours"].device, dtype=torch.float32) + 0.5) / self.size * 2 - 1
        ramp_down = lambda q, top: torch.sub(top[..., None, None], q, out=q).clamp_(0, 1)  # noqa: E731
        ell = faces["ellipse_u"].draw(axis).square_()
        v = faces["ellipse_v"].draw(axis)
        ell = ramp_down(ell.addcmul_(v, v), faces["ellipse_top"]).unbind(1)
        face, head, long_hair, left_eye, right_eye, left_brow, right_brow, nose, bridge = ell
        d = faces["ring_u"].draw(axis).square_()
        v = faces["ring_v"].draw(axis)
        rims = ramp_down(d.addcmul_(v, v).sqrt_().sub_(faces["ring_r"][..., None, None]).abs_(), faces["ring_top"])
        u2 = faces["mouth_u"].draw(axis).square_()
        v = faces["mouth_v"].draw(axis).addcmul_(u2, faces["mouth_bend"][..., None, None])
        mouth = ramp_down(u2.addcmul_(v, v), faces["mouth_top"])[:, 0]
        fringe, below = faces["half"].draw(axis).clamp_(0, 1).unbind(1)

        hair = head.addcmul(long_hair, below * faces["long_hair"][..., None]).clamp_(0, 1)
        glasses = (rims.sum(1) + bridge).clamp_(0, 1).mul_(faces["glasses"][..., None])
        # in the order of _LAYERS; the hair behind the face is painted whole (only off the face, it would leave a seam
        # of background where both are half on), and labelled only off the face
        masks = [hair, face, hair * fringe * face, left_eye, right_eye,
                 torch.maximum(left_brow, right_brow), nose, mouth, glasses]
        labelled = [hair * (1 - face)] + masks[1:]

        colours = faces["colours"][..., None, None]  # [N, layers + 1, 3, 1, 1]
        img = colours[:, 0].expand(-1, -1, self.size, self.size).clone()
        # The label is the top-most part covering half the pixel or more: floor(mask + 1/2) is 1 there (0 under it),
        # and the parts' numbers grow up the painter's order, past the hair behind the face, labelled off the face.
        top = torch.zeros_like(face)
        for i, (mask, label_mask, part) in enumerate(zip(masks, labelled, _LAYERS), start=1):
            target = colours[:, i]
            if part == "skin":
                target = target + faces["skin_light"][..., None, None] * faces["light"].draw(axis)
            img.lerp_(target.expand_as(img), mask[:, None])
            torch.maximum(top, label_mask.add(0.5).floor_().mul_(PARTS.index(part)), out=top)
        return img.clamp_(-1, 1), top.long()

    def masks(self, labels: torch.Tensor) -> torch.Tensor:
        """One-hot part masks [N, len(PARTS), S, S] from label maps."""
        return torch.nn.functional.one_hot(labels, len(PARTS)).permute(0, 3, 1, 2).bool()
