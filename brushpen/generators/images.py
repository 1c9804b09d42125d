"""Image generation as a service: request in, PIL images with their settings out.

`generate_images` is the one code path behind `brushpen image generate`, the API's
`/v1/images/generations` and the studio's Images tab. It serves two kinds of image model:
- our StyleGAN generators (`gan/` in the store), where a prompt word picks the class ("flag");
- local diffusers text-to-image pipelines linked with `brushpen models add` (`diffusers/`).

Image i of a request uses seed `seed + i`, so any single image can be re-made alone from the
settings stored in its PNG. Every PNG carries them twice: an A1111-style `parameters` text chunk
(readable by other tools) and a `brushpen` chunk holding the exact settings as JSON.
`seed_walk` interpolates between two seeds and returns an animated GIF or WebP.
Every image (and walk frame) leaves here with an invisible provenance watermark
(`brushpen.safety.watermark`) whose payload names the model and hashes the settings.
"""

from __future__ import annotations

import io
import json
import random
import threading
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

import brushpen
from brushpen.adapters import list_adapters, resolve_adapter, split_ref, weights_sha256
from brushpen.errors import BadInput, BadParameter
from brushpen.edge.common import BACKENDS, VARIANT_FILES, available_backends, check_backend, find_edge_dir
from brushpen.families import default_model, image_families
from brushpen.generators import diffusion
from brushpen.safety import credentials, watermark
from brushpen.store import FAMILIES, PIPELINE_INDEX, atomic_write_bytes, list_models, read_metrics, resolve_model

MAX_IMAGES_PER_REQUEST = 256
DEFAULT_MODEL = default_model("gan")
MAX_WALK_FRAMES = 120
Progress = Callable[[int, int], None]   # (done, total)


@dataclass
class ImageRequest:
    model: str = DEFAULT_MODEL
    n: int = 1
    seed: int | None = None
    truncation_psi: float = 1.0
    label: str | None = None          # class name or index, for class-conditional models
    mix_seed: int | None = None       # style mixing: a second seed ...
    mix_cutoff: int | None = None     # ... whose w drives the layers from this index on
    # Per-pixel noise off by default: on emoji64 it measured far better FID (189 vs 310 at 32 kimg,
    # 500 samples) and looks smoother; "const" and "random" remain available.
    noise_mode: str = "none"
    # Text-to-image models read the prompt; a class-conditional GAN takes a word naming a class.
    prompt: str | None = None
    negative_prompt: str | None = None
    steps: int = 20
    guidance: float = 7.5
    width: int | None = None
    height: int | None = None
    scheduler: str | None = None
    backend: str = "torch"

    def validate(self) -> None:
        if not 1 <= self.n <= MAX_IMAGES_PER_REQUEST:
            raise BadParameter(f"n must lie in 1..{MAX_IMAGES_PER_REQUEST}, got {self.n}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise BadParameter(f"seed must lie in 0..2^63-1, got {self.seed}")
        if self.noise_mode not in ("const", "random", "none"):
            raise BadParameter("noise_mode must be const, random or none")
        if (self.mix_seed is None) != (self.mix_cutoff is None):
            raise BadParameter("style mixing needs both mix_seed and mix_cutoff")
        check_backend(self.backend)   # a known name; whether this model has it is checked on use
        for name in ("prompt", "negative_prompt"):
            value = getattr(self, name)
            if value is not None and len(value) > 2000:
                raise BadParameter(f"{name} is longer than 2,000 characters")


@dataclass
class GeneratedImage:
    image: Image.Image
    settings: dict

    def png_bytes(self, sign: bool = True) -> bytes:
        """The PNG every face returns: the settings chunks, then a signed C2PA manifest (unless
        `BRUSHPEN_C2PA=off`); the chunks stay, and the manifest adds about 4 KB."""
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", format_parameters(self.settings))
        info.add_text("brushpen", json.dumps(self.settings, sort_keys=True))
        buf = io.BytesIO()
        self.image.save(buf, format="PNG", pnginfo=info)
        if not (sign and credentials.signing_enabled()):
            return buf.getvalue()
        payload = watermark.payload_for(self.settings) if min(self.image.size) >= watermark.MIN_SIDE else None
        manifest = credentials.manifest_definition(f"{self.settings.get('model')}-seed{self.settings.get('seed')}.png",
                                                   self.settings, model_record(str(self.settings.get("model"))),
                                                   payload)
        return credentials.sign(buf.getvalue(), "image/png", manifest, payload)


_weights_sha: dict[tuple, str] = {}


def model_record(ref: str) -> dict:
    """What a manifest says of the model: name, family, weights sha256 and the adapter, if any.
    The hash is over the base folder's weight files, cached per (files, sizes, mtimes); the file
    list per folder mtime (weights are written by rename, which changes it)."""
    try:
        path, family = _model_dir(ref)
    except (BadParameter, BadInput, FileNotFoundError, KeyError):
        return {"name": ref}
    return dict(_model_record(ref, str(path), family, path.stat().st_mtime_ns))


@lru_cache(maxsize=64)
def _model_record(ref: str, folder: str, family: str, _mtime: int) -> dict:
    path = Path(folder)
    files = sorted(f for f in path.rglob("*") if f.suffix in (".safetensors", ".bin", ".onnx")
                   and "adapters" not in f.relative_to(path).parts and "edge" not in f.relative_to(path).parts)
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _weights_sha:
        _weights_sha[key] = weights_sha256(files)
    adapter = split_ref(ref)[1]
    record = {"name": ref, "family": family, "weights_sha256": _weights_sha[key]}
    if adapter:
        record["adapter"] = adapter
    return record


@dataclass
class ImageModelInfo:
    name: str                       # the store reference, e.g. "emoji64" or "diffusers/sd-turbo"
    kind: str                       # "gan" or "diffusers"
    resolution: int
    class_names: list[str] = field(default_factory=list)
    schedulers: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    backends: list[str] = field(default_factory=lambda: list(BACKENDS[:1]))   # torch, onnx, onnx-int8, student


def image_models() -> list[ImageModelInfo]:
    """The image models in the store, read from their configs without loading any weights."""
    out = []
    for m in list_models():
        if m.family == "gan":
            cfg = json.loads((m.path / "config.json").read_text(encoding="utf-8"))
            out.append(ImageModelInfo(m.name, "gan", int(cfg.get("resolution", 0)),
                                      list(cfg.get("class_names") or []), [], m.metrics,
                                      available_backends(m.path)))
            for a in list_adapters(m.path):   # LoRA adapters are models of their own: 'emoji64:noto-face'
                out.append(ImageModelInfo(f"{m.name}:{a}", "gan", int(cfg.get("resolution", 0)),
                                          list(cfg.get("class_names") or []), [],
                                          read_metrics(m.path / "adapters" / a)))
        elif m.family == "diffusers":
            out.append(ImageModelInfo(m.ref, "diffusers", diffusion.native_size(m.path), [],
                                      list(diffusion.SCHEDULERS), m.metrics))
    return out


# ---- the A1111-style text chunk ---------------------------------------------------------------

_PARAM_NAMES = [("steps", "Steps"), ("scheduler", "Sampler"), ("guidance", "CFG scale"), ("seed", "Seed"),
                ("size", "Size"), ("model", "Model"), ("label", "Class"), ("truncation_psi", "Truncation psi"),
                ("mix_seed", "Style mix seed"), ("mix_cutoff", "Style mix crossover"),
                ("noise_mode", "Noise"), ("backend", "Backend"), ("version", "Version")]


def format_parameters(s: dict) -> str:
    """Settings as A1111 writes them: prompt, `Negative prompt:` line, then `Key: value, ...`."""
    lines = [s.get("prompt") or ""]
    if s.get("negative_prompt"):
        lines.append(f"Negative prompt: {s['negative_prompt']}")
    values = {**s, "size": f"{s.get('width')}x{s.get('height')}"}
    if s.get("kind") == "gan":  # sampler knobs mean nothing to a GAN
        values.update(steps=None, scheduler=None, guidance=None)
    pairs = [f"{label}: {values[key]}" for key, label in _PARAM_NAMES if values.get(key) is not None]
    lines.append(", ".join(pairs))
    return "\n".join(lines)


def read_png_settings(source: Path | str | bytes) -> dict:
    """The settings a brushpen PNG was made with; {} for an image made elsewhere.

    A foreign image that carries A1111 `parameters` comes back as {"parameters": text}.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            info = dict(im.info)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"not a readable image: {e}") from e
    if info.get("brushpen"):
        try:
            settings = json.loads(info["brushpen"])
        except (json.JSONDecodeError, RecursionError) as e:
            raise BadInput(f"the image's brushpen metadata is corrupt: {str(e)[:200]}") from None
        if not isinstance(settings, dict):
            raise BadInput("the image's brushpen metadata is corrupt: not a JSON object")
        return settings
    return {"parameters": info["parameters"]} if info.get("parameters") else {}


# ---- generation -------------------------------------------------------------------------------

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _model_lock(path: Path) -> threading.Lock:
    # One request at a time per model: torch modules are not safe to share across threads mid-call,
    # and the cores are better spent on one batch than split over several.
    with _locks_guard:
        return _locks.setdefault(str(path), threading.Lock())


def _mark(img: Image.Image, settings: dict) -> Image.Image:
    """The provenance watermark; images under MIN_SIDE pixels (toy models) are too small to hold one."""
    if min(img.size) < watermark.MIN_SIDE:
        return img
    return watermark.embed(img, watermark.payload_for(settings))


@lru_cache(maxsize=4)
def _pipeline(model_dir: str):
    from brushpen.gan.pipeline import StyleGANPipeline

    return StyleGANPipeline.from_pretrained(model_dir)


@lru_cache(maxsize=4)
def _adapted_pipeline(base_dir: str, adapter_dir: str, stamp: tuple):
    from brushpen.gan.lora import load_adapted_generator
    from brushpen.gan.pipeline import StyleGANPipeline

    return StyleGANPipeline(load_adapted_generator(Path(base_dir), Path(adapter_dir)))


def _gan_pipeline(path: Path, ref: str):
    """The GAN's pipeline; for 'base:adapter' the base with the LoRA merged in, cached until a
    weight file of either changes (the stamp holds their mtimes)."""
    if split_ref(ref)[1] is None:
        return _pipeline(str(path.resolve()))
    from brushpen.gan.lora import adapter_stamp

    base_dir, folder = resolve_adapter(f"{path}:{split_ref(ref)[1]}", family="gan")
    return _adapted_pipeline(str(base_dir.resolve()), str(folder.resolve()), adapter_stamp(base_dir, folder))


def _model_name(path: Path, ref: str) -> str:
    adapter = split_ref(ref)[1]
    return f"{path.name}:{adapter}" if adapter else path.name


def _student_pipeline(path: Path):
    """The `student` backend: the distilled half-width generator in the model's edge/student/."""
    check_backend("student", available_backends(path))
    return _pipeline(str((find_edge_dir(path) / "student").resolve()))


def _edge_runner(path: Path, req: ImageRequest, pipe) -> Callable[[int, int | None], Image.Image] | None:
    """For the onnx backends, `(seed, label) -> image` under onnxruntime; None for torch and student.

    z and the class come from `torch.Generator().manual_seed(seed)` in the pipeline's order, so a
    seed gives the same image on every backend up to numerical error. The graph has noise off.
    """
    if req.backend not in VARIANT_FILES:
        return None
    from brushpen.edge.gan import OnnxGenerator, draw_inputs
    from brushpen.gan.pipeline import to_uint8

    check_backend(req.backend, available_backends(path))
    if req.noise_mode != "none":
        raise BadParameter(f"the {req.backend} backend draws with per-pixel noise off: use noise_mode "
                           f"'none', or the torch backend for '{req.noise_mode}'")
    if req.mix_seed is not None:
        raise BadParameter(f"style mixing runs on the torch and student backends, not {req.backend}")
    if not 0.0 <= req.truncation_psi <= 2.0:
        raise BadParameter("truncation_psi must lie in [0, 2]")
    run = OnnxGenerator(find_edge_dir(path) / VARIANT_FILES[req.backend])
    G = pipe.generator

    def image(seed: int, label: int | None) -> Image.Image:
        z, labels = draw_inputs(seed, G.z_dim, G.num_classes, label)
        return Image.fromarray(to_uint8(run(z, labels, req.truncation_psi))[0])
    return image


def _model_dir(name: str) -> tuple[Path, str]:
    path = resolve_model(split_ref(name)[0])   # 'emoji64:noto-face' -> emoji64's folder; the adapter loads later
    family = path.parent.name if path.parent.name in FAMILIES else None
    if family is None:  # a path outside the store: tell the kinds apart by their files
        family = "diffusers" if (path / PIPELINE_INDEX).exists() else "gan"
    if family not in image_families():
        raise BadParameter(f"'{name}' is a {family} model, not an image model")
    return path, family


def class_from_prompt(class_names: list[str], pipe_label: Callable[[str], int | None], prompt: str) -> int:
    """The class a prompt names: the whole prompt, else its first word that names one."""
    try:
        return pipe_label(prompt.strip())
    except BadParameter:
        pass
    for word in prompt.replace(",", " ").split():
        try:
            return pipe_label(word.strip(".!?;:'\"()").lower())
        except BadParameter:
            continue
    raise BadParameter(f"no class matches the prompt '{prompt}'. This model draws these classes: "
                       f"{', '.join(class_names)}")


def _gan_images(path: Path, req: ImageRequest, base_seed: int, progress: Progress | None) -> list[GeneratedImage]:
    if split_ref(req.model)[1] and req.backend != "torch":
        raise BadParameter("adapters run on the torch backend: merge one into a plain model to export it")
    pipe = _gan_pipeline(path, req.model) if req.backend != "student" else _student_pipeline(path)
    runner = _edge_runner(path, req, pipe)
    resolution = pipe.generator.config.resolution
    for side in (req.width, req.height):
        if side is not None and side != resolution:
            raise BadParameter(f"{path.name} draws {resolution}x{resolution} images only")
    if req.label is not None:
        label = pipe.label_index(req.label)
    elif req.prompt and req.prompt.strip():
        if not pipe.class_names:
            raise BadParameter(f"{path.name} is unconditional: it takes no prompt")
        label = class_from_prompt(pipe.class_names, pipe.label_index, req.prompt)
    else:
        label = None
    out = []
    for i in range(req.n):
        seed = base_seed + i
        if runner is not None:
            img = runner(seed, label)
        else:
            mix = torch.Generator().manual_seed(req.mix_seed + i) if req.mix_seed is not None else None
            img = pipe(1, torch.Generator().manual_seed(seed), truncation_psi=req.truncation_psi,
                       label=label, mix_generator=mix, mix_cutoff=req.mix_cutoff, noise_mode=req.noise_mode)[0]
        settings = {**asdict(req), "n": 1, "seed": seed, "model": _model_name(path, req.model), "kind": "gan",
                    "label": pipe.class_names[label] if label is not None else None,
                    "mix_seed": req.mix_seed + i if req.mix_seed is not None else None,
                    "width": resolution, "height": resolution,
                    "steps": None, "guidance": None, "scheduler": None, "negative_prompt": None,
                    "version": brushpen.__version__}
        out.append(GeneratedImage(_mark(img, settings), settings))
        if progress:
            progress(i + 1, req.n)
    return out


def _diffusers_images(path: Path, ref: str, req: ImageRequest, base_seed: int,
                      progress: Progress | None) -> list[GeneratedImage]:
    side = diffusion.native_size(path)
    call = diffusion.DiffusionCall(req.prompt or "", req.negative_prompt, req.steps, req.guidance,
                                   req.width or side, req.height or side, req.scheduler)
    diffusion.check_call(path, call)
    out = []
    for i in range(req.n):
        seed = base_seed + i
        step = (lambda k, i=i: progress(i * call.steps + k, req.n * call.steps)) if progress else None
        img = diffusion.run(path, call, seed, step)
        settings = {**asdict(req), "n": 1, "seed": seed, "model": ref, "kind": "diffusers",
                    "width": call.width, "height": call.height, "truncation_psi": None, "label": None,
                    "mix_seed": None, "mix_cutoff": None, "noise_mode": None, "version": brushpen.__version__}
        out.append(GeneratedImage(_mark(img, settings), settings))
    return out


def generate_images(req: ImageRequest, progress: Progress | None = None) -> list[GeneratedImage]:
    """`req.n` images; `progress(done, total)` is called as work completes."""
    req.validate()
    path, family = _model_dir(req.model)
    base_seed = req.seed if req.seed is not None else random.randrange(2**31)
    with _model_lock(path), torch.inference_mode():
        if family == "gan":
            return _gan_images(path, req, base_seed, progress)
        return _diffusers_images(path, f"diffusers/{path.name}", req, base_seed, progress)


def save_images(images: list[GeneratedImage], out_dir: Path, prefix: str = "") -> list[Path]:
    paths = []
    for img in images:
        s = img.settings
        model = str(s["model"]).replace("/", "-")
        psi = f"-psi{s['truncation_psi']:g}" if s.get("truncation_psi") is not None else ""
        name = f"{prefix}{model}-seed{s['seed']}{psi}.png"
        paths.append(atomic_write_bytes(Path(out_dir) / name, img.png_bytes()))
    return paths


# ---- seed walks -------------------------------------------------------------------------------

@dataclass
class WalkRequest:
    model: str = DEFAULT_MODEL
    seed_a: int = 0
    seed_b: int = 1
    frames: int = 16
    truncation_psi: float = 1.0
    label: str | None = None
    fps: int = 8
    format: str = "gif"   # or "webp"
    prompt: str | None = None   # a class word, as for generate_images

    def validate(self) -> None:
        if not 2 <= self.frames <= MAX_WALK_FRAMES:
            raise BadParameter(f"frames must lie in 2..{MAX_WALK_FRAMES}, got {self.frames}")
        if not 1 <= self.fps <= 60:
            raise BadParameter(f"fps must lie in 1..60, got {self.fps}")
        if self.format not in ("gif", "webp"):
            raise BadParameter("format must be gif or webp")
        for s in (self.seed_a, self.seed_b):
            if not 0 <= s < 2**63:
                raise BadParameter(f"seeds must lie in 0..2^63-1, got {s}")


def seed_walk(req: WalkRequest, progress: Progress | None = None) -> bytes:
    """An animated loop from seed A's image to seed B's, linear in w space.

    The end frames are `generate_images`' images for those seeds (same z, same drawn class, noise
    off; only the watermark payload differs), so a walk shows the path between two images the user
    has already seen. GIF's palette loses the watermark; lossless WebP keeps it.
    """
    from brushpen.gan.pipeline import to_uint8

    req.validate()
    path, family = _model_dir(req.model)
    if family != "gan":
        raise BadParameter("seed walks need a GAN model: diffusers pipelines have no latent w to walk")
    pipe = _gan_pipeline(path, req.model)
    G = pipe.generator
    label = pipe.label_index(req.label)
    if label is None and req.prompt and req.prompt.strip() and pipe.class_names:
        label = class_from_prompt(pipe.class_names, pipe.label_index, req.prompt)
    ends = []
    for seed in (req.seed_a, req.seed_b):
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(1, G.z_dim, generator=gen)
        labels = None
        if G.num_classes:
            labels = torch.full((1,), label) if label is not None else torch.randint(0, G.num_classes, (1,), generator=gen)
        ends.append((z, labels))
    frames = []
    with _model_lock(path), torch.inference_mode():
        ws = [G.map(z, lab, req.truncation_psi) for z, lab in ends]
        for k in range(req.frames):
            t = k / (req.frames - 1)
            w = torch.lerp(ws[0], ws[1], t)
            frame = Image.fromarray(to_uint8(G.synthesis(w, noise_mode="none"))[0])
            frames.append(_mark(frame, {"model": _model_name(path, req.model), "walk": [req.seed_a, req.seed_b], "frame": k}))
            if progress:
                progress(k + 1, req.frames)
    frames += frames[-2:0:-1]  # there and back, so the loop has no jump
    buf = io.BytesIO()
    frames[0].save(buf, format=req.format.upper(), save_all=True, append_images=frames[1:],
                   duration=int(1000 / req.fps), loop=0, **({"lossless": True} if req.format == "webp" else {}))
    if not credentials.signing_enabled():
        return buf.getvalue()
    name = _model_name(path, req.model)
    settings = {**asdict(req), "model": name, "kind": "walk", "version": brushpen.__version__}
    ends = [watermark.payload_for({"model": name, "walk": [req.seed_a, req.seed_b], "frame": k})
            for k in (0, req.frames - 1)]
    # The walk is made from the two seed images' latents: its manifest names them (as our watermark
    # payloads of its end frames) rather than embedding them as ingredients, which it does not contain.
    note = [{"seed": seed, "watermark": credentials.payload_key(p)} for seed, p in zip((req.seed_a, req.seed_b), ends)]
    manifest = credentials.manifest_definition(f"{name}-walk-{req.seed_a}-{req.seed_b}.{req.format}", settings,
                                               model_record(name), None, ingredients_note=note)
    return credentials.sign(buf.getvalue(), f"image/{req.format}", manifest)
