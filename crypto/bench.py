"""Signature-verification benchmark: `python -m crypto.bench [--count N] [--threads T]`.

Runs side by side, on the same signed items:

- ``cryptography``: a per-signature loop of ``Ed25519PublicKey.from_public_bytes(pk)
  .verify(sig, msg)`` (OpenSSL); the key is loaded per item because every
  transaction has its own sender;
- ``pynacl``: a per-signature loop of ``nacl.bindings.crypto_sign_open(sig + msg, pk)``,
  the leanest PyNaCl call (and exactly the pure-Python fallback);
- ``verify_batch threads=1`` and ``verify_batch threads=N`` (N = all cores by default).

Each path runs `--repeats` times, the paths interleaved round by round so that
noise from other work on the machine falls on all of them alike; the report is
the median signatures/s of each path and its ratio to the two loops.

`measure_verify_rate` is the same measurement of `verify_batch` alone, for the
node's bench (`verify_limit_tps`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from crypto.verify import available_cores, verifier_backend, verify_batch

Items = tuple[list[bytes], list[bytes], list[bytes]]


def make_items(count: int, msg_size: int = 100, keys: int = 1000) -> Items:
    """`count` valid (public key, message, signature) items.

    Messages are random and distinct; keys are reused round-robin (`keys` of
    them), which costs verification nothing (no per-key caching in any path) and
    keeps the setup short.
    """
    signers = [SigningKey.generate() for _ in range(min(keys, count))]
    pks, msgs, sigs = [], [], []
    for i in range(count):
        signer = signers[i % len(signers)]
        msg = os.urandom(msg_size)
        pks.append(bytes(signer.verify_key))
        msgs.append(msg)
        sigs.append(signer.sign(msg).signature)
    return pks, msgs, sigs


def cryptography_loop(pks: Sequence[bytes], msgs: Sequence[bytes],
                      sigs: Sequence[bytes]) -> list[bool]:
    out = []
    for pk, msg, sig in zip(pks, msgs, sigs, strict=True):
        try:
            Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
            out.append(True)
        except (InvalidSignature, ValueError):
            out.append(False)
    return out


def pynacl_loop(pks: Sequence[bytes], msgs: Sequence[bytes], sigs: Sequence[bytes]) -> list[bool]:
    out = []
    for pk, msg, sig in zip(pks, msgs, sigs, strict=True):
        try:
            crypto_sign_open(sig + msg, pk)
            out.append(True)
        except BadSignatureError:
            out.append(False)
    return out


def _rate(fn: Callable[[], list[bool]], count: int) -> float:
    start = time.perf_counter()
    verdicts = fn()
    elapsed = time.perf_counter() - start
    # A benchmark of rejections would measure the wrong thing (and hide a bug).
    if len(verdicts) != count or not all(verdicts):
        raise RuntimeError("benchmark items did not all verify")
    return count / elapsed


def measure_verify_rate(count: int = 5000, threads: int | None = None, repeats: int = 3,
                        items: Items | None = None) -> float:
    """Median signatures/s of `verify_batch` over `repeats` runs of `count` items.

    `threads=None` uses every core, as `verify_batch` does. Pass `items` (from
    `make_items`) to reuse already signed items; otherwise `count` are made.
    """
    pks, msgs, sigs = items if items is not None else make_items(count)
    n = len(pks)
    return statistics.median(
        _rate(lambda: verify_batch(pks, msgs, sigs, threads=threads), n) for _ in range(repeats)
    )


def run(count: int, threads: int | None, repeats: int, msg_size: int) -> dict[str, list[float]]:
    """Signatures/s of each of the four paths (see the module docstring), one per run."""
    pks, msgs, sigs = make_items(count, msg_size)
    n_threads = threads if threads is not None else available_cores()
    paths: dict[str, Callable[[], list[bool]]] = {
        "cryptography loop": lambda: cryptography_loop(pks, msgs, sigs),
        "pynacl loop": lambda: pynacl_loop(pks, msgs, sigs),
        "verify_batch threads=1": lambda: verify_batch(pks, msgs, sigs, threads=1),
        f"verify_batch threads={n_threads}": lambda: verify_batch(pks, msgs, sigs,
                                                                  threads=n_threads),
    }
    for fn in paths.values():  # warm-up: imports, allocator, CPU frequency
        fn()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            samples[name].append(_rate(fn, count))
    return samples


def _load_average() -> str:
    # Other work on a shared machine skews every figure: print the load with them.
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores ({available_cores()} usable), "
            f"Python {platform.python_version()}, backend {verifier_backend()}, "
            f"load average {_load_average()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crypto.bench",
        description="Ed25519 verification: cryptography and PyNaCl loops vs verify_batch.",
    )
    parser.add_argument("--count", type=int, default=10_000, help="signatures per run")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the parallel verify_batch (default: all cores)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per path; median reported")
    parser.add_argument("--msg-size", type=int, default=100, help="message bytes")
    args = parser.parse_args(argv)
    if args.count < 1 or args.repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--count, --repeats and --threads must be at least 1")

    print(f"machine: {_machine()}")
    print(f"{args.count} signatures of {args.msg_size}-byte messages, "
          f"median of {args.repeats} runs per path\n")
    samples = run(args.count, args.threads, args.repeats, args.msg_size)
    rates = {name: statistics.median(runs) for name, runs in samples.items()}
    base_nacl = rates["pynacl loop"]
    base_crypto = rates["cryptography loop"]
    print(f"{'path':<28} {'signatures/s':>13} {'vs pynacl':>10} {'vs cryptography':>16}"
          f"   {'runs min-max':>15}")
    for name, rate in rates.items():
        print(f"{name:<28} {rate:>13,.0f} {rate / base_nacl:>9.2f}x {rate / base_crypto:>15.2f}x"
              f"   {f'{min(samples[name]):,.0f}-{max(samples[name]):,.0f}':>15}")
    print(f"\nload average after the run: {_load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
