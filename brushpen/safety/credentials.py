"""Content Credentials (C2PA): every image the studio emits carries a signed manifest, and the
checker reads anyone's.

The manifest is the hard binding (a signed hash of the file's bytes); our watermark is the soft
binding (it survives re-encoding, the manifest does not). Together they are what the C2PA
specification calls durable credentials. Built on `c2pa-python` (the Content Authenticity
Initiative's own SDK): no hand-written JUMBF or COSE here.

**The signing identity** lives under `$BRUSHPEN_HOME/c2pa/`, made on first use:
- `ca.pem` / `ca.key`: a local signing CA (EC P-256, ten years);
- `signer.pem` (the signer certificate, then the CA) / `signer.key`: the end-entity certificate,
  with digitalSignature and the emailProtection and c2pa-kp-claimSigning EKUs (two years).
Keys are written with mode 0600 and never logged. `init_identity` remakes them. API replicas and
workers that share a home make, replace and read these files under one lock (`c2pa/.lock`), so none
signs with one identity's key and another's certificate. An organisation's own
certificate chain and key (`init_identity(cert=..., key=...)`, or `BRUSHPEN_C2PA_CERT` and
`BRUSHPEN_C2PA_KEY`) replace the local pair, so the studio signs as that organisation.
`BRUSHPEN_C2PA=off` stops signing altogether (reading is unaffected).

**Trust**: the checker trusts our own CA and every certificate added with `add_trust`
(`trust/anchors.pem`). A manifest that validates and chains to one of them is `valid`; one that
validates but chains to nobody we trust is `valid-untrusted`; a broken one is `invalid` with its
codes; no manifest is `none`.

**The manifest store**: each signed manifest is also kept, as the raw manifest bytes, under
`c2pa/manifests/`, named by the image's watermark payload. `recover` reads the
watermark of an image that lost its manifest (a screenshot, a re-encode) and finds the original.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from brushpen.config import get_settings
from brushpen.errors import BadInput, BadParameter
from brushpen.safety import watermark
from brushpen.store import atomic_write_bytes, file_lock

CLAIM_SIGNING_EKU = "1.3.6.1.4.1.62558.2.1"   # c2pa-kp-claimSigning
AI_SOURCE_TYPES = ("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia",
                   "algorithmicMedia", "compositeSynthetic")
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
SOFT_BINDING_ALG = "org.brushpen.watermark.v1"
GENERATION_LABEL = "org.brushpen.generation"
MODEL_LABEL = "org.brushpen.model"
STATES = ("none", "valid", "valid-untrusted", "invalid")
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif", "TIFF": "image/tiff",
        "AVIF": "image/avif", "HEIF": "image/heif"}


def c2pa_dir() -> Path:
    return get_settings().home / "c2pa"


def signing_enabled() -> bool:
    return os.environ.get("BRUSHPEN_C2PA", "on").strip().lower() not in ("off", "0", "false", "no")


# ---- the signing identity -------------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    chain_pem: bytes      # signer certificate first, then its issuers
    key_pem: bytes
    alg: str              # es256 | es384 | es512 | ps256 | ed25519
    signer: str           # the signer certificate's subject, for display
    source: str           # "local" (made here) or "organisation" (given)


def _write_secret(path: Path, data: bytes) -> None:
    """Atomic, and 0600 from the first byte: the temporary file is made 0600 and keeps that mode."""
    atomic_write_bytes(path, data, mode=0o600)


_write_public = atomic_write_bytes


def _name(common_name: str, org: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])


def _folder_lock(folder: Path):
    """Held while the identity's files are written or read as a set."""
    return file_lock(folder / ".lock")


def make_local_identity(org: str = "brushpen (local)", folder: Path | None = None) -> Path:
    """A new local CA and signer certificate in `folder` (default `$BRUSHPEN_HOME/c2pa`)."""
    org = (org or "").strip()
    if not org or len(org) > 64:
        raise BadParameter("--org must be 1 to 64 characters")
    folder = Path(folder or c2pa_dir())
    with _folder_lock(folder):
        _write_local_identity(org, folder)
    return folder


def _write_local_identity(org: str, folder: Path) -> None:
    """Make and write the four files; the caller holds the folder's lock."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{org} signing CA", org)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(_name(f"{org} content signer", org)).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=730))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION,
                                                  ObjectIdentifier(CLAIM_SIGNING_EKU)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pkcs8 = (serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_secret(folder / "ca.key", ca_key.private_bytes(pem, *pkcs8))
    _write_secret(folder / "signer.key", key.private_bytes(pem, *pkcs8))
    _write_public(folder / "ca.pem", ca.public_bytes(pem))
    _write_public(folder / "signer.pem", cert.public_bytes(pem) + ca.public_bytes(pem))
    for stale in ("org.pem", "org.key"):
        (folder / stale).unlink(missing_ok=True)
    _identity_cache.clear()


def _alg_for(key_pem: bytes) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise BadInput(f"the private key is not an unencrypted PEM key: {str(e)[:120]}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(key.curve.name)
        if alg:
            return alg
        raise BadInput(f"EC curve {key.curve.name} is not one C2PA signs with (P-256, P-384, P-521)")
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise BadInput("the private key's type is not one C2PA signs with (EC, RSA or Ed25519)")


def _subject(chain_pem: bytes) -> str:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as e:
        raise BadInput(f"not a PEM certificate chain: {str(e)[:120]}") from None
    return certs[0].subject.rfc4514_string()


def use_organisation(cert: Path, key: Path) -> Path:
    """Sign as an organisation from now on: its chain (signer first) and key are copied in, 0600."""
    chain_pem, key_pem = Path(cert).read_bytes(), Path(key).read_bytes()
    _check_pair(chain_pem, key_pem)   # refuse what cannot sign before anything is written
    folder = c2pa_dir()
    with _folder_lock(folder):
        _write_public(folder / "org.pem", chain_pem)
        _write_secret(folder / "org.key", key_pem)
    _identity_cache.clear()
    return folder


def _check_pair(chain_pem: bytes, key_pem: bytes) -> tuple[str, str]:
    """The key's algorithm and the signer's subject, once the key is known to be the signer
    certificate's own; a mismatch would otherwise surface only as a failed signature."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

    alg, subject = _alg_for(key_pem), _subject(chain_pem)
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    cert_key = x509.load_pem_x509_certificates(chain_pem)[0].public_key().public_bytes(*spki)
    if load_pem_private_key(key_pem, password=None).public_key().public_bytes(*spki) != cert_key:
        raise BadParameter(f"the private key is not the key of the signer certificate ({subject}); "
                           f"give the certificate first in the chain, with its own key")
    return alg, subject


_identity_cache: dict[tuple, Identity] = {}
_lock = threading.Lock()


def identity() -> Identity:
    """The identity that signs: an organisation's when given (environment, then `org.pem`), else the
    local one, made on first use."""
    folder = c2pa_dir()
    env_cert, env_key = os.environ.get("BRUSHPEN_C2PA_CERT"), os.environ.get("BRUSHPEN_C2PA_KEY")
    if bool(env_cert) != bool(env_key):
        raise BadParameter("set both BRUSHPEN_C2PA_CERT and BRUSHPEN_C2PA_KEY, or neither")
    if env_cert:
        cert, key, source = Path(env_cert), Path(env_key), "organisation"
    elif (folder / "org.pem").exists() and (folder / "org.key").exists():
        cert, key, source = folder / "org.pem", folder / "org.key", "organisation"
    else:
        cert, key, source = folder / "signer.pem", folder / "signer.key", "local"
    with _lock:
        stamp = _stamp(cert, key)
        if stamp in _identity_cache:
            return _identity_cache[stamp]
        # Not seen yet: make it (first use) or read it, both under the folder's lock, so a replica
        # making the identity at the same moment cannot hand this one half of the set.
        with _folder_lock(folder):
            if source == "local" and not (cert.exists() and key.exists()):
                _write_local_identity("brushpen (local)", folder)
            stamp = _stamp(cert, key)
            if stamp is None:
                raise BadParameter(f"the signing certificate or key is missing ({cert.name}, {key.name})")
            chain_pem, key_pem = cert.read_bytes(), key.read_bytes()
        _identity_cache[stamp] = Identity(chain_pem, key_pem, *_check_pair(chain_pem, key_pem), source)
        return _identity_cache[stamp]


def _stamp(cert: Path, key: Path) -> tuple | None:
    try:
        return (str(cert), cert.stat().st_mtime_ns, str(key), key.stat().st_mtime_ns)
    except FileNotFoundError:
        return None


def add_trust(pem_file: Path) -> int:
    """Add the certificates of a PEM file to the anchors the checker trusts; returns how many were new."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certs = x509.load_pem_x509_certificates(Path(pem_file).read_bytes())
    except ValueError as e:
        raise BadInput(f"{Path(pem_file).name} is not a PEM certificate file: {str(e)[:120]}") from None
    path = c2pa_dir() / "trust" / "anchors.pem"
    added = [c.public_bytes(serialization.Encoding.PEM) for c in certs]
    with _folder_lock(c2pa_dir()):   # two adds at once must not drop either
        have = path.read_bytes() if path.exists() else b""
        new = [c for c in added if c not in have]
        if new:
            _write_public(path, have + b"".join(new))
    return len(new)


def trust_anchors() -> str:
    """Our CA (when one was made) and every added anchor, as one PEM text. Reading never makes an identity."""
    folder = c2pa_dir()
    parts = [p.read_text(encoding="ascii") for p in (folder / "ca.pem", folder / "trust" / "anchors.pem")
             if p.exists()]
    return "".join(parts)


# ---- signing --------------------------------------------------------------------------------------

def _c2pa():
    import c2pa   # a 53 MB native library: loaded when the first image is signed or read

    return c2pa


def soft_binding_value(payload: watermark.Payload) -> str:
    return base64.b64encode(payload.model.to_bytes(2, "big") + payload.image_id.to_bytes(4, "big")).decode("ascii")


def payload_key(payload: watermark.Payload) -> str:
    return f"{payload.model:04x}{payload.image_id:08x}"


def manifest_definition(title: str, settings: dict, model: dict | None, payload: watermark.Payload | None,
                        action: str = "c2pa.created", source_type: str = TRAINED,
                        ingredients_note: list[dict] | None = None) -> dict:
    """The manifest every studio image carries (see docs/provenance.md for each assertion)."""
    import brushpen

    agent = {"name": "brushpen", "version": brushpen.__version__}
    act: dict[str, Any] = {"action": action, "softwareAgent": agent, "digitalSourceType": source_type}
    if ingredients_note:
        act["parameters"] = {"org.brushpen.derived_from": ingredients_note}
    assertions: list[dict] = [{"label": "c2pa.actions.v2", "data": {"actions": [act]}},
                              {"label": GENERATION_LABEL, "data": json.loads(json.dumps(settings, default=str))}]
    if model:
        assertions.append({"label": MODEL_LABEL, "data": model})
    if payload is not None:
        assertions.append({"label": "c2pa.soft-binding", "data": {
            "alg": SOFT_BINDING_ALG, "blocks": [{"scope": {}, "value": soft_binding_value(payload)}]}})
    return {"claim_generator_info": [agent], "title": title, "assertions": assertions}


_context_cache: dict[Identity, Any] = {}


def _signing_context(ident: Identity):
    c2pa = _c2pa()
    ctx = _context_cache.get(ident)
    if ctx is None:
        # The default thumbnail upscales a 64x64 image to a 1024-px JPEG: 33 KB and 47 ms an image.
        settings = c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(ident.alg.encode(), ident.chain_pem, ident.key_pem, None))
        ctx = _context_cache[ident] = c2pa.Context(settings, signer)
    return ctx


def sign(data: bytes, mime: str, manifest: dict, payload: watermark.Payload | None = None,
         parent: dict | None = None) -> bytes:
    """`data` with `manifest` signed into it. With a payload the manifest is also kept in the store,
    named by it, for `recover`. `parent` (an ingredient definition) makes `data` itself the parent
    ingredient, with any credentials it already carries."""
    c2pa = _c2pa()
    ident = identity()
    out = io.BytesIO()
    with _lock:
        try:
            builder = c2pa.Builder(manifest, _signing_context(ident))
            if parent is not None:
                builder.add_ingredient(parent, mime, io.BytesIO(data))
            manifest_bytes = builder.sign(mime, io.BytesIO(data), out)
        except c2pa.C2paError as e:
            raise BadInput(f"could not sign a {mime} file: {str(e)[:200]}") from None
    if payload is not None:
        _keep(payload, manifest_bytes, mime)
    return out.getvalue()


def sign_image_file(path: Path, out: Path | None = None, title: str | None = None,
                    source_type: str | None = None, note: dict | None = None) -> Path:
    """`brushpen c2pa sign`: an image made elsewhere gets our manifest (action `c2pa.opened`, no AI
    claim unless `source_type` makes one). Written atomically; the original is kept unless out = path."""
    data = Path(path).read_bytes()
    mime = sniff_mime(data)
    act: dict[str, Any] = {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}}
    if source_type:
        act["digitalSourceType"] = source_type
    import brushpen

    agent = {"name": "brushpen", "version": brushpen.__version__}
    act["softwareAgent"] = agent
    manifest = {"claim_generator_info": [agent], "title": title or Path(path).name,
                "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [act]}}]}
    if note:
        manifest["assertions"].append({"label": "org.brushpen.note", "data": note})
    signed = sign(data, mime, manifest, parent={"title": Path(path).name, "relationship": "parentOf",
                                                "label": "parent"})
    target = Path(out or path)
    _write_public(target, signed)
    return target


# ---- the manifest store ---------------------------------------------------------------------------

def manifests_dir() -> Path:
    return c2pa_dir() / "manifests"


def _keep(payload: watermark.Payload, manifest_bytes: bytes, mime: str) -> None:
    """One file per signed image, `<payload>.<ext>.c2pa`: the raw manifest, in the format it was signed for."""
    ext = mime.split("/")[-1]
    _write_public(manifests_dir() / f"{payload_key(payload)}.{ext}.c2pa", manifest_bytes)


def stored(payload: watermark.Payload) -> tuple[bytes, str] | None:
    """(raw manifest, mime) kept for this payload, or None."""
    hits = sorted(manifests_dir().glob(f"{payload_key(payload)}.*.c2pa"))
    if not hits:
        return None
    return hits[-1].read_bytes(), "image/" + hits[-1].name.split(".")[1]


# ---- reading --------------------------------------------------------------------------------------

@dataclass
class Credentials:
    """What an image's Content Credentials say, for the checker's report."""

    state: str = "none"                      # none | valid | valid-untrusted | invalid
    codes: list[str] = field(default_factory=list)   # failure codes (for invalid, and "untrusted")
    claim_generator: str | None = None
    ai_generated: bool = False               # the actions declare an AI digitalSourceType
    signer: str | None = None                # issuer / common name of the signing certificate
    title: str | None = None
    actions: list[str] = field(default_factory=list)
    model: dict | None = None                # our org.brushpen.model assertion, when present
    soft_binding: str | None = None          # the watermark payload the manifest names, when present
    recovered: bool = False                  # found through our watermark, not in the file itself
    recovered_key: str | None = None
    signature_checked: bool | None = None    # a recovered manifest's claim signature, validated again
    error: str | None = None                 # why the manifest could not be read at all

    def to_json(self) -> dict:
        return asdict(self)


def sniff_mime(data: bytes) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"not a readable image: {str(e)[:160]}") from None
    if fmt not in MIME:
        raise BadInput(f"C2PA does not cover {fmt} files here (PNG, JPEG, WebP, GIF, TIFF, AVIF, HEIF)")
    return MIME[fmt]


_reader_cache: dict[str, Any] = {}


def _reader_context():
    """Readers verify trust against our anchors; one context per set of anchors."""
    c2pa = _c2pa()
    anchors = trust_anchors()
    with _lock:
        ctx = _reader_cache.get(anchors)
        if ctx is None:
            _reader_cache.clear()
            config: dict = {"verify": {"verify_trust": True}}
            if anchors:   # an empty anchor list fails to parse: no anchors means nothing is trusted
                config["trust"] = {"trust_anchors": anchors}
            ctx = _reader_cache[anchors] = c2pa.Context(c2pa.Settings.from_dict(config))
        return ctx


def _summarise(reader) -> Credentials:
    store = json.loads(reader.json())
    manifest = store.get("manifests", {}).get(store.get("active_manifest") or "", {})
    state = reader.get_validation_state()
    results = (reader.get_validation_results() or {}).get("activeManifest") or {}
    failures = [f.get("code", "") for f in results.get("failure", [])]
    if state == "Trusted":
        cred = Credentials(state="valid")
    elif state == "Valid":
        cred = Credentials(state="valid-untrusted")
    else:
        cred = Credentials(state="invalid")
    cred.codes = failures
    gen = manifest.get("claim_generator_info") or []
    if gen:
        cred.claim_generator = " ".join(str(gen[0].get(k)) for k in ("name", "version") if gen[0].get(k))
    elif manifest.get("claim_generator"):
        cred.claim_generator = str(manifest["claim_generator"])
    sig = manifest.get("signature_info") or {}
    cred.signer = ", ".join(str(sig[k]) for k in ("common_name", "issuer") if sig.get(k)) or None
    cred.title = manifest.get("title")
    for a in manifest.get("assertions", []):
        label = a.get("label", "")
        if label.startswith("c2pa.actions"):
            for act in (a.get("data") or {}).get("actions", []):
                cred.actions.append(str(act.get("action")))
                if any(str(act.get("digitalSourceType", "")).endswith(t) for t in AI_SOURCE_TYPES):
                    cred.ai_generated = True
        elif label == MODEL_LABEL:
            cred.model = a.get("data")
        elif label == "c2pa.soft-binding" and (a.get("data") or {}).get("alg") == SOFT_BINDING_ALG:
            blocks = a["data"].get("blocks") or [{}]
            cred.soft_binding = blocks[0].get("value")
    return cred


def read(data: bytes, mime: str | None = None) -> dict:
    """The Content Credentials of an image's bytes (the checker's `credentials` field)."""
    c2pa = _c2pa()
    try:
        mime = mime or sniff_mime(data)
    except BadInput as e:
        return Credentials(error=str(e)).to_json()
    try:
        reader = c2pa.Reader(mime, io.BytesIO(data), context=_reader_context())
    except c2pa.C2paError as e:
        if "ManifestNotFound" in type(e).__name__ or "ManifestNotFound" in str(e):
            return Credentials().to_json()
        return Credentials(state="invalid", codes=[type(e).__name__.lstrip("_")], error=str(e)[:300]).to_json()
    try:
        return _summarise(reader).to_json()
    finally:
        reader.close()


@lru_cache(maxsize=8)
def _blank(mime: str) -> bytes:
    """A 1x1 image in `mime`'s format: the asset a stored manifest is read against when the image's
    own bytes are in another format (its hash cannot match either way)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, format={"image/jpeg": "JPEG"}.get(mime, mime.split("/")[-1].upper()))
    return out.getvalue()


def recover(payload: watermark.Payload | None, data: bytes | None = None) -> dict | None:
    """The manifest this studio signed for the image carrying `payload`, or None.

    The stored manifest is validated again now, against the image's current bytes when they are in
    the format it was signed for: its claim signature must still hold (`signature_checked`) and its
    signer is judged against today's trust anchors. The file's own hash cannot match (the file has
    changed: that is why it lost the manifest), so `assertion.dataHash.mismatch` is expected and left
    out of the codes."""
    if payload is None:
        return None
    hit = stored(payload)
    if hit is None:
        return None
    raw, mime = hit
    c2pa = _c2pa()
    try:
        asset = data if data is not None and sniff_mime(data) == mime else _blank(mime)
    except BadInput:
        asset = _blank(mime)
    try:
        reader = c2pa.Reader(mime, io.BytesIO(asset), manifest_data=raw, context=_reader_context())
    except c2pa.C2paError as e:
        return Credentials(state="invalid", codes=[type(e).__name__.lstrip("_")], error=str(e)[:300],
                           recovered=True, recovered_key=payload_key(payload)).to_json()
    try:
        cred = _summarise(reader)
        results = (reader.get_validation_results() or {}).get("activeManifest") or {}
    finally:
        reader.close()
    signed_ok = any(c.get("code") == "claimSignature.validated" for c in results.get("success", []))
    cred.codes = [c for c in cred.codes if not c.startswith("assertion.dataHash")]
    if not signed_ok or any(c != "signingCredential.untrusted" for c in cred.codes):
        cred.state = "invalid"
    else:
        cred.state = "valid-untrusted" if "signingCredential.untrusted" in cred.codes else "valid"
    cred.recovered, cred.recovered_key, cred.signature_checked = True, payload_key(payload), signed_ok
    return cred.to_json()


def proves_ai(cred: dict | None) -> str | None:
    """The evidence, in words, when credentials prove AI generation; else None."""
    if not cred or not cred.get("ai_generated"):
        return None
    if cred.get("recovered"):
        return f"a manifest recovered through the brushpen watermark ({cred.get('claim_generator')})"
    if cred.get("state") in ("valid", "valid-untrusted"):
        trust = "trusted" if cred["state"] == "valid" else "valid, signer not trusted here"
        return f"a C2PA manifest declaring AI generation ({cred.get('claim_generator')}; {trust})"
    return None


# ---- copy -----------------------------------------------------------------------------------------

COPY_RECORD = "brushpen.copy-credentials/1"


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def sign_copy(texts: list[str], settings: dict, model: dict | None = None) -> dict:
    """A signed record of a copy result. The C2PA SDK signs no text or JSON asset, so copy gets the
    manifest's content (the same actions, software agent, model and settings assertions) with the
    sha256 of the texts, signed by the same identity over its canonical JSON (`verify_copy`)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    import brushpen

    ident = identity()
    agent = {"name": "brushpen", "version": brushpen.__version__}
    claim = {"schema": COPY_RECORD, "claim_generator_info": [agent],
             "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "content_sha256": hashlib.sha256(_canonical(texts)).hexdigest(),
             "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [
                 {"action": "c2pa.created", "softwareAgent": agent, "digitalSourceType": TRAINED}]}},
                 {"label": GENERATION_LABEL, "data": json.loads(_canonical(settings))}]
             + ([{"label": MODEL_LABEL, "data": model}] if model else [])}
    key = serialization.load_pem_private_key(ident.key_pem, password=None)
    body = _canonical(claim)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(body, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(body, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(body)
    else:   # _alg_for refused every other kind when the identity was loaded
        raise BadInput("the signing key cannot sign copy records")
    return {"claim": claim, "signature": base64.b64encode(sig).decode("ascii"),
            "certificate_chain": ident.chain_pem.decode("ascii")}


def verify_copy(record: dict, texts: list[str]) -> str:
    """`valid`, `valid-untrusted` (signed, by a chain we do not trust) or `invalid` (the texts or the
    claim changed, or the signature does not hold)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    try:
        claim = record["claim"]
        certs = x509.load_pem_x509_certificates(record["certificate_chain"].encode("ascii"))
        sig = base64.b64decode(record["signature"])
    except (KeyError, TypeError, ValueError):
        return "invalid"
    if claim.get("content_sha256") != hashlib.sha256(_canonical(texts)).hexdigest():
        return "invalid"
    pub, body = certs[0].public_key(), _canonical(claim)
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, body, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, body, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(sig, body)
        else:
            return "invalid"
    except InvalidSignature:
        return "invalid"
    # Trusted when the signer was issued directly by an anchor (our CA, or one added with `trust`).
    anchors = x509.load_pem_x509_certificates(trust_anchors().encode("ascii"))
    issuer = next((c for c in [*certs[1:], *anchors] if c.subject == certs[0].issuer), None)
    if issuer is None:
        return "valid-untrusted"
    try:
        certs[0].verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return "invalid"
    return "valid" if issuer in anchors else "valid-untrusted"
