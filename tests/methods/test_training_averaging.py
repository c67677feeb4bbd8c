"""The weight average: an EMA of the weights, warm-up included (that validation scores the average and the
checkpoint keeps it: ``test_training_validation.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.methods.training.averaging import WeightAverage

torch.set_num_threads(1)


def test_the_average_follows_an_ema_with_warm_up_and_copies_counters():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    decay = 0.5  # the warm-up decay (1 + t) / (10 + t) reaches it at t = 8, within the 12 updates
    average = WeightAverage(model, decay)
    expected = {k: v.detach().numpy().astype(np.float64).copy() for k, v in model.state_dict().items()
                if v.is_floating_point()}
    for t in range(12):
        model.train()
        model(torch.randn(5, 3))  # moves the batch-norm running statistics and its batch counter
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        average.update(model)
        d = min(decay, (1 + t) / (10 + t))  # TensorFlow's ExponentialMovingAverage with num_updates
        for k, v in model.state_dict().items():
            if k in expected:
                expected[k] = d * expected[k] + (1 - d) * v.numpy()
    got = average.module.state_dict()
    for k, v in expected.items():
        np.testing.assert_allclose(got[k].numpy(), v, rtol=1e-5, atol=1e-6, err_msg=k)
    assert int(got["1.num_batches_tracked"]) == int(model.state_dict()["1.num_batches_tracked"]) == 12
    assert not any(p.requires_grad for p in average.module.parameters())
    assert average.current_decay() == decay


def test_a_bad_decay_is_refused():
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(torch.nn.Linear(1, 1), 1.0)
