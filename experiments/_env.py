"""What every experiment and benchmark reports or looks for: the machine in words, the MNIST folder."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

__all__ = ["MNIST_ENV_VAR", "NO_YNN_FUSIONS", "add_xla_flag", "default_mnist_dir", "device_description", "without_ynn_fusions"]

from kan_jax.data import MNIST_ENV_VAR


def default_mnist_dir() -> Path:
    """Where this project keeps the genuine MNIST IDX files: ``$KAN_JAX_MNIST_DIR``, else
    ``../shared/data/mnist`` next to the repository root (used by the tests and benchmarks)."""
    env = os.environ.get(MNIST_ENV_VAR)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def device_description() -> str:
    """The machine in words for results: ``"2-core AMD EPYC ... CPU (jax 0.10.2)"`` or the accelerator's kind."""
    import platform

    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        cpu = _cpu_model() or platform.processor() or platform.machine()
        return f"{os.cpu_count()}-core {cpu} CPU (jax {jax.__version__})"
    return f"{jax.device_count()} x {dev.device_kind} ({dev.platform}, jax {jax.__version__})"


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


#: XLA:CPU flag that turns off its YNNPACK fusions, which make the reverse pass of one-pass
#: input derivatives several times slower (``python -m benchmarks.pikan_jaxkan`` measures both).
NO_YNN_FUSIONS = "--xla_cpu_experimental_ynn_fusion_type="


def add_xla_flag(flag: str) -> None:
    """Append ``flag`` (``--name=value``) to ``XLA_FLAGS`` unless ``XLA_FLAGS`` sets that option already.

    Takes effect only before JAX's first computation (when the backend starts).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if flag.split("=", 1)[0] not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


def without_ynn_fusions() -> None:
    """Add :data:`NO_YNN_FUSIONS` to ``XLA_FLAGS`` unless it names the YNN fusion type already."""
    add_xla_flag(NO_YNN_FUSIONS)
