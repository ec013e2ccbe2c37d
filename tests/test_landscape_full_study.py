"""The loss-landscape study at its default size, checked as the quick run is (slow).

A file of its own so that ``pytest -n`` (whole files per worker) runs it beside the quick run.
"""
from __future__ import annotations

import json

import pytest
from test_landscape_study import _check_study, _run_cli


@pytest.mark.slow
def test_full_study(tmp_path, mnist_dir):
    """The study at its default size (about 3 minutes on 2 CPU cores)."""
    proc = _run_cli(tmp_path, "--data-dir", str(mnist_dir), timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check_study(tmp_path, num_alphas=50, num_datasets=10)
    m = json.loads((tmp_path / "mlp_spectrum.json").read_text())
    assert m["num_params"] == 784 * 512 + 512 + 512 * 10 + 10
    assert m["training"]["test_accuracy"] > 0.9
    assert m["top_eigenvalue"]["residual_norm"] < 1e-3 * m["top_eigenvalue"]["value"]
