"""Bounds on a model description, checked when the config is read, before anything is traced.

Each bound is generous for research, well above the largest published model of the EfficientNet
families after scaling (EfficientNet-L2: width 4.3, depth 5.3, 800 px; EfficientNet-X-GPU-B7: depth
5.46), and low enough that the checks are arithmetic over a bounded number of blocks (milliseconds)
and that a model which passes them can be built and trained on one large accelerator.
The README's "Bounds on model configs" table lists them.
"""

# Repeats of one stage, as written (`r`) and after depth scaling. The deepest published stage has 22
# (EfficientNet-L2 and X-GPU-B7 stage 6: ceil(5.3 x 4), ceil(5.46 x 4)); ResNet-1001's have 111.
MAX_REPEATS = 256
# Blocks of a whole model after depth scaling, and block strings in a config: X-GPU-B7 has 90 blocks,
# EfficientNet-L2 88, ResNet-1001 333. The unrolled block list is built before any other check.
MAX_BLOCKS = 1024
# Kernel side (`k`). The official strings use 3-7, MixNet up to 11, RepLKNet 31. On CPUs each depthwise
# tap is one slice of the input ('shifted'), so a 31x31 kernel traces 961 slices: seconds, not minutes.
MAX_KERNEL = 31
# Kernels up to this side run on a feature map of any size, so the official strings (k3-k7) keep working
# at the small resolutions of smoke runs and tests, whose last feature maps are 1x1. A wider kernel must
# fit the map it meets: at most 2 x side - 1, beyond which its outer taps only ever meet padding.
ANY_MAP_KERNEL = 7
# Expand ratio (`e`): the official strings use 1-8 (EdgeTPU's e8).
MAX_EXPAND_RATIO = 32
# Channels of any layer after width scaling and space-to-depth (input, output and expanded widths, stem,
# head), and the `i`/`o` tokens, stem_filters and head_filters as written. The widest layers published
# are EfficientNet-L2's stage-7 expansion (8,256) and BiT-R152x4's last stage (8,192).
MAX_FILTERS = 16384
# Input resolution (square images): EfficientNet-L2 runs at 800 px.
MAX_RESOLUTION = 4096
# Trainable parameters, counted from the architecture (`costs.parameter_count`): EfficientNet-L2 has
# 480M, EfficientNet-X-B7 73M. At 2e9, float32 parameters, two RMSprop slots and the EMA take 32 GB.
MAX_PARAMETERS = 2_000_000_000
