"""Data-parallel training (srood_lib.distributed): two CPU processes under torchrun (gloo) on the smoke recipe
finish, resume a stopped run to the same weights, and match a single-process run with the same global batch."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from srood_lib.config import PROJECT_ROOT, load_config
from srood_lib.distributed import World
from srood_lib.runtime import safe_torch_load
from srood_lib.train_prior import load_prior, train_prior
from srood_lib.train_repair import train_repair

# Each launch of torchrun costs ~10 s of imports on 2 cores, so one launch runs several jobs in turn (the process
# group is initialised once); a job is "what,out,stop,prior". A killed prior (stop > 0) ends its launch.
DRIVER = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from test_distributed import images, prior_cfg, repair_args
    from srood_lib.train_prior import load_prior, train_prior
    from srood_lib.train_repair import train_repair
    for job in sys.argv[2:]:
        what, out, stop, prior = job.split(",")
        stop = int(stop)
        if what == "prior_grads":
            import torch
            from srood_lib.distributed import world
            from test_distributed import one_step_grads
            me = world("cpu")
            grads = one_step_grads(me)
            if me.main:
                torch.save(grads, out)
            me.barrier()
        elif what == "prior":
            def kill(step):
                if step == stop:
                    os._exit(17)  # both processes die after the same step, as a killed job would
            train_prior(images(), prior_cfg(), out, seed=0, device="cpu", progress=False,
                        callback=kill if stop else None)
        else:
            train_repair(images(), load_prior(prior), out_dir=out, stop_after_steps=stop or None, **repair_args())
''')

# Floating-point sums over two processes differ from one process's in the last bits. The gradients of a step
# therefore agree to float32 precision; after several steps the per-process noise inputs differ, and Adam's normalised (near sign-like, beta1 = 0) updates
# turn last-bit noise on near-zero gradients into differences of up to a learning-rate step per weight, so whole
# runs are compared by their losses. The encoder's BatchNorm sees each process's half batch on CPUs (torch has
# no SyncBatchNorm there), so its losses agree more loosely.
GRAD_RTOL, GRAD_ATOL = 1e-3, 1e-6
PRIOR_LOSS_RTOL = 2e-2   # measured: 7e-3 after 4 steps
ENCODER_LOSS_RTOL = 0.05


def images():
    return np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)


def prior_cfg():
    cfg = {k: v for k, v in load_config("smoke")["prior"].items() if k != "checkpoint"}
    # 4 steps of the global batch 32, R1 at step 0; DiffAugment off: its per-image draws are per process
    return {**cfg, "kimg": 0.128, "checkpoint_kimg": 0.064, "diffaug": ""}


def repair_args():
    cfg = load_config("smoke")
    # 20 steps of 32, two logged losses (every 10 steps), checkpoints after steps 10 and 20
    return dict(train_cfg={**cfg["repair"]["train"], "kimg": 0.64, "checkpoint_kimg": 0.32},
                encoder_cfg=cfg["repair"]["encoder"], train_erosions=cfg["repair"]["variants"]["sr"]["train_erosions"],
                seed=0, device="cpu", progress=False)


def one_step_grads(world):
    """Gradients of G and D after the first training step (R1 included) on the global batch of 32, averaged
    over ``world``'s processes."""
    from srood_lib.runtime import step_seed, to_float_images, uint8_to_tensor
    from srood_lib.train_prior import build_discriminator, build_generator, train_step

    cfg = prior_cfg()
    torch.manual_seed(1)
    G, D = build_generator(cfg), build_discriminator(cfg)
    G_opt, D_opt = (torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.0, 0.99)) for m in (G, D))
    real = to_float_images(uint8_to_tensor(images()[:32]))
    torch.manual_seed(step_seed(0, 0))
    train_step(G, D, G_opt, D_opt, world.shard(real), cfg, 0, 0, torch.device("cpu"), False, world)
    return {f"{who}.{n}": p.grad.clone() for who, m in (("G", G), ("D", D)) for n, p in m.named_parameters()
            if p.grad is not None}


def torchrun(tmp_path, *jobs):
    """Run ``jobs`` (what, out, stop, prior) in turn in one 2-process torchrun launch (gloo)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver),
           os.path.dirname(__file__), *(",".join(str(part) for part in job) for job in jobs)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def single_prior(tmp_path_factory):
    out = tmp_path_factory.mktemp("single_prior")
    return train_prior(images(), prior_cfg(), out, seed=0, device="cpu", progress=False)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, single_prior):
    """Three launches: (1) one step's gradients, a whole prior run and a whole encoder run; (2) an encoder run
    stopped after step 12 and a prior run killed after step 3; (3) both resumed. Returns the folder, each
    launch's result and the checkpoint steps the stopped runs left behind."""
    d = tmp_path_factory.mktemp("ddp")
    whole = torchrun(d, ("prior_grads", d / "grads.pt", 0, ""), ("prior", d / "prior", 0, ""),
                     ("repair", d / "repair", 0, single_prior))
    stopped = torchrun(d, ("repair", d / "repair_stopped", 12, single_prior), ("prior", d / "prior_killed", 3, ""))
    left = {what: safe_torch_load(d / f"{what}_{how}" / f"{what}.pt")["step"]
            for what, how in (("prior", "killed"), ("repair", "stopped"))
            if (d / f"{what}_{how}" / f"{what}.pt").exists()}
    resumed = torchrun(d, ("prior", d / "prior_killed", 0, ""), ("repair", d / "repair_stopped", 0, single_prior))
    return {"dir": d, "whole": whole, "stopped": stopped, "resumed": resumed, "left": left}


def test_alone_the_world_is_one_process_and_changes_nothing():
    alone = World()
    x = torch.arange(6.0)
    assert alone.main and alone.shard(x) is x and alone.average(x) is x
    assert torch.equal(World(rank=1, size=2).shard(x), torch.tensor([1.0, 3.0, 5.0]))
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        World(rank=0, size=3).check_batch(32)
    alone.check_same(5, "anything")                       # nothing to compare with


def test_a_process_count_that_would_shrink_the_minibatch_std_groups_is_refused():
    from srood_lib.distributed import check_mbstd

    check_mbstd(World(0, 2), 64, 32)                      # 32 per process: the same one group of 32
    check_mbstd(World(0, 8), 32, 4)                       # 4 per process: groups of 4 either way
    with pytest.raises(ValueError, match="use at most 2 processes"):
        check_mbstd(World(0, 8), 64, 32)


def test_two_processes_average_the_gradients_of_one_process_step(ddp):
    assert ddp["whole"].returncode == 0, ddp["whole"].stderr[-2000:]
    ddp_grads, one = torch.load(ddp["dir"] / "grads.pt"), one_step_grads(World())
    assert ddp_grads.keys() == one.keys() and len(one) > 20
    # The generator's per-pixel noise inputs are drawn per process (like DiffAugment's draws); their strengths
    # start at 0, so at step 0 they change nothing but their own gradients.
    exact = [n for n in one if not n.endswith("noise.strength")]
    assert len(exact) > 20
    for name in exact:
        assert torch.allclose(ddp_grads[name], one[name], rtol=GRAD_RTOL, atol=GRAD_ATOL), name


def test_two_process_prior_finishes_resumes_and_matches_one_process(ddp, single_prior):
    assert ddp["whole"].returncode == 0, ddp["whole"].stderr[-2000:]
    stopped = ddp["stopped"]                               # the kill after step 3 ended this launch
    assert stopped.returncode != 0 and "exitcode: 17" in stopped.stderr, stopped.stderr[-2000:]
    assert ddp["left"]["prior"] == 2                       # died after step 3; its checkpoint is at step 2
    assert ddp["resumed"].returncode == 0, ddp["resumed"].stderr[-2000:]

    whole, again = (safe_torch_load(ddp["dir"] / d / "prior.pt") for d in ("prior", "prior_killed"))
    one = safe_torch_load(single_prior)
    assert whole["step"] == one["step"] == 4 and whole["nimg"] == one["nimg"] == 128
    for name in one["G_ema"]:
        assert torch.equal(whole["G_ema"][name], again["G_ema"][name]), name       # exact resume
    losses = np.array([[row[2], row[3]] for row in whole["history"]])            # D and G loss per step
    assert np.allclose(losses, [[row[2], row[3]] for row in one["history"]], rtol=PRIOR_LOSS_RTOL)


def test_two_process_encoder_finishes_resumes_and_matches_one_process(ddp, single_prior, tmp_path):
    import pandas as pd

    assert ddp["whole"].returncode == 0 and ddp["resumed"].returncode == 0, ddp["resumed"].stderr[-2000:]
    assert ddp["left"]["repair"] == 10                     # stopped after 12, saved at 10
    whole, again = (safe_torch_load(ddp["dir"] / d / "repair.pt") for d in ("repair", "repair_stopped"))
    for name in whole["net"]:
        assert torch.equal(whole["net"][name], again["net"][name]), name           # exact resume
    train_repair(images(), load_prior(single_prior), out_dir=tmp_path / "one", **repair_args())
    ddp_loss = pd.read_csv(ddp["dir"] / "repair" / "losses.csv")["loss"].to_numpy()
    one_loss = pd.read_csv(tmp_path / "one" / "losses.csv")["loss"].to_numpy()
    assert len(ddp_loss) == len(one_loss) == 2 and np.allclose(ddp_loss, one_loss, rtol=ENCODER_LOSS_RTOL)
