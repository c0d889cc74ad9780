"""flaxcnn alone: inference with and without BatchNorm folding (flaxcnn.fold_batchnorm).

Both models are compiled in one process (with ``flaxcnn.compiler_options()``) and timed
alternately after one untimed call each; prints the medians, the speed-up, how many
BatchNorms were folded and the largest difference of the outputs relative to their size.

    python benchmarks/fold_bn.py --batch 32 --repeats 11 resnet50 efficientnet_b0
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import flaxcnn


def _time(fn, *args) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    opts = flaxcnn.compiler_options(jax.devices()[0].platform)
    for name in args.models:
        model = flaxcnn.create_model(name)
        shape = (args.batch, args.size, args.size, 3)
        x = jax.random.normal(jax.random.key(1), shape)
        variables = jax.jit(model.init)(jax.random.key(0), x[:1])
        folded, fvars = flaxcnn.fold_batchnorm(model, variables, (1, *shape[1:]))
        plain = jax.jit(model.apply, compiler_options=opts)
        fast = jax.jit(folded.apply, compiler_options=opts)
        ref, out = plain(variables, x), fast(fvars, x)
        err = float(jnp.max(jnp.abs(ref - out))) / max(1.0, float(jnp.max(jnp.abs(ref))))
        before, after = [], []
        for _ in range(args.repeats):
            before.append(_time(plain, variables, x))
            after.append(_time(fast, fvars, x))
        b, a = statistics.median(before), statistics.median(after)
        print(
            f"{name}: batch {args.batch}, {len(folded.folded)} BatchNorms folded, "
            f"unfolded {b:.3f} s, folded {a:.3f} s, speed-up {b / a:.2f}x, "
            f"relative difference {err:.1e}"
        )


if __name__ == "__main__":
    main()
