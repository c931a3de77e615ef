"""Calibration data for lossy weight codecs: a model's outputs on the user's unlabelled inputs.

A calibration object has ``n`` (number of inputs), ``outputs(params, idx)`` (the model's outputs
on inputs ``idx`` with the tensors in ``params`` swapped in, torch tensors keyed by checkpoint
name) and ``loss(params, idx)`` (a distillation loss against the original model's outputs).
Codecs use it for Fisher-information step allocation and distillation fine-tuning.

:class:`SentenceCalibration` builds one for a sentence-transformers model folder and a list of
sentences (``nzip encode model/ m.nz --codec weights/quant --bpw 3 --param calib=texts.txt``);
it needs the optional ``sentence-transformers`` package. Anything else: write a small class with
the three members above and pass it through the Python API (``calib=...``).
"""
from __future__ import annotations

from pathlib import Path

from .errors import InvalidInputError


class SentenceCalibration:
    """Mean-pooled, normalised sentence embeddings of a sentence-transformers model (BERT-style:
    the first module's transformer body), distilled with 1 - cosine to the original's."""

    def __init__(self, model_dir: str | Path, texts: list[str], max_len: int = 64):
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise InvalidInputError("calibration on sentences needs sentence-transformers "
                                    "(pip install sentence-transformers)") from None
        if not texts:
            raise InvalidInputError("calibration needs at least one sentence")
        st = SentenceTransformer(str(model_dir), device="cpu")
        self.body = st[0].auto_model.eval()
        for p in self.body.parameters():
            p.requires_grad_(False)
        self.tok = st.tokenizer
        self.batches = self.tok(list(texts), padding=True, truncation=True, max_length=max_len,
                                return_tensors="pt")
        self.n = len(texts)
        with torch.no_grad():
            self.ref = self.outputs({}, torch.arange(self.n))

    def embed(self, batch, params=None):
        import torch

        out = torch.func.functional_call(self.body, params or {}, args=(),
                                         kwargs=dict(input_ids=batch["input_ids"],
                                                     attention_mask=batch["attention_mask"]))
        h = out.last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)

    def outputs(self, params, idx):
        return self.embed({k: v[idx] for k, v in self.batches.items()}, params)

    def loss(self, params, idx):
        e = self.outputs(params, idx)
        return (1 - (e * self.ref[idx]).sum(-1)).mean()


def from_text_file(model_dir: str | Path, path: str | Path) -> SentenceCalibration:
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"calibration file {path} does not exist")
    texts = [line.strip() for line in p.read_text(encoding="utf-8", errors="replace").splitlines()
             if line.strip()]
    return SentenceCalibration(model_dir, texts)
