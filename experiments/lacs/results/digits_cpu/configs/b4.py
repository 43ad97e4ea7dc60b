"""efficientnet-x-lacs-digits-b4: efficientnet-x-quickstart scaled by LACS (alpha=1.2, beta=1.1, gamma=1.15) at phi=3.

Written by `python -m effnetx_jax.lacs --config=experiments/lacs/digits_cpu.py --workdir=experiments/lacs/results/digits_cpu`.
width 0.665, depth 0.865, resolution 49, 0.06428 GFLOPs per image.

  python train.py --config=experiments/lacs/results/digits_cpu/configs/b4.py --workdir=DIR
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config():
    return ml_collections.ConfigDict({
        'batch_size': 64,
        'bn_group_size': 0,
        'checkpoint_every_epochs': 5.0,
        'checkpoint_every_steps': 0,
        'data': ml_collections.ConfigDict({
            'aspect_ratio_range': (0.75, 1.3333333333333333),
            'augment': '',
            'crop_area_range': (0.7, 1.0),
            'cutmix_alpha': 0.0,
            'eval_crop_fraction': 1.0,
            'mean': (127.5, 127.5, 127.5),
            'mixup_alpha': 0.0,
            'num_workers': 0,
            'prefetch_buffer_size': 2,
            'random_flip': False,
            'resize': 'bicubic',
            'std': (127.5, 127.5, 127.5),
        }),
        'data_dir': placeholder(str),
        'dataset': 'digits',
        'ema_decay': 0.99,
        'eval_batch_size': 128,
        'eval_every_epochs': 5.0,
        'eval_every_steps': 0,
        'eval_split': 'test',
        'fsdp_size': 1,
        'init_exclude': '',
        'init_from': placeholder(str),
        'keep_checkpoints': 2,
        'label_smoothing': 0.1,
        'learning_rate': 0.064,
        'log_every_steps': 20,
        'lr_decay_epochs': 2.4,
        'lr_decay_factor': 0.97,
        'lr_schedule': 'cosine',
        'model': ml_collections.ConfigDict({
            'activation': 'relu',
            'blocks': ('r1_k3_s11_e1_i32_o16_se0.25_d1_a0', 'r2_k3_s22_e6_i16_o24_se0.25_f1_d2_a1', 'r2_k5_s22_e6_i24_o40_se0.25_f1_a1', 'r3_k3_s22_e6_i40_o80_se0.25_a0', 'r3_k5_s11_e6_i80_o112_se0.25_a0', 'r4_k5_s22_e6_i112_o192_se0.25_a0', 'r1_k3_s11_e6_i192_o320_se0.25_a0'),
            'bn_epsilon': 0.001,
            'bn_momentum': 0.9,
            'depth': 0.865,
            'depth_divisor': 8,
            'depthwise_impl': 'auto',
            'drop_path': 0.1,
            'dropout': 0.2,
            'dtype': 'float32',
            'head_filters': 256,
            'min_depth': 0,
            'name': 'efficientnet-x-lacs-digits-b4',
            'num_classes': 10,
            'resolution': 49,
            'se_coefficient': 4.0,
            'stage_activations': (),
            'stage_conv_types': (),
            'stem_filters': 32,
            'use_se': True,
            'width': 0.665,
        }),
        'momentum': 0.9,
        'optimizer': 'rmsprop',
        'rmsprop_decay': 0.9,
        'rmsprop_epsilon': 0.001,
        'seed': 0,
        'total_epochs': 15.0,
        'total_steps': placeholder(int),
        'train_split': 'train',
        'warmup_epochs': 1.0,
        'weight_decay': 1e-05,
    })
