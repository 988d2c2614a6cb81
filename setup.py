"""Builds the compiled CPU kernel, echo_rnn.kernels._compiled; everything else about the
package is in pyproject.toml.

The flags are part of the kernel's contract (echo_rnn/kernels/_compiled.c): -ffp-contract=off
keeps every a * b + c two roundings (no FMA) on every CPU; never -ffast-math (it would let
the compiler reorder sums) and no -march (the kernel picks AVX2 at load time itself)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "echo_rnn.kernels._compiled",
            sources=["echo_rnn/kernels/_compiled.c"],
            extra_compile_args=["-O3", "-ffp-contract=off", "-std=gnu11"],
            libraries=["m", "pthread"],
            # without a C compiler the package still installs, and works without the kernel
            # (echo_rnn.kernels.compiled.AVAILABLE is False and says why)
            optional=True,
        )
    ]
)
