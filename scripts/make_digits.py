"""One-off conversion of the UCI handwritten digits (as scikit-learn ships them) into the package
data file graphnet/data/digits.npz, with a fixed stratified train/test split.

    pip install scikit-learn   # for this script only; graphnet does not depend on it
    python scripts/make_digits.py

The file holds uint8 pixels (0..16) and labels; `graphnet.data.digits()` scales them to [0, 1]
float32 of shape (N, 1, 8, 8). Rerunning the script rewrites the same bytes (fixed seed).
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np

TEST_FRACTION = 0.2
SEED = 0


def main() -> int:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.uint8)  # (1797, 8, 8), integers 0..16
    if not np.array_equal(x, d.images):
        raise SystemExit("digits pixels are not integers in 0..16 as expected")
    y = d.target.astype(np.uint8)
    # Stratified: the same share of every class goes to the test set.
    rng = np.random.default_rng(SEED)
    test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        pick = rng.choice(idx, size=round(len(idx) * TEST_FRACTION), replace=False)
        test[pick] = True
    order_train = rng.permutation(np.flatnonzero(~test))
    order_test = np.flatnonzero(test)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        x=x[order_train],
        y=y[order_train],
        x_test=x[order_test],
        y_test=y[order_test],
    )
    out = os.path.join(os.path.dirname(__file__), "..", "graphnet", "data", "digits.npz")
    with open(out, "wb") as fh:
        fh.write(buf.getvalue())
    print(
        f"wrote {os.path.normpath(out)}: {(~test).sum()} train + {test.sum()} test images, "
        f"{len(buf.getvalue()) / 1024:.0f} KiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
