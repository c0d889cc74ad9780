"""The ``flaxcnn`` command: list, summary, convert, predict.

``predict`` classifies with a model's ImageNet head, or, for a CLIP model
(``clip_vit_b32``, ...), zero-shot among ``--labels`` given as text: the labels are
tokenized, the images get CLIP's preprocessing, and the probabilities are the softmax of
``logits_per_image`` (Radford et al. 2021).

Every failure (unknown model or tag, unreadable image, a file that is not a checkpoint
or is for another architecture, missing weights offline) is one line on stderr and
exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

import flaxcnn

from .pretrained import PretrainedCfg, PretrainedUnavailable, UnknownWeightTag, cache_dir

__all__ = ["main"]


class CliError(Exception):
    """An error to report in one line."""


def _cmd_list(args) -> None:
    names = (
        flaxcnn.list_pretrained(args.pattern)
        if args.pretrained
        else flaxcnn.list_models(args.pattern)
    )
    print("\n".join(names))


def _cmd_summary(args) -> None:
    from .summary import summary

    print(summary(args.name, input_size=tuple(args.size) if args.size else None))


def _load_torch(source: str, name: str, weights: str | None, checkpoint: str | None):
    """``(torch model, state dict, PretrainedCfg or None)`` of the requested weights (tag
    or file), for the parity check."""
    from .convert import read_state_dict
    from .convert.verify import build_torch_model

    if checkpoint:
        sd = read_state_dict(checkpoint)
        head = flaxcnn.find_by_source(source, name).classifier
        kwargs = (
            {"num_classes": int(sd[f"{head}.weight"].shape[0])}
            if head and f"{head}.weight" in sd
            else {}
        )
        model = build_torch_model(name, source, **kwargs)
        import torch

        model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
        return model, sd, None
    spec = flaxcnn.find_by_source(source, name)
    cfg = flaxcnn.get_pretrained_cfg(spec.name, weights or True)
    if cfg.source != source:
        raise CliError(f"weight tag {cfg.tag!r} is a {cfg.source} tag, not {source}")
    from .pretrained import _fetch_state_dict

    sd = _fetch_state_dict(cfg)
    model = build_torch_model(name, source)
    model.load_state_dict(sd)
    return model, sd, cfg


def _cmd_convert(args) -> None:
    import torch

    from .convert import from_torch
    from .pretrained import save_converted

    if ":" not in args.model:
        raise CliError(f"expected <source>:<name>, e.g. torchvision:resnet50, got {args.model!r}")
    source, name = args.model.split(":", 1)
    if source in ("openai", "open_clip"):
        # Its parity check runs one image through a one-input classifier; CLIP takes two.
        model = flaxcnn.find_by_source(source, name).name
        raise CliError(
            f"flaxcnn convert takes torchvision and timm models; CLIP weights convert on first "
            f"use and are cached in {cache_dir()}: flaxcnn predict --model {model} --pretrained "
            f"TAG_OR_FILE --labels ..., or create_model({model!r}, pretrained=...) in Python"
        )
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise CliError(f"{out} exists and is not an empty folder (use --force to replace it)")
    tmodel, sd, cfg = _load_torch(source, name, args.weights, args.checkpoint)
    module, variables = from_torch(name, sd, source=source)
    # Parity check with the real weights: one random image, eval mode.
    h, w, c = flaxcnn.find_by_source(source, name).input_size
    x = np.random.default_rng(0).standard_normal((1, c, h, w), dtype=np.float32)
    with torch.no_grad():
        ref = tmodel.eval()(torch.from_numpy(x)).numpy()
    got = np.asarray(module.apply(variables, x.transpose(0, 2, 3, 1)))
    diff, bound = float(np.abs(got - ref).max()), 1e-4 * max(1.0, float(np.abs(ref).max()))
    if diff > bound:
        raise CliError(
            f"the converted model does not match the torch model: max|Δ|={diff:.3g} > {bound:.3g}"
        )
    spec = flaxcnn.find_by_source(source, name)
    config = {k: getattr(module, k) for k in ("num_classes", "in_chans") if k in spec.fields}
    extra = {"source": source, "source_name": name}
    if cfg is not None:  # converted from a tag: predict and get_pretrained_cfg know its transform
        extra["pretrained_cfg"] = dataclasses.asdict(cfg)
    save_converted(out, spec.name, config, variables, extra)
    print(f"converted {source}:{name} -> {out} (flaxcnn {spec.name}, {config})")
    print(f"parity: max|Δ|={diff:.3g} (bound {bound:.3g}) OK")


def _preprocessing(model: str, local: Path, num_classes: int) -> PretrainedCfg:
    """The eval transform for local weights: the one recorded with them (``flaxcnn convert
    --weights``, the cache); else the model's default tag's; for a model without published
    weights, torchvision's classification transform at the model's input size (resize to
    8/7 of the crop, bilinear, ImageNet mean and std). A guess is said on stderr."""
    from .pretrained import recorded_cfg

    cfg = recorded_cfg(local)
    if cfg is not None:
        return cfg
    try:
        cfg = flaxcnn.get_pretrained_cfg(model)
        what = f"{cfg.full_name}'s"
    except UnknownWeightTag:
        h, w, c = flaxcnn.get_model_spec(model).input_size
        cfg = PretrainedCfg(
            name=model,
            tag="local",
            source="local",
            source_name=model,
            source_tag=str(local),
            default=False,
            url=None,
            hf_hub_id=None,
            num_classes=num_classes,
            input_size=(h, w, c),
            resize_size=int(min(h, w) / 0.875),
            crop_pct=0.875,
            interpolation="bilinear",
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            top1=None,
            top5=None,
            license=None,
            recipe=None,
        )
        what = f"ImageNet's usual ({cfg.resize_size} px, crop {h}x{w}, bilinear)"
    print(f"flaxcnn: note: {local} records no preprocessing; using {what}", file=sys.stderr)
    return cfg


def _read_labels(args) -> list[str] | None:
    """The ``--labels`` (comma-separated) or ``--labels-file`` (one per line) class texts."""
    if args.labels is None and args.labels_file is None:
        return None
    if args.labels is not None:
        labels, where = [t.strip() for t in args.labels.split(",")], "--labels"
    else:
        try:
            text = Path(args.labels_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"cannot read --labels-file {args.labels_file}: {e}") from None
        # Blank lines (a trailing newline, spacing between groups) are not labels.
        labels, where = [t.strip() for t in text.splitlines() if t.strip()], args.labels_file
        if not labels:
            raise CliError(f"{args.labels_file} holds no labels (one per line)")
    empty = [i + 1 for i, t in enumerate(labels) if not t]
    if empty:
        raise CliError(
            f"{where} has an empty label (position {empty[0]}): give texts separated by "
            "commas, e.g. --labels 'a cat,a dog'"
        )
    repeated = sorted({t for t in labels if labels.count(t) > 1})
    if repeated:
        raise CliError(f"{where} repeats {', '.join(map(repr, repeated))}: give each label once")
    return labels


def _check_task(model: str, labels: list[str] | None) -> None:
    """``--labels`` goes with CLIP models, and CLIP models need it: refused before any
    weights are fetched."""
    spec = flaxcnn.get_model_spec(model)
    if labels is not None and spec.task != "clip":
        clips = ", ".join(
            n for n in flaxcnn.list_models() if flaxcnn.get_model_spec(n).task == "clip"
        )
        raise CliError(
            f"--labels needs a CLIP model ({clips}); {model} predicts its own "
            f"{spec.task} classes: drop --labels"
        )
    if labels is None and spec.task == "clip":
        raise CliError(
            f"{model} classifies zero-shot among texts: pass --labels 'a cat,a dog,...' "
            "or --labels-file FILE (one label per line)"
        )
    if spec.task not in ("classification", "clip"):
        raise CliError(f"predict classifies images; {model} is a {spec.task} model")


def _zero_shot(module, variables, batch: np.ndarray, labels: list[str]) -> np.ndarray:
    """CLIP's ``logits_per_image`` of the images against the labels: the cosine
    similarities times the model's ``exp(logit_scale)``, whose softmax is the seed
    lecture's probabilities."""
    import jax

    from .clip import tokenize

    try:
        tokens = tokenize(labels, context_length=module.context_length)
    except ImportError as e:  # the [clip] extra (ftfy, regex) is not installed
        raise CliError(str(e)) from None
    logits_per_image, _ = jax.jit(module.apply)(variables, batch, tokens)
    return np.asarray(logits_per_image)


def _cmd_predict(args) -> None:
    import jax
    from PIL import Image, UnidentifiedImageError

    from .preprocess import decode_predictions, preprocess
    from .pretrained import _local_path

    base, _, tag = args.model.partition(".")
    labels = _read_labels(args)
    _check_task(base, labels)
    if args.top is not None and args.top < 1:
        raise CliError(f"--top must be at least 1, got {args.top}")
    images = []
    for path in args.images:
        try:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise CliError(f"cannot read image {path}: {e}") from None
    if tag and args.pretrained and args.pretrained != tag:
        raise CliError(
            f"--model {args.model} names the weight tag {tag!r} and --pretrained other weights; "
            f"give one: --model {args.model} alone, or --model {base} --pretrained {args.pretrained}"
        )
    local = _local_path(base, args.pretrained) if args.pretrained else None
    # A tag is checked before any download or conversion.
    cfg = None if local else flaxcnn.get_pretrained_cfg(args.model, args.pretrained or True)
    module, variables = flaxcnn.create_model(args.model, pretrained=args.pretrained or True)
    cfg = cfg or _preprocessing(base, local, getattr(module, "num_classes", 0))
    batch = np.stack([preprocess(im, cfg) for im in images])
    # Forward passes run jitted: one compilation, where op by op every distinct op compiles.
    if labels is not None:
        logits = _zero_shot(module, variables, batch, labels)
        k = args.top or len(labels)  # every label, ranked, unless --top says otherwise
    else:
        logits, k = jax.jit(module.apply)(variables, batch), args.top or 5
    top_k = decode_predictions(logits, k=k, labels=labels)
    for path, top in zip(args.images, top_k, strict=True):
        print(path)
        for i, label, p in top:
            print(f"  {p:7.2%}  {i:4d}  {label}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flaxcnn", description="flaxcnn model zoo")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="registered models (or pretrained weight tags)")
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--pretrained", action="store_true", help="list name.tag weight tags")
    p.set_defaults(fn=_cmd_list)
    p = sub.add_parser("summary", help="parameters, FLOPs, activation memory, receptive field")
    p.add_argument("name")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.set_defaults(fn=_cmd_summary)
    p = sub.add_parser("convert", help="convert torch weights to a safetensors + config folder")
    p.add_argument("model", help="<source>:<name>, e.g. torchvision:resnet50 or timm:resnet50")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--weights", help="weight tag (IMAGENET1K_V2, a1_in1k, ...); default: the default tag"
    )
    g.add_argument("--checkpoint", help="a local .pth/.safetensors file")
    p.add_argument(
        "--out",
        required=True,
        help="folder for variables.safetensors + config.json; load it with "
        "`create_model(name, pretrained=OUT)` or `flaxcnn predict --pretrained OUT`",
    )
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(fn=_cmd_convert, tag_option="--weights")
    p = sub.add_parser(
        "predict",
        help="top-k classes of images with pretrained weights; zero-shot among --labels "
        "with a CLIP model",
    )
    p.add_argument("images", nargs="+")
    p.add_argument("--model", required=True)
    p.add_argument(
        "--pretrained",
        metavar="TAG_OR_PATH",
        help="weight tag (default: the default tag), a folder written by `flaxcnn convert`, "
        "or a torch checkpoint (.pth/.pt/.bin/.safetensors)",
    )
    p.add_argument(
        "--top", type=int, help="how many classes to show (default: 5, or every --labels label)"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--labels",
        metavar="TEXTS",
        help="CLIP models: the candidate labels, comma-separated ('a cat,a dog,a chainsaw'), "
        "ranked by zero-shot probability",
    )
    g.add_argument(
        "--labels-file",
        metavar="FILE",
        help="CLIP models: the candidate labels, one per line (labels may contain commas)",
    )
    p.set_defaults(fn=_cmd_predict, tag_option="--pretrained")
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except (CliError, ValueError, TypeError, KeyError, OSError, RuntimeError) as e:
        print(f"flaxcnn: error: {_one_line(e, getattr(args, 'tag_option', None))}", file=sys.stderr)
        return 2
    return 0


def _one_line(e: Exception, option: str | None) -> str:
    """The error in one line, in command-line terms where it has them (``option`` is the
    one that took a weight tag)."""
    if isinstance(e, (PretrainedUnavailable, UnknownWeightTag)):
        return e.message(cli=option or "--pretrained")
    report = getattr(e, "report", None)
    if report is not None and not report.ok:
        return f"{str(e).splitlines()[0].rstrip(':')}: {report.one_line()}"
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
