"""Stage base_model: write models/base (HF checkpoint) and models/base.json from params `model`."""

from pathlib import Path

from qlora_diff.cli import run_stage
from qlora_diff.config import Config


def main(cfg: Config) -> None:
    from qlora_diff.base_model import build_base_model

    info = build_base_model(cfg, Path("models/base"), Path("models/base.json"))
    print(f"base model: {info['source']} {info['path']} -> models/base ({info['parameters']:,} parameters)")


if __name__ == "__main__":
    run_stage(main, __doc__)
