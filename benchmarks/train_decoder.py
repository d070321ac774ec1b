"""Decoder fine-tuning on a CPU: time per epoch against objects, held-out IoU before/after.

For both decoders that :func:`napari_mobilesam.training.decoder.train_decoder` fine-tunes
(MobileSAMv2's prompt-guided box decoder, and ``mobile_sam.pt``'s prompt encoder + mask
decoder), on synthetic nuclei (:func:`napari_mobilesam.evaluation.synthetic.synthetic_nuclei`)
with known labels: for each number of objects per image, ``--train`` training and ``--val``
held-out images of ``--side``² pixels are encoded once into an embedding store, then the
decoder is trained ``--epochs`` epochs. Reported: seconds per epoch (training and
validation), the held-out mean IoU of box- and point-prompted masks before training
(epoch 0) and at the best epoch, and the peak resident memory of the training process
(psutil, sampled every 10 ms), over the whole row and above the memory held when training
starts (after encoding).

Defaults use the test fixtures (random seed-0 MobileSAM weights and MobileSAMv2's real box
decoder) and the package's default recipe (``--lr`` unset). SegAny's decoder starts, as in
the tests, from the box decoder's weights put into the seed-0 ``mobile_sam.pt``
(``--segany-start own``: from the seed-0 decoder itself, which learns nothing from the
seed-0 encoder's embeddings; see ``benchmarks/embedding_probe.py``). ``--encoder-scale S`` is an
experiment only: it multiplies the encoder's last LayerNorm (``neck.3``) by S. Prints a
Markdown table.

Run: ``python benchmarks/train_decoder.py [--weights PATH] [--box-decoder PATH]
[--objects 10 20 40] [--epochs 3] [--lr RATE]``
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

import numpy as np
import psutil

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def _items(objects: int, count: int, side: int, first_seed: int) -> list:
    from napari_mobilesam.evaluation.synthetic import synthetic_nuclei
    from napari_mobilesam.training.annotations import annotated_image

    return [
        annotated_image(
            *synthetic_nuclei((side, side), n_objects=objects, seed=seed), f"n{objects}_{seed}"
        )
        for seed in range(first_seed, first_seed + count)
    ]


def _scaled_weights(path: str, scale: float, work: Path) -> str:
    """``path`` with the image encoder's last LayerNorm (``neck.3``) multiplied by ``scale``."""
    import torch

    if scale == 1:
        return path
    state = torch.load(path, weights_only=True)
    for name in ("image_encoder.neck.3.weight", "image_encoder.neck.3.bias"):
        state[name] = state[name] * scale
    scaled = work / f"encoder_x{scale}.pt"
    torch.save(state, scaled)
    return str(scaled)


class PeakMemory:
    """Peak resident memory of this process, sampled in a thread while in the block."""

    def __init__(self, interval: float = 0.01) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._done = threading.Event()
        self.peak = self.start = self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._done.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def _row(kind: str, objects: int, args: argparse.Namespace, work: Path) -> str:
    from napari_mobilesam.training.decoder import train_decoder

    train = _items(objects, args.train, args.side, 0)
    validation = _items(objects, args.val, args.side, 1000)
    base = args.box_decoder
    name = kind
    if kind == "mobile_sam":
        base, name = args.weights, "mobile_sam (its own decoder)"
        if args.segany_start == "box_decoder":
            from napari_mobilesam.training.decoder_files import mobile_sam_with_box_decoder

            base = mobile_sam_with_box_decoder(args.weights, args.box_decoder, work / "start.pt")
            name = "mobile_sam (decoder from the box decoder)"
    at_start = []  # resident memory when epoch 0 is reported (encoding done)

    def note_memory(report) -> None:
        if report.epoch == 0:
            at_start.append(psutil.Process().memory_info().rss)

    with PeakMemory() as memory:
        result = train_decoder(
            train,
            validation,
            work / f"{kind}_{objects}.pt",
            base=base,
            image_encoder=None if kind == "mobile_sam" else args.weights,
            epochs=args.epochs,
            learning_rate=args.lr,
            device=args.device,
            store=work / "store.zarr",
            on_epoch=note_memory,
        )
    before, best = result.history[0].metrics, result.best.metrics
    seconds = np.mean([report.seconds for report in result.history[1:]])
    per_object = seconds / max(1, sum(item.n_objects for item in train))
    return (
        f"| {name} | {objects} | {seconds:.1f} | {1000 * per_object:.0f} | "
        f"{before['val/box_mIoU']:.3f} → {best['val/box_mIoU']:.3f} | "
        f"{before['val/point_mIoU']:.3f} → {best['val/point_mIoU']:.3f} | "
        f"{result.best.epoch} | {memory.peak / 2**20:,.0f} | "
        f"{(memory.peak - at_start[0]) / 2**20:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(SHARED / "parity" / "mobile_sam_seed0.pt"))
    parser.add_argument(
        "--box-decoder", default=str(SHARED / "real" / "Prompt_guided_Mask_Decoder.pt")
    )
    parser.add_argument("--objects", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--train", type=int, default=6)
    parser.add_argument("--val", type=int, default=2)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, help="default: the package's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["prompt_guided", "mobile_sam"])
    parser.add_argument(
        "--segany-start",
        choices=["box_decoder", "own"],
        default="box_decoder",
        help="SegAny's decoder starts from the box decoder's weights (default) or its own",
    )
    parser.add_argument(
        "--encoder-scale", type=float, default=1.0, help="experiment: scale neck.3 by this"
    )
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        args.weights = _scaled_weights(args.weights, args.encoder_scale, Path(folder))
        for kind in ("prompt_guided", "mobile_sam"):
            if args.only not in (None, kind):
                continue
            for objects in args.objects:
                rows.append(_row(kind, objects, args, Path(folder)))
                print(rows[-1], flush=True)
    print(
        f"\n{args.train} training, {args.val} held-out images of {args.side}², "
        f"{args.epochs} epochs, lr {args.lr or 'default'}, encoder scale "
        f"{args.encoder_scale:g}, {args.device}\n"
    )
    print(
        "| decoder | objects / image | s / epoch | ms / object | box mIoU before → best "
        "| point mIoU before → best | best epoch | peak MiB | peak MiB above start |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
