"""HF import/export hold about one layer's tensor on the host, not all layers of a weight.

The probe is tracemalloc: numpy registers its data buffers with it, so the peak it reports covers
every host array import and export make (memory maps and XLA's own buffers are not counted; the
checkpoint is read through a memory map, and the params live in XLA buffers).
"""

from __future__ import annotations

import os
import tracemalloc

import jax
import numpy as np
import pytest

from ifrl_jax import models, sharding
from ifrl_jax.models.safetensors_io import SafetensorsFile

L = 16  # layers
CFG = models.get_preset("tiny", intermediate_size=1024, num_layers=L, scan_layers=True)
LAYER_MLP = CFG.hidden_size * CFG.intermediate_size * 4  # one layer's gate_proj, f32: 256 KiB
# Bound on the peak: three copies of one layer's largest tensor (the one read or fetched, its
# converted copy, the bytes being written) plus 1 MiB for the Python objects that tracing and
# compiling the per-layer placement allocate. All layers of one MLP weight stacked are 4 MiB.
BOUND = 3 * LAYER_MLP + (1 << 20)


def _peak(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _files(path) -> dict[str, bytes]:
    return {f: (path / f).read_bytes() for f in sorted(os.listdir(path))}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(params, HF directory written by save_hf, save_hf's peak host memory)."""
    params = models.init_params(CFG, jax.random.key(0))
    path = tmp_path_factory.mktemp("hf") / "m"
    _, peak = _peak(lambda: models.save_hf(CFG, params, str(path), max_shard_bytes=3 << 20))
    return params, path, peak


def test_export_streams_one_layer_at_a_time(exported):
    params, path, peak = exported
    assert L * LAYER_MLP > 2 * BOUND
    assert peak < BOUND, (peak, BOUND)
    # Sharded (3 MiB files) with an index, every layer's tensors present, values exact.
    assert "model.safetensors.index.json" in os.listdir(path)
    shards = [
        SafetensorsFile(str(path / f)) for f in os.listdir(path) if f.endswith(".safetensors")
    ]
    assert len(shards) >= 2
    got = {n: st.get(n) for st in shards for n in st.keys()}
    assert len(got) == 2 + L * 12 + 1  # embed, norm, lm_head; 12 tensors per layer
    gate = np.asarray(params["layers"]["mlp"]["gate_proj"]["kernel"])  # [L, D, F]
    for i in range(L):
        np.testing.assert_array_equal(got[f"model.layers.{i}.mlp.gate_proj.weight"], gate[i].T)


@pytest.mark.parametrize("preset", [None, "fsdp"])
def test_import_places_one_layer_at_a_time(exported, preset, tmp_path):
    params, path, _ = exported
    mesh = sharding.make_mesh({"fsdp": 8}) if preset else None
    load = lambda: models.load_hf(str(path), mesh=mesh, rules=preset, scan_layers=True)
    (cfg, loaded), peak = _peak(load)
    assert peak < BOUND, (peak, BOUND)
    assert cfg == CFG
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, loaded)  # bit-identical
    if mesh is not None:
        want = models.param_shardings(cfg, mesh, preset)
        got = jax.tree_util.tree_map(lambda a: a.sharding, loaded)
        assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: a == b, got, want))
    # Export of the imported params writes the same bytes.
    models.save_hf(cfg, loaded, str(tmp_path / "again"), max_shard_bytes=3 << 20)
    assert _files(tmp_path / "again") == _files(path)


def test_scanned_import_equals_unrolled_import_stacked(exported):
    _, path, _ = exported
    _, scanned = models.load_hf(str(path), scan_layers=True)
    _, unrolled = models.load_hf(str(path), scan_layers=False)
    layers = [unrolled[f"layers_{i}"] for i in range(L)]
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *layers)
    jax.tree_util.tree_map(np.testing.assert_array_equal, scanned["layers"], stacked)
    for k in ("embed_tokens", "norm", "lm_head"):
        jax.tree_util.tree_map(np.testing.assert_array_equal, scanned[k], unrolled[k])
