"""The papers' experiments as studies: tiny versions end to end, the report against the runs' own files,
resume, the KDE baseline, and unstable runs."""

import json

import numpy as np
import pytest
import torch

from scorekit.checkpoint import load_checkpoint
from scorekit.cli import main
from scorekit.config import load_config
from scorekit.data import digits
from scorekit.run import RunDir
from scorekit.studies.memorization import kde_samples, nn_distance
from scorekit.studies.runner import Arm, Context, loss_curves, train_arms

TINY_NCSN = ["model.ngf=8", "process.num_levels=6", "sampling.n_steps_each=2"]
TINY_DDPM = ["model.ch=8", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "process.num_timesteps=20",
             "sampling.steps=0"]
FILES = {
    "ncsn-techniques": ["ncsn-techniques.csv", "ncsn-techniques.png", "ncsn-techniques.json"],
    "ema": ["ema.csv", "ema.png", "ema.json"],
    "memorization": ["memorization.csv", "memorization_losses.csv", "memorization_losses.png",
                     "memorization_distances.png", "memorization_model_neighbours.png",
                     "memorization_kde_neighbours.png", "memorization.json"],
    "ddpm-objectives": ["ddpm-objectives.csv", "ddpm-objectives.json"],
    "guidance": ["guidance.csv", "guidance.png", "guidance.json"],
    "recipes": ["recipes.csv", "recipes.png", "recipes.json"],
    "few-step": ["few-step.csv", "few-step.png", "few-step.json"],
    "flows": ["flows.csv", "flows.json"],
    "autoguidance": ["autoguidance.csv", "autoguidance_samplers.csv", "autoguidance.png", "autoguidance_samplers.png",
                     "autoguidance.json"],
}


def study(name, folder, *extra):
    overrides = {"ddpm-objectives": TINY_DDPM, "guidance": TINY_DDPM, "recipes": TINY_DDPM + TINY_NCSN,
                 "few-step": TINY_DDPM, "flows": TINY_DDPM, "autoguidance": TINY_DDPM}
    overrides = overrides.get(name, TINY_NCSN)
    assert main(["study", name, "--out", str(folder), "--steps", "6", "--n", "24", "--checkpoints", "2",
                 "--no-progress", *extra, *overrides, "training.batch_size=16"]) == 0
    return json.loads((folder / f"{name}.json").read_text())


def _eval(folder, arm, key):
    return json.loads((folder / "runs" / arm / "eval" / f"{key}.json").read_text())


@pytest.mark.parametrize("name", list(FILES))
def test_tiny_studies_run_end_to_end_and_report_the_runs_own_numbers(name, tmp_path, capsys, monkeypatch):
    import scorekit.studies.autoguidance as ag
    import scorekit.studies.flows as fl
    import scorekit.studies.ncsn_techniques as nt
    import scorekit.studies.recipes as rc

    monkeypatch.setattr(nt, "NCSN_V1", [*nt.NCSN_V1[:3], "sampling.n_steps_each=2", nt.NCSN_V1[4]])  # fast sampling
    monkeypatch.setattr(rc, "SEEDS", 2)
    monkeypatch.setattr(rc, "SWEEP", (0.05, 0.1, 0.2))
    monkeypatch.setattr(fl, "SEEDS", 2)
    monkeypatch.setattr(fl, "BPD_IMAGES", 4)
    monkeypatch.setattr(fl, "PAIRS", 32)
    monkeypatch.setattr(fl, "STUDENTS", [("fm", "reflow"), ("ncsnv2-unet", "reflow"), ("ncsnv2-unet", "cd")])
    for key, value in (("SEEDS", 2), ("VERDICT_SEEDS", 3), ("WEIGHTS", (1.3, 2.0)), ("INTERVAL_WEIGHTS", (2.0,)),
                       ("BUDGETS", (3, 5)), ("SAMPLERS", ("ancestral", "heun", "dpm2m_sde", "unipc"))):
        monkeypatch.setattr(ag, key, value)
    res = study(name, tmp_path)
    for f in ["report.md", *FILES[name]]:
        if f.endswith(".csv"):  # a header and a row per measurement (short numbers can make it under 100 bytes)
            assert len((tmp_path / f).read_text().strip().splitlines()) >= 3, f
        else:
            assert (tmp_path / f).stat().st_size > 100, f
    assert res["protocol"]["study"] == name and res["protocol"]["steps"] == 6
    report = (tmp_path / "report.md").read_text()
    if name == "ncsn-techniques":
        assert [r["model"] for r in res["rows"]] == ["NCSN", "NCSN_{1,2,4}", "NCSN_{1,2,4,5}", "NCSNv2"]
        for arm, label in (("ncsn", "NCSN"), ("ncsnv2", "NCSNv2")):
            for p in res["curves"][label]:
                assert p == _eval(tmp_path, arm, f"ncsn-techniques_step{p['step']}_n24_seed0_proxy-hog")
        assert "HOG FD: final (without denoising)" in report
        assert load_config(tmp_path / "runs" / "ncsn" / "config.yaml").model.arch == "ncsn"
        assert load_config(tmp_path / "runs" / "ncsn_1245" / "config.yaml").training.ema_decay > 0
        assert load_config(tmp_path / "runs" / "ncsn_124" / "config.yaml").training.ema_decay == 0
    elif name == "ema":
        for p in res["points"]:
            ema = _eval(tmp_path, "run", f"ema_step{p['step']}_ema_n24_seed0_proxy-hog")
            assert p["fd_ema"] == ema["fd"] == ema["fds"]["proxy FD"] and p["HOG FD EMA"] == ema["fds"]["HOG FD"]
            assert p["fd_raw"] == _eval(tmp_path, "run", f"ema_step{p['step']}_raw_n24_seed0_proxy-hog")["fd"]
        assert "HOG FD: final, mean" in report
        assert f"{res['points'][-1]['fd_ema']:.2f}" in report
    elif name == "memorization":
        curves = loss_curves(tmp_path / "runs" / "run")
        assert res["final_losses"]["test_loss"] == curves["test_loss"][-1][1]
        assert len(curves["test_loss"]) == 6  # test_every = steps // 40, at least 1
        kde = next(d for d in res["distances"] if d["images"] == "KDE baseline samples")
        assert kde["copies"] == 1.0  # the KDE baseline returns training images
    elif name == "guidance":
        rows = res["rows"]
        assert [r["scale"] for r in rows if r["method"] == "classifier-free"] == [0, 0.5, 1, 1.5, 2, 3, 5]
        first = _eval(tmp_path, "conditional", "guidance_cfg0_n24_seed0_proxy-hog")
        assert rows[0]["fd"] == first["fd"] and rows[0]["agreement"] == first["agreement"]
        assert rows[0]["fds"]["HOG FD"] == first["fds"]["HOG FD"] and "| HOG FD |" in report
        assert load_config(tmp_path / "runs" / "classifier" / "config.yaml").model.arch == "classifier"
    elif name == "recipes":
        rows = {(r["arm"], r["sampler"]): r for r in res["rows"]}
        assert {a for a, _ in rows} == {"base", "edm", "edm_aug", "edm_300", "edm_300_aug", "ncsnv2", "ncsnv2_edm"}
        edm = rows[("edm", "heun 18")]
        kept = [_eval(tmp_path, "edm", f"recipes_ema_heun_steps18_n24_seed{s}_proxy-hog") for s in (0, 1)]
        seeds = [k["fd"] for k in kept]
        assert edm["fds"] == seeds and edm["fd"] == pytest.approx(np.mean(seeds)) and edm["nfe"] == 35
        assert edm["others"]["HOG FD"]["fd"] == pytest.approx(np.mean([k["fds"]["HOG FD"] for k in kept]))
        assert "HOG FD (mean ± sd)" in report
        assert rows[("base", "ancestral 20")]["nfe"] == 20
        cfg = load_config(tmp_path / "runs" / "ncsnv2_edm" / "config.yaml")
        assert (cfg.model.arch, cfg.model.precond, cfg.process.kind) == ("ncsnv2", "edm", "ve")
        assert load_config(tmp_path / "runs" / "edm_300_aug" / "config.yaml").data.max_images == 300
        # one training trajectory: the stored 0.05 EMA rebuilt post hoc is the one tracked directly
        post = next(r for r in res["posthoc"] if r["sigma_rel"] == 0.05)
        direct = next(r for r in res["direct"] if r["sigma_rel"] == 0.05)
        assert post["fds"] == pytest.approx(direct["fds"], rel=1e-3)
        a, b = (load_checkpoint(RunDir(tmp_path / "runs" / arm).latest()) for arm in ("edm", "edm_direct"))
        assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    elif name == "few-step":
        rows = {(r["run"], r["sampler"]): r for r in res["rows"]}
        assert {r["method"] for r in res["rows"]} == {"teacher", "ect", "cd", "pd", "ct"}
        assert {r["teacher"] for r in res["rows"]} == {"ddpm", "ncsnv2-unet"}
        one = rows[("ect from ddpm-digits", "consistency 1")]
        assert one["nfe"] == 1 and rows[("cd from ncsnv2-unet-digits", "consistency 4")]["nfe"] == 4
        kept = [_eval(tmp_path, "ddpm-ect", f"few-step_consistency_steps1_n24_seed{s}_proxy-hog") for s in range(5)]
        for name in ("proxy FD", "HOG FD"):  # both judges, each the mean of its 5 seeds with their t interval
            j = one["judges"][name]
            values = [k["fds"][name] for k in kept]
            half = 2.7764 * np.std(values, ddof=1) / np.sqrt(5)
            assert j["values"] == values and j["fd"] == pytest.approx(np.mean(values))
            assert (j["low"], j["high"]) == pytest.approx((np.mean(values) - half, np.mean(values) + half), rel=1e-4)
            teacher = next(r for r in res["rows"] if r["teacher"] == "ddpm" and r["method"] == "teacher"
                           and "(default)" in r["sampler"])["judges"][name]
            assert j["ratio"] == pytest.approx(j["fd"] / teacher["fd"])
            assert j["ratio_low"] < j["ratio"] < j["ratio_high"]
        assert one["fd"] == one["judges"]["proxy FD"]["fd"]
        assert "ratio [95% CI]" in report and ("met" in report or "within noise" in report or "missed" in report)
        full = rows[("ddpm-digits (teacher)", "ancestral 20 (all levels)")]
        assert full["nfe"] == 20 and full["seeds"] == 1 and one["seeds"] == 5
        assert rows[("pd from ddpm-digits", "DDIM 2 (its levels)")]["nfe"] == 2
        assert one["images_vs_teacher"] == pytest.approx(2 / 6)  # 0.4 x 6 steps, rounded
        student = load_config(tmp_path / "runs" / "ddpm-ect" / "config.yaml")
        assert student.model.consistency and student.model.output == "v" and student.fewstep.teacher
    elif name == "flows":
        rows = {r["arm"]: r for r in res["rows"]}
        assert list(rows) == ["ddpm", "edm", "fm-uniform", "fm"]
        for arm, row in rows.items():
            files = sorted((tmp_path / "runs" / arm / "eval").glob("flows_*_n24_seed*_proxy-hog.json"))
            kept = [json.loads(f.read_text()) for f in files]
            assert [f.name.split("_seed")[1][0] for f in files] == ["0", "1"]
            assert row["judges"]["HOG FD"]["values"] == [k["fds"]["HOG FD"] for k in kept]
            bpd = _eval(tmp_path, arm, "flows_ode_bpd_n4_seed0")
            assert row["bpd"] == bpd["bpd"] and bpd["n"] == 4
        assert rows["edm"]["judges"]["proxy FD"]["ratio"] == 1.0 and rows["edm"]["time_vs_edm"] == 1.0
        assert rows["fm"]["sampler"] == "heun" and rows["ddpm"]["sampler"] == "dpm2m_sde"  # sampling.steps=0 here
        assert load_config(tmp_path / "runs" / "fm-uniform" / "config.yaml").training.t_sampling == "uniform"
        assert load_config(tmp_path / "runs" / "fm" / "config.yaml").process.kind == "flow"
        assert "fm-digits no worse than edm-digits" in report
        students = {(r["teacher"], r["method"], r["nfe"]): r for r in res["students"]}
        assert set(students) == {(t, m, k) for t, m in fl.STUDENTS for k in (1, 2)}
        fm_rf = students[("fm", "reflow", 1)]["judges"]["HOG FD"]
        assert fm_rf["ratio"] == pytest.approx(fm_rf["fd"] / rows["fm"]["judges"]["HOG FD"]["fd"])
        for tag, method in fl.STUDENTS:
            cfg = load_config(tmp_path / "runs" / f"{tag}-{method}" / "config.yaml")
            assert cfg.training.loss == method and (method != "reflow" or cfg.fewstep.pairs == 32)
        assert students[("ncsnv2-unet", "cd", 2)]["nfe"] == 2 and students[("fm", "reflow", 1)]["nfe"] == 1
        assert "reflow from ncsnv2-unet, 2 NFE, within 1.15x its teacher" in report
    elif name == "autoguidance":
        rows = {(r["guide"], r["weight"], bool(r["interval"])): r for r in res["rows"]}
        assert set(rows) == {(g, w, i) for g in ("kept", "raw", "small") for w, i in ((1.3, 0), (2.0, 0), (2.0, 1))}
        none = res["none"]["judges"]
        for (guide, w, inside), row in rows.items():
            key = f"autoguidance_{guide}_w{w:g}" + ("_i0.28-5.42" if inside else "")
            files = sorted((tmp_path / "runs" / "main" / "eval").glob(f"{key}_dpm2m_sde_*n24_seed*_proxy-hog.json"))
            assert len(files) in (2, 3)  # the chosen one has its verdict seeds too
            for judge, j in row["judges"].items():
                values = [json.loads(f.read_text())["fds"][judge] for f in files[:2]]
                assert j["values"] == values and j["ratio"] == pytest.approx(np.mean(values) / none[judge]["fd"])
        assert res["chosen"]["seeds"] == 3 and len(res["chosen"]["judges"]["HOG FD"]["values"]) == 3
        kept = load_checkpoint(RunDir(tmp_path / "runs" / "main").guide_path)
        assert kept.step == 4  # 0.6 of 6 steps
        record = json.loads(RunDir(tmp_path / "runs" / "main").guide_choice_path.read_text())
        best = min((r for r in res["rows"] if r["guide"] == "kept"),
                   key=lambda r: max(j["ratio"] for j in r["judges"].values()))
        helps = max(j["ratio"] for j in best["judges"].values()) < 1  # else unguided (w = 1) is recorded
        assert record["guidance"] == (best["weight"] if helps else 1.0)
        assert record["best_weight_tried"] == best["weight"]
        small = load_config(tmp_path / "runs" / "small" / "config.yaml")
        assert (small.model.ch, small.training.steps) == (4, 3)
        assert rows[("kept", 1.3, False)]["cost"] == 0 and 0 < rows[("small", 1.3, False)]["cost"]
        for r in res["sweep"]:
            assert r["nfe"] <= r["budget"], r
        assert {r["sampler"] for r in res["sweep"]} == {"ancestral", "heun", "dpm2m_sde", "unipc"}
        assert "target at most 0.85x" in report
    else:
        rows = {r["arm"]: r for r in res["rows"]}
        assert len(rows) == 6
        for arm, row in rows.items():
            if row["status"] == "trained":
                kept = _eval(tmp_path, arm, "ddpm-objectives_n24_seed0_proxy-hog")
                assert row["fd"] == kept["fd"] and row["fds"]["HOG FD"] == kept["fds"]["HOG FD"]
                assert f"{row['bpd']:.3f}" in report
        assert load_config(tmp_path / "runs" / "mean_l_learned" / "config.yaml").model.variance == "learned"


def test_a_resumed_study_gives_the_same_report(tmp_path):
    from scorekit.studies.ema import DEFAULT_BASE
    from scorekit.training import train_run

    full = study("ema", tmp_path / "a")
    ctx = Context(tmp_path / "b", DEFAULT_BASE, [*TINY_NCSN, "training.batch_size=16"], 6, n=24, checkpoints=2)
    arm = Arm("run", "the base preset")
    overrides = [o for o in ctx.arm_overrides(arm) if not o.startswith("training.steps")] + ["training.steps=4"]
    train_run(DEFAULT_BASE, ctx.run_dir(arm), overrides, device="cpu", progress=False, evaluate=False)
    resumed = study("ema", tmp_path / "b")  # picks the run up at step 4, trains to 6, measures
    assert resumed["points"] == full["points"]
    again = study("ema", tmp_path / "b")  # everything done: nothing retrained, the same numbers read back
    assert again["points"] == full["points"]


def test_the_kde_baseline_returns_training_images_and_a_noised_copy_does_not():
    cfg = load_config("ncsnv2-digits", ["sampling.n_steps_each=5"])
    train = digits("train").images[:20]
    samples = kde_samples(cfg, train, 20, seed=0, device="cpu")
    assert np.max(nn_distance(samples, train)) < 1.0  # on a training image (uint8 units, whole image)
    noised = (train.float() + 12 * torch.randn(train.shape, generator=torch.Generator().manual_seed(0)))
    noised = noised.clamp(0, 255).round().to(torch.uint8)
    assert np.min(nn_distance(noised, train)) > 40.0


def test_an_unstable_run_is_reported_as_such_and_not_retrained(tmp_path, monkeypatch, capsys):
    import scorekit.training.loop as tr

    real = tr.objective

    def diverging(cfg, *a, **kw):  # the learned-variance arm's losses are NaN
        return real(cfg, *a, **kw) * (float("nan") if cfg.model.variance == "learned" else 1)

    monkeypatch.setattr(tr, "objective", diverging)
    ctx = Context(tmp_path, "ddpm-digits", [*TINY_DDPM, "training.batch_size=16", "training.max_nonfinite=2"], 4,
                  n=24, checkpoints=2, progress=False)
    arms = [Arm("stable", "fixed", ["training.loss=kl"]),
            Arm("unstable", "learned", ["model.variance=learned", "training.loss=kl"])]
    status = train_arms(ctx, arms)
    assert status["stable"] is None and "2 non-finite losses or gradients in a row" in status["unstable"]
    assert train_arms(ctx, arms) == status  # the FAILED note is read back: not retrained
    assert "stopped before" in capsys.readouterr().out


def test_study_refuses_a_base_of_the_wrong_family(tmp_path, capsys):
    assert main(["study", "ncsn-techniques", "--out", str(tmp_path / "x"), "--base", "ddpm-digits"]) == 2
    assert "needs an NCSN preset" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["study", "ddpm-objectives", "--out", str(tmp_path / "x"), "--base", "ncsnv2-digits"]) == 2
    assert "needs a DDPM preset" in capsys.readouterr().err and not (tmp_path / "x").exists()
