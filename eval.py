"""`python eval.py --workdir=DIR`: `effnetx-eval` run from a checkout (`effnetx_jax.cli.eval` says what it does)."""

from effnetx_jax.cli.eval import main

if __name__ == "__main__":
    main()
