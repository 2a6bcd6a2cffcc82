"""Tests of zoomin_lib.builders.ips: IPS built by name with table 5's f or a given encoder, options passed through."""

from __future__ import annotations

import pytest
import torch

from zoomin_lib import builders
from zoomin_lib.ips import IPSNet
from zoomin_lib.networks import FeatureLeNet, FeatureResNet16


def test_ips_takes_the_backbone_f_by_default_and_a_given_encoder_otherwise():
    model = builders.ips(in_channels=3, n_classes=4, patch_size=10, memory_size=3, iter_size=4)
    assert isinstance(model, IPSNet) and isinstance(model.encoder, FeatureLeNet) and model.encoder.in_channels == 3
    assert (model.memory_size, model.iter_size, model.patch_size, model.n_classes) == (3, 4, (10, 10), [4])
    assert isinstance(builders.ips(in_channels=1, n_classes=2, patch_size=8, memory_size=2, iter_size=2,
                                   backbone="resnet16").encoder, FeatureResNet16)
    mine = FeatureLeNet(1)
    assert builders.ips(in_channels=1, n_classes=2, patch_size=8, memory_size=2, iter_size=2, encoder=mine).encoder is mine
    with pytest.raises(ValueError, match="backbone"):
        builders.ips(in_channels=1, n_classes=2, patch_size=8, memory_size=2, iter_size=2, backbone="vgg")


def test_ips_passes_the_regularisers_and_transformer_options_to_ipsnet():
    model = builders.ips(in_channels=1, n_classes=3, patch_size=8, memory_size=4, iter_size=2, n_heads=4, dim_head=16,
                         dropout=0.1, pos_enc=True, semantic=True, mask_top_k=2, mask_prob=0.5)
    assert (model.pool.n_heads, model.pool.dim_head, model.pool.dropout.p, model.pos_enc) == (4, 16, 0.1, True)
    assert model.head_mlps is not None and (model.pool.mask_top_k, model.pool.mask_prob) == (2, 0.5)
    out = model(torch.rand(2, 1, 32, 32))
    assert out.logits.shape == (2, 3) and out.head_logits.shape == (2, 4, 3) and out.indices.shape == (2, 4)
    plain = builders.ips(in_channels=1, n_classes=3, patch_size=8, memory_size=4, iter_size=2)
    assert plain.head_mlps is None and plain.pool.mask_top_k == 0 and not plain.pos_enc
