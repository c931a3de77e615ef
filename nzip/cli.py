"""The ``nzip`` command: encode, decode, info, codecs, demo.

Errors from bad input print one line (``nzip: error: ...``) and exit non-zero, with no traceback and
no output file left behind.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from . import api
from .errors import InvalidInputError, NzipError

_COMMON = {"bpp": float, "bpw": float, "bytes": float}
_COMMON_HELP = {"bpp": "image/vqgan: bits per pixel of the whole file (e.g. 0.035)",
                "bpw": "weights/quant, weights/lr2vq: bits per weight, everything counted (e.g. 4)",
                "bytes": "embedding codecs: bytes per vector (e.g. 16)"}


def _params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise InvalidInputError(f"--param takes k=v, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = _auto(v.strip())
    return out


def _auto(v: str) -> Any:
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def _strict(v: Any) -> Any:
    """JSON values a strict parser reads: non-finite floats (a checkpoint's best_loss=inf) as the
    strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, dict):
        return {k: _strict(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_strict(x) for x in v]
    return v


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors in nzip's one line (argparse prints the usage block first)."""

    def error(self, message: str):
        self.exit(2, f"nzip: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nzip", description="Compress the data of machine learning.")
    p.add_argument("--version", action="version", version=f"nzip {__import__('nzip').__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("encode", help="encode a file into a container (.nz file or directory), or a "
                       "folder into a data set (NAME.nzip)")
    e.add_argument("input", help="a file (.npy, .safetensors, .pt, an image, ...) or a folder")
    e.add_argument("output", help="NAME.nz (one file), a folder, NAME.nzip (a data set) or a URL")
    e.add_argument("--codec", help="codec name (default: chosen from the input; see `nzip codecs`)")
    e.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="a codec parameter, repeatable (e.g. --param level=256); a wrong name lists the codec's")
    for k, t in _COMMON.items():
        e.add_argument(f"--{k}", type=t, default=None, help=_COMMON_HELP[k])
    e.add_argument("--workers", type=int, default=None,
                   help="data sets (DIR -> NAME.nzip): encode on a local dask cluster of N processes")
    e.add_argument("--scheduler", default=None, help="data sets: use this dask.distributed scheduler")
    e.add_argument("--shard-size", type=int, default=None, help="data sets: items per shard (64)")
    e.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    e.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    d = sub.add_parser("decode", help="decode a container back to a file")
    d.add_argument("input", help="a .nz file, an item folder, a data set (NAME.nzip) or a URL")
    d.add_argument("output", help="the file to write (its suffix must suit the item), or a folder for a data set")
    d.add_argument("--device", default="cpu", help="cpu or cuda")
    d.add_argument("--restore", action="store_true",
                   help="image/vqgan: rebuild damaged index tiles from the rest (warns) instead of failing")
    d.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    d.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    i = sub.add_parser("info", help="codec, params, sizes, ratio and chunks of a container")
    i.add_argument("input")
    i.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("codecs", help="list registered codecs and their modalities")

    m = sub.add_parser("demo", help="encode and decode the bundled sample; print sizes and timing")
    m.add_argument("--keep", metavar="DIR", help="keep the container in DIR")
    return p


def _cmd_encode(a: argparse.Namespace) -> None:
    params = _params(a.param)
    params.update({k: getattr(a, k) for k in _COMMON if getattr(a, k) is not None})
    params.update({k: v for k, v in (("workers", a.workers), ("scheduler", a.scheduler),
                                     ("shard_size", a.shard_size)) if v is not None})
    r = api.encode(a.input, a.output, a.codec, overwrite=a.force, progress=sys.stderr.isatty(), **params)
    if not a.quiet:
        print(f"{a.input} -> {a.output}  [{r.codec}]  {_human(r.raw_bytes)} -> {_human(r.stored_bytes)}"
              f"  ratio {r.ratio:.3f}  {r.seconds:.2f} s")


def _cmd_decode(a: argparse.Namespace) -> None:
    r = api.decode(a.input, a.output, overwrite=a.force, device=a.device, progress=sys.stderr.isatty(),
                   restore=a.restore)
    if not a.quiet:
        print(f"{a.input} -> {a.output}  [{r.codec}]  {_human(r.stored_bytes)} -> {_human(r.raw_bytes)}"
              f"  {r.seconds:.2f} s")


def _cmd_info(a: argparse.Namespace) -> None:
    info = api.info(a.input)
    if a.json:
        print(json.dumps(_strict(info), indent=2, allow_nan=False))
        return
    print(f"{info['path']}: nzip {'data set ' if info.get('dataset') else ''}format {info['format']}, "
          f"codec {info['codec']} v{info['codec_version']}")
    source = {k: v for k, v in info["source"].items() if k not in ("tensors", "side")}
    print(f"  source  {json.dumps(source)}")
    print(f"  params  {json.dumps(info['params'])}")
    ratio = f"{info['ratio']:.3f}" if info["ratio"] else "-"
    print(f"  size    {_human(info['raw_bytes'])} -> {_human(info['stored_bytes'])}  ratio {ratio}")
    if "bits_per_pixel" in info:
        h, w = info["source"]["shape"][:2]
        print(f"  pixels  {w} x {h}: {info['bits_per_pixel']:.4f} bits per pixel (the whole file)")
    if "bytes_per_vector" in info:
        n, d = info["source"]["shape"]
        print(f"  vectors {n:,} x {d}: {info['bytes_per_vector']:.2f} bytes per vector in all, "
              f"{info['code_bytes_per_vector']:.2f} of them codes")
    if info["source"].get("modality") == "weights":
        from .weights import tensors

        for t in tensors(a.input):
            if t["alias_of"]:
                print(f"  tensor  {t['key']}: {t['dtype']} {t['shape']} = {t['alias_of']}")
                continue
            r = f"{t['raw_bytes'] / t['stored_bytes']:.3f}" if t["stored_bytes"] else "-"
            print(f"  tensor  {t['key']}: {t['dtype']} {t['shape']} {_human(t['raw_bytes'])} -> "
                  f"{_human(t['stored_bytes'])}  ratio {r}")
        return
    for arr in info["arrays"]:
        print(f"  array   {arr['name']}: {arr['dtype']} {arr['shape']} in {arr['n_chunks']} chunks of "
              f"{arr['chunks']}, {_human(arr['stored_bytes'])} stored")


def _cmd_codecs(_: argparse.Namespace) -> None:
    from . import registry

    for name, cls in registry.available().items():
        print(f"{name:20s} {cls.modality:10s} {cls.description}")


def _cmd_demo(a: argparse.Namespace) -> None:
    from .demo import run

    run(keep=a.keep)


def _warning(message, category, filename, lineno, line=None) -> str:
    return f"nzip: warning: {message}\n"  # a user of the command needs the message, not our source line


class _Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, docker stop), raised where the program is, so every partial output
    is removed on the way out as for Ctrl-C."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated


_STORAGE_MODULES = {"botocore", "aiobotocore", "s3fs", "gcsfs", "google", "fsspec", "adlfs", "azure"}


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading
    import warnings

    args = _parser().parse_args(argv)
    warnings.formatwarning = _warning
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        {"encode": _cmd_encode, "decode": _cmd_decode, "info": _cmd_info, "codecs": _cmd_codecs,
         "demo": _cmd_demo}[args.cmd](args)
    except NzipError as exc:
        print(f"nzip: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        import logging

        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # zarr's pending tasks, dropped at exit
        warnings.simplefilter("ignore")
        terminated = isinstance(exc, _Terminated)
        print(f"nzip: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        code = 143 if terminated else 130
        if argv is None:  # the command itself: partial outputs are gone; skip the exit handlers,
            import os  # where zarr's event loop, stopped mid-task, can print a traceback

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    except BrokenPipeError:  # `nzip info big.nz | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the system's answer (disk full, permission denied, ...): said in one line
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"nzip: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 74
    except MemoryError:
        print(f"nzip: error: out of memory during {args.cmd} (a damaged file can claim a huge size)",
              file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an input nzip did not foresee: one line, no traceback
        import os

        if type(exc).__module__.split(".")[0] in _STORAGE_MODULES:  # s3fs/botocore: credentials, buckets
            print(f"nzip: error: storage: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                  file=sys.stderr)
            return 74

        if os.environ.get("NZIP_DEBUG"):
            raise
        where = exc.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        at = f" at {os.path.basename(where.tb_frame.f_code.co_filename)}:{where.tb_lineno}" if where else ""
        print(f"nzip: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{at} "
              "(a bug or an unforeseen input; NZIP_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 70
    return 0


if __name__ == "__main__":
    sys.exit(main())
