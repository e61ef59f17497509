"""The Hydra config tree composes as documented."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from conftest import REPO, compose_config


def test_defaults_are_the_documented_main_command() -> None:
    cfg = compose_config([])
    assert (cfg.method.name, cfg.model.name, cfg.dataset.name) == ("l1", "resnet56", "cifar10")
    assert cfg.trainer.name == "hrankplus_finetune" and cfg.baseline.trainer.name == "cifar_baseline"
    assert (cfg.baseline.trainer.epochs, cfg.baseline.trainer.lr, list(cfg.baseline.trainer.milestones)) == (200, 0.1, [100, 150])
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.trainer.weight_decay) == (150, 256, 5e-4)
    assert cfg.results.csv == "results/runs.csv" and cfg.logger.name == "none"


def test_smoke_shrinks_every_training_phase() -> None:
    cfg = compose_config(["trainer=smoke"])
    assert cfg.trainer.limit_steps == cfg.baseline.trainer.limit_steps == 2
    assert cfg.baseline.trainer.name == "smoke"


def test_imagenet_dataset_implies_224_pixels_and_1000_classes() -> None:
    cfg = compose_config(["dataset=imagenet", "model=hub"])
    assert (cfg.dataset.input_size, cfg.dataset.num_classes, cfg.model.name) == (224, 1000, "resnet50")


def test_slurm_launcher_composes_to_a_submitit_job_array() -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.max_num_timeout > 0 and "%j" in launcher.submitit_folder


def test_wandb_logger_defaults_to_offline() -> None:
    cfg = compose_config(["logger=wandb"])
    assert (cfg.logger.name, cfg.logger.mode) == ("wandb", "offline")
