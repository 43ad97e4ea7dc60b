"""Input pipelines: TFDS datasets (array_record) read with Grain, preprocessing, the bundled digits.

The digits builder lives in `effnetx_jax.data.digits` and is imported on demand, because importing
tensorflow_datasets takes seconds.
"""

from effnetx_jax.data.pipeline import DatasetInfo, dataset_info, eval_batches, train_loader
from effnetx_jax.data.preprocessing import MEAN_RGB, STDDEV_RGB, empty_batch
from effnetx_jax.data.sources import ensure_prepared

__all__ = [
    "MEAN_RGB",
    "STDDEV_RGB",
    "DatasetInfo",
    "dataset_info",
    "empty_batch",
    "ensure_prepared",
    "eval_batches",
    "train_loader",
]
