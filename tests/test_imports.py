"""Optional dependencies: ``import kan_jax`` loads none of them, and a missing one raises an
ImportError that names the ``pip install`` line of its extra.

Each check runs in a fresh interpreter (``sys.modules`` of this one already holds everything);
a package is made missing by a ``sys.meta_path`` finder that refuses it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

OPTIONAL = ("sympy", "matplotlib", "tensorflow_datasets", "tqdm", "scipy")

BLOCK = textwrap.dedent(
    """
    import sys

    class Block:
        def __init__(self, names):
            self.names = names

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block(set(sys.argv[1].split(","))))
    """
)


def run(code: str, blocked: str = "") -> dict:
    """Run ``code`` in a fresh interpreter with the packages ``blocked`` (comma separated)
    refused; ``code`` prints one JSON document, returned here."""
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code), blocked],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_kan_jax_loads_no_optional_dependency():
    loaded = run(
        f"""
        import json, sys
        import kan_jax
        print(json.dumps([m for m in {OPTIONAL!r} if m in sys.modules]))
        """
    )
    assert loaded == []


def test_interpret_and_symbolic_import_without_sympy_and_matplotlib():
    # the package, its symbolic part and the function library import without either; the
    # numeric work (forward pass, snapping an edge) runs; a formula or a figure asks for the extra
    out = run(
        """
        import json, sys
        import jax, jax.numpy as jnp
        from kan_jax import KAN
        from kan_jax import interpret as I
        from kan_jax.interpret import symbolic as S

        model = KAN([1, 1])
        net = I.from_linen(model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1))))
        net, _ = S.fix_symbolic(net, None, 0, 0, 0, "sin", params=(2.0, 0.0, 1.0, 0.0))
        y = float(I.apply(net.params, net.state, jnp.ones((1, 1)), net.spec)[0, 0])
        errors = {}
        for name, call in [
            ("formula", lambda: S.symbolic_formula(net)),
            ("round", lambda: S.round_floats(None, 2)),
            ("plot", lambda: I.plot_kan(net, jnp.ones((4, 1)))),
        ]:
            try:
                call()
                errors[name] = None
            except ImportError as err:
                errors[name] = str(err)
        print(json.dumps({"y": y, "errors": errors, "loaded": [m for m in ("sympy", "matplotlib") if m in sys.modules]}))
        """,
        blocked="sympy,matplotlib",
    )
    assert out["loaded"] == []
    assert out["y"] == pytest.approx(0.9092974268, rel=1e-6)  # sin(2), computed without SymPy
    for name, message in out["errors"].items():
        assert message is not None and 'pip install "kan-jax[interpret]"' in message, (name, message)
    assert "sympy" in out["errors"]["formula"] and "matplotlib" in out["errors"]["plot"]


def test_interpret_import_does_not_load_sympy_or_matplotlib():
    # with both installed, they are loaded only by a formula or a figure
    out = run(
        """
        import json, sys
        import kan_jax.interpret
        import kan_jax.interpret.symbolic
        print(json.dumps([m for m in ("sympy", "matplotlib") if m in sys.modules]))
        """
    )
    assert out == []


def test_missing_tensorflow_datasets_names_the_data_extra(tmp_path):
    out = run(
        f"""
        import json, os
        os.environ.pop("KAN_JAX_MNIST_DIR", None)
        from kan_jax.data import DataError, load_mnist
        try:
            load_mnist(tfds_data_dir={str(tmp_path)!r})
            print(json.dumps(None))
        except DataError as err:
            print(json.dumps({{"message": str(err), "cause": type(err.__cause__).__name__}}))
        """,
        blocked="tensorflow_datasets",
    )
    assert out is not None and 'pip install "kan-jax[data]"' in out["message"]
    assert out["cause"] == "ImportError"


def test_pde_works_without_scipy_and_sobol_points_names_the_pde_extra():
    out = run(
        """
        import json
        import jax.numpy as jnp
        from kan_jax.pde import grid_points, input_derivatives, sobol_points
        d = input_derivatives(lambda z: z ** 2, jnp.asarray(grid_points([(0.0, 1.0)], (3,))), second=(0,))
        try:
            sobol_points(4, [(0.0, 1.0)])
            message = None
        except ImportError as err:
            message = str(err)
        print(json.dumps({"second": d.second[:, 0, 0].tolist(), "message": message}))
        """,
        blocked="scipy",
    )
    assert out["second"] == [2.0, 2.0, 2.0]
    assert out["message"] is not None and 'pip install "kan-jax[pde]"' in out["message"]


def test_require_names_the_extra_and_chains_the_error():
    from kan_jax._optional import require

    assert require("json", "dev").__name__ == "json"
    with pytest.raises(ImportError, match=r'pip install "kan-jax\[interpret\]"') as err:
        require("kan_jax_no_such_module.sub", "interpret")
    assert isinstance(err.value.__cause__, ImportError)
    assert "kan_jax_no_such_module" in str(err.value)
