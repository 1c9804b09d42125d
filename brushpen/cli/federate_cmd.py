"""`brushpen federate server|site|simulate|certs`: federated training of the checker on Flower.
The sites keep their images; the server aggregates weights and publishes the detector in the store.
See `brushpen.safety.federated_flower` and docs/federated.md."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from brushpen.config import apply_threads


def _defaults():
    from brushpen.safety.federated import LocalConfig
    from brushpen.safety.federated_flower import FederationConfig

    return FederationConfig(out="x"), LocalConfig()


def _server_flags(p: argparse.ArgumentParser) -> None:
    from brushpen.safety.federated_flower import STRATEGIES

    d, _ = _defaults()
    p.add_argument("--out", required=True, help="the detector's name in the store (safety/OUT)")
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--local-steps", type=int, default=d.local_steps, help="each site's training steps per round")
    p.add_argument("--strategy", choices=STRATEGIES, default=d.strategy)
    p.add_argument("--min-sites", type=int, default=d.min_sites,
                   help="quorum: the sites a round waits for, and the usable updates it needs")
    p.add_argument("--expect-sites", type=int, default=d.expect_sites,
                   help="the first round waits for this many sites (default: the quorum)")
    p.add_argument("--proximal-mu", type=float, default=d.proximal_mu, help="fedprox: pull towards the global model")
    p.add_argument("--server-lr", type=float, default=d.server_lr,
                   help="fedavgm/fedadam/fedyogi: the server's step (default 1 for fedavgm, 0.01 for the others)")
    p.add_argument("--server-momentum", type=float, default=d.server_momentum, help="fedavgm: the server's momentum")
    p.add_argument("--max-update", type=float, default=d.max_update,
                   help="reject a site's update whose norm is over this x the others' median or the model's norm")
    p.add_argument("--dp-noise", type=float, default=d.dp_noise,
                   help="central differential privacy: the Gaussian noise multiplier (0: off)")
    p.add_argument("--dp-clip", type=float, default=d.dp_clip, help="DP: each site's update clipped to this L2 norm")
    p.add_argument("--dp-delta", type=float, default=d.dp_delta, help="DP: the delta of the epsilon reported")
    p.add_argument("--central", type=Path, default=None,
                   help="a build-fakes set held by the server: its test split scores every round, its val split "
                        "calibrates the result")
    p.add_argument("--round-timeout", type=float, default=d.round_timeout)
    p.add_argument("--average-last", type=int, default=d.average_last,
                   help="serve and publish the mean of the last K rounds' global models (1: the last one)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=1)


def _local_flags(p: argparse.ArgumentParser) -> None:
    """A site's local training, for `site` and (every site alike) `simulate`."""
    _, d = _defaults()
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--loc-weight", type=float, default=d.loc_weight)
    p.add_argument("--augment", choices=("chain", "basic"), default=d.augment)


def register(sub: argparse._SubParsersAction) -> None:
    from brushpen.safety.federated import PARTITIONS

    group = sub.add_parser("federate", help="federated training of the checker (Flower): images stay at each site"
                           ).add_subparsers(dest="federate_cmd", required=True)
    s = group.add_parser("server", help="aggregate the sites' updates and publish the detector")
    _server_flags(s)
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=9092)
    s.add_argument("--tls", type=Path, default=None, help="folder with ca.pem, server.pem, server.key (federate certs)")
    s.add_argument("--resume", action="store_true", help="continue from the last saved round")
    s.set_defaults(func=run_server)

    c = group.add_parser("site", help="train on this site's images for a federation; only weights leave")
    c.add_argument("--server", required=True, help="HOST:PORT of `federate server`")
    data = c.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, help="real/ and fake/ image folders, or a build-fakes set")
    data.add_argument("--samples", type=Path, help="a sample list written by `federate simulate`")
    c.add_argument("--ca", type=Path, default=None, help="the federation's ca.pem: TLS to the server")
    c.add_argument("--wait", type=float, default=600.0, help="seconds to keep retrying while the server is away")
    c.add_argument("--name", default=None, help="how the server's records name this site (default: the host name)")
    _local_flags(c)
    c.add_argument("--seed", type=int, default=_defaults()[1].seed)
    c.add_argument("--threads", type=int, default=1)
    c.set_defaults(func=run_site)

    m = group.add_parser("simulate", help="split one data set into sites and federate them on this machine")
    m.add_argument("--data", type=Path, required=True, help="a build-fakes set (its test split is the central set)")
    m.add_argument("--sites", type=int, default=4)
    m.add_argument("--partition", choices=PARTITIONS, default="iid")
    _server_flags(m)
    _local_flags(m)
    m.set_defaults(func=run_simulate)

    t = group.add_parser("certs", help="a private CA and server certificate for TLS between server and sites")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--host", action="append", required=True, help="a name or address the sites dial (repeatable)")
    t.set_defaults(func=run_certs)


def _config(args: argparse.Namespace):
    from brushpen.safety.federated_flower import FederationConfig

    return FederationConfig(out=args.out, rounds=args.rounds, local_steps=args.local_steps, strategy=args.strategy,
                            min_sites=args.min_sites, expect_sites=args.expect_sites, proximal_mu=args.proximal_mu,
                            server_lr=args.server_lr, server_momentum=args.server_momentum,
                            max_update=args.max_update, dp_noise=args.dp_noise, dp_clip=args.dp_clip,
                            dp_delta=args.dp_delta, central=args.central, round_timeout=args.round_timeout,
                            average_last=args.average_last,
                            seed=args.seed, host=getattr(args, "host", "0.0.0.0"), port=getattr(args, "port", 9092),
                            tls=getattr(args, "tls", None), resume=getattr(args, "resume", False))


def _local(args: argparse.Namespace):
    from brushpen.safety.federated import LocalConfig

    return LocalConfig(batch=args.batch, lr=args.lr, loc_weight=args.loc_weight, augment=args.augment, seed=args.seed)


def _logging() -> None:
    """Our own lines on stderr beside Flower's (which has its own handler)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    ours = logging.getLogger("brushpen.federate")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)


def _summary(record: dict) -> str:
    return json.dumps({"model": record["config"]["out"], "rounds": record["rounds"], "central": record["central"],
                       "rejected": sum(len(h["rejected"]) for h in record["history"]),
                       "epsilon": record["privacy"]["epsilon"]}, default=str)


def run_server(args: argparse.Namespace) -> int:
    from brushpen.safety.federated_flower import run_server as serve

    apply_threads(args.threads)
    _logging()
    print(_summary(serve(_config(args))))
    return 0


def run_site(args: argparse.Namespace) -> int:
    import socket

    from brushpen.safety.federated import Site, site_samples
    from brushpen.safety.federated_flower import run_site as join
    from brushpen.safety.federated_sim import read_samples

    apply_threads(args.threads)
    _logging()
    samples = read_samples(args.samples) if args.samples else site_samples(args.data)
    site = Site(samples, _local(args), name=args.name or socket.gethostname())
    print(f"{site.name}: {int((site.labels == 0).sum())} real and {int((site.labels == 1).sum())} fake training "
          f"images ({', '.join(site.families)}), {len(site.val_labels)} for validation", file=sys.stderr, flush=True)
    join(args.server, site, ca=args.ca, wait_s=args.wait)
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    from brushpen.safety.federated_sim import simulate

    apply_threads(args.threads)
    record = simulate(args.data, args.sites, args.partition, _config(args), _local(args), threads=args.threads,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    print(_summary(record))
    return 0


def run_certs(args: argparse.Namespace) -> int:
    from brushpen.safety.federated_tls import make_certs

    folder = make_certs(args.out, args.host)
    print(json.dumps({"server": [str(folder / n) for n in ("ca.pem", "server.pem", "server.key")],
                      "sites": str(folder / "ca.pem")}))
    return 0
