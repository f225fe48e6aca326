"""node.config and node.genesis: defaults, strict loading, range checks, TOML writer."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from crypto import PrivateKey
from node.config import (
    ConfigError,
    NodeConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_host_port,
    parse_peer,
    render_config,
    write_config,
)
from node.genesis import (
    Genesis,
    GenesisError,
    GenesisValidator,
    load_genesis,
    save_genesis,
)
from node.localnet import LOCALNET_PRESET

REPO = Path(__file__).resolve().parents[2]
PK = "ab" * 32


def test_defaults_round_trip_through_toml():
    cfg = NodeConfig()
    cfg.validate()
    assert config_from_dict(tomllib.loads(render_config(cfg))) == cfg
    assert config_from_dict(tomllib.loads(render_config(cfg, comments=False))) == cfg
    assert config_from_dict({}) == cfg


def test_defaults_are_the_documented_ones():
    cfg = NodeConfig()
    assert (cfg.node.runtime, cfg.node.app, cfg.node.log_level, cfg.node.byzantine) == (
        "ray", "kvstore", "INFO", "")
    assert cfg.p2p.listen == "127.0.0.1:26656" and cfg.p2p.max_frame_bytes == 4194304
    assert cfg.rpc.listen == "127.0.0.1:26657" and cfg.rpc.wait_timeout_s == 30.0
    assert cfg.mempool.batch_max_bytes == 4_000_000 and cfg.mempool.batch_timeout_ms == 20
    assert cfg.consensus.timeout_propose_ms == 1000 and cfg.consensus.block_interval_ms == 20
    assert cfg.ray.address == "" and cfg.ray.include_dashboard is False
    assert cfg.ray.namespace_for("abc") == "bftnode-abc"
    assert cfg.storage.map_size_mb == 1024


def test_write_and_load_config_round_trip(tmp_path):
    cfg = apply_overrides(NodeConfig(), {
        "node": {"chain_id": "chain-7", "moniker": 'say "hi"\\ é', "app": "bank",
                 "byzantine": "silent"},
        "p2p": {"listen": "[::1]:0", "peers": [f"{PK}@10.0.0.2:26656", f"{'cd' * 32}@h:1"]},
        "ray": {"address": "10.0.0.1:6379", "verifier_resources": {"gpu-box": 1, "CPU": 0.5}},
        "consensus": {"timeout_propose_ms": 700},
    })
    write_config(tmp_path, cfg)
    loaded = load_config(tmp_path)
    assert loaded == cfg
    assert loaded.home == tmp_path
    assert loaded.config_path == tmp_path / "config.toml"
    assert loaded.genesis_path == tmp_path / "genesis.json"
    assert loaded.node_key_path == tmp_path / "node_key.json"
    assert loaded.data_dir == tmp_path / "data"
    assert loaded.log_path == tmp_path / "node.log"
    assert loaded.ray.verifier_resources == {"gpu-box": 1.0, "CPU": 0.5}
    assert [p.port for p in loaded.peer_addresses()] == [26656, 1]


def test_shipped_templates_match_the_code():
    assert (REPO / "configs/node.toml").read_text() == render_config(NodeConfig())
    preset = tomllib.loads((REPO / "configs/localnet.toml").read_text())
    assert preset == LOCALNET_PRESET
    apply_overrides(NodeConfig(), preset)


@pytest.mark.parametrize("data, words", [
    ({"p2p": {"max_frame_byte": 5}}, ["unknown key 'max_frame_byte'", "[p2p]"]),
    ({"rpcc": {}}, ["unknown section [rpcc]"]),
    ({"node": {"runtime": "docker"}}, ["[node] runtime", "'docker'", "'ray'"]),
    ({"node": {"byzantine": "evil"}}, ["[node] byzantine"]),
    ({"node": {"chain_id": ""}}, ["[node] chain_id"]),
    ({"node": {"chain_id": "a" * 65}}, ["[node] chain_id"]),
    ({"p2p": {"max_frame_bytes": 10}}, ["[p2p] max_frame_bytes = 10", "out of range"]),
    ({"p2p": {"max_frame_bytes": True}}, ["[p2p] max_frame_bytes", "integer"]),
    ({"p2p": {"handshake_timeout_s": 0}}, ["[p2p] handshake_timeout_s"]),
    ({"p2p": {"handshake_timeout_s": "5"}}, ["must be a number"]),
    ({"p2p": {"send_queue_len": 1.5}}, ["must be an integer"]),
    ({"p2p": {"listen": "127.0.0.1"}}, ["[p2p] listen", "host:port"]),
    ({"p2p": {"listen": "127.0.0.1:70000"}}, ["port 70000"]),
    ({"p2p": {"peers": ["127.0.0.1:1"]}}, ["[p2p] peers", "public key hex"]),
    ({"p2p": {"peers": [f"{PK.upper()}@h:1"]}}, ["64 lowercase hex"]),
    ({"p2p": {"peers": [f"{PK}@h:1", f"{PK}@h:2"]}}, ["listed twice"]),
    ({"p2p": {"peers": "x"}}, ["list of strings"]),
    ({"rpc": {"wait_timeout_s": -1.0}}, ["[rpc] wait_timeout_s"]),
    ({"mempool": {"batch_timeout_ms": 0}}, ["[mempool] batch_timeout_ms"]),
    ({"mempool": {"max_tx_bytes": 200_000, "batch_max_bytes": 100_000}},
     ["max_tx_bytes", "fit in a batch"]),
    ({"mempool": {"batch_max_bytes": 8_000_000}}, ["batch_max_bytes", "max_frame_bytes"]),
    ({"mempool": {"batch_max_txs": 100_001}}, ["batch_max_txs", "100000 transactions"]),
    ({"p2p": {"max_frame_bytes": 16 * 1024 * 1024}, "mempool": {"batch_max_bytes": 8_000_000}},
     ["batch_max_bytes", "4194304-byte batch limit"]),
    ({"rpc": {"max_body_bytes": 2048}}, ["max_body_bytes"]),
    ({"consensus": {"timeout_delta_ms": -1}}, ["[consensus] timeout_delta_ms"]),
    ({"ray": {"address": "auto"}}, ["[ray] address"]),
    ({"ray": {"verifier_actors": -1}}, ["[ray] verifier_actors"]),
    ({"ray": {"mempool_resources": {"x": -1}}}, ["[ray] mempool_resources", ">= 0"]),
    ({"ray": {"mempool_resources": {"x": 1}}},
     ["[ray] mempool_resources", "mempool_in_supervisor = false"]),
    ({"ray": {"include_dashboard": 1}}, ["true or false"]),
    ({"storage": {"map_size_mb": 0}}, ["[storage] map_size_mb"]),
    ({"p2p": {"listen": "127.0.0.1:5000"}, "rpc": {"listen": "127.0.0.1:5000"}},
     ["both 127.0.0.1:5000"]),
])
def test_bad_values_are_rejected_with_the_key_named(data, words):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, source="x.toml")
    message = str(info.value)
    assert message.startswith("x.toml: ")
    for word in words:
        assert word in message


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="bftnode init"):
        load_config(tmp_path)
    (tmp_path / "config.toml").write_text("[node\n")
    with pytest.raises(ConfigError, match="config.toml is not valid TOML"):
        load_config(tmp_path)
    (tmp_path / "config.toml").write_text("[node]\nchainid = 'x'\n")
    with pytest.raises(ConfigError, match=r"config.toml: unknown key 'chainid' in \[node\]"):
        load_config(tmp_path)


def test_paths_need_a_home():
    with pytest.raises(ConfigError, match="no home"):
        _ = NodeConfig().data_dir


def test_address_parsing():
    assert parse_host_port("localhost:80") == ("localhost", 80)
    assert parse_host_port("[::1]:26656") == ("::1", 26656)
    with pytest.raises(ValueError):
        parse_host_port(":80")
    with pytest.raises(ValueError):
        parse_host_port("h:0")
    peer = parse_peer(f"{PK}@127.0.0.1:9")
    assert (peer.public_key, peer.host, peer.port) == (bytes.fromhex(PK), "127.0.0.1", 9)
    assert str(peer) == f"{PK}@127.0.0.1:9"


def test_config_to_dict_has_every_section():
    assert list(config_to_dict(NodeConfig())) == [
        "node", "p2p", "rpc", "mempool", "consensus", "ray", "storage"]


# --- genesis ----------------------------------------------------------------------------


def _genesis(n: int = 3, app: str = "bank") -> Genesis:
    keys = [PrivateKey.from_seed(bytes([i + 1]) * 32) for i in range(n)]
    return Genesis(
        chain_id="chain-1", genesis_time_ms=1_700_000_000_000, app=app,
        validators=[GenesisValidator(f"v{i}", k.public_key.hex(), 10, f"127.0.0.1:{2000 + i}")
                    for i, k in enumerate(keys)],
        allocations={keys[0].address: 1000} if app == "bank" else {},
    )


def test_genesis_round_trip(tmp_path):
    genesis = _genesis()
    save_genesis(genesis, tmp_path / "genesis.json")
    loaded = load_genesis(tmp_path / "genesis.json")
    assert loaded == genesis
    assert loaded.total_power == 30
    assert loaded.validators[1].public_key_bytes == bytes.fromhex(genesis.validators[1].public_key)
    assert loaded.validator_by_key(loaded.validators[2].public_key_bytes).name == "v2"


def _doc_with(**changes) -> dict:
    doc = _genesis().to_json()
    for path, value in changes.items():
        target = doc
        keys = path.split("__")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        target[keys[-1]] = value
    return doc


@pytest.mark.parametrize("doc, words", [
    (_doc_with(validators__1__public_key=_genesis().validators[0].public_key), ["listed twice"]),
    (_doc_with(validators__1__name="v0"), ["name 'v0' is listed twice"]),
    (_doc_with(validators__0__power=0), ["validator 0 (v0)", "power 0"]),
    (_doc_with(validators__0__power=-5), ["power -5"]),
    (_doc_with(validators__0__power=True), ["power must be an integer"]),
    (_doc_with(validators__2__public_key="zz" * 32), ["validator 2 (v2)", "hex"]),
    (_doc_with(validators__2__public_key="ab" * 31), ["validator 2", "hex"]),
    (_doc_with(validators__0__p2p="nowhere"), ["validator 0 (v0): p2p"]),
    (_doc_with(validators__0__extra=1), ["unknown key 'extra' in validator 0"]),
    (_doc_with(validators=[]), ["at least one validator"]),
    (_doc_with(chain_id="has space"), ["chain_id"]),
    (_doc_with(genesis_time_ms=-1), ["genesis_time_ms"]),
    (_doc_with(app="chess"), ["app 'chess'"]),
    (_doc_with(allocations={"AB" * 20: 1}), ["allocation address"]),
    (_doc_with(allocations={"ab" * 20: 0}), ["amount 0"]),
    (_doc_with(allocations={"ab" * 20: 2**63}), ["amount"]),
    (_doc_with(app="kvstore"), ["allocations are for the bank app"]),
    (_doc_with(extra=1), ["unknown key 'extra' in genesis"]),
    ({"chain_id": "c"}, ["missing 'genesis_time_ms'"]),
])
def test_bad_genesis_is_rejected_with_a_clear_error(doc, words):
    with pytest.raises(GenesisError) as info:
        Genesis.from_json(doc)
    for word in words:
        assert word in str(info.value)


def test_genesis_file_errors_name_the_file(tmp_path):
    path = tmp_path / "genesis.json"
    with pytest.raises(GenesisError, match="does not exist"):
        load_genesis(path)
    path.write_text("{")
    with pytest.raises(GenesisError, match="not valid JSON"):
        load_genesis(path)
    path.write_text(json.dumps(_doc_with(validators__0__power=0)))
    with pytest.raises(GenesisError, match=r"genesis.json: validator 0 \(v0\)"):
        load_genesis(path)


def test_genesis_checks_the_config_is_for_its_chain():
    genesis = _genesis()
    cfg = apply_overrides(NodeConfig(), {"node": {"chain_id": "chain-1", "app": "bank"}})
    genesis.check_config(cfg)
    with pytest.raises(GenesisError, match="chain_id"):
        genesis.check_config(NodeConfig())
    cfg.node.app = "kvstore"
    with pytest.raises(GenesisError, match="app"):
        genesis.check_config(cfg)


def test_pacing_must_stay_below_the_propose_timeout():
    with pytest.raises(ConfigError, match="must stay below timeout_propose_ms"):
        apply_overrides(NodeConfig(), {"consensus": {"timeout_propose_ms": 400}})
