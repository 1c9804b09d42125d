"""Property tests (Hypothesis) for our own parsers of untrusted input: whatever comes in, each one
answers with its value or a clear `BrushpenError`, never another exception.

PNG metadata, the batch and fine-tune JSONL readers, zip walking, the watermark reader on arbitrary
images, and the copy text cleaner. Seeded (`derandomize`) and bounded so the suite stays fast.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from brushpen.errors import BrushpenError
from brushpen.generators.images import read_png_settings
from brushpen.generators.jobs import parse_batch_file
from brushpen.safety.watermark import extract
from brushpen.text.lora_data import parse_line
from brushpen.text.sampling import TEMPLATE_TOKENS, clean
from brushpen.ziputil import ZipLimits, iter_zip

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=20)


def png_with(chunks: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


@FAST
@given(brushpen=st.one_of(st.text(max_size=200), JSONISH.map(json.dumps), st.just("[" * 5000)),
       parameters=st.text(max_size=200))
def test_png_settings_are_a_dict_or_a_clear_error(brushpen: str, parameters: str) -> None:
    try:
        settings_ = read_png_settings(png_with({"brushpen": brushpen, "parameters": parameters}))
    except BrushpenError:
        return
    assert isinstance(settings_, dict)


@FAST
@given(data=st.binary(max_size=300))
def test_png_settings_of_arbitrary_bytes(data: bytes) -> None:
    try:
        assert isinstance(read_png_settings(b"\x89PNG\r\n\x1a\n" + data), dict)
    except BrushpenError:
        pass


LINE = st.fixed_dictionaries({}, optional={
    "custom_id": st.one_of(st.text(max_size=10), st.integers()), "method": st.sampled_from(["POST", "GET", 1]),
    "url": st.sampled_from(["/v1/completions", "/v1/images/generations", "/v1/x", ""]), "body": JSONISH})


@FAST
@given(lines=st.lists(st.one_of(LINE.map(json.dumps), st.text(max_size=40), st.just("[" * 3000)), max_size=5),
       endpoint=st.sampled_from([None, "/v1/completions"]))
def test_batch_files_parse_or_name_the_bad_line(lines: list[str], endpoint: str | None) -> None:
    try:
        parsed = parse_batch_file("\n".join(lines).encode(), endpoint)
    except BrushpenError:
        return
    assert all(isinstance(cid, str) and isinstance(body, dict) for cid, body in parsed)


@FAST
@given(line=st.one_of(JSONISH.map(json.dumps), st.text(max_size=80), st.just("{" * 3000)))
def test_fine_tune_lines_parse_or_say_why(line: str) -> None:
    try:
        parse_line(line, "line 1")
    except BrushpenError as e:
        assert str(e).startswith("line 1")


ENTRY = st.tuples(st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["../x.png", "/etc/p.png", "a/../../b",
                                                                               "ok/img.png", "dir/"])),
                  st.binary(max_size=200))


@pytest.mark.filterwarnings("ignore:Duplicate name")   # Hypothesis may repeat an entry name: allowed in zips
@settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(entries=st.lists(ENTRY, max_size=6))
def test_zip_walking_never_raises_and_refuses_unsafe_names(tmp_path_factory, entries: list) -> None:
    path = Path(tmp_path_factory.mktemp("zip")) / "in.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    for name, data, error in iter_zip(path, ZipLimits()):
        assert (data is None) == (error is not None)
        inner = name.split("!", 1)[1]
        if inner.startswith("/") or ".." in inner.replace("\\", "/").split("/"):
            assert error is not None


@FAST
@given(shape=st.tuples(st.integers(1, 80), st.integers(1, 80)), seed=st.integers(0, 2**32 - 1),
       mode=st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16", "CMYK"]))
def test_the_watermark_reader_answers_on_any_image(shape: tuple[int, int], seed: int, mode: str) -> None:
    arr = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    image = Image.fromarray(arr).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = image.convert("I;16")
    try:
        found = extract(image)
    except BrushpenError:
        assert min(shape) < 32   # too small to hold a mark: a clear refusal
        return
    assert not found.found or found.payload is not None


@FAST
@given(raw=st.text(max_size=300), single_line=st.booleans(), ended=st.booleans())
def test_the_copy_cleaner_gives_clean_single_lines(raw: str, single_line: bool, ended: bool) -> None:
    text = clean(raw, single_line, ended)
    assert text == text.strip()
    assert not TEMPLATE_TOKENS.search(text) or TEMPLATE_TOKENS.search(raw)
    if single_line:
        assert "\n" not in text
