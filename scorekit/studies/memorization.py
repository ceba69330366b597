"""Does the model memorise? The NCSNv2 rebuttal's three checks: the training loss close to the test loss
(both on fixed batches with the same noise, logged during training), the distance from samples to their
nearest training image against that of held-out images, and the multi-scale KDE baseline (the exact
score of the Gaussian-smoothed training set) which, sampled with the same annealed dynamics, returns
training images."""

from __future__ import annotations

import numpy as np
import torch

from .runner import Arm, Context, markdown_table, measured, sample_images, train_arms, write_csv, write_report

NAME = "memorization"
# NCSNv2's techniques on the main job's U-Net: the RefineNet suits 8x8 images poorly (STUDIES.md); ~6 min on 2 cores
DEFAULT_BASE, DEFAULT_STEPS = "ncsnv2-unet-digits", 2000
TITLE = "Memorisation: losses, nearest neighbours, and the KDE baseline"
COPY = 8.0  # l2 distance in uint8 units over the whole image below which a sample counts as a copy


def check(cfg) -> None:
    from ..data.sources import build_source

    build_source(cfg.data, "test")  # held-out images are part of the check: the data needs a test split


def nn_distance(images: torch.Tensor, train: torch.Tensor) -> np.ndarray:
    """l2 distance (uint8 units, whole image) from each image to its nearest training image."""
    from ..evaluation.figures import nearest_neighbours

    idx = nearest_neighbours(images, train, 1)["pixel"][:, 0]
    return (images.flatten(1).double() - train[idx].flatten(1).double()).norm(dim=1).numpy()


def kde_samples(cfg, train_u8: torch.Tensor, n: int, seed: int, device: str) -> torch.Tensor:
    """Samples of the multi-scale KDE baseline with the run's process and sampler."""
    from ..images import from_uint8
    from ..model.factory import build_process, data_range
    from ..toy import kde_denoiser

    lo_hi = data_range(cfg)
    kde = kde_denoiser(from_uint8(train_u8, lo_hi), build_process(cfg), data_range=lo_hi).to(device)
    kde.config = cfg
    return sample_images(kde, n, seed=seed)["samples"]


def run(ctx: Context, command: str) -> dict:
    from ..data.sources import build_source
    from ..errors import ScorekitError
    from ..evaluation.figures import nearest_neighbours, neighbours_grid
    from ..evaluation.plots import figure
    from ..images import save_npz
    from ..run import load
    from .runner import loss_curves

    arm = Arm("run", "the base preset", [f"training.test_every={max(1, ctx.steps // 40)}"])
    cfg = ctx.config(arm)
    status = train_arms(ctx, [arm])[arm.name]
    if status:
        raise ScorekitError(f"the run stopped: {status}")
    run_dir = ctx.run_dir(arm)
    train = build_source(cfg.data, "train")
    train_u8 = train.images if train.images is not None else torch.stack([train[i] for i in range(len(train))])
    test = build_source(cfg.data, "test")
    test_u8 = test.images if test.images is not None else torch.stack([test[i] for i in range(len(test))])

    def samples_of(which: str) -> torch.Tensor:
        path = run_dir / "eval" / f"{NAME}_{which}_n{ctx.n}_seed{ctx.seed}.npz"
        if not path.is_file():
            x = (sample_images(load(run_dir, device=ctx.device), ctx.n, seed=ctx.seed)["samples"] if which == "model"
                 else kde_samples(cfg, train_u8, ctx.n, ctx.seed, ctx.device))
            save_npz(path, samples=x.numpy())
        with np.load(path, allow_pickle=False) as f:
            return torch.from_numpy(f["samples"])

    sets = {"model samples": samples_of("model"), "KDE baseline samples": samples_of("kde"), "test images": test_u8}
    distances = {k: measured(run_dir, f"{NAME}_nn_{k.split()[0].lower()}_n{ctx.n}_seed{ctx.seed}",
                             lambda v=v: {"distances": nn_distance(v, train_u8).tolist()})["distances"]
                 for k, v in sets.items()}
    curves = loss_curves(run_dir)
    stats = [{"images": k, "n": len(d), "mean": float(np.mean(d)), "median": float(np.median(d)),
              "p5": float(np.percentile(d, 5)), "copies": float(np.mean(np.asarray(d) < COPY))}
             for k, d in distances.items()]
    final = {k: v[-1][1] for k, v in curves.items() if v}
    write_csv(ctx.folder / f"{NAME}_losses.csv",
              [{"step": s, "train_loss_fixed": a, "test_loss": b}
               for (s, a), (_, b) in zip(curves["train_loss_fixed"], curves["test_loss"])])
    write_csv(ctx.folder / f"{NAME}.csv", stats)
    with figure(ctx.folder / f"{NAME}_losses.png", size=(7, 4.2)) as ax:
        for key, label in (("loss", "training loss (running minibatches)"),
                           ("train_loss_fixed", "training images (fixed batch and noise)"),
                           ("test_loss", "test images (fixed batch and noise)")):
            pts = curves[key]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], alpha=0.35 if key == "loss" else 1.0, label=label)
        ax.set(xlabel="training step", ylabel="loss", yscale="log", title="Training against test loss")
        ax.legend()
        ax.grid(alpha=0.3)
    with figure(ctx.folder / f"{NAME}_distances.png", size=(7, 4.2)) as ax:
        bins = np.linspace(0, max(max(d) for d in distances.values()), 40)
        for k, d in distances.items():
            ax.hist(d, bins=bins, alpha=0.5, label=k, density=True)
        ax.set(xlabel="l2 distance to the nearest training image (uint8 units)", ylabel="density",
               title="Nearest training image: samples, KDE baseline, held-out images")
        ax.legend()
    for which in ("model samples", "KDE baseline samples"):
        imgs = sets[which][:8]
        neighbours_grid(ctx.folder / f"{NAME}_{which.split()[0].lower()}_neighbours.png", imgs, train_u8,
                        nearest_neighbours(imgs, train_u8, 4))
    loss_table = markdown_table(["Loss (fixed batch, same noise)", "final"],
                                [["training images", final.get("train_loss_fixed")],
                                 ["test images", final.get("test_loss")],
                                 ["test / training", final["test_loss"] / final["train_loss_fixed"]]])
    nn_table = markdown_table(["Images", "N", "mean NN distance", "median", "5th percentile",
                               f"fraction within {COPY:g} of a training image"],
                              [[s["images"], s["n"], s["mean"], s["median"], s["p5"], s["copies"]] for s in stats])
    body = (f"One run of {ctx.base}, {ctx.steps} steps; the KDE baseline uses the same noise levels and sampler "
            f"on the {len(train_u8)} training images.\n\n{loss_table}\n![losses]({NAME}_losses.png)\n\n{nn_table}\n"
            f"![distances]({NAME}_distances.png)\n\nNearest training images (pixel l2) of model samples: "
            f"![model]({NAME}_model_neighbours.png) and of KDE samples: ![kde]({NAME}_kde_neighbours.png)\n")
    payload = {"final_losses": final, "distances": stats, "curves": curves}
    write_report(ctx, NAME, TITLE, body, payload, command)
    return payload
