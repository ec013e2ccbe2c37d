"""kan-jax: Kolmogorov-Arnold Networks in JAX/Flax, delta-GClip, Hessian and loss-landscape tools."""

__version__ = "0.1.0"
