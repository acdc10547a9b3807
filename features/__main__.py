"""Command line: ``python -m features [build options] | download ... | validate [DIR] | verify | example``.

Without a subcommand it builds (or confirms) the feature cache of the data found by ``--data`` >
``$GTZAN_DIR`` > ``data/gtzan/`` > ``data/genres.tar.gz``, else of the synthetic genre set (said
loudly). Exit status: 0 on success, 2 when named data is unusable or nothing decodes, 1 on other
errors; every error is one line naming the file or folder. ``verify`` checks every file of the cache,
checksums included: one line per problem, exit 0 when sound, 1 when damaged, 2 when there is no cache.
"""

import argparse
import sys
from pathlib import Path

from . import cache, dataset, images


def build_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m features",
                                description="Build the feature cache (waveforms, dB mel, image views). "
                                "Subcommands: `download` (fetch GTZAN), `validate [DIR]` (check md5s), "
                                "`verify` (check the cache's files and checksums).")
    p.add_argument("--data", help="GTZAN folder or genres.tar.gz (default: $GTZAN_DIR, then data/gtzan/, "
                                  "else the synthetic genre set)")
    p.add_argument("--cache", default="cache", help="cache root; the cache goes to CACHE/<data name>/")
    p.add_argument("--views", default="",
                   help="extra image views besides 400 and 360x120, comma-separated (e.g. 120)")
    p.add_argument("--force", action="store_true", help="rebuild the whole cache even when it is current")
    p.add_argument("--synthetic", type=int, metavar="N", default=20,
                   help="clips per class of the synthetic genre set used when no data is found (default 20)")
    p.add_argument("--jobs", type=int, help="threads (default: all usable cores)")
    args = p.parse_args(argv)
    extra = tuple(v for v in args.views.split(",") if v)
    unknown = [v for v in extra if v not in images.VIEWS]
    if unknown:
        p.error(f"unknown view {unknown[0]!r}; choose from {', '.join(images.VIEWS)}")
    if args.synthetic < 1:
        p.error("--synthetic must be at least 1")
    arrays = cache.DEFAULT_ARRAYS + tuple(f"img{v}" for v in extra)
    try:
        cache_dir = cache.ensure_features(args.data, args.cache, args.force, arrays=arrays,
                                          synthetic=args.synthetic, jobs=args.jobs, log=print)
        c = cache.open_cache(cache_dir)
    except (dataset.DataError, cache.CacheError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the builders have removed their temporary files
        print("interrupted; the cache is as it was before this run", file=sys.stderr)
        return 130
    m = c.manifest
    t = m["timings"]
    print(f"{cache_dir}: {m['n']} clips ({m['n_skipped']} skipped), {len(c.classes)} classes "
          f"({', '.join(c.classes)}); arrays {', '.join(sorted(m['arrays']))}; last build "
          f"decode {t['decode']:.1f} s + mel {t['mel']:.1f} s + images {t['images']:.1f} s + "
          f"write {t['write']:.1f} s")
    return 0


def verify_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m features verify",
                                description="Check every file of the feature cache, checksums included; "
                                            "exit 0 when sound, 1 when damaged, 2 when there is no cache.")
    p.add_argument("--data", help="as for the build (names the cache CACHE/<data name>/)")
    p.add_argument("--cache", default="cache", help="cache root, as for the build")
    args = p.parse_args(argv)
    try:
        root = dataset.find_data(args.data)
        cache_dir = Path(args.cache) / (cache.data_name(root) if root else "synthetic")
        problems = cache.verify_cache(cache_dir)
    except (dataset.DataError, cache.CacheError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in problems:
        print(line)
    if not problems:
        print(f"{cache_dir}: ok (every file matches its checksum)")
    return 1 if problems else 0


def example_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m features example",
                                description="Print the path of one clip of the data the other commands "
                                            "use (the synthetic set when none is found).")
    p.add_argument("--data", help="as for the build")
    args = p.parse_args(argv)
    try:
        root = dataset.find_data(args.data) or dataset.REPO / "data" / "synthetic"
        print(dataset.list_tracks(root)[0].path)
    except (dataset.DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["download"]:
        from .download import download_main
        return download_main(argv[1:])
    if argv[:1] == ["validate"]:
        return dataset.validate_main(argv[1:])
    if argv[:1] == ["verify"]:
        return verify_main(argv[1:])
    if argv[:1] == ["example"]:
        return example_main(argv[1:])
    return build_main(argv)


if __name__ == "__main__":
    sys.exit(main())
