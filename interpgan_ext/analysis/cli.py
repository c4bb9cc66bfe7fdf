"""CLI verbs of the analysis toolkit: `interpgan dissect | compare | sefa | ganspace | latent-shift | invert | ace | boundaries | learn-directions | steer |
text-edit RUN ...`.
Each writes a PNG (and prints its numbers)."""
import os
import sys

import torch
from .._cli_args import FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_REAL, real_in
from ..metrics.segmenter import DEFAULT_STEPS as SEG_STEPS
from ..viz import labelled_rows


def _warn_labels_from_synthfaces(run, verb: str, what: str = "part labels"):
    """The part segmenter and the attribute classifier learn SynthFaces' labels. On a run trained on other images
    they still label what they see, as if it were SynthFaces: say so, rather than pass that off as the run's."""
    if not run.on_synth_faces:
        print(f"interpgan {verb}: warning: this run was trained on {run.data!r}, which has no {what}. The {what} here "
              "come from a model trained on SynthFaces, and mean something only as far as the run's images look "
              "like SynthFaces' faces.", file=sys.stderr)


def _direction_grid(run, directions, strengths, path, layers=None, n_images=4, seed=0):
    from .directions import edit_along

    z = run.latents(n_images, seed)
    rows, labels = [], []
    for k, d in enumerate(directions):
        imgs = edit_along(run.G, z, d.to(run.device), strengths, layers)  # [A, B, 3, S, S]
        for b in range(min(2, n_images)):
            rows.append(imgs[:, b])
            labels.append(f"dir {k} #{b}")
    return labelled_rows(rows, labels, path, scale=max(1, 64 // run.G(z[:1]).shape[-1]), label_width=70,
                         header=[f"{a:+g}" for a in strengths])


def sefa_cmd(run, args):
    from .directions import default_sefa_layers, linear_weights, sefa

    names, shift_layers = (args.layers, args.layers if args.in_layers else None) if args.layers else \
        default_sefa_layers(run.G, run.z_dim)
    dirs, evals = sefa(linear_weights(run.G, names), args.k)
    path = _direction_grid(run, dirs, args.strengths, args.out or os.path.join(run.path, "sefa.png"), shift_layers,
                           seed=args.seed)
    print(f"SeFa over {len(names)} layer(s) ({names[0]}...): top eigenvalues "
          + ", ".join(f"{v:.3g}" for v in evals.tolist()) + f"\nwrote {path}")
    return dirs, shift_layers


def ganspace_cmd(run, args):
    from .directions import ganspace

    z = run.latents(args.samples, args.seed + 1)
    dirs, ratio = ganspace(z, run.G, args.layer or run.layer, n_components=args.k)
    path = _direction_grid(run, dirs, args.strengths, args.out or os.path.join(run.path, "ganspace.png"), seed=args.seed)
    print(f"GANSpace on {args.layer or run.layer}: explained variance " + ", ".join(f"{v:.3f}" for v in ratio.tolist())
          + f"\nwrote {path}")
    return dirs


def latent_shift_cmd(run, args):
    """Masks from the direction that best segments the background, among the top SeFa directions (both signs),
    scored against the segmenter's background labels."""
    from ..data import PARTS
    from ..metrics import load_or_train_segmenter
    from ..viz import label_overlay
    from .directions import default_sefa_layers, linear_weights, sefa
    from .latent_shift import latent_shift_masks, mask_iou

    names, layers = default_sefa_layers(run.G, run.z_dim)
    if layers is not None:
        sys.exit("interpgan latent-shift: needs directions in z (a G whose first Linear reads z)")
    dirs, _ = sefa(linear_weights(run.G, names), args.k)
    _warn_labels_from_synthfaces(run, "latent-shift", "part labels")
    seg, _ = load_or_train_segmenter(run.path, run.meta["size"], device=run.device, steps=args.seg_steps,
                                     progress=not args.no_progress)
    z = run.latents(args.samples, args.seed)
    with torch.no_grad():
        bg = seg.segment(run.G(z)) == PARTS.index("background")
    scores = []
    for k, d in enumerate(dirs):
        for sign in (1, -1):
            m = latent_shift_masks(run.G, z, sign * args.shift * d.to(run.device))
            scores.append((mask_iou(m, bg), k, sign, m))
    iou, k, sign, masks = max(scores, key=lambda s: s[0])
    x = run.G(z[:8]).detach()
    path = labelled_rows([x, label_overlay(x, masks[:8].long(), 2), label_overlay(x, bg[:8].long(), 2)],
                         ["images", "shift mask", "segmenter bg"], args.out or os.path.join(run.path, "latent_shift.png"),
                         scale=max(1, 64 // x.shape[-1]), label_width=90)
    print(f"best background direction: SeFa {k} x {sign:+d} * {args.shift}: IoU with the background {iou:.3f}"
          f"\nwrote {path}")
    return iou


def resolve_direction(run, spec: str, args):
    """(direction, layers to shift or None for z, strength) from "METHOD:WHICH:ALPHA": sefa:K, ganspace:K,
    learned:K (a quick Voynov-Babenko run) or boundary:ATTRIBUTE (InterFaceGAN on the attribute classifier)."""
    from ..data import ATTRIBUTES
    from .directions import default_sefa_layers, ganspace, linear_weights, sefa, svm_boundary

    try:
        method, which, alpha = spec.split(":")
        alpha = float(alpha)
    except ValueError:
        raise ValueError(f"direction {spec!r}: expected METHOD:WHICH:ALPHA, e.g. sefa:0:3 or boundary:smile:2")
    if method == "boundary":
        from .attributes import load_or_train_attribute_classifier

        if which not in ATTRIBUTES:
            raise ValueError(f"direction {spec!r}: unknown attribute; choose from {ATTRIBUTES}")
        _warn_labels_from_synthfaces(run, "invert", "attributes")
        clf, _ = load_or_train_attribute_classifier(run.path, run.meta["size"], device=run.device,
                                                    steps=args.clf_steps, progress=not args.no_progress)
        z = run.latents(2000, args.seed + 9)
        with torch.no_grad():
            scores = torch.cat([clf.scores(run.G(zb)) for zb in z.split(256)])[:, ATTRIBUTES.index(which)]
        return svm_boundary(z.cpu(), scores.cpu())[0], None, alpha
    k = int(which)
    if method == "sefa":
        names, layers = default_sefa_layers(run.G, run.z_dim)
        return sefa(linear_weights(run.G, names), k + 1)[0][k], layers, alpha
    if method == "ganspace":
        return ganspace(run.latents(max(256, 4 * (k + 1)), args.seed + 9), run.G, run.layer, k + 1)[0][k], None, alpha
    if method == "learned":
        from .learned import learn_directions

        return learn_directions(run.G, run.z_dim, k + 1, steps=200, device=run.device,
                                progress=not args.no_progress)[0][k], None, alpha
    raise ValueError(f"direction {spec!r}: METHOD must be sefa, ganspace, learned or boundary")


def invert_cmd(run, args):
    from ..data import build_dataset
    from .inversion import invert, train_encoder

    data = build_dataset(args.images, run.meta["size"], n=args.n, seed=args.seed + 5, max_images=args.n)
    x = torch.stack([data[i][0] if isinstance(data[i], (tuple, list)) else data[i] for i in range(min(args.n, len(data)))])
    x = x.to(run.device)
    E = train_encoder(run.G, run.z_dim, run.meta["size"], steps=args.encoder_steps, device=run.device,
                      progress=not args.no_progress)
    with torch.no_grad():
        guess = run.G(E(x))
    z, rec, err = invert(run.G, x, run.z_dim, steps=args.steps, encoder=E)
    rows, labels = [x, guess, rec], ["target", "encoder", "optimised"]
    if args.swap_group is not None:  # edit the inverted images: each takes the group from the next one
        from ..edit import swap_concept
        from ..runs import partition_of

        res = swap_concept(run.G, run.layer, z, z.roll(-1, 0), groups=args.swap_group, q=partition_of(run))
        rows.append(res.edited_a)
        labels.append(f"swap g{','.join(map(str, args.swap_group))}")
    for spec in args.direction or []:  # or move them along any of the toolkit's directions
        from .directions import edit_along

        d, layers, alpha = resolve_direction(run, spec, args)
        rows.append(edit_along(run.G, z, d.to(run.device), [alpha], layers)[0])
        labels.append(spec[:14])
    path = labelled_rows(rows, labels,
                         args.out or os.path.join(run.path, "inversion.png"), scale=max(1, 64 // x.shape[-1]),
                         label_width=80)
    print(f"inverted {len(x)} images from {args.images}: pixel MSE mean {err.mean():.4f}\nwrote {path}")
    return z


def ace_cmd(run, args):
    from ..data import PARTS
    from ..edit import deterministic, generate
    from ..metrics import load_or_train_segmenter
    from .causal import ablate_units, rank_units_by_ace

    if args.part not in PARTS:
        sys.exit(f"interpgan ace: unknown part {args.part!r}; choose from {PARTS}")
    p = PARTS.index(args.part)
    _warn_labels_from_synthfaces(run, "ace", "part labels")
    seg, _ = load_or_train_segmenter(run.path, run.meta["size"], device=run.device, steps=args.seg_steps,
                                     progress=not args.no_progress)
    score = lambda x: (seg.segment(x) == p).float().mean((1, 2))  # noqa: E731
    z = run.latents(args.samples, args.seed)
    with torch.no_grad(), deterministic(run.G):
        _, f = generate(run.G, run.layer, z)
    insert = f.float().amax(dim=(0, 2, 3))  # each unit at its strongest activation
    units, ace = rank_units_by_ace(run.G, run.layer, score, z, insert)
    top = units[: args.top]
    x = run.G(z[:8]).detach()
    with torch.no_grad(), deterministic(run.G):
        xa, _ = generate(run.G, run.layer, z[:8], edit=ablate_units(top))
    path = labelled_rows([x, xa], ["images", f"top {len(top)} ablated"], args.out or os.path.join(run.path, f"ace_{args.part}.png"),
                         scale=max(1, 64 // x.shape[-1]), label_width=90)
    print(f"units with the largest causal effect on {args.part}: "
          + ", ".join(f"{int(u)} ({a:+.3f})" for u, a in zip(top, ace[: args.top])) + f"\nwrote {path}")
    return units, ace


def boundaries_cmd(run, args):
    """InterFaceGAN on the run: attribute scores of G's samples from the SynthFaces attribute classifier, one
    SVM boundary per attribute, re-scoring (Delta a) of every boundary, and edits along each (PNG)."""
    from ..data import ATTRIBUTES
    from .attributes import load_or_train_attribute_classifier
    from .directions import conditional_boundary, rescoring, svm_boundary

    _warn_labels_from_synthfaces(run, "boundaries", "attributes")
    clf, held_out = load_or_train_attribute_classifier(run.path, run.meta["size"], device=run.device,
                                                       steps=args.clf_steps, progress=not args.no_progress)
    z = run.latents(args.samples, args.seed + 1)
    with torch.no_grad():
        scores = torch.cat([clf.scores(run.G(zb)) for zb in z.split(256)]).cpu()
    names = args.attributes or list(ATTRIBUTES)
    normals, accs = {}, {}
    for a in names:
        normals[a], accs[a] = svm_boundary(z.cpu(), scores[:, ATTRIBUTES.index(a)], share=args.share)
    if args.condition:
        cond = [normals.get(c) if c in normals else svm_boundary(z.cpu(), scores[:, ATTRIBUTES.index(c)],
                                                                   share=args.share)[0] for c in args.condition]
        normals = {a: (n if a in args.condition else conditional_boundary(n, *cond)) for a, n in normals.items()}
    zt = run.latents(64, args.seed + 2)
    delta = torch.stack([rescoring(run.G, zt, normals[a].to(run.device), clf.scores, alpha=args.alpha).cpu()
                         for a in names])  # [boundary, attribute]
    print(f"{'boundary':<12} {'svm acc':>8} {'own delta a':>12}  (delta a of each attribute when moving {args.alpha:g}; "
          "boundaries ranked by their own delta a)")
    own = torch.tensor([float(delta[i, ATTRIBUTES.index(a)]) for i, a in enumerate(names)])
    for i in torch.argsort(own, descending=True).tolist():
        a = names[i]
        print(f"{a:<12} {accs[a]:>8.3f} {float(delta[i, ATTRIBUTES.index(a)]):>12.3f}  "
              + " ".join(f"{b[:5]}={float(v):+.2f}" for b, v in zip(ATTRIBUTES, delta[i])))
    path = _direction_grid(run, [normals[a] for a in names], args.strengths,
                           args.out or os.path.join(run.path, "boundaries.png"), n_images=2, seed=args.seed)
    print(f"rows: {', '.join(names)} (two images each)\nwrote {path}")
    return normals, delta


def learn_directions_cmd(run, args):
    from .learned import learn_directions

    dirs, _, acc = learn_directions(run.G, run.z_dim, args.k, steps=args.steps, kind=args.kind, device=run.device,
                                    seed=args.seed, progress=not args.no_progress)
    path = _direction_grid(run, dirs, args.strengths, args.out or os.path.join(run.path, "learned_directions.png"),
                           n_images=2, seed=args.seed)
    print(f"learned {args.k} {args.kind} directions; the reconstructor tells them apart {acc:.1%} of the time"
          f"\nwrote {path}")
    return dirs


def steer_cmd(run, args):
    from .learned import learn_walk

    w, loss = learn_walk(run.G, run.z_dim, args.edit, steps=args.steps, device=run.device, seed=args.seed,
                         progress=not args.no_progress)
    path = _direction_grid(run, [w / w.norm().clamp_min(1e-12)], [a * float(w.norm()) for a in (-1, -0.5, 0, 0.5, 1)],
                           args.out or os.path.join(run.path, f"steer_{args.edit}.png"), n_images=2, seed=args.seed)
    print(f"walk for {args.edit}: |w| = {float(w.norm()):.3f}, final loss {loss:.4f}\nwrote {path}")
    return w


def text_edit_cmd(run, args):
    from .text_edit import load_image_text_model, text_edit

    try:
        model, tokenizer, size = load_image_text_model(args.model, device=run.device)
    except (ImportError, ValueError, RuntimeError, FileNotFoundError) as e:
        sys.exit(f"interpgan text-edit: cannot load the image-text model: {e}")
    z = run.latents(args.n, args.seed)
    with torch.no_grad():
        before = run.G(z)
    _, after, hist = text_edit(run.G, z, model, tokenizer([args.text]), size, steps=args.steps, lr=args.lr)
    path = labelled_rows([before, after], ["before", "after"], args.out or os.path.join(run.path, "text_edit.png"),
                         scale=max(1, 64 // before.shape[-1]), label_width=60)
    print(f"text loss {hist[0]:.4f} -> {hist[-1]:.4f} for {args.text!r}\nwrote {path}")
    return hist


def compare_cmd(run, args):
    import json

    from ..metrics import load_or_train_segmenter
    from ..runs import load_baseline
    from .._atomic import atomic_write_json
    from ..viz import bar_chart
    from .attributes import load_or_train_attribute_classifier
    from .compare import compare_runs, comparison_rows

    base = load_baseline(args.baseline, run, device=str(run.device))
    size = run.meta["size"]
    _warn_labels_from_synthfaces(run, "compare", "part labels and attributes")
    seg, _ = load_or_train_segmenter(run.path, size, device=run.device, steps=args.seg_steps,
                                     progress=not args.no_progress)
    clf, _ = load_or_train_attribute_classifier(run.path, size, device=run.device, steps=args.clf_steps,
                                                progress=not args.no_progress)
    c = compare_runs(run, base, seg.segment, clf, n_images=args.images, n_samples=args.samples, seed=args.seed)
    path = args.out or os.path.join(run.path, "compare.json")
    atomic_write_json(c, path)
    rows = comparison_rows(c)
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'interpretable':>14}  {'baseline':>14}")
    for r in rows:
        print(f"{r[0]:<{width}}  " + "  ".join(f"{v:>14.4g}" if isinstance(v, float) else f"{v!s:>14}" for v in r[1:]))
    for key in ("interpretable", "baseline"):
        units = c[key]["units_per_part"]
        bar_chart(list(units.values()), list(units), os.path.join(os.path.dirname(path), f"compare_units_{key}.png"),
                  title=f"{key}: filters matching each part (IoU >= 0.1)")
    print(f"wrote {path}")
    return json.loads(json.dumps(c))


def dissect_cmd(run, args):
    """GAN Dissection summary: units (filters) per part by IoU, the top units' activations over the same images,
    their causal effect, and the artifact units (those whose ablation most raises D's score). Writes
    dissect.html (self-contained) and dissect.json."""
    import html as _html

    from ..data import PARTS
    from ..edit import deterministic, generate
    from ..metrics import evaluate_run, load_or_train_segmenter
    from ..report import _img, _table
    from .._atomic import atomic_write_json
    from ..viz import activation_overlay
    from .causal import artifact_units, rank_units_by_ace

    _warn_labels_from_synthfaces(run, "dissect", "part labels")
    seg, scores = load_or_train_segmenter(run.path, run.meta["size"], device=run.device, steps=args.seg_steps,
                                          progress=not args.no_progress)
    m = evaluate_run(run, segmenter=seg.segment, n_images=args.images, n_pairs=4, seed=args.seed,
                     progress=not args.no_progress)
    filters = m["dissection"]["filters"]
    z = run.latents(8, args.seed)
    with torch.no_grad(), deterministic(run.G):
        x, f = generate(run.G, run.layer, z)
    out_dir = os.path.dirname(args.out) if args.out else run.path
    insert = f.float().amax(dim=(0, 2, 3))
    summary, sections = {}, []
    for p, part in enumerate(PARTS):
        units = sorted((e for e in filters if e["best_part"] == part and e["iou"] >= args.min_iou),
                       key=lambda e: -e["iou"])
        if not units:
            continue
        top = [e["filter"] for e in units[: args.top]]
        score = lambda imgs, p=p: (seg.segment(imgs) == p).float().mean((1, 2))  # noqa: E731
        ranked, ace = rank_units_by_ace(run.G, run.layer, score, run.latents(16, args.seed + 3), insert, units=top)
        ace_of = {int(u): float(a) for u, a in zip(ranked, ace)}
        summary[part] = [{"unit": e["filter"], "iou": e["iou"], "ace": ace_of.get(e["filter"])} for e in units]
        rows = [activation_overlay(x.cpu(), f[:, u].cpu()) for u in top]
        png = labelled_rows(rows, [f"unit {u}" for u in top], os.path.join(out_dir, f"dissect_{part}.png"),
                            scale=max(1, 64 // x.shape[-1]), label_width=70)
        sections.append(f"<h2>{_html.escape(part)}: {len(units)} units</h2>" + _table(
            [(e["filter"], e["iou"], ace_of.get(e["filter"], float("nan"))) for e in units[: args.top]],
            ["unit", "IoU", "ACE"]) + _img(png, f"top {len(top)} {part} units over the same 8 images"))
    result = {"units_per_part": summary, "segmenter": {k: v for k, v in scores.items() if k != "iou"}}
    if run.D is not None:
        realism = lambda imgs: run.D(imgs).float()  # noqa: E731
        art, gain = artifact_units(run.G, run.layer, realism, run.latents(32, args.seed + 4),
                                   range(len(insert)), top=args.top)
        result["artifact_units"] = [{"unit": int(u), "d_gain": float(g)} for u, g in zip(art, gain)]
        sections.append("<h2>Artifact units (ablation raises D's score most)</h2>" + _table(
            [(e["unit"], e["d_gain"]) for e in result["artifact_units"]], ["unit", "gain in D's logit"]))
    path = args.out or os.path.join(run.path, "dissect.html")
    with open(path, "w") as fh:
        fh.write("<!doctype html><html><head><meta charset='utf-8'><title>dissection</title><style>"
                 "body{font-family:sans-serif;margin:20px} td,th{border:1px solid #ccc;padding:2px 8px}"
                 "table{border-collapse:collapse} img{image-rendering:pixelated}</style></head><body>"
                 f"<h1>Dissection of {_html.escape(run.name)}, layer {_html.escape(run.layer)}</h1>"
                 + "".join(sections) + "</body></html>")
    atomic_write_json(result, os.path.splitext(path)[0] + ".json")
    for part, units in summary.items():
        print(f"{part:<10} {len(units):>4} units; top: " + ", ".join(f"{e['unit']} (IoU {e['iou']:.2f})" for e in units[:5]))
    print(f"wrote {path}")
    return result


SEG_HELP = "part segmenter training steps (cached in the run)"
CLF_HELP = "attribute classifier training steps (cached in the run)"
STRENGTHS_HELP = "steps along each direction, one column each"


def add_parsers(sub):
    """The analysis verbs, added to interpgan's sub-parsers; returns {verb: handler(run, args)}."""
    sf = sub.add_parser("sefa", help="SeFa closed-form directions, shown as edits (PNG)")
    sf.add_argument("--layers", nargs="+", default=None, help="Linear layers (default: the style affines, or the "
                    "first Linear reading z)")
    sf.add_argument("--in-layers", action="store_true", help="move the named layers' inputs instead of z")
    gs = sub.add_parser("ganspace", help="GANSpace PCA directions regressed to z, shown as edits (PNG)")
    gs.add_argument("--layer", default=None, help="layer whose activations are analysed (default: the run's)")
    gs.add_argument("--samples", type=POSITIVE, default=2000, help="latents whose activations the PCA reads")
    ls = sub.add_parser("latent-shift", help="background masks from a latent shift, scored against the segmenter")
    ls.add_argument("--shift", type=float, default=3.0, help="how far z moves along each direction")
    ls.add_argument("--samples", type=POSITIVE, default=64, help="images scored against the segmenter")
    ls.add_argument("--seg-steps", type=POSITIVE, default=SEG_STEPS, help=SEG_HELP)
    iv = sub.add_parser("invert", help="invert real images (a folder, or lfw) with an encoder and optimisation")
    iv.add_argument("--images", default="synth-faces", help="synth-faces | lfw | a folder of images")
    iv.add_argument("--n", type=POSITIVE, default=8, help="images inverted")
    iv.add_argument("--steps", type=NON_NEGATIVE, default=200, help="optimisation steps, from the encoder's guess")
    iv.add_argument("--encoder-steps", type=POSITIVE, default=500, help="training steps of the image-to-z encoder")
    iv.add_argument("--swap-group", type=int, nargs="+", default=None,
                    help="then swap these groups between consecutive inverted images")
    iv.add_argument("--direction", nargs="+", default=None, metavar="METHOD:WHICH:ALPHA",
                    help="then move the inverted images along directions: sefa:K:A, ganspace:K:A, learned:K:A, "
                         "boundary:ATTRIBUTE:A (one row each)")
    iv.add_argument("--clf-steps", type=POSITIVE, default=800, help="attribute classifier steps, for boundary:")
    ac = sub.add_parser("ace", help="units ranked by their average causal effect on a part; top ones ablated (PNG)")
    ac.add_argument("--part", default="hair", help="the part (a SynthFaces label) whose share of the pixels the effect is measured on")
    ac.add_argument("--samples", type=POSITIVE, default=32, help="images the effect is averaged over")
    ac.add_argument("--top", type=POSITIVE, default=8, help="units ablated together in the picture")
    ac.add_argument("--seg-steps", type=POSITIVE, default=SEG_STEPS, help=SEG_HELP)
    for p in (sf, gs):
        p.add_argument("--k", type=POSITIVE, default=5, help="number of directions")
        p.add_argument("--strengths", type=float, nargs="+", default=[-3.0, -1.5, 0.0, 1.5, 3.0], help=STRENGTHS_HELP)
    ls.add_argument("--k", type=POSITIVE, default=5, help="SeFa directions to try")
    bd = sub.add_parser("boundaries", help="InterFaceGAN: SVM attribute boundaries, re-scoring, edits (PNG)")
    bd.add_argument("--attributes", nargs="+", default=None, help="default: all SynthFaces attributes")
    bd.add_argument("--condition", nargs="+", default=None, help="attributes to hold fixed (projected out)")
    bd.add_argument("--samples", type=POSITIVE, default=5000, help="latents scored by the attribute classifier")
    bd.add_argument("--share", type=real_in(0, 0.5, low_open=True), default=0.02,
                    help="top and bottom share of samples for the SVM")
    bd.add_argument("--alpha", type=float, default=3.0, help="step for re-scoring")
    bd.add_argument("--clf-steps", type=POSITIVE, default=800, help=CLF_HELP)
    bd.add_argument("--strengths", type=float, nargs="+", default=[-3.0, -1.5, 0.0, 1.5, 3.0], help=STRENGTHS_HELP)
    ld = sub.add_parser("learn-directions", help="unsupervised directions (Voynov & Babenko), shown as edits")
    ld.add_argument("--k", type=POSITIVE, default=5, help="number of directions")
    ld.add_argument("--steps", type=POSITIVE, default=500, help="training steps of the directions and their reconstructor")
    ld.add_argument("--kind", default="ortho", choices=["ortho", "linear"], help="orthonormal, or free unit directions")
    ld.add_argument("--strengths", type=float, nargs="+", default=[-6.0, -3.0, 0.0, 3.0, 6.0], help=STRENGTHS_HELP)
    st = sub.add_parser("steer", help="a walk in z that zooms, shifts, brightens or reddens (Jahanian et al.)")
    st.add_argument("--edit", default="brightness", choices=["zoom", "shift", "brightness", "color"],
                    help="the image transformation the walk learns to reproduce")
    st.add_argument("--steps", type=POSITIVE, default=300, help="training steps of the walk")
    te = sub.add_parser("text-edit", help="StyleCLIP-style latent optimisation towards a text (local model only)")
    te.add_argument("--model", required=True,
                    help="open_clip:ARCH:/path/weights.pt; python:loader.py:FUNCTION (FUNCTION(device) returns "
                         "(model, tokenizer, image size)); or a TorchScript file")
    te.add_argument("--text", required=True, help="the text the images are moved towards")
    te.add_argument("--n", type=POSITIVE, default=4, help="images edited")
    te.add_argument("--steps", type=POSITIVE, default=100, help="optimisation steps")
    te.add_argument("--lr", type=POSITIVE_REAL, default=0.05, help="learning rate of the latent optimisation")
    cp = sub.add_parser("compare", help="interpretable vs baseline run by dissection, SeFa/GANSpace and boundaries")
    cp.add_argument("--images", type=POSITIVE, default=500, help="generated images for the dissection")
    cp.add_argument("--samples", type=POSITIVE, default=2000, help="latents for GANSpace and the attribute scores")
    cp.add_argument("--seg-steps", type=POSITIVE, default=SEG_STEPS, help=SEG_HELP)
    cp.add_argument("--clf-steps", type=POSITIVE, default=800, help=CLF_HELP)
    ds = sub.add_parser("dissect", help="GAN Dissection summary: units per part, their activations, ACE, artifacts "
                        "(HTML + PNG)")
    ds.add_argument("--images", type=POSITIVE, default=500, help="generated images for the dissection")
    ds.add_argument("--top", type=POSITIVE, default=5, help="units shown per part")
    ds.add_argument("--min-iou", type=FRACTION, default=0.1, help="a unit counts for a part from this IoU")
    ds.add_argument("--seg-steps", type=POSITIVE, default=SEG_STEPS, help=SEG_HELP)
    parsers = {"dissect": ds, "compare": cp, "sefa": sf, "ganspace": gs, "latent-shift": ls, "invert": iv, "ace": ac, "boundaries": bd,
               "learn-directions": ld, "steer": st, "text-edit": te}
    for p in parsers.values():
        p.add_argument("run", help="run directory")
        p.add_argument("--out", default=None, help="output path (default: in the run directory)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    cp.add_argument("baseline", help="the baseline run (lambda0 = 0)")
    return {"sefa": sefa_cmd, "ganspace": ganspace_cmd, "latent-shift": latent_shift_cmd, "invert": invert_cmd,
            "ace": ace_cmd, "boundaries": boundaries_cmd, "learn-directions": learn_directions_cmd,
            "steer": steer_cmd, "text-edit": text_edit_cmd, "compare": compare_cmd,
            "dissect": dissect_cmd}, list(parsers.values())
