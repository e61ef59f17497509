"""Stability of energy-aware scores to the scoring images: data size, Gaussian noise, accuracy per N.

    python experiments/energy_aware_stability.py [--small] [--dry-run] [hydra overrides ...]

Settings: `stability` in conf/experiment/energy_aware_stability.yaml (see there for the protocol).
Scores are taken on the cached dense baseline of that config (with --small: the one
experiments/energy_aware_cifar10.py trained, one image seed).  Writes
results/curves/energy_aware_stability{,-accuracy}.csv (tidy), a JSON of settings and provenance,
and results/plots/energy_aware_stability-{images,noise,accuracy}.png; the fine-tuned runs' full
records go to results/curves/energy_aware_stability-runs.csv.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shlex

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from driver import REPO, parser
from energy_aware_cifar10 import small_settings
from prunelab import pipeline
from prunelab.data import build_dataset
from prunelab.methods.base import Context
from prunelab.methods.channel import ChannelPruning
from prunelab.methods.energy_aware import agreement, image_range, prefix_scores, score, scored_members, with_noise
from prunelab.record import command_line, device_name, git_sha, utc_timestamp
from prunelab.report.plots import baseline_line, errorbar_lines, finish_axes, new_figure, save_png
from prunelab.surgery import channel_groups
from prunelab.train.baseline import dense_baseline
from prunelab.train.distributed import World, pick_device

EXPERIMENT = "energy_aware_stability"
CURVES, PLOTS = REPO / "results" / "curves", REPO / "results" / "plots"
METRIC_LABELS = {"spearman": "Spearman correlation with the reference", "jaccard": "Jaccard overlap of kept sets"}


def load_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"experiment={EXPERIMENT}", *overrides])


def stream(method: ChannelPruning, ctx: Context, images: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `images` scoring images of the training stream of `seed` (the method's augmentation)."""
    sized = copy.deepcopy(method)
    sized.cfg.scoring.images = images
    return sized.scoring_batches(dataclasses.replace(ctx, seed=seed))


def score_agreement(cfg: DictConfig) -> tuple[pd.DataFrame, int]:
    """Tidy rows (criterion, study: images | noise, images, noise, seed, layer, metric, value) and the reference's size."""
    st = cfg.stability
    device = pick_device(str(cfg.device), World())
    data = build_dataset(cfg.dataset, device)
    model = dense_baseline(cfg, data, device, World()).model
    method = ChannelPruning(cfg.method)
    groups = channel_groups(model, data.input_shape, str(cfg.method.stage_mode))
    rates = method.rates(groups)
    members = scored_members(groups, rates, cfg.method.scoring.feature == "pre_add")
    ctx = Context(data, device, int(cfg.seed), cfg.trainer, model, str(cfg.model.name))
    reference_images = stream(method, ctx, int(st.reference_images), int(st.reference_seed))
    sizes = [int(n) for n in st.images]
    rows = []
    for criterion in st.criteria:
        reference = score(model, str(criterion), members, reference_images)
        for seed in st.seeds:
            images = stream(method, ctx, max(max(sizes), int(st.noise_images)), int(seed))
            for n, scores in prefix_scores(model, str(criterion), members, images, sizes, int(seed)).items():
                rows += [{"criterion": criterion, "study": "images", "images": n, "noise": 0.0, "seed": seed, **r}
                         for r in agreement(scores, reference, groups, rates)]
            clean = image_range(images, 0, int(st.noise_images))
            for sigma in st.noise:
                noisy = score(model, str(criterion), members, with_noise(clean, float(sigma), int(seed)), int(seed))
                rows += [{"criterion": criterion, "study": "noise", "images": int(st.noise_images), "noise": float(sigma),
                          "seed": seed, **r} for r in agreement(noisy, reference, groups, rates)]
            print(f"{criterion} seed {seed}: done", flush=True)
    return pd.DataFrame(rows), sum(len(labels) for _, labels in reference_images)


def accuracy_runs(cfg: DictConfig, overrides: list[str]) -> pd.DataFrame:
    """Prune with the first N scoring images and fine-tune, for N in `stability.accuracy_images`."""
    rows = []
    for n in cfg.stability.accuracy_images:
        run_cfg = load_config([*overrides, f"method.scoring.images={int(n)}",
                               f"results.csv={CURVES / f'{EXPERIMENT}-runs.csv'}"])
        run_dir = REPO / "outputs" / EXPERIMENT / f"images{int(n)}-seed{int(run_cfg.seed)}"
        command = shlex.join(["python", "run.py", f"experiment={EXPERIMENT}", *overrides, f"method.scoring.images={int(n)}"])
        record = pipeline.run(run_cfg, run_dir, command)
        rows.append({"criterion": record["method"], "images": int(n), "seed": record["seed"],
                     "acc_compressed": record["acc_compressed"], "acc_final": record["acc_final"],
                     "base_acc": record["base_acc"], "epochs_finetune": record["epochs_finetune"]})
    return pd.DataFrame(rows)


def log_ticks(ax, values) -> None:
    """Log-scale x axis ticked at the measured values, printed plainly."""
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(values)), [f"{v:g}" for v in sorted(set(values))])
    ax.minorticks_off()


def agreement_figure(frame: pd.DataFrame, study: str, x: str, xlabel: str, title: str):
    part = frame[(frame["study"] == study) & frame["metric"].isin(list(METRIC_LABELS))]
    fig, axes = new_figure(ncols=2)
    for i, (ax, metric) in enumerate(zip(axes, METRIC_LABELS, strict=True)):
        errorbar_lines(ax, part[part["metric"] == metric], x=x, y="value", hue="criterion")
        log_ticks(ax, part[x])
        finish_axes(ax, xlabel=xlabel, ylabel=METRIC_LABELS[metric],
                    title="mean ± std over layers and image seeds", legend=i == 0)
    fig.suptitle(title)
    return fig


def accuracy_figure(frame: pd.DataFrame, title: str):
    fig, (ax,) = new_figure()
    tidy = pd.concat([frame.assign(phase="right after pruning", acc=frame["acc_compressed"]),
                      frame.assign(phase="after fine-tuning", acc=frame["acc_final"])])
    tidy["line"] = tidy["criterion"] + ", " + tidy["phase"]
    errorbar_lines(ax, tidy, x="images", y="acc", hue="line", color_by="criterion")
    baseline_line(ax, float(frame["base_acc"].mean()))
    log_ticks(ax, frame["images"])
    finish_axes(ax, xlabel="images used for scoring (N, log scale)", ylabel="top-1 accuracy (%)",
                title=f"fine-tuning: {int(frame['epochs_finetune'].iloc[0])} epoch(s)")
    fig.suptitle(title)
    return fig


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    overrides = [*small_settings(), "seed=0", "stability.seeds=[0]"] if args.small else []
    overrides += args.overrides
    cfg = load_config(overrides)
    if args.dry_run:
        print(OmegaConf.to_yaml(cfg.stability))
        return
    CURVES.mkdir(parents=True, exist_ok=True)
    agree, reference_size = score_agreement(cfg)
    agree.to_csv(CURVES / f"{EXPERIMENT}.csv", index=False)
    accuracy = accuracy_runs(cfg, overrides)
    accuracy.to_csv(CURVES / f"{EXPERIMENT}-accuracy.csv", index=False)
    device = pick_device(str(cfg.device), World())
    (CURVES / f"{EXPERIMENT}.json").write_text(json.dumps({
        "command": command_line(), "git_sha": git_sha(REPO), "device": device_name(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "timestamp": utc_timestamp(),
        "reference_images_used": reference_size, "model": str(cfg.model.name), "dataset": str(cfg.dataset.name), "rates": str(cfg.method.compress_rate),
        "stability": OmegaConf.to_container(cfg.stability), "baseline_recipe": OmegaConf.to_container(cfg.baseline.trainer),
    }, indent=2) + "\n")
    what = f"{cfg.model.name} on {cfg.dataset.name}"
    save_png(agreement_figure(agree, "images", "images", "images used for scoring (N, log scale)",
                              f"{what}: filter scores from N images vs {reference_size} reference images"),
             PLOTS / f"{EXPERIMENT}-images.png")
    save_png(agreement_figure(agree, "noise", "noise", "Gaussian noise std on normalised pixels (log scale)",
                              f"{what}: scores from {int(cfg.stability.noise_images)} noisy images vs clean reference"),
             PLOTS / f"{EXPERIMENT}-noise.png")
    save_png(accuracy_figure(accuracy, f"{what}: accuracy when scoring with N images"), PLOTS / f"{EXPERIMENT}-accuracy.png")


if __name__ == "__main__":
    main()
