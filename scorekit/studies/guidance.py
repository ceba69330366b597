"""The guidance trade-off (the classifier-free guidance paper's figure): FD and class agreement against the
guidance scale, for classifier-free guidance on the class-conditional model and for classifier guidance on
the unconditional one (with a noise-conditional classifier trained on the same process and data). Every
point draws an equal share of each class with the base preset's sampler; agreement is the fraction of
samples the data's own classifier (the digits proxy) assigns to the class asked for."""

from __future__ import annotations

import torch

from ..model.guidance import conditional
from .runner import (
    Arm,
    Context,
    judged,
    judges_tag,
    markdown_table,
    measured,
    other_judges,
    train_arms,
    write_csv,
    write_report,
)

NAME = "guidance"
DEFAULT_BASE, DEFAULT_STEPS = "ddpm-digits-cond", 1200
TITLE = "Guidance: FD against class agreement"
CFG_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
CLASSIFIER_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
CLASSIFIER = ["model.arch=classifier", "training.loss=ce", "model.ch=32", "model.ch_mult=[1,2]",
              "model.norm_groups=8", "model.attn_resolutions=[]", "model.dropout=0.0", "model.output=eps",
              "model.variance=fixedlarge", "training.label_dropout=0", "training.lr=0.001",
              "training.ema_decay=0.99"]


def check(cfg) -> None:
    from ..errors import ScorekitError

    if not cfg.model.num_classes or cfg.data.dataset != "digits":
        raise ScorekitError(f"--base {cfg.name}: the guidance study needs a class-conditional digits preset "
                            "(e.g. ddpm-digits-cond; the agreement judge is the digits proxy)")


def run(ctx: Context, command: str) -> dict:
    from ..evaluation.generate import samples_u8
    from ..metrics.proxy import features_and_probs
    from ..model.guidance import labels_for
    from ..rng import ImageRNG
    from ..run import load
    from ..samplers import sample, sampling_options

    base = ctx.config(Arm("base", "base"))
    k = base.model.num_classes
    arms = [Arm("conditional", "class-conditional model (label dropout)"),
            Arm("unconditional", "unconditional model", ["model.num_classes=0", "training.label_dropout=0"]),
            Arm("classifier", "noise-conditional classifier", [*CLASSIFIER, f"model.num_classes={k}"])]
    status = train_arms(ctx, arms)
    failed = [a.label for a in arms if status[a.name]]
    if failed:
        from ..errors import ScorekitError

        raise ScorekitError(f"the study needs every run; stopped: {', '.join(failed)}")
    meter = ctx.meter(base)
    labels = labels_for("all", ctx.n, k)
    classifier = load(ctx.run_dir(arms[2]), device=ctx.device)

    def measure(model, **guided) -> dict:
        opts = sampling_options(model.config.sampling)
        out = []
        for start in range(0, ctx.n, 250):
            idx = range(start, min(ctx.n, start + 250))
            d = conditional(model, labels[start:idx.stop], **guided)
            x = sample(d, model.config.sampling.sampler, (len(idx), *model.image_shape),
                       ImageRNG(ctx.seed, idx, model.device), **opts)
            out.append(samples_u8(x, model))
        images = torch.cat(out)
        _, probs = features_and_probs(images)
        return {**judged(meter, images), "agreement": float((probs.argmax(1) == labels.numpy()).mean()), "n": ctx.n}

    rows = []
    cond, uncond = load(ctx.run_dir(arms[0]), device=ctx.device), load(ctx.run_dir(arms[1]), device=ctx.device)
    for s in CFG_SCALES:
        r = measured(ctx.run_dir(arms[0]), f"{NAME}_cfg{s:g}_n{ctx.n}_seed{ctx.seed}{judges_tag(meter)}",
                     lambda s=s: measure(cond, guidance=s))
        rows.append({"method": "classifier-free", "scale": s, **r})
        ctx.say(f"    classifier-free S={s:g}: {meter.name} {r['fd']:.2f}, agreement {r['agreement']:.3f}")
    for s in CLASSIFIER_SCALES:
        r = measured(ctx.run_dir(arms[1]), f"{NAME}_classifier{s:g}_n{ctx.n}_seed{ctx.seed}{judges_tag(meter)}",
                     lambda s=s: measure(uncond, classifier=classifier, classifier_scale=s))
        rows.append({"method": "classifier", "scale": s, **r})
        ctx.say(f"    classifier K={s:g}: {meter.name} {r['fd']:.2f}, agreement {r['agreement']:.3f}")
    write_csv(ctx.folder / f"{NAME}.csv", [{k: v for k, v in r.items() if k != "fds"} for r in rows])
    from ..evaluation.plots import figure

    with figure(ctx.folder / f"{NAME}.png", ncols=2, size=(12, 4.5)) as (a, b):
        for method, marker in (("classifier-free", "o-"), ("classifier", "s--")):
            pts = [r for r in rows if r["method"] == method]
            a.plot([r["agreement"] for r in pts], [r["fd"] for r in pts], marker, label=f"{method} guidance")
            for r in pts:
                a.annotate(f"{r['scale']:g}", (r["agreement"], r["fd"]), fontsize=7, xytext=(3, 3),
                           textcoords="offset points")
            b.plot([r["scale"] for r in pts], [r["fd"] for r in pts], marker, label=f"{method}: {meter.name}")
        a.set(xlabel="class agreement (proxy classifier)", ylabel=f"{meter.name} ({ctx.n} samples, all classes)",
              title="FD against class agreement (labels: guidance scale)")
        b.set(xlabel="guidance scale (S for classifier-free, K for classifier)", ylabel=meter.name,
              title="FD against the scale")
        for ax in (a, b):
            ax.legend()
            ax.grid(alpha=0.3)
    good = [r for r in rows if r["method"] == "classifier-free" and r["agreement"] >= 0.97]
    chosen = min(good, key=lambda r: r["fd"]) if good else max(
        (r for r in rows if r["method"] == "classifier-free"), key=lambda r: r["agreement"])
    others = other_judges(meter)
    table = markdown_table(["Guidance", "scale", f"{meter.name}", *others, "class agreement"],
                           [[r["method"], r["scale"], r["fd"], *[r["fds"][o] for o in others],
                             f"{r['agreement']:.3f}"] for r in rows])
    body = (f"{ctx.base} ({ctx.steps} steps): the class-conditional model, the same model trained unconditionally, "
            f"and a noise-conditional classifier, on the same data and process; {ctx.n} samples per point, an equal "
            f"share of each of the {k} classes, the preset's sampler ({base.sampling.sampler}, "
            f"{base.sampling.steps or 'all'} steps).\n\n{table}\nChosen classifier-free scale (lowest {meter.name} "
            f"with agreement >= 0.97): S = {chosen['scale']:g} ({meter.name} {chosen['fd']:.2f}, agreement "
            f"{chosen['agreement']:.3f}).\n\n![guidance]({NAME}.png)\n")
    write_report(ctx, NAME, TITLE, body, {"rows": rows, "chosen_scale": chosen["scale"], "measure": meter.describe()},
                 command)
    return {"rows": rows, "chosen": chosen}
