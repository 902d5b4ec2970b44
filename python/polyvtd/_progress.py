"""Progress of the training loops (network training, BPTT on the mesh): an optional tqdm bar
and the caller's per-epoch callback, behind one `report(epoch, loss, seconds)` function."""

from contextlib import contextmanager


@contextmanager
def epoch_reporter(desc: str, epochs: int, progress: bool, on_epoch):
    """Yields `report(epoch, epoch_loss, seconds)` for the native loop; the bar closes on exit."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(epochs), desc=desc, unit="epoch")

    def report(epoch, epoch_loss, seconds):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{epoch_loss:.4g}")
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss, seconds)

    try:
        yield report
    finally:
        if bar is not None:
            bar.close()
