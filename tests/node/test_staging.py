"""Staging's parallel chunked copy and the prefetch plan, on ordinary folders (the FUSE side is covered by
test_node_launcher.py's staged and prefetched sessions)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from jupyter_securehpc.node import prefetch, staging
from jupyter_securehpc.util.polling import wait_until
from jupyter_securehpc.vocabulary import DatasetRef


@pytest.fixture
def small_chunks(monkeypatch):
    # Chunks and buffers of a few KiB, so that a test file spans many chunks on several threads.
    monkeypatch.setattr(staging, "CHUNK", 8192)
    monkeypatch.setattr(staging, "BUFFER", 3000)
    monkeypatch.setattr(prefetch, "BUFFER", 3000)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a/empty": b"",
        "a/b/large.bin": os.urandom(100_003),
        "a/b/one.txt": b"1",
        "c.txt": os.urandom(8192),
        "z/late.bin": os.urandom(20_000),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "d" / "empty-folder").mkdir(parents=True)
    return files


def test_copy_tree_copies_every_byte_folder_and_empty_file(tmp_path, small_chunks):
    files = make_tree(tmp_path / "source")
    (tmp_path / "target").mkdir()
    copied = staging.copy_tree(tmp_path / "source", tmp_path / "target")
    assert copied == sum(map(len, files.values()))
    assert {name: (tmp_path / "target" / name).read_bytes() for name in files} == files
    assert (tmp_path / "target" / "d" / "empty-folder").is_dir()


def test_chunks_cover_each_file_once_in_order(small_chunks):
    plan = list(staging.chunks([(Path("x"), 20_000), (Path("e"), 0)]))
    assert plan == [(Path("x"), 0, 8192), (Path("x"), 8192, 8192), (Path("x"), 16384, 3616), (Path("e"), 0, 0)]


def test_prefetch_reads_in_sorted_path_order_within_the_budget(tmp_path, small_chunks):
    files = make_tree(tmp_path)
    order = [path.relative_to(tmp_path).as_posix() for path, _, _ in prefetch.plan([tmp_path], 10**9)]
    assert list(dict.fromkeys(order)) == sorted(files)
    # The budget stops the plan at the first file that does not fit, not in the middle of one.
    cut = [path.name for path, _, _ in prefetch.plan([tmp_path], 100_004)]
    assert list(dict.fromkeys(cut)) == ["large.bin", "one.txt", "empty"]
    assert prefetch.prefetch([tmp_path], 10**9) == sum(map(len, files.values()))


def test_memory_budget_is_at_most_half_of_available_memory_less_staging():
    available = next(int(line.split()[1]) << 10 for line in open("/proc/meminfo") if line.startswith("MemAvailable"))
    budget = prefetch.memory_budget()
    assert 0 < budget <= available // 2 + (64 << 20)
    assert prefetch.memory_budget(staged_bytes=2 * budget) == 0


@pytest.mark.parametrize("asked", [True, False])
def test_datasets_are_prefetched_only_when_the_spec_asks_and_never_when_staged(tmp_path, asked):
    from jupyter_securehpc.node.sandbox import mounts_for
    from jupyter_securehpc.node.spec import SessionSpec
    from jupyter_securehpc.projects.roles import Role

    for owner, dataset, size in (("sleep", "small", 10), ("mri", "large", 4 << 20)):
        store = tmp_path / "projects" / owner / "datasets" / dataset
        store.mkdir(parents=True)
        (store / "data").write_bytes(b"x" * size)
    spec = SessionSpec(
        project="sleep", user="bob", role=Role.DATA_SCIENTIST, store_root=tmp_path, vault_addr="http://127.0.0.1:1",
        datasets=(DatasetRef("sleep", "small"), DatasetRef("mri", "large")), stage_limit_mib=1, prefetch=asked,
    )  # fmt: skip
    datasets = {mount.target: mount for mount in mounts_for(spec)[1:]}
    assert datasets["/datasets/sleep/small"].stage_bytes and not datasets["/datasets/sleep/small"].prefetch
    assert datasets["/datasets/mri/large"].prefetch is asked and not datasets["/datasets/mri/large"].stage_bytes


def test_each_dataset_mount_carries_its_reference(tmp_path):
    from jupyter_securehpc.node.sandbox import mounts_for
    from jupyter_securehpc.node.spec import SessionSpec
    from jupyter_securehpc.projects.roles import Role

    refs = (DatasetRef("mri", "scans"), DatasetRef("sleep", "psg"))
    spec = SessionSpec(
        project="sleep", user="bob", role=Role.DATA_SCIENTIST, store_root=tmp_path, vault_addr="http://127.0.0.1:1",
        datasets=refs,
    )  # fmt: skip
    workspace, *datasets = mounts_for(spec)
    assert workspace.dataset is None and workspace.target == "/project" and not workspace.read_only
    stores = tmp_path / "projects"
    assert [(m.dataset, m.target, m.host_cipher, m.read_only) for m in datasets] == [
        (ref, f"/datasets/{ref.owner}/{ref.dataset}", stores / ref.owner / "datasets" / ref.dataset, True)
        for ref in refs
    ]


def test_staging_takes_at_most_half_of_the_jobs_free_memory(tmp_path, monkeypatch):
    from jupyter_securehpc.node import sandbox
    from jupyter_securehpc.node.spec import SessionSpec
    from jupyter_securehpc.projects.roles import Role

    for dataset, size in (("small", 1000), ("second", 1000)):
        store = tmp_path / "projects" / "sleep" / "datasets" / dataset
        store.mkdir(parents=True)
        (store / "data").write_bytes(b"x" * size)
    spec = SessionSpec(
        project="sleep", user="bob", role=Role.DATA_SCIENTIST, store_root=tmp_path, vault_addr="http://127.0.0.1:1",
        datasets=(DatasetRef("sleep", "small"), DatasetRef("sleep", "second")), stage_limit_mib=1,
    )  # fmt: skip
    # The admin's limit (1 MiB) would take both; the job's memory (half of it: 1500 bytes) only the first.
    monkeypatch.setattr(sandbox, "memory_budget", lambda: 1500)
    staged = [mount.target for mount in sandbox.mounts_for(spec)[1:] if mount.stage_bytes]
    assert staged == ["/datasets/sleep/small"]


def test_a_spec_whose_prefetch_is_not_a_boolean_is_refused():
    import json

    from jupyter_securehpc.node.spec import SessionSpec, SpecError

    data = {"project": "sleep", "user": "bob", "role": "data_scientist", "store_root": "/s",
            "vault_addr": "http://127.0.0.1:1", "prefetch": "yes"}  # fmt: skip
    with pytest.raises(SpecError, match="prefetch must be true or false"):
        SessionSpec.from_json(json.dumps(data))


def test_the_prefetchs_wait_for_the_server_socket_ends_when_it_appears(tmp_path):
    socket = tmp_path / "jupyter.sock"
    assert not wait_until(socket.exists, timeout=0.3, interval=0.05)
    threading.Timer(0.2, socket.touch).start()
    assert wait_until(socket.exists, timeout=10, interval=0.05)
