"""One training step of the library (Trainer.train_step) against a bare PyTorch DSM loop, same network and batch.

Two bare loops: "bare" does what the Trainer does (AdamW, gradient clipping, warm-up + cosine LR, EMA update,
loss.item()) written inline with the network called directly (no ScoreModel), so library / bare is the
library's own overhead (target <= 1.05); "minimal" is forward, backward and AdamW only, so library / minimal
also prices clipping, the schedule and the EMA. The three take one step each in turn and the median step time is
reported, so the drift of a shared CPU hits all three alike.

A second table prices each training objective (conf/loss presets, sde_diffusion.objectives) against today's default
(`simple`: ε-prediction, t ~ U) on the study's setting, the MLP 3x128 on the 16-D mixture at batch 1024, the same
way: one step of each in turn, median, ratio to `simple` (goal <= 1.05). It does so `--repeats` times in a row and
reports the median step time over all of them, the median of the repeats' ratios and their range (min-max), so that
one noisy stretch of a shared machine shows as a wide range instead of moving the ratio.

    OMP_NUM_THREADS=1 python experiments/bench_train_step.py [--steps 200] [--repeats 3] [--device cpu] [--objectives]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sde_diffusion import VPSDE
from sde_diffusion.data import Digits, EightGaussians, MixtureData
from sde_diffusion.infra.runtime import resolve_device, seed_everything
from sde_diffusion.models import MLP, ScoreModel, UNet
from sde_diffusion.objectives import build_objective
from sde_diffusion.training import Trainer, warmup_cosine


def bare_loop(net, data, batch_size, device, full: bool, steps_total: int = 10_000):
    """A plain DSM training step: x_t = √ᾱ x₀ + √(1 − ᾱ) ε, loss = mean ‖net(x_t, t) − ε‖² (linear VP β)."""
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 100, steps_total))
    ema = [p.detach().clone() for p in net.parameters()]
    g_data, g_noise = torch.Generator().manual_seed(0), torch.Generator(device).manual_seed(1)
    step = 0

    def one_step():
        nonlocal step
        x0 = data.batch(batch_size, g_data).to(device)
        t = 1e-5 + (1 - 1e-5) * torch.rand(x0.shape[0], generator=g_noise, device=device)
        noise = torch.randn(x0.shape, generator=g_noise, device=device)
        log_alpha_bar = -(0.1 * t + 0.5 * (20 - 0.1) * t**2)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        x_t = log_alpha_bar.mul(0.5).exp().view(shape) * x0 + (-torch.expm1(log_alpha_bar)).sqrt().view(shape) * noise
        loss = (net(x_t, t) - noise).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if full:
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if full:
            sched.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema, list(net.parameters()), 1 - min(0.999, (1 + step) / (10 + step)))
            loss.item()
        step += 1

    return one_step


def time_step(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(name, make_net, data, batch_size, steps, device):
    seed_everything(0)
    sde = VPSDE()
    trainer = Trainer(
        ScoreModel(make_net(), sde), sde, data, steps=10_000, batch_size=batch_size, device=device, progress=False
    )
    trainer.model.train()
    variants = {
        "library": trainer.train_step,
        "bare": bare_loop(make_net().to(device), data, batch_size, device, full=True),
        "minimal": bare_loop(make_net().to(device), data, batch_size, device, full=False),
    }
    times = {k: [] for k in variants}
    for i in range(steps + 3):  # one step of each in turn, so a shared CPU's drift hits all three alike
        for k, fn in variants.items():
            t = time_step(fn, device)
            if i >= 3:  # warm-up
                times[k].append(t)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    print(
        f"| {name:<24} | {batch_size:5d} | {ms['minimal']:8.2f} | {ms['bare']:8.2f} | {ms['library']:8.2f} "
        f"| {ms['library'] / ms['bare']:7.3f} | {ms['library'] / ms['minimal']:7.3f} |"
    )


OBJECTIVES = {  # preset: (parameterization, build_objective arguments), as in conf/loss/
    "simple": ("eps", {}),
    "edm": ("x0", {"weighting": "edm", "density": "lognormal", "sigma_data": 2.7, "p_mean": 0.5}),
    "v_min_snr": ("v", {"weighting": "min_snr", "density": "schedule"}),
    "sigmoid": ("eps", {"weighting": "sigmoid", "density": "importance"}),
    "elbo": ("eps", {"weighting": "likelihood", "density": "importance"}),
    "simple, adaptive": ("eps", {"density": "adaptive"}),
    "simple, stratified": ("eps", {"stratified": True}),
}


def bench_objectives(steps: int, repeats: int, device) -> None:
    """Each objective's Trainer.train_step against the default's, interleaved, `repeats` times: median ms (all steps),
    the median and range of the repeats' ratios of medians."""
    data, sde, trainers = MixtureData(), VPSDE(), {}
    for name, (param, kw) in OBJECTIVES.items():
        seed_everything(0)
        model = ScoreModel(MLP(data.shape, hidden=128), sde, param, sigma_data=2.7)
        trainers[name] = Trainer(
            model,
            sde,
            data,
            steps=10_000,
            batch_size=1024,
            objective=build_objective(sde, **kw),
            device=device,
            progress=False,
        )
    times = {k: [] for k in trainers}
    ratios = {k: [] for k in trainers}
    for _ in range(repeats):
        block = {k: [] for k in trainers}
        for i in range(steps + 3):
            for k, trainer in trainers.items():
                t = time_step(trainer.train_step, device)
                if i >= 3:
                    block[k].append(t)
        for k, v in block.items():
            times[k] += v
            ratios[k].append(statistics.median(v) / statistics.median(block["simple"]))
    print(f"\n| objective (MLP 3x128, 16-D mixture, batch 1024) | ms/step | / simple | range ({repeats} repeats) |")
    print("|---|---|---|---|")
    for k, v in times.items():
        ms, r = 1e3 * statistics.median(v), ratios[k]
        print(f"| {k:<20} | {ms:7.2f} | {statistics.median(r):6.3f} | {min(r):.3f}-{max(r):.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per variant (U-Net: a tenth)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the objectives table, one after another")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--objectives", action="store_true", help="only the objectives table")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} torch threads; median ms per step")
    if args.objectives:
        bench_objectives(args.steps, args.repeats, device)
        return
    print("| network                  | batch | minimal  |   bare   | library  | lib/bare | lib/min |")
    print("|--------------------------|-------|----------|----------|----------|---------|---------|")
    eight, digits = EightGaussians(), Digits()
    bench("MLP 3x256, 8 gaussians", lambda: MLP((2,)), eight, 512, args.steps, device)
    bench("MLP 3x128, 8 gaussians", lambda: MLP((2,), hidden=128), eight, 256, args.steps, device)
    bench("UNet 32ch, digits 8x8", lambda: UNet((1, 8, 8)), digits, 128, max(1, args.steps // 10), device)
    bench_objectives(args.steps, args.repeats, device)


if __name__ == "__main__":
    main()
