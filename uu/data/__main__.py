"""``python -m uu.data SRC OUT.uucache.npz``: write the compact cache (see uu/data/cache.py)."""

from __future__ import annotations

import argparse
import time

from .cache import write_cache
from .errors import DataError
from .load import load_acdc


def main(argv=None) -> int:
    """``python -m uu.data SRC OUT.uucache.npz [--lzma]``: convert any layout to a compact cache."""
    p = argparse.ArgumentParser(prog="python -m uu.data", description=main.__doc__)
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--lzma", action="store_true", help="smaller, much slower to write")
    p.add_argument("--allow-missing-labels", action="store_true")
    args = p.parse_args(argv)
    start = time.perf_counter()
    try:
        cases = load_acdc(args.src, lazy=True, require_labels=not args.allow_missing_labels)
        out = write_cache(cases, args.out, compression="lzma" if args.lzma else "deflate")
    except DataError as err:
        print(f"error: {err}")
        return 2
    print(f"{out}: {len(cases)} volumes, {out.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
