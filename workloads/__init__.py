"""The JAX training and serving workloads and how they are deployed (issues #6 and #7)."""
