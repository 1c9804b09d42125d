"""The deepfake checker service: one code path behind `brushpen detect scan`, `POST /v1/detections`
and the studio's Checker tab.

- `check_images([(name, bytes), ...])`: score images already in memory (uploads, a UI drop).
- `scan_paths([path, ...])`: walk files, folders (recursive, sorted) and zip files, yielding one
  `CheckResult` per image as it goes, so a long scan streams.
- `write_json` / `write_csv` / `summarize`: the reports, schemas below.

**Per image** (`CheckResult`): `path`; `score`, the calibrated probability that it is AI-made
(images over 64x64 are cut into 64x64 tiles and the mean tile logit is calibrated, see
`brushpen.safety.detector.score_image`; smaller ones are enlarged to 64 first; `backend` picks
torch, the exported ONNX fp32/int8 graphs or the distilled student, see `load_scorer`); `verdict`
(`real`, `uncertain`, `fake`, from the model's calibrated bands, or `out-of-scope` when the image is
not a photograph the detector can judge: an emoji, a drawing, text; then `score` is null and
`scope` says why, see `brushpen.safety.scope`; `scope_gate=False` scores it anyway; or `ai-made`
when provenance proves it, see below); `basis` (what decided the verdict: `detector`, `scope` or
`provenance`) and `evidence` (the proof, in words); `heatmap` (a PNG path when
asked; `heatmap_png` holds the bytes in memory for the API and UI); `provenance` (`watermark`:
found, model tag and the store model it names, image id, confidence; `credentials`: the C2PA state
`none` / `valid` / `valid-untrusted` / `invalid` with its failure codes, claim generator, whether the
actions declare AI generation, signer, and whether the manifest was recovered through our watermark,
see `brushpen.safety.credentials`; `settings`: the PNG's `brushpen` or A1111 `parameters` chunk, or
{}); `error` (why the file could not be checked, else null); `width`, `height`, `tiles`.

**The verdict weighs the evidence, not the score alone.** Provenance that proves AI generation wins
over the detector's score and over the scope gate: a valid C2PA manifest (trusted or not) whose
actions declare an AI digitalSourceType, a manifest recovered through our watermark, or our
watermark itself. The verdict is then `ai-made` with basis `provenance`; the score is still reported.
An `invalid` manifest proves nothing and is flagged in `credentials`.

**Bad input never stops a scan**: each becomes a result with `error` set. Refused: files over
`max_file_bytes`; anything PIL cannot identify or fully decode (corrupt, truncated); images over
`max_pixels` (decompression bombs, checked from the header before decoding, without touching
PIL's global limit); sides under `min_side`; zip entries whose name is absolute or holds `..`;
zip entries past `zip_max_entries`, past `zip_max_total` uncompressed bytes in all, or with a
compression ratio over `zip_max_ratio` (zip bombs; sizes are counted while reading, never taken
from the header on trust).

**JSON report** (`write_json`): {"schema": "brushpen.detections/1", "model": NAME, "calibration":
{temperature, t_real, t_fake, rule}, "results": [CheckResult.to_json(), ...], "summary": {total,
real, uncertain, fake, out-of-scope, ai-made, error}}. **CSV** (`write_csv`): the columns in `CSV_COLUMNS`, one row per
file, provenance flattened (`png_settings` is JSON text).
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from PIL import Image

from brushpen.adapters import resolve_adapter
from brushpen.edge.common import check_backend
from brushpen.edge.detector import load_backend
from brushpen.errors import BadInput, BadParameter
from brushpen.families import default_model
from brushpen.generators.images import read_png_settings
from brushpen.safety import credentials, watermark
from brushpen.safety.detector import Detector, load_detector, overlay, score_image
from brushpen.safety.scope import check_scope
from brushpen.store import atomic_write_bytes, atomic_write_json, atomic_write_text, list_models, resolve_model
from brushpen.ziputil import ZipLimits, iter_zip

DEFAULT_MODEL = default_model("safety")
SCHEMA = "brushpen.detections/1"
CSV_COLUMNS = ("path", "score", "verdict", "basis", "evidence", "heatmap", "watermark_found", "watermark_model",
               "watermark_image_id", "c2pa_state", "c2pa_codes", "c2pa_claim_generator", "c2pa_ai_generated",
               "c2pa_signer", "c2pa_recovered", "png_settings", "error", "width", "height", "tiles", "scope")
VERDICTS = ("real", "uncertain", "fake")
OUT_OF_SCOPE = "out-of-scope"   # not a photograph: the detector's score would mean nothing
AI_MADE = "ai-made"             # provenance proves AI generation, whatever the score (basis "provenance")


@dataclass(frozen=True)
class ScanLimits:
    max_file_bytes: int = 64 << 20
    max_pixels: int = 40_000_000       # 40 MP: larger than any camera photo we expect, far below a bomb
    max_request_pixels: int = 80_000_000   # all images of one API request together (check_images)
    min_side: int = 16
    # a zip's caps (brushpen.ziputil); an entry is also held to max_file_bytes
    zip_max_entries: int = ZipLimits.max_entries
    zip_max_total: int = ZipLimits.max_total       # uncompressed bytes read from one zip, in all
    zip_max_ratio: float = ZipLimits.max_ratio     # PNG/JPEG barely compress; a 1000:1 entry is a bomb

    def zip_limits(self) -> ZipLimits:
        return ZipLimits(max_entries=self.zip_max_entries, max_total=self.zip_max_total,
                         max_ratio=self.zip_max_ratio, max_entry=self.max_file_bytes)


def _flag(value) -> str:
    return "" if value is None else str(bool(value)).lower()


@dataclass
class CheckResult:
    path: str
    score: float | None = None
    verdict: str | None = None
    heatmap: str | None = None
    provenance: dict = field(default_factory=dict)
    error: str | None = None
    width: int | None = None
    height: int | None = None
    tiles: int | None = None
    scope: str | None = None      # why the image is out of scope (verdict `out-of-scope`), else null
    basis: str | None = None      # what decided the verdict: detector | scope | provenance
    evidence: list[str] = field(default_factory=list)   # the provenance that proves AI generation, in words
    heatmap_png: bytes | None = field(default=None, repr=False)   # in memory only, never in reports

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("heatmap_png")
        return out

    def csv_row(self) -> dict:
        mark = self.provenance.get("watermark") or {}
        settings = self.provenance.get("settings")
        cred = self.provenance.get("credentials") or {}
        return {"path": self.path, "score": "" if self.score is None else f"{self.score:.6f}",
                "verdict": self.verdict or "", "basis": self.basis or "", "evidence": "; ".join(self.evidence),
                "heatmap": self.heatmap or "",
                "watermark_found": "" if not mark else str(bool(mark.get("found"))).lower(),
                "watermark_model": mark.get("model") or "", "watermark_image_id": mark.get("image_id") or "",
                "c2pa_state": cred.get("state") or "", "c2pa_codes": " ".join(cred.get("codes") or []),
                "c2pa_claim_generator": cred.get("claim_generator") or "",
                "c2pa_ai_generated": _flag(cred.get("ai_generated")) if cred else "",
                "c2pa_signer": cred.get("signer") or "", "c2pa_recovered": _flag(cred.get("recovered")) if cred else "",
                "png_settings": json.dumps(settings, sort_keys=True) if settings else "",
                "error": self.error or "", "width": self.width or "", "height": self.height or "",
                "tiles": self.tiles or "", "scope": self.scope or ""}


# ---- the model ------------------------------------------------------------------------------------

_lock = threading.Lock()   # one forward at a time: cheap, and torch modules are not shared mid-call


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> Detector:
    return load_detector(Path(path))


@lru_cache(maxsize=4)
def _load_adapted(base: str, adapter: str, stamp: tuple[float, float]) -> Detector:
    # Lazy: peft (and transformers) take seconds to import, and only an adapter needs them.
    from brushpen.safety.lora import load_adapted

    return load_adapted(Path(base), Path(adapter))


def load_model(name: str | Path = DEFAULT_MODEL) -> Detector:
    """The detector by store name (`detector`, `safety/detector`), folder, or `base:adapter` (a LoRA
    adapter, served merged with its own calibration); cached until its files change."""
    if isinstance(name, str) and ":" in name:
        base, adapter = resolve_adapter(name, family="safety")
        if adapter is not None:
            stamp = ((base / "model.safetensors").stat().st_mtime, (adapter / "adapter.json").stat().st_mtime)
            return _load_adapted(str(base.resolve()), str(adapter.resolve()), stamp)
        name = base
    folder = resolve_model(name, family="safety")
    return _load(str(folder.resolve()), (folder / "model.safetensors").stat().st_mtime)


def load_scorer(name: str | Path = DEFAULT_MODEL, backend: str = "torch") -> Detector:
    """The network a request runs: the model under torch, or one of its edge variants (`brushpen
    export`: `onnx`, `onnx-int8`, `student`; an ONNX graph comes as an `OnnxDetector`, which
    `score_image` runs through the same tiling, mean and heatmap code as a Detector)."""
    check_backend(backend)
    net = load_model(name)
    if backend == "torch":
        return net
    if isinstance(name, str) and ":" in name:
        raise BadParameter(f"backend '{backend}' serves exported models only: use backend 'torch' with an adapter")
    return load_backend(resolve_model(name, family="safety"), backend, net)


@lru_cache(maxsize=1)
def _model_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for m in list_models():
        for n in (m.name, m.ref):
            names.setdefault(watermark.model_tag(n), n)
    return names


def provenance(image: Image.Image, data: bytes) -> dict:
    """What the image says about where it came from: the invisible mark, its Content Credentials (or
    the manifest we signed for it, recovered through the mark when the file lost its own) and the PNG
    settings chunk."""
    mark: dict = {"found": False}
    det = None
    if min(image.size) >= watermark.MIN_SIDE:
        det = watermark.extract(image)
        mark = {"found": det.found, "confidence": round(det.confidence, 4)}
        if det.found and det.payload is not None:
            mark.update(model_tag=det.payload.model, model=_model_names().get(det.payload.model),
                        image_id=det.payload.image_id, bit_agreement=det.bit_agreement)
    else:
        mark["note"] = f"smaller than {watermark.MIN_SIDE} px: no mark can be read"
    try:
        settings = read_png_settings(data)
    except BadInput as e:
        settings = {"error": str(e)}
    cred = credentials.read(data)
    if cred["state"] == "none" and det is not None and det.found:
        cred = credentials.recover(det.payload, data) or cred
    return {"watermark": mark, "credentials": cred, "settings": settings}


def evidence_of_ai(prov: dict) -> list[str]:
    """Provenance that proves AI generation, in words: a valid manifest declaring it, a manifest
    recovered through our watermark, or our watermark itself (it names the model that made the image)."""
    out = []
    proof = credentials.proves_ai(prov.get("credentials"))
    if proof:
        out.append(proof)
    mark = prov.get("watermark") or {}
    if mark.get("found"):
        out.append(f"the brushpen watermark of {mark.get('model') or 'model tag ' + str(mark.get('model_tag'))}")
    return out


def _weigh(result: CheckResult) -> CheckResult:
    """The verdict weighs the evidence: provenance that proves AI generation wins over the score."""
    result.evidence = evidence_of_ai(result.provenance)
    if result.evidence:
        result.verdict, result.basis = AI_MADE, "provenance"
    return result


# ---- one image ----------------------------------------------------------------------------------------

def decode(data: bytes, limits: ScanLimits) -> Image.Image:
    """Bytes -> a fully decoded RGB image, or BadInput saying why not."""
    if len(data) > limits.max_file_bytes:
        raise BadInput(f"file is {len(data):,} bytes, over the limit of {limits.max_file_bytes:,}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # our own limit decides
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > limits.max_pixels:
                raise BadInput(f"image is {w}x{h} = {w * h:,} pixels, over the limit of {limits.max_pixels:,} "
                               "(a decompression bomb, or simply too large)")
            im.load()
    except BadInput:
        raise
    except Image.DecompressionBombError as e:
        raise BadInput(f"decompression bomb refused: {e}") from e
    except Exception as e:   # PIL raises many kinds on corrupt data; none may stop a scan
        kind = "not an image" if "cannot identify" in str(e) else "corrupt or truncated image"
        raise BadInput(f"{kind}: {e}") from e
    if min(w, h) < limits.min_side:
        raise BadInput(f"image is {w}x{h}: too small to judge (at least {limits.min_side} px a side)")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Transparent pixels have no colour of their own: judge what a viewer sees on white.
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


def check_one(name: str, data: bytes, model: Detector, heatmap: bool = False,
              limits: ScanLimits = ScanLimits(), scope_gate: bool = True) -> CheckResult:
    result = CheckResult(path=name)
    try:
        image = decode(data, limits)
    except BadInput as e:
        result.error = str(e)
        return result
    result.width, result.height = image.size
    scope = check_scope(image) if scope_gate else None
    if scope is not None and not scope.in_scope:
        # Provenance is still read: our own emoji are out of scope, and their mark says so.
        result.verdict, result.scope, result.basis = OUT_OF_SCOPE, scope.reason, "scope"
        result.provenance = provenance(image, data)
        return _weigh(result)
    with _lock:
        s = score_image(model, image, heatmap=heatmap)
    result.score, result.verdict, result.tiles = round(s.probability, 6), s.verdict, s.tiles
    result.basis = "detector"
    result.provenance = provenance(image, data)
    _weigh(result)
    if heatmap and s.heatmap is not None:
        buf = io.BytesIO()
        overlay(image, s.heatmap).save(buf, format="PNG")
        result.heatmap_png = buf.getvalue()
    return result


def check_images(items: Iterable[tuple[str, bytes]], model: str | Path = DEFAULT_MODEL, heatmaps: bool = False,
                 limits: ScanLimits = ScanLimits(), backend: str = "torch",
                 scope_gate: bool = True) -> list[CheckResult]:
    """Score images held in memory; a bad one gets its `error`, the others are still scored.

    One call is one request: past `limits.max_request_pixels` in all (counted from the headers,
    before decoding), the remaining images get an error instead of being decoded, so a few cheap
    files (a 4 KB one-bit PNG can hold 36 MP) cannot buy seconds of CPU and gigabytes each."""
    net = load_scorer(model, backend)
    return [CheckResult(path=name, error=over) if over else check_one(name, data, net, heatmaps, limits, scope_gate)
            for name, data, over in _within_budget(items, limits)]


def _within_budget(items: Iterable[tuple[str, bytes]], limits: ScanLimits) -> Iterator[tuple[str, bytes, str | None]]:
    """(name, data, None) while the request's pixel budget lasts, then (name, data, why not)."""
    spent = 0
    for name, data in items:
        pixels = _header_pixels(data)
        if spent + pixels > limits.max_request_pixels:
            yield name, data, (f"over this request's pixel budget of {limits.max_request_pixels:,} ({spent:,} "
                               f"already taken, this image {pixels:,}): send the rest in another request")
            continue
        spent += pixels
        yield name, data, None


def read_credentials(items: Iterable[tuple[str, bytes]], limits: ScanLimits = ScanLimits()) -> list[dict]:
    """Provenance only, no detector: per image its Content Credentials (recovered through the
    watermark when the file lost them), the watermark, and the evidence of AI generation they give.
    The same decoding limits and request budget as `check_images`."""
    out = []
    for name, data, over in _within_budget(items, limits):
        row: dict = {"path": name, "credentials": None, "watermark": None, "evidence": [], "error": over}
        if over is None:
            try:
                prov = provenance(decode(data, limits), data)
            except BadInput as e:
                row["error"] = str(e)
            else:
                row.update(credentials=prov["credentials"], watermark=prov["watermark"], evidence=evidence_of_ai(prov))
        out.append(row)
    return out


def _header_pixels(data: bytes) -> int:
    """Width x height from the header alone (0 when unreadable: decoding will then say why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.width * im.height
    except Exception:   # noqa: BLE001 - any unreadable header is decode()'s to report
        return 0


# ---- files, folders and zips ----------------------------------------------------------------------

def iter_sources(paths: Iterable[str | Path], limits: ScanLimits = ScanLimits()
                 ) -> Iterator[tuple[str, bytes | None, str | None]]:
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.exists():
            files = [p]
        else:
            yield str(p), None, "no such file or folder"
            continue
        for f in files:
            if f.suffix.lower() == ".zip":
                yield from iter_zip(f, limits.zip_limits())
                continue
            try:
                size = f.stat().st_size
                if size > limits.max_file_bytes:
                    yield str(f), None, f"file is {size:,} bytes, over the limit of {limits.max_file_bytes:,}"
                    continue
                yield str(f), f.read_bytes(), None
            except OSError as e:
                yield str(f), None, f"cannot read: {e}"


def _heatmap_name(index: int, name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", PurePosixPath(name.replace("!", "/").replace("\\", "/")).stem)
    return f"{index:05d}-{stem[:80] or 'image'}.png"


def scan_paths(paths: Iterable[str | Path], model: str | Path = DEFAULT_MODEL, heatmaps_dir: Path | None = None,
               limits: ScanLimits = ScanLimits(), backend: str = "torch",
               scope_gate: bool = True) -> Iterator[CheckResult]:
    """One result per file (or zip entry), in order; heatmaps written to `heatmaps_dir` if given."""
    net = load_scorer(model, backend)
    for index, (name, data, error) in enumerate(iter_sources(paths, limits)):
        if error is not None or data is None:
            yield CheckResult(path=name, error=error)
            continue
        result = check_one(name, data, net, heatmaps_dir is not None, limits, scope_gate)
        if heatmaps_dir is not None and result.heatmap_png is not None:
            result.heatmap = str(atomic_write_bytes(Path(heatmaps_dir) / _heatmap_name(index, name),
                                                    result.heatmap_png))
        yield result


# ---- reports ----------------------------------------------------------------------------------------

def summarize(results: list[CheckResult]) -> dict[str, int]:
    out = {"total": len(results), **{v: 0 for v in VERDICTS}, OUT_OF_SCOPE: 0, AI_MADE: 0, "error": 0}
    for r in results:
        out["error" if r.error else r.verdict or "error"] += 1
    return out


def report(results: list[CheckResult], model: str | Path = DEFAULT_MODEL, backend: str = "torch") -> dict:
    cal = load_scorer(model, backend).calibration   # the student has its own
    return {"schema": SCHEMA, "model": str(model),
            "calibration": {"temperature": cal.temperature, "t_real": cal.t_real, "t_fake": cal.t_fake,
                            "rule": cal.rule},
            "results": [r.to_json() for r in results], "summary": summarize(results)}


def write_json(results: list[CheckResult], path: Path, model: str | Path = DEFAULT_MODEL,
               backend: str = "torch") -> Path:
    return atomic_write_json(Path(path), report(results, model, backend))


def write_csv(results: list[CheckResult], path: Path) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow(r.csv_row())
    return atomic_write_text(Path(path), buf.getvalue())
