"""Prints a preset's parameter counts per sub-network, its sizes and output shapes.

python -m handshape_tf.models.summary --preset paper
"""

from __future__ import annotations

import argparse

from handshape_tf.cli import add_verbose_argument, setup_logging


def main(argv: list[str] | None = None) -> None:
    from handshape_tf.models.config import ModelConfig

    parser = argparse.ArgumentParser(
        prog="python -m handshape_tf.models.summary",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="paper", choices=ModelConfig.preset_names())
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    from handshape_tf.config_utils import parse_overrides
    from handshape_tf.models.network import build_model, model_hierarchy

    config = ModelConfig.preset(args.preset, **parse_overrides(args.set))
    model = build_model(config)
    hierarchy = model_hierarchy(config)
    print(
        f"preset {args.preset}: input {config.image_size}x{config.image_size}x3, heat-maps "
        f"{config.heatmap_size}x{config.heatmap_size}x{config.num_keypoints}, latent {config.latent_size}, "
        f"graph levels {' -> '.join(map(str, reversed(hierarchy.level_sizes)))} nodes "
        f"({hierarchy.num_vertices} mesh vertices)"
    )
    print(f"{'sub-network':16} {'parameters':>12} {'trainable':>12}")
    for layer in model.layers:
        if layer.count_params():
            trainable = sum(int(w.numpy().size) for w in layer.trainable_weights)
            print(f"{layer.name:16} {layer.count_params():>12,} {trainable:>12,}")
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    print(f"{'total':16} {model.count_params():>12,} {trainable:>12,}")
    for name, spec in model.output.items():
        shapes = [tuple(t.shape) for t in spec] if isinstance(spec, list) else tuple(spec.shape)
        print(f"output {name}: {shapes}")


if __name__ == "__main__":
    main()
