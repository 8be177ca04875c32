"""Download datasets into a data_dir, e.g. `python -m trainables.datasets mnist --data-dir data`."""

from __future__ import annotations

import argparse
import sys

from trainables.datasets import DATASETS, DatasetUnavailable, load_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainables.datasets", description=__doc__)
    parser.add_argument("names", nargs="+", choices=sorted(DATASETS), metavar="NAME")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args(argv)
    for name in args.names:
        try:
            data = load_dataset(name, args.data_dir, download=True)
        except DatasetUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(
            f"{name}: train {len(data.y_train)}, val {len(data.y_val)}, test {len(data.y_test)}, "
            f"input {data.input_shape}, {data.num_classes} classes, in {args.data_dir}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
