"""Latency-aware compound scaling (LACS): `effnetx-lacs --config=experiments/lacs/NAME.py --workdir=DIR`.

Sweeps the depth/width/resolution coefficients (alpha, beta, gamma) of a base model at phi=1, trains
every point that meets the constraint with the trainer's proxy recipe, measures its latency on this
device, keeps the point with the best `ACC * (LAT / T) ** w`, and writes the family B1..B7 as configs.
"""
