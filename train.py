"""`python train.py --config=configs/quickstart.py --workdir=runs/quick`: `effnetx-train` run from a checkout
(`effnetx_jax.cli.train` says what it does)."""

from effnetx_jax.cli.train import main

if __name__ == "__main__":
    main()
