"""Command line: ``python -m features [build options] | download ... | validate [DIR]``.

Without a subcommand it builds (or confirms) the feature cache of the data found by ``--data`` >
``$GTZAN_DIR`` > ``data/gtzan/``. Exit status: 0 on success, 2 when no data is found or nothing
decodes, 1 on other errors; every error is one line naming the file or folder.
"""

import argparse
import sys

from . import cache, dataset, images


def build_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m features",
                                description="Build the feature cache (waveforms, dB mel, image views). "
                                "Subcommands: `download` (fetch GTZAN), `validate [DIR]` (check md5s).")
    p.add_argument("--data", help="GTZAN folder or genres.tar.gz (default: $GTZAN_DIR, then data/gtzan/)")
    p.add_argument("--cache", default="cache", help="cache root; the cache goes to CACHE/<data name>/")
    p.add_argument("--views", default="",
                   help="extra image views besides 400 and 360x120, comma-separated (e.g. 120)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cache is current")
    p.add_argument("--synthetic", type=int, metavar="N", nargs="?", const=20,
                   help="when no data is found, use the synthetic genre set with N clips per class "
                        "(default 20) instead of failing")
    p.add_argument("--jobs", type=int, help="threads (default: all cores)")
    args = p.parse_args(argv)
    extra = tuple(v for v in args.views.split(",") if v)
    unknown = [v for v in extra if v not in images.VIEWS]
    if unknown:
        p.error(f"unknown view {unknown[0]!r}; choose from {', '.join(images.VIEWS)}")
    views = images.DEFAULT_VIEWS + tuple(v for v in extra if v not in images.DEFAULT_VIEWS)
    config = cache.FeatureConfig(views=views)
    try:
        cache_dir = cache.ensure_features(args.data, args.cache, args.force, config,
                                          synthetic=args.synthetic, jobs=args.jobs)
    except dataset.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    c = cache.open_cache(cache_dir)
    m = c.manifest
    t = m["timings"]
    print(f"{cache_dir}: {m['n']} clips ({m['n_skipped']} skipped), {len(c.classes)} classes, "
          f"config {m['config_hash']}; built {m['created']} in "
          f"decode {t['decode']:.1f} s + mel {t['mel']:.1f} s + images {t['images']:.1f} s + "
          f"write {t['write']:.1f} s")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["download"]:
        from .download import download_main
        return download_main(argv[1:])
    if argv[:1] == ["validate"]:
        return dataset.validate_main(argv[1:])
    return build_main(argv)


if __name__ == "__main__":
    sys.exit(main())
