"""The EMA of trained weights and the optimizer the trainer builds."""

import torch
from torch import nn

from kinemate.train.config import StageConfig
from kinemate.train.ema import EMA
from kinemate.train.trainer import make_optimizer


def _net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).to(dtype)
    net[2].bias.requires_grad_(False)  # frozen: not averaged
    return net


def test_ema_follows_the_formula_with_warmup_and_skips_frozen_parameters():
    net = _net()
    ema = EMA(net, decay=0.9, warmup=True)
    assert "2.bias" not in ema.shadow
    expected = {k: v.clone() for k, v in ema.shadow.items()}
    for _ in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        d = ema.current_decay()
        assert d == min(0.9, (1 + ema.num_updates) / (10 + ema.num_updates))
        ema.update(net)
        for name, p in net.named_parameters():
            if name in expected:
                expected[name] = d * expected[name] + (1 - d) * p.detach()
    for k, v in expected.items():
        torch.testing.assert_close(ema.shadow[k], v)


def test_ema_of_bfloat16_weights_keeps_float32_shadows_and_copies_back():
    net = _net(torch.bfloat16)
    ema = EMA(net, decay=0.5, warmup=False)
    with torch.no_grad():
        net[0].weight.fill_(2.0)
    ema.update(net)
    assert ema.shadow["0.weight"].dtype == torch.float32
    start = _net(torch.bfloat16)[0].weight.float()
    torch.testing.assert_close(ema.shadow["0.weight"], 0.5 * start + 0.5 * 2.0)
    ema.copy_to(net)
    assert net[0].weight.dtype == torch.bfloat16
    torch.testing.assert_close(net[0].weight.float(), ema.shadow["0.weight"].bfloat16().float())


def test_ema_state_round_trip_continues_identically_on_a_new_module():
    net_a, net_b = _net(), _net()
    ema_a = EMA(net_a, decay=0.8)
    ema_a.update(net_a)
    ema_b = EMA(net_b, decay=0.1)
    ema_b.update(net_b)  # pairs built for net_b before loading: must be rebuilt
    ema_b.load_state_dict(ema_a.state_dict())
    with torch.no_grad():
        for pa, pb in zip(net_a.parameters(), net_b.parameters()):
            pa.mul_(3.0)
            pb.mul_(3.0)
    ema_a.update(net_a)
    ema_b.update(net_b)
    for k in ema_a.shadow:
        torch.testing.assert_close(ema_a.shadow[k], ema_b.shadow[k])
    # the trainer replaces the shadow dict when it moves it to the device: updates follow it
    ema_b.shadow = {k: v.clone() for k, v in ema_b.shadow.items()}
    ema_a.update(net_a)
    ema_b.update(net_b)
    for k in ema_a.shadow:
        torch.testing.assert_close(ema_a.shadow[k], ema_b.shadow[k])


def test_trainer_optimizer_is_fused_adamw_and_matches_the_plain_one():
    stage = StageConfig(kind="stage1", lr=1e-2, weight_decay=0.01)
    nets = [_net(), _net()]
    params = [[p for p in n.parameters() if p.requires_grad] for n in nets]
    fused = make_optimizer(params[0], stage)
    assert isinstance(fused, torch.optim.AdamW) and fused.defaults["fused"]
    plain = torch.optim.AdamW(params[1], lr=1e-2, weight_decay=0.01, foreach=False)
    x = torch.randn(8, 4)
    for _ in range(10):
        for net, opt in ((nets[0], fused), (nets[1], plain)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(params[0], params[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
