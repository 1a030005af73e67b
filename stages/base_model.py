"""Stage base_model: write models/base (HF checkpoint) and models/base.json from params `model`."""

from qlora_diff.core import paths
from qlora_diff.core.cli import run_stage
from qlora_diff.core.config import Config


def main(cfg: Config) -> None:
    from qlora_diff.model.base_model import build_base_model

    info = build_base_model(cfg, paths.BASE_MODEL, paths.BASE_MODEL_INFO)
    print(f"base model: {info['source']} {info['path']} -> {paths.BASE_MODEL} ({info['parameters']:,} parameters)")


if __name__ == "__main__":
    run_stage(main, __doc__, downloads=lambda cfg: cfg.model.source == "hub")
