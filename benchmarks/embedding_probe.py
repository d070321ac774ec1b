"""How much an image encoder's embedding says about where the nuclei are: a linear probe.

Each 64x64 cell of the (1, 256, 64, 64) embedding is a 256-vector; a ridge regression
(least squares, numpy) is fitted from it to the fraction of that cell covered by nuclei on
``--train`` synthetic images (:func:`napari_mobilesam.evaluation.synthetic.synthetic_nuclei`)
and scored on ``--val`` held-out ones: R² near 1 means the embedding shows the nuclei, near 0
that it holds nothing a decoder could read them from. Printed for the raw image and, as a
control, for a probe that sees the image itself (its mean intensity per cell).

Why it matters: decoder fine-tuning (``benchmarks/train_decoder.py``) from the test fixtures'
random seed-0 encoder can only learn what the prompt's geometry tells, not what the image
shows.

Run: ``python benchmarks/embedding_probe.py [--weights mobile_sam.pt] [--side 256]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
GRID = 64


def cell_means(image: np.ndarray, side: int) -> np.ndarray:
    """(side, side) image -> (GRID², ) means over the cells the embedding's grid covers."""
    cell = side // GRID
    return image.reshape(GRID, cell, GRID, cell).mean(axis=(1, 3)).ravel()


def features(model, seeds, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embedding vectors, intensity per cell and nucleus fraction per cell of each image."""
    import torch

    from napari_mobilesam.engines.calibration import encoder_input
    from napari_mobilesam.evaluation.synthetic import synthetic_nuclei
    from napari_mobilesam.imaging.convert import to_rgb_uint8

    vectors, intensity, cover = [], [], []
    for seed in seeds:
        image, labels = synthetic_nuclei((side, side), seed=seed)
        x, _ = encoder_input(model, to_rgb_uint8(image))
        with torch.inference_mode():
            embedding = model.image_encoder(x)[0].numpy()  # (256, 64, 64)
        vectors.append(embedding.reshape(256, -1).T)
        intensity.append(cell_means(image.astype(float), side))
        cover.append(cell_means((labels > 0).astype(float), side))
    return np.concatenate(vectors), np.concatenate(intensity), np.concatenate(cover)


def ridge_r2(x_train, y_train, x_val, y_val, alpha: float = 1.0) -> float:
    """Held-out R² of a ridge regression (with intercept)."""
    x_train = np.column_stack([x_train, np.ones(len(x_train))])
    x_val = np.column_stack([x_val, np.ones(len(x_val))])
    gram = x_train.T @ x_train + alpha * np.eye(x_train.shape[1])
    weights = np.linalg.solve(gram, x_train.T @ y_train)
    residual = ((x_val @ weights - y_val) ** 2).sum()
    return float(1 - residual / ((y_val - y_val.mean()) ** 2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(SHARED / "parity" / "mobile_sam_seed0.pt"))
    parser.add_argument("--train", type=int, default=6)
    parser.add_argument("--val", type=int, default=2)
    parser.add_argument("--side", type=int, default=256, help="a multiple of 64")
    args = parser.parse_args()

    from napari_mobilesam.weights.build import build_mobile_sam

    model = build_mobile_sam(args.weights)
    train = features(model, range(args.train), args.side)
    val = features(model, range(100, 100 + args.val), args.side)
    from_embedding = ridge_r2(train[0], train[2], val[0], val[2])
    from_image = ridge_r2(train[1][:, None], train[2], val[1][:, None], val[2])
    print(f"weights: {args.weights}")
    print("| probe input | held-out R² of nucleus cover per cell |")
    print("|---|---|")
    print(f"| image embedding (256 per cell) | {from_embedding:.3f} |")
    print(f"| image intensity (control) | {from_image:.3f} |")


if __name__ == "__main__":
    main()
