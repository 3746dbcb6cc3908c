"""configure_environment.py: SkyPilot's node contract to torch.distributed settings (docs/field-cases.md R1)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import configure_environment as ce
import pytest
from conftest import REPO, run_script

SCRIPT = REPO / "scripts" / "remote" / "configure_environment.py"


def test_r1_two_nodes_eight_gpus() -> None:
    dist = ce.derive("10.0.0.11\n10.0.0.12\n", "1", "2", "8", "29500")
    assert dist.as_env() == {
        "MASTER_ADDR": "10.0.0.11",
        "MASTER_PORT": "29500",
        "NNODES": "2",
        "NODE_RANK": "1",
        "NPROC_PER_NODE": "8",
        "WORLD_SIZE": "16",
    }


def test_r1_crlf_and_stray_spaces_give_the_same() -> None:
    assert ce.derive(" 10.0.0.11 \r\n\r\n10.0.0.12\r\n", " 1 ", "2\r", "8", "29500") == ce.derive(
        "10.0.0.11\n10.0.0.12\n", "1", "2", "8", "29500"
    )


def test_r1_laptop_defaults() -> None:
    env = ce.derive("", "", "", "", "29500").as_env()
    assert (
        env["MASTER_ADDR"],
        env["NNODES"],
        env["NODE_RANK"],
        env["NPROC_PER_NODE"],
        env["WORLD_SIZE"],
    ) == (
        "127.0.0.1",
        "1",
        "0",
        "1",
        "1",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("10.0.0.11\n10.0.0.12", "0", "3", "8", "29500"), "3 nodes (--num-nodes) but 2 IPs"),
        (("10.0.0.11\n10.0.0.12", "2", "2", "8", "29500"), "--node-rank: 2 is out of range"),
        (("10.0.0.11", "0", "1", "-1", "29500"), "--gpus-per-node: must be >= 0"),
        (("10.0.0.11", "0", "1", "8", "70000"), "--master-port: must be in 1..65535"),
        (("10.0.0.11", "x", "1", "8", "29500"), "--node-rank: expected an integer"),
        (("not an ip!", "0", "1", "8", "29500"), "--node-ips: 'not an ip!'"),
        (("", "0", "2", "8", "29500"), "--node-ips: empty, but --num-nodes is 2"),
    ],
)
def test_r1_inconsistent_inputs_are_errors(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ce.InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ce.derive(*args)


def test_nccl_defaults_never_override() -> None:
    dist = ce.derive("", "", "", "", "29500")
    assert ce.environment(dist, {})["NCCL_DEBUG"] == "WARN"
    env = ce.environment(dist, {"NCCL_DEBUG": "INFO", "NCCL_SOCKET_IFNAME": "eth1"})
    assert "NCCL_DEBUG" not in env and "NCCL_SOCKET_IFNAME" not in env


def test_sourced_values_are_byte_identical(tmp_path: Path) -> None:
    values = {
        "PLAIN": "10.0.0.11",
        "QUOTES": 'it\'s a "test"',
        "SHELL": "$HOME `id` $(id) \\n ; | & > <",
        "NEWLINES": "a\nb\n\n",
        "UNICODE": "ünïcødé ✓",
        "EMPTY": "",
        "SPACES": "  lead and trail  ",
    }
    env_file = tmp_path / "env.sh"
    env_file.write_text(ce.render(values))
    for key, value in values.items():
        out = tmp_path / f"{key}.out"
        subprocess.run(
            ["bash", "-c", f'source "{env_file}"; printf %s "${key}" > "{out}"'],
            check=True,
            env={"HOME": "/x", "PATH": "/usr/bin:/bin"},
        )
        assert out.read_bytes() == value.encode(), key


def test_main_writes_env_file_and_never_an_empty_flag(tmp_path: Path) -> None:
    out = tmp_path / "dist.env"
    result = run_script(
        SCRIPT,
        [
            "--node-ips",
            "10.0.0.11\n10.0.0.12",
            "--node-rank",
            "1",
            "--num-nodes",
            "2",
            "--gpus-per-node",
            "0",
            "--output",
            str(out),
        ],
        env={"NCCL_DEBUG": "TRACE"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    text = out.read_text()
    assert "export WORLD_SIZE=2\n" in text and "export NPROC_PER_NODE=1\n" in text
    assert "NCCL_DEBUG" not in text  # already set on the node
    assert "=''" not in text


def test_main_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "dist.env"
    result = run_script(SCRIPT, ["--node-ips", "10.0.0.11", "--num-nodes", "3", "--output", str(out)])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--node-ips" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
