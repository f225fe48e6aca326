"""The ``bftnode`` command line (DESIGN section 8; also ``python -m node``).

Exit codes: 0 success; 2 usage error (argparse's own, and bad flag values such
as a byzantine index past N); 1 anything else, with one line on stderr,
``bftnode: error: <reason>``. Set ``BFTNODE_TRACEBACK=1`` to see the traceback
behind that line.

Heavy imports (the node, Ray, rich, the bench harness) happen inside the
commands that need them, so ``--help``, ``init`` and the localnet commands
start fast.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.config import (
    APPS,
    CONFIG_FILE,
    DATA_DIR,
    GENESIS_FILE,
    NODE_KEY_FILE,
    RUNTIMES,
    NodeConfig,
    apply_overrides,
    write_config,
)

PROG = "bftnode"
BYZANTINE_CHOICES = ("equivocate", "silent")


class UsageError(Exception):
    """A flag value argparse could not check on its own; exits 2 like argparse."""


class CommandError(Exception):
    """A command could not do what was asked; exits 1 with this message."""


# --- argument types ---------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"node index {text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"node index {value} must be >= 0")
    return value


def _byzantine(text: str) -> tuple[int, str]:
    index, sep, mode = text.partition(":")
    if not sep or mode not in BYZANTINE_CHOICES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not I:equivocate or I:silent (I = node index)")
    return _index(index), mode


# --- the parser -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="An actor-based BFT consensus node (Tendermint on Ray).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("init", help="create a node home: key (0600), config, genesis")
    p.add_argument("--home", required=True, metavar="DIR")
    p.add_argument("--chain-id", required=True, metavar="ID")
    p.add_argument("--moniker", metavar="M", help="node name (default: the home's name)")
    p.add_argument("--app", choices=APPS, default="kvstore")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing home: new key, new genesis, data/ wiped")
    p.set_defaults(func=cmd_init)

    p = commands.add_parser("start", help="run one validator until SIGINT/SIGTERM")
    p.add_argument("--home", required=True, metavar="DIR")
    p.set_defaults(func=cmd_start)

    _add_localnet(commands)
    _add_bench(commands)
    return parser


def _add_localnet(commands: Any) -> None:
    localnet = commands.add_parser("localnet", help="a local multi-validator network")
    sub = localnet.add_subparsers(dest="localnet_command", metavar="ACTION", required=True)

    p = sub.add_parser("up", help="generate N homes on free ports, start them, wait for all")
    p.add_argument("--validators", type=_positive_int, default=4, metavar="N")
    p.add_argument("--dir", required=True, metavar="DIR")
    p.add_argument("--app", choices=APPS, default="kvstore")
    p.add_argument("--runtime", choices=RUNTIMES, default="ray")
    p.add_argument("--chain-id", default=None, metavar="ID",
                   help="default: bftnode-localnet")
    p.add_argument("--byzantine", type=_byzantine, action="extend", nargs="+", default=[],
                   metavar="I:MODE", help="make node I byzantine: I:equivocate or I:silent")
    p.set_defaults(func=cmd_localnet_up)

    p = sub.add_parser("status", help="height, app hash and peers of every node")
    p.add_argument("--dir", required=True, metavar="DIR")
    p.add_argument("--json", action="store_true",
                   help="a JSON list of {index,pid,rpc,p2p,height,app_hash,peers,up}")
    p.set_defaults(func=cmd_localnet_status)

    p = sub.add_parser("down", help="stop every node, leaving no process behind")
    p.add_argument("--dir", required=True, metavar="DIR")
    p.set_defaults(func=cmd_localnet_down)

    faults = {
        "kill": "SIGKILL node I's supervisor (a crash), then reap its orphans",
        "restart": "start node I again (stopping it first if it runs)",
        "pause": "SIGSTOP every process of node I",
        "resume": "SIGCONT every process of node I",
        "isolate": "cut all of node I's peer links (SIGUSR1)",
        "heal": "restore node I's peer links (SIGUSR2)",
    }
    for name, help_text in faults.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("index", type=_index, metavar="I", help="node index (0-based)")
        p.add_argument("--dir", required=True, metavar="DIR")
        p.set_defaults(func=cmd_localnet_fault, fault=name)


def _add_bench(commands: Any) -> None:
    p = commands.add_parser(
        "bench", help="drive open-loop load against a localnet (or --rpc) and report")
    p.add_argument("--validators", type=_positive_int, default=None, metavar="N")
    p.add_argument("--rate", default=None, metavar="TX_PER_S|Nx",
                   help="offered tx/s, or a multiple of verify_limit_tps such as 0.25x")
    p.add_argument("--duration", type=float, default=None, metavar="S")
    p.add_argument("--tx-size", type=_positive_int, default=None, metavar="B")
    p.add_argument("--out", default=None, metavar="FILE.json")
    p.add_argument("--plot", default=None, metavar="FILE.png")
    p.add_argument("--rpc", default=None, metavar="URL,...",
                   help="target running nodes instead of starting a localnet")
    p.add_argument("--peer", default=None, metavar="PEER",
                   help="also measure a peer system for comparison (see node.bench)")
    p.add_argument("--sweep", default=None, metavar="RATES",
                   help="comma-separated offered rates to sweep (see node.bench)")
    p.add_argument("--runtime", choices=RUNTIMES, default=None)
    p.set_defaults(func=cmd_bench)


# --- commands ---------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from crypto import PrivateKey, save_private_key
    from node.genesis import Genesis, GenesisValidator, save_genesis

    home = Path(args.home).absolute()
    existing = [name for name in (CONFIG_FILE, GENESIS_FILE, NODE_KEY_FILE, DATA_DIR)
                if (home / name).exists()]
    if existing and not args.force:
        raise CommandError(f"{home} already holds a node home ({', '.join(existing)}); "
                           "use --force to replace it (new key, new genesis, data/ wiped)")
    moniker = args.moniker or home.name or "node"
    cfg = apply_overrides(NodeConfig(), {"node": {
        "chain_id": args.chain_id, "moniker": moniker, "app": args.app}},
        source="init")
    key = PrivateKey.generate()
    genesis = Genesis(chain_id=args.chain_id, genesis_time_ms=int(time.time() * 1000),
                      app=args.app,
                      validators=[GenesisValidator(moniker, key.public_key.hex(), 10,
                                                   cfg.p2p.listen)])
    genesis.validate()
    if (home / DATA_DIR).exists():
        shutil.rmtree(home / DATA_DIR)
    home.mkdir(parents=True, exist_ok=True)
    save_private_key(key, home / NODE_KEY_FILE)
    save_genesis(genesis, home / GENESIS_FILE)
    write_config(home, cfg)
    print(f"initialized {home} for chain {args.chain_id} (app {args.app})")
    print(f"node id     {key.address}")
    print(f"public key  {key.public_key.hex()}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    home = Path(args.home)
    if not (home / CONFIG_FILE).exists():
        raise CommandError(f"no node home at {home} ({CONFIG_FILE} is missing; "
                           f"run: bftnode init --home {args.home} --chain-id ID)")
    try:
        from node.supervisor import run_node
    except ModuleNotFoundError as exc:
        if exc.name == "node.supervisor":
            raise CommandError("this build has no node yet (node.supervisor is missing)") \
                from None
        raise
    return int(run_node(str(home)))


def cmd_localnet_up(args: argparse.Namespace) -> int:
    from node import localnet

    if args.validators > localnet.MAX_VALIDATORS:
        raise UsageError(f"--validators {args.validators}: at most {localnet.MAX_VALIDATORS}")
    byzantine: dict[int, str] = {}
    for index, mode in args.byzantine:
        if index >= args.validators:
            raise UsageError(f"--byzantine {index}:{mode}: there are only {args.validators} "
                             f"nodes (0..{args.validators - 1})")
        if index in byzantine:
            raise UsageError(f"--byzantine names node {index} twice")
        byzantine[index] = mode
    try:
        net = localnet.up(args.dir, args.validators, app=args.app, runtime=args.runtime,
                          chain_id=args.chain_id or localnet.DEFAULT_CHAIN_ID,
                          byzantine=byzantine)
    except localnet.NodesNotReady as exc:
        print(exc.details, file=sys.stderr)
        raise
    print(f"localnet of {len(net.nodes)} validators up in {net.dir} "
          f"(chain {net.chain_id}, app {net.app}, runtime {net.runtime})", file=sys.stderr)
    for node in net.nodes:
        print(node.rpc)
    return 0


def cmd_localnet_status(args: argparse.Namespace) -> int:
    from node import localnet

    net = localnet.Localnet.load(args.dir)
    rows = localnet.status(net)
    if args.json:
        print(json.dumps(rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"localnet {net.chain_id} in {net.dir}")
    for column in ("node", "state", "pid", "rpc", "p2p", "height", "app hash", "peers"):
        table.add_column(column, no_wrap=True, justify="right" if column in (
            "node", "pid", "height", "peers") else "left")
    for node, row in zip(net.nodes, rows, strict=True):
        state = localnet.state_of(node, row)
        color = {"up": "green", "paused": "yellow"}.get(state, "red")
        app_hash = row["app_hash"]
        table.add_row(
            str(row["index"]), f"[{color}]{state}[/{color}]", _show(row["pid"]), row["rpc"],
            row["p2p"], _show(row["height"]),
            f"{app_hash[:12]}…" if isinstance(app_hash, str) and len(app_hash) > 12
            else _show(app_hash),
            _show(row["peers"]))
    # Piped output gets rich's 80 columns, too narrow for full URLs: widen it.
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    return 0


def _show(value: Any) -> str:
    return "-" if value is None else str(value)


def cmd_localnet_down(args: argparse.Namespace) -> int:
    from node import localnet

    net = localnet.Localnet.load(args.dir)
    localnet.down(net)
    print(f"localnet in {net.dir} is down")
    return 0


def cmd_localnet_fault(args: argparse.Namespace) -> int:
    from node import localnet

    net = localnet.Localnet.load(args.dir)
    i = args.index
    if args.fault == "kill":
        pid = net.node(i).pid
        reaped = localnet.kill(net, i)
        print(f"killed node {i} (pid {pid}); reaped {reaped} orphan process(es)")
    elif args.fault == "restart":
        try:
            node = localnet.restart(net, i)
        except localnet.NodesNotReady as exc:
            print(exc.details, file=sys.stderr)
            raise
        print(f"node {i} restarted (pid {node.pid}): {node.rpc}")
    elif args.fault == "pause":
        print(f"paused node {i} ({localnet.pause(net, i)} processes stopped)")
    elif args.fault == "resume":
        print(f"resumed node {i} ({localnet.resume(net, i)} processes continued)")
    elif args.fault == "isolate":
        localnet.isolate(net, i)
        print(f"asked node {i} to cut its peer links (SIGUSR1)")
    else:
        localnet.heal(net, i)
        print(f"asked node {i} to restore its peer links (SIGUSR2)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from node.bench import main as bench_main
    except ModuleNotFoundError as exc:
        if exc.name == "node.bench":
            raise CommandError("this build has no bench harness yet (node.bench is missing)") \
                from None
        raise
    return int(bench_main(args))


# --- entry point ------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on a usage error, 0 after --help
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("BFTNODE_TRACEBACK"):
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


__all__ = ["build_parser", "main"]
