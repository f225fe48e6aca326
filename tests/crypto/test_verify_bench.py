"""Smoke tests of the verification benchmark (tiny counts: the figures mean nothing here)."""

from __future__ import annotations

import pytest

from crypto import bench


def test_measure_verify_rate_is_positive() -> None:
    assert bench.measure_verify_rate(count=80, threads=None, repeats=1) > 0
    items = bench.make_items(10, msg_size=7, keys=3)
    assert bench.measure_verify_rate(threads=1, repeats=2, items=items) > 0


def test_make_items_are_valid_and_distinct() -> None:
    pks, msgs, sigs = bench.make_items(20, msg_size=32, keys=4)
    assert len(set(pks)) == 4 and len(set(msgs)) == 20
    assert bench.pynacl_loop(pks, msgs, sigs) == [True] * 20
    assert bench.cryptography_loop(pks, msgs, sigs) == [True] * 20
    assert bench.pynacl_loop(pks[1:] + pks[:1], msgs, sigs) == [False] * 20
    assert bench.cryptography_loop(pks[1:] + pks[:1], msgs, sigs) == [False] * 20


def test_main_prints_the_four_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--count", "40", "--repeats", "1", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    for path in ("cryptography loop", "pynacl loop", "verify_batch threads=1",
                 "verify_batch threads=2", "vs pynacl", "load average"):
        assert path in out


def test_main_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--count", "0"])
    assert exc.value.code == 2
