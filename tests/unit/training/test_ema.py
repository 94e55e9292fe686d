"""The warmed-up EMA of the weights (dens_lightning.training.ema)."""

import lightning
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from dens_lightning.training.ema import EMA, warmed_decay, warmed_ema


def test_warmed_ema_matches_the_closed_form_and_integer_buffers_follow_the_model():
    """After updates with weights w_0, w_1, ... the average is the recursion ``a ← d_t a + (1 - d_t) w``
    with ``d_t = min(decay, (1 + t) / (10 + t))``, float64 and float32 alike; a counter buffer is copied."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    model.register_buffer("count", torch.zeros((), dtype=torch.long))
    model.register_buffer("scale64", torch.ones(4, dtype=torch.float64))
    averaged = AveragedModel(model, multi_avg_fn=warmed_ema(0.9), use_buffers=True)
    expected = None
    for t in range(30):
        with torch.no_grad():
            for tensor in (model.weight, model.bias, model.scale64):
                tensor.normal_()
            model.count.fill_(t)
        current = [model.weight.clone(), model.bias.clone(), model.scale64.clone()]
        if expected is None:
            expected = current
        else:
            rate = warmed_decay(0.9, t)
            expected = [rate * a + (1 - rate) * w for a, w in zip(expected, current)]
        averaged.update_parameters(model)
    module = averaged.module
    for got, want in zip((module.weight, module.bias, module.scale64), expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert int(module.count) == 29
    assert warmed_decay(0.9, 0) == 0.1 and warmed_decay(0.9, 10_000) == 0.9


class _Regression(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_average_is_kept_in_the_training_precision(tmp_path):
    """With ``precision=64-true`` the averaged copy is float64 too, and the weights the model ends with
    are the float64 average (not a float32 rounding of it)."""
    torch.manual_seed(0)
    module, ema = _Regression(), EMA(0.5)
    trainer = lightning.Trainer(
        precision="64-true",
        max_steps=6,
        callbacks=[ema],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(torch.randn(12, 3), batch_size=2))
    averaged = ema._average_model.module.layer.weight
    assert averaged.dtype == torch.float64 and module.layer.weight.dtype == torch.float64
    assert torch.equal(module.layer.weight, averaged)
    assert not torch.equal(averaged, averaged.float().double())  # float64 digits beyond float32's
