"""Calibration data for lossy weight codecs: a model's outputs on the user's unlabelled inputs.

A calibration object has ``n`` (number of inputs), ``outputs(params, idx)`` (the model's outputs
on inputs ``idx`` with the tensors in ``params`` swapped in, torch tensors keyed by checkpoint
name) and ``loss(params, idx)`` (a distillation loss against the original model's outputs), and
optionally ``linear_inputs(names)`` (the Gram matrix of each linear layer's inputs, keyed by its
weight's name). Codecs use it for Fisher-information step allocation, error-feedback rounding
and distillation fine-tuning.

:class:`SentenceCalibration` builds one for a sentence-transformers model folder and a list of
sentences (``nzip encode model/ m.nz --codec weights/quant --bpw 3 --param calib=texts.txt``);
it needs the optional ``sentence-transformers`` package. Anything else: write a small class with
the three members above and pass it through the Python API (``calib=...``).
"""
from __future__ import annotations

from pathlib import Path

from .errors import InvalidInputError


class SentenceCalibration:
    """A sentence-transformers model (BERT-style: the first module's transformer body, mean
    pooling, normalisation). Outputs are the last layer's token states and the sentence
    embeddings; the distillation loss is 1 - cosine of the sentence embeddings plus the token
    states' squared error relative to the original's energy (the token term gives Fisher
    estimates and calibration far more signal per sentence than the pooled vector alone)."""

    def __init__(self, model_dir: str | Path, texts: list[str], max_len: int = 64,
                 token_weight: float = 1.0):
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
        self.token_weight = token_weight
        with torch.no_grad():
            parts = [self.outputs({}, torch.arange(i, min(self.n, i + 128))) for i in range(0, self.n, 128)]
            width = self.batches["input_ids"].shape[1]
            self.ref_tokens = torch.zeros(self.n, width, parts[0][0].shape[-1])
            for i, (tokens, _) in zip(range(0, self.n, 128), parts):
                self.ref_tokens[i : i + len(tokens), : tokens.shape[1]] = tokens
            self.ref = torch.cat([sent for _, sent in parts])

    def _forward(self, batch, params):
        import torch

        out = torch.func.functional_call(self.body, params or {}, args=(),
                                         kwargs=dict(input_ids=batch["input_ids"],
                                                     attention_mask=batch["attention_mask"]))
        h = out.last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
        sent = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)
        return h * m, sent

    def embed(self, batch, params=None):
        """Normalised sentence embeddings of a tokenised batch under ``params``."""
        return self._forward(batch, params)[1]

    def outputs(self, params, idx):
        """(masked token states, sentence embeddings) of calibration inputs ``idx``."""
        mask = self.batches["attention_mask"][idx]
        width = int(mask.sum(1).max())
        return self._forward({k: v[idx, :width] for k, v in self.batches.items()}, params)

    def linear_inputs(self, names, n: int = 512, batch_size: int = 64) -> dict:
        """Gram matrices H = sum x x^T of the inputs of the linear layers whose weights are named
        in ``names`` (over the real tokens of the first ``n`` calibration sentences), for
        error-feedback (GPTQ-style) rounding. Weights that are not a linear layer's are absent."""
        import torch

        mods = {f"{m}.weight": mod for m, mod in self.body.named_modules() if isinstance(mod, torch.nn.Linear)}
        want = {k: mods[k] for k in names if k in mods}
        H = {k: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for k, m in want.items()}
        state = {}

        def hook(name):
            def fn(module, args):
                x = args[0].detach().double()
                x = x.reshape(-1, x.shape[-1])
                keep = state["mask"].reshape(-1) > 0
                if x.shape[0] == keep.shape[0]:  # token inputs: real tokens only (not the pooler's)
                    x = x[keep]
                H[name] += x.T @ x
            return fn

        handles = [m.register_forward_pre_hook(hook(k)) for k, m in want.items()]
        try:
            with torch.no_grad():
                for i in range(0, min(n, self.n), batch_size):
                    idx = torch.arange(i, min(n, self.n, i + batch_size))
                    mask = self.batches["attention_mask"][idx]
                    width = int(mask.sum(1).max())
                    state["mask"] = mask[:, :width]
                    self._forward({k: v[idx, :width] for k, v in self.batches.items()}, {})
        finally:
            for h in handles:
                h.remove()
        return {k: v.numpy() for k, v in H.items()}

    def loss(self, params, idx):
        tokens, sent = self.outputs(params, idx)
        ref_tokens = self.ref_tokens[idx, : tokens.shape[1]]
        tok = ((tokens - ref_tokens) ** 2).sum() / (ref_tokens**2).sum().clamp(min=1e-12)
        return (1 - (sent * self.ref[idx]).sum(-1)).mean() + self.token_weight * tok


def from_text_file(model_dir: str | Path, path: str | Path) -> SentenceCalibration:
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"calibration file {path} does not exist")
    texts = [line.strip() for line in p.read_text(encoding="utf-8", errors="replace").splitlines()
             if line.strip()]
    return SentenceCalibration(model_dir, texts)
