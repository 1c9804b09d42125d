"""`brushpen c2pa ...`: the studio's Content Credentials (C2PA).

- `init [--org NAME] [--cert PEM --key PEM]`: remake the local signing CA and signer, or sign as an
  organisation from now on with its own certificate chain and key.
- `trust ANCHOR.pem`: add certificates to the anchors the checker trusts.
- `sign FILE [--out F] [--ai]`: sign an image made elsewhere (action `c2pa.opened`).
- `verify FILE...`: the manifest's summary and its validation codes.
- `recover FILE...`: for an image that lost its manifest but kept our watermark, the manifest we
  signed for it, found through the watermark (a soft binding).
- `whoami`: which identity signs, and where its files are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brushpen.errors import BadInput


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("c2pa", help="Content Credentials: signing identity, sign, verify, recover")
    cmds = c.add_subparsers(dest="c2pa_cmd", required=True)
    i = cmds.add_parser("init", help="remake the local signing identity, or sign as an organisation")
    i.add_argument("--org", default="brushpen (local)", help="organisation name on the local certificates")
    i.add_argument("--cert", type=Path, default=None, help="an organisation's certificate chain (PEM, signer first)")
    i.add_argument("--key", type=Path, default=None, help="its private key (PEM, unencrypted)")
    i.set_defaults(func=run_init)
    t = cmds.add_parser("trust", help="add trust anchors (PEM) for the checker")
    t.add_argument("pem", type=Path)
    t.set_defaults(func=run_trust)
    s = cmds.add_parser("sign", help="sign an image made elsewhere")
    s.add_argument("file", type=Path)
    s.add_argument("--out", type=Path, default=None, help="output file (default: FILE.signed.EXT)")
    s.add_argument("--ai", action="store_true", help="declare it AI-made (digitalSourceType trainedAlgorithmicMedia)")
    s.set_defaults(func=run_sign)
    for name, helptext, func in (("verify", "read and validate images' manifests", run_verify),
                                 ("recover", "find a lost manifest through our watermark", run_recover)):
        v = cmds.add_parser(name, help=helptext)
        v.add_argument("files", type=Path, nargs="+")
        v.add_argument("--json", action="store_true", help="one JSON object per file")
        v.set_defaults(func=func)
    w = cmds.add_parser("whoami", help="which identity signs")
    w.set_defaults(func=run_whoami)


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise BadInput(f"{path}: no such file") from None


def run_init(args: argparse.Namespace) -> int:
    from brushpen.safety import credentials

    if (args.cert is None) != (args.key is None):
        raise BadInput("give both --cert and --key, or neither")
    if args.cert is not None:
        _read(args.cert), _read(args.key)
        folder = credentials.use_organisation(args.cert, args.key)
    else:
        folder = credentials.make_local_identity(args.org)
    ident = credentials.identity()
    print(f"signing as: {ident.signer} ({ident.source}, {ident.alg}); files in {folder}")
    return 0


def run_trust(args: argparse.Namespace) -> int:
    from brushpen.safety import credentials

    _read(args.pem)
    added = credentials.add_trust(args.pem)
    print(f"{added} new trust anchor(s) added to {credentials.c2pa_dir() / 'trust' / 'anchors.pem'}")
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from brushpen.safety import credentials

    _read(args.file)
    out = args.out or args.file.with_name(f"{args.file.stem}.signed{args.file.suffix}")
    credentials.sign_image_file(args.file, out, source_type=credentials.TRAINED if args.ai else None)
    print(f"{out}  signed as {credentials.identity().signer}")
    return 0


def _line(path: Path, cred: dict) -> str:
    if cred.get("error") and cred.get("state") == "none":
        return f"{path}: error: {cred['error']}"
    if cred.get("state") == "none":
        return f"{path}: no Content Credentials"
    parts = [f"{path}: {cred['state']}"]
    if cred.get("recovered"):
        parts.append(f"recovered through the brushpen watermark {cred.get('recovered_key')}")
    parts += [f"by {cred.get('claim_generator')}", f"signer {cred.get('signer')}",
              f"actions {', '.join(cred.get('actions') or []) or '-'}",
              "declares AI generation" if cred.get("ai_generated") else "no AI declaration"]
    if (cred.get("model") or {}).get("name"):
        parts.append(f"model {cred['model']['name']}")
    if cred.get("codes"):
        parts.append(f"codes {' '.join(cred['codes'])}")
    return "; ".join(parts)


def run_verify(args: argparse.Namespace) -> int:
    from brushpen.safety import credentials

    status = 0
    for path in args.files:
        try:
            cred = credentials.read(_read(path))
        except BadInput as e:
            cred = {"state": "none", "error": str(e)}
        status = max(status, 1 if cred.get("state") == "invalid" else 2 if cred.get("error") and
                     cred.get("state") == "none" else 0)
        print(json.dumps({"path": str(path), **cred}) if args.json else _line(path, cred), flush=True)
    return status


def run_recover(args: argparse.Namespace) -> int:
    from PIL import Image

    from brushpen.safety import credentials, watermark

    status = 0
    for path in args.files:
        data = _read(path)
        cred = credentials.read(data)
        if cred["state"] == "none" and not cred.get("error"):
            try:
                with Image.open(path) as im:
                    det = watermark.extract(im.convert("RGB"))
            except (OSError, ValueError) as e:
                cred = {"state": "none", "error": f"not a readable image: {e}"}
            else:
                found = credentials.recover(det.payload if det.found else None, data)
                if found is not None:
                    cred = found
                else:
                    cred["note"] = ("a brushpen watermark, but no manifest kept for it here" if det.found
                                    else "no manifest and no brushpen watermark")
                    status = 1
        print(json.dumps({"path": str(path), **cred}) if args.json else
              _line(path, cred) + (f" ({cred['note']})" if cred.get("note") else ""), flush=True)
    return status


def run_whoami(args: argparse.Namespace) -> int:
    from brushpen.safety import credentials

    ident = credentials.identity()
    print(json.dumps({"signer": ident.signer, "source": ident.source, "alg": ident.alg,
                      "folder": str(credentials.c2pa_dir()), "signing": credentials.signing_enabled()}))
    return 0
