"""Iterative Patch Selection (IPS): Riffi-Aslett's thesis (file 003), sec. 2.7, eqs. 1-8 (Bergner et al. 2023).

IPS never looks at a downsampled image. The image is cut into full-resolution patches
(`patch_size`, non-overlapping by default; `stride` may differ), read lazily a chunk at a time:

1. Selection (no gradient, encoder and transformer in eval mode): the patches are walked in
   row-major order in chunks of I (`iter_size`). Each chunk is encoded by the patch encoder f and
   scored by the same multi-head cross-attention that later pools (eqs. 2-4: the attention of the
   learnable query q_phi to each patch, averaged over heads and task queries); the M
   (`memory_size`) best of (memory buffer + chunk) stay in the buffer. The loop holds at most
   M + I embeddings and one chunk of I patches per image, so its memory depends on M and I, not
   on the image size.
2. Aggregation (with gradient): the M winners are read again by index, re-encoded, optionally
   given a sinusoidal encoding of their patch-grid position (X_pos of eq. 6), and pooled by
   `CrossAttentionPool`: eq. 1-5 (softmax attention over the M patches, one weighted average of
   the values per head, heads concatenated and projected by W^o), eq. 7 (residual with q_phi,
   LayerNorm) and eq. 8 (MLP, LayerNorm). One query token and one linear head per task
   (`n_classes` a list: e.g. megapixel MNIST's Maj/Max/Top/Multi), as in the IPS code.

Eq. 8 as printed, z_o = LN(MLP(z')), has no residual; this module computes LN(z' + MLP(z')),
the post-LN block of Vaswani et al. that sec. 2.7 says it follows and that the IPS code (which
the thesis's experiments run) implements.

Selection scores (`score`):
- "attention" (default, the thesis and the IPS code): the softmax attention of eq. 2 over the
  current M + I candidates, averaged over heads and task queries. With one head and one task it
  ranks patches exactly as their logits do, so the buffer ends with the global top M. With
  several heads the per-head softmax normalisers depend on the candidate set, so the streamed
  top M can differ from the top M of the same score computed over all patches at once.
- "logit": the pre-softmax scores f_theta of eq. 3 averaged over heads and tasks. They do not
  depend on the candidate set, so the buffer ends with exactly the global top M for any I.

Ties are broken towards the lower patch index, so selection is deterministic; IPS draws nothing.

Regularisers of the pooling (thesis sec. 3.3-3.4, after Zhang et al. 2024), off by default:
- Semantic heads (`semantic=True`): each head's output z_h, before the heads are concatenated,
  goes through its own MLP of eq. 12 (two hidden layers of D units, ReLU, dropout 0.1) to a
  prediction of its own (`IPSOutput.head_logits`), trained by `losses.semantic_loss`; the
  Diversity loss `losses.diversity_loss` (eq. 10) penalises the cosine similarity of the heads'
  attention maps. `regulariser_terms` adds both to the objective (eq. 13: L_b + L_p + L_d, with
  the weights the thesis varies).
- Stochastic Top-K Instance Masking (`mask_top_k` = K, `mask_prob` = P): in training only, each of
  the K instances with the highest attention logit of every head and query is masked with
  probability P (its logit set to -inf before the softmax of eq. 2, so its attention is exactly 0
  and the rest renormalises). At most M - 1 are candidates, so one instance always stays.
  Selection and inference never mask.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

from zoomin_lib.geometry import as_pair, check_image
from zoomin_lib.losses import diversity_loss, semantic_loss
from zoomin_lib.models import ModelOutput, check_positive_int
from zoomin_lib.steps import ExtraTerm

__all__ = [
    "SCORES",
    "IPSOutput",
    "PatchSource",
    "TensorPatches",
    "grid_positional_encoding",
    "top_k_mask",
    "HeadMLPs",
    "CrossAttentionPool",
    "IPSNet",
    "regulariser_terms",
]

SCORES = ("attention", "logit")


@dataclass
class IPSOutput:
    """What IPSNet returns: logits per task, the M selected patches and the pooling attention over them.

    `alpha` and `betas` are None (IPS has no attention distribution over the whole image), so the
    generic training step (`steps.sampling_loss`) takes plain cross-entropy.
    """

    logits: Tensor | list[Tensor]  # [B, n_classes]; a list of [B, n_classes_t] when n_classes is a list
    indices: Tensor  # [B, M] selected patches, row-major in the patch grid, ascending
    centers: Tensor  # [B, M, 2] full-resolution centres (row, col): top-left + patch_size // 2
    weights: Tensor  # [B, M] attention a_m of eq. 2 in the pooling pass, averaged over heads and tasks
    attention: Tensor  # [B, H, T, M] attention of every head and task query
    features: Tensor  # [B, T, D] z_o of eq. 8, one row per task
    head_logits: Tensor | list[Tensor] | None = None  # [B, H, n_classes] per head (semantic heads); a list per task
    alpha: None = None
    betas: None = None
    mode: str = "topk"
    contrastive: bool = False


@runtime_checkable
class PatchSource(Protocol):
    """Where IPS reads patches from: a grid of `grid` (rows, cols) patches per image, read by index."""

    batch_size: int
    grid: tuple[int, int]  # patches per column and per row of the grid
    patch_size: tuple[int, int]
    stride: tuple[int, int]

    def patches(self, idx: Tensor) -> Tensor:
        """Patches [B, K, C, ph, pw] at row-major grid indices idx [B, K] of each image."""
        ...


class TensorPatches:
    """A PatchSource over an image batch x [B, C, H, W]: a view by unfold, read by one gather per call.

    Patches that would cross the bottom or right edge are not in the grid (as `Tensor.unfold`):
    rows = (H - ph) // sh + 1, cols = (W - pw) // sw + 1. No patch is copied until it is asked for.
    """

    def __init__(self, x: Tensor, patch_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None) -> None:
        check_image(x)
        self.patch_size = as_pair(patch_size, "patch_size")
        self.stride = self.patch_size if stride is None else as_pair(stride, "stride")
        (ph, pw), (sh, sw) = self.patch_size, self.stride
        B, C, H, W = x.shape
        if ph > H or pw > W:
            raise ValueError(f"the image {(H, W)} is smaller than one patch {(ph, pw)}")
        self.batch_size = B
        self.grid = ((H - ph) // sh + 1, (W - pw) // sw + 1)
        self._view = x.unfold(2, ph, sh).unfold(3, pw, sw).permute(0, 2, 3, 1, 4, 5)  # [B, rows, cols, C, ph, pw]

    def patches(self, idx: Tensor) -> Tensor:
        """Patches [B, K, C, ph, pw] at row-major grid indices idx [B, K] (one gather; the image is not copied)."""
        cols = self.grid[1]
        idx = idx.to(self._view.device)
        b = torch.arange(self.batch_size, device=idx.device).unsqueeze(1)  # [B, 1]
        return self._view[b, idx // cols, idx % cols]  # [B, K, C, ph, pw]


def grid_positional_encoding(rows: Tensor, cols: Tensor, dim: int) -> Tensor:
    """Sinusoidal encoding [..., dim] of grid positions: the row in the first dim/2 channels, the column in the rest.

    Each half is the encoding of Vaswani et al. (sin on even, cos on odd channels, wavelengths
    up to 10000 * 2 pi), as the IPS code's 1-d encoding but over (row, col) of the patch grid.
    """
    if not isinstance(dim, int) or dim < 4 or dim % 4:
        raise ValueError(f"a 2-d sinusoidal encoding needs a dimension divisible by 4, got {dim!r}")
    half = dim // 2
    freqs = torch.exp(torch.arange(0, half, 2, dtype=torch.float64, device=rows.device) * (-math.log(10000.0) / half))

    def encode(pos: Tensor) -> Tensor:
        angle = pos.to(torch.float64).unsqueeze(-1) * freqs  # [..., half/2]
        return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(-2)  # [..., half], sin/cos interleaved

    return torch.cat((encode(rows), encode(cols)), dim=-1)  # [..., dim]


def top_k_mask(logits: Tensor, k: int, p: float, generator: torch.Generator | None = None) -> Tensor:
    """STKIM's mask [..., N] (bool): each of the k largest logits along the last dim is chosen with probability p.

    The thesis's reading ("sets the attention values of the Top-K instances to 0, with a probability
    of P"): each of the top k is masked independently, so k p are masked on average, also when k p < 1
    (Zhang et al.'s code masks exactly int(k p) of them, none when k p < 1). Only the top
    min(k, N - 1) are candidates, so at least one instance of every row stays. Ties are broken
    towards the lower index (a stable sort). Without a generator the uniforms are drawn on the
    logits' device.
    """
    check_positive_int(k, "k")
    if not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"the masking probability must be in [0, 1], got {p!r}")
    k = min(k, logits.shape[-1] - 1)
    mask = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)  # [..., N]
    if k < 1 or p == 0:
        return mask
    top = torch.sort(logits.detach(), dim=-1, descending=True, stable=True).indices[..., :k]  # [..., k]
    u = torch.rand(top.shape, generator=generator, device=generator.device if generator is not None else top.device)
    return mask.scatter_(-1, top, (u < p).to(top.device))  # [..., N]


class HeadMLPs(nn.Module):
    """One MLP per attention head (the thesis's eq. 12), computed for all heads at once with stacked weights.

    Head h maps its output z_h [B, H, T, Dv] through W_h1 (Dv -> hidden), ReLU, dropout, W_h2
    (hidden -> hidden), ReLU, dropout, and one output layer per task t (hidden -> n_classes[t]).
    Each weight is initialised as `nn.Linear` initialises its own: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """

    def __init__(self, n_heads: int, dim_in: int, hidden: int, n_classes: Sequence[int], dropout: float = 0.1) -> None:
        super().__init__()
        self.n_heads = n_heads

        def linear(fan_in: int, fan_out: int) -> tuple[nn.Parameter, nn.Parameter]:
            bound = 1 / math.sqrt(fan_in)
            w = nn.Parameter(torch.empty(n_heads, fan_in, fan_out).uniform_(-bound, bound))
            return w, nn.Parameter(torch.empty(n_heads, fan_out).uniform_(-bound, bound))

        self.w1, self.b1 = linear(dim_in, hidden)
        self.w2, self.b2 = linear(hidden, hidden)
        outs = [linear(hidden, c) for c in n_classes]
        self.w3 = nn.ParameterList(w for w, _ in outs)
        self.b3 = nn.ParameterList(b for _, b in outs)
        self.dropout = nn.Dropout(dropout)

    def forward(self, z: Tensor) -> list[Tensor]:
        """One [B, H, n_classes_t] tensor of logits per task t, from the heads' outputs z [B, H, T, Dv]."""
        h = self.dropout(torch.relu(torch.einsum("bhtd,hde->bhte", z, self.w1) + self.b1[:, None]))  # [B, H, T, hidden]
        h = self.dropout(torch.relu(torch.einsum("bhtd,hde->bhte", h, self.w2) + self.b2[:, None]))  # [B, H, T, hidden]
        return [torch.einsum("bhd,hdc->bhc", h[:, :, t], w) + b for t, (w, b) in enumerate(zip(self.w3, self.b3))]


class CrossAttentionPool(nn.Module):
    """The IPS transformer (sec. 2.7, eqs. 1-8): T learnable queries attend over N patch embeddings [B, N, D].

    Q = q_phi W^q, K = X W^k, V = X W^v (eq. 4, 1); a = softmax(Q K^T / sqrt(D_k)) over the N
    patches (eq. 2-3); z = concat_h(a_h V_h) W^o (eq. 1, 5); z' = LN(z + q_phi) (eq. 7);
    z_o = LN(z' + MLP(z')) (eq. 8, with the transformer's residual). Initialisation, bias-free
    projections and LayerNorm eps = 1e-6 follow the IPS code. `mask_top_k`/`mask_prob`: STKIM in
    training (`top_k_mask`); off when either is 0.
    """

    def __init__(
        self,
        dim: int,
        n_queries: int = 1,
        n_heads: int = 8,
        dim_head: int | None = None,
        dim_inner: int | None = None,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        mask_top_k: int = 0,
        mask_prob: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive_int(dim, "dim")
        check_positive_int(n_queries, "n_queries")
        check_positive_int(n_heads, "n_heads")
        if dim_head is None:
            if dim % n_heads:
                raise ValueError(f"the embedding dimension {dim} is not divisible by n_heads={n_heads}; give dim_head")
            dim_head = dim // n_heads
        check_positive_int(dim_head, "dim_head")
        dim_inner = 4 * dim if dim_inner is None else dim_inner
        check_positive_int(dim_inner, "dim_inner")
        for name, p in (("dropout", dropout), ("attn_dropout", attn_dropout)):
            if not isinstance(p, (int, float)) or not 0 <= p < 1:
                raise ValueError(f"{name} must be in [0, 1), got {p!r}")
        if not isinstance(mask_top_k, int) or mask_top_k < 0:
            raise ValueError(f"mask_top_k must be an int >= 0, got {mask_top_k!r}")
        if not isinstance(mask_prob, (int, float)) or not 0 <= mask_prob <= 1:
            raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob!r}")
        self.mask_top_k, self.mask_prob = mask_top_k, float(mask_prob)
        self.dim, self.n_queries, self.n_heads, self.dim_head = dim, n_queries, n_heads, dim_head
        self.query = nn.Parameter(torch.empty(1, n_queries, dim))  # q_phi, one token per task
        bound = math.sqrt(1 / dim_head)
        nn.init.uniform_(self.query, -bound, bound)
        self.w_q = nn.Linear(dim, n_heads * dim_head, bias=False)
        self.w_k = nn.Linear(dim, n_heads * dim_head, bias=False)
        self.w_v = nn.Linear(dim, n_heads * dim_head, bias=False)
        self.w_o = nn.Linear(n_heads * dim_head, dim, bias=False)
        self.norm_attn = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, dim_inner), nn.ReLU(), nn.Linear(dim_inner, dim))
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.dropout = nn.Dropout(dropout)

    def _check(self, x: Tensor) -> None:
        """Raise ValueError unless x is [B, N, dim] with N >= 1."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] < 1 or x.shape[2] != self.dim:
            raise ValueError(f"patch embeddings must be [B, N, {self.dim}] with N >= 1, got {getattr(x, 'shape', type(x))}")

    def logits(self, x: Tensor) -> Tensor:
        """f_theta of eq. 3: Q K^T / sqrt(D_k), [B, H, T, N], for embeddings x [B, N, D]."""
        self._check(x)
        B, N, _ = x.shape
        H, T, Dk = self.n_heads, self.n_queries, self.dim_head
        q = self.w_q(self.query).view(1, T, H, Dk).transpose(1, 2)  # [1, H, T, Dk]
        k = self.w_k(x).view(B, N, H, Dk).transpose(1, 2)  # [B, H, N, Dk]
        return q @ k.transpose(-1, -2) / math.sqrt(Dk)  # [B, H, T, N]

    def scores(self, x: Tensor, score: str = "attention") -> Tensor:
        """Selection scores [B, N]: eq. 2 attention ("attention") or eq. 3 logits ("logit"), mean over heads and tasks."""
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        s = self.logits(x)  # [B, H, T, N]
        if score == "attention":
            s = torch.softmax(s, dim=-1)
        return s.mean(dim=(1, 2))  # [B, N]

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(z_o [B, T, D] of eq. 8, attention a [B, H, T, N] of eq. 2, the heads' outputs [B, H, T, Dv]).

        x: embeddings [B, N, D]. In training with STKIM on, the masked instances get attention 0
        (`generator` draws the mask).
        """
        logits = self.logits(x)  # [B, H, T, N]
        if self.training and self.mask_top_k > 0 and self.mask_prob > 0:
            logits = logits.masked_fill(top_k_mask(logits, self.mask_top_k, self.mask_prob, generator), -math.inf)
        attn = torch.softmax(logits, dim=-1)  # [B, H, T, N], eq. 2
        B, N, _ = x.shape
        H, T, Dk = self.n_heads, self.n_queries, self.dim_head
        v = self.w_v(x).view(B, N, H, Dk).transpose(1, 2)  # [B, H, N, Dv], values X W^v
        heads = self.attn_dropout(attn) @ v  # [B, H, T, Dv], eq. 1 per head
        z = heads.transpose(1, 2).reshape(B, T, H * Dk)  # [B, T, H*Dv], heads concatenated
        z = self.dropout(self.w_o(z))  # [B, T, D], eq. 5
        z = self.norm_attn(z + self.query)  # [B, T, D], eq. 7
        z = self.norm_mlp(z + self.dropout(self.mlp(z)))  # [B, T, D], eq. 8
        return z, attn, heads


@contextmanager
def _eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put `modules` in eval mode for the block, then give every submodule back its own mode."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


class IPSNet(nn.Module):
    """Iterative Patch Selection (thesis sec. 2.7, eqs. 1-8): top-M full-resolution patches, cross-attention pooling.

    `encoder` maps patches [K, C, ph, pw] to embeddings [K, D] and exposes `out_features` = D
    (e.g. networks.FeatureLeNet). `n_classes`: an int (one task, logits [B, n_classes]) or a list
    (one query token and one linear head per task, logits a list). `memory_size` is M,
    `iter_size` I (patches per image per chunk; B * I patches are encoded at once).
    `semantic` adds the heads' own MLPs (thesis eq. 12; `IPSOutput.head_logits`); `mask_top_k` and
    `mask_prob` are STKIM's K and P (sec. 3.4), applied in training only.
    """

    train_mode = "topk"  # IPS is deterministic: training and inference both take the top M
    eval_mode = "topk"
    supports_contrastive = False

    def __init__(
        self,
        encoder: nn.Module,
        n_classes: int | Sequence[int],
        patch_size: int | tuple[int, int],
        memory_size: int,
        iter_size: int,
        stride: int | tuple[int, int] | None = None,
        n_heads: int = 8,
        dim_head: int | None = None,
        dim_inner: int | None = None,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        pos_enc: bool = False,
        score: str = "attention",
        semantic: bool = False,
        mask_top_k: int = 0,
        mask_prob: float = 0.0,
    ) -> None:
        super().__init__()
        dim = getattr(encoder, "out_features", None)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"the patch encoder {type(encoder).__name__} must expose a positive int `out_features`")
        self.multi_task = not isinstance(n_classes, int)
        classes = [n_classes] if isinstance(n_classes, int) else n_classes
        if not isinstance(classes, (list, tuple)) or not classes:
            raise ValueError(f"n_classes must be a positive int or a non-empty list of positive ints, got {n_classes!r}")
        classes = list(classes)
        for c in classes:
            check_positive_int(c, "every entry of n_classes")
        check_positive_int(memory_size, "memory_size")
        check_positive_int(iter_size, "iter_size")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if pos_enc and dim % 4:
            raise ValueError(f"pos_enc needs an embedding dimension divisible by 4, the encoder gives {dim}")
        self.encoder = encoder
        self.pool = CrossAttentionPool(dim, len(classes), n_heads, dim_head, dim_inner, dropout, attn_dropout,
                                       mask_top_k, mask_prob)
        self.heads = nn.ModuleList(nn.Linear(dim, c) for c in classes)
        self.head_mlps = HeadMLPs(n_heads, self.pool.dim_head, dim, classes) if semantic else None
        self.n_classes = classes
        self.dim = dim
        self.patch_size = as_pair(patch_size, "patch_size")
        self.stride = self.patch_size if stride is None else as_pair(stride, "stride")
        self.memory_size = memory_size
        self.iter_size = iter_size
        self.pos_enc = pos_enc
        self.score = score

    def patch_source(self, x: Tensor | PatchSource) -> PatchSource:
        """x itself if it is a PatchSource, else TensorPatches over the image batch x [B, C, H, W]."""
        if isinstance(x, Tensor):
            return TensorPatches(x, self.patch_size, self.stride)
        if not isinstance(x, PatchSource):
            raise ValueError(f"x must be a [B, C, H, W] tensor or a PatchSource, got {type(x).__name__}")
        return x

    def _device(self) -> torch.device:
        """The device of the model's parameters: patches are moved there a chunk at a time."""
        return self.pool.query.device

    def embed(self, source: PatchSource, idx: Tensor) -> Tensor:
        """Embeddings [B, K, D] (plus X_pos when pos_enc) of the patches at grid indices idx [B, K]."""
        B, K = idx.shape
        patches = source.patches(idx).to(self._device())  # [B, K, C, ph, pw]
        if patches.dim() != 5 or patches.shape[:2] != (B, K):
            raise ValueError(f"the patch source must return [{B}, {K}, C, ph, pw] patches, got {tuple(patches.shape)}")
        emb = self.encoder(patches.flatten(0, 1))  # [B*K, D]
        if emb.dim() != 2 or emb.shape != (B * K, self.dim):
            raise ValueError(
                f"the patch encoder must map [{B * K}, C, ph, pw] patches to [{B * K}, {self.dim}], got {tuple(emb.shape)}"
            )
        emb = emb.view(B, K, self.dim)  # [B, K, D]
        if self.pos_enc:
            rows, cols = idx // source.grid[1], idx % source.grid[1]  # [B, K]
            emb = emb + grid_positional_encoding(rows, cols, self.dim).to(emb)  # [B, K, D], X* + X_pos (eq. 6)
        return emb

    @torch.no_grad()
    def select(self, x: Tensor | PatchSource) -> Tensor:
        """The M selected patches [B, M] (row-major grid indices, ascending): the no-gradient selection loop.

        Chunks of I patches are encoded (encoder and pool in eval mode) and scored with the
        pooling attention; a buffer of M + I embeddings keeps the M best of memory and chunk.
        """
        source = self.patch_source(x)
        B = source.batch_size
        rows, cols = source.grid
        N = rows * cols
        M, I = self.memory_size, self.iter_size
        if M > N:
            raise ValueError(
                f"memory_size M={M} exceeds the {N} patches ({rows} x {cols} grid of {source.patch_size} patches, "
                f"stride {source.stride}); lower M or the patch size"
            )
        dev = self._device()
        buf_idx = torch.empty(B, M + I, dtype=torch.long, device=dev)  # [B, M+I] memory, then the chunk
        buf_emb: Tensor | None = None  # [B, M+I, D], allocated with the first chunk's dtype
        n_mem = 0
        with _eval_mode(self.encoder, self.pool):
            for start in range(0, N, I):
                idx = torch.arange(start, min(start + I, N), device=dev).expand(B, -1)  # [B, m]
                emb = self.embed(source, idx)  # [B, m, D]
                if buf_emb is None:
                    buf_emb = emb.new_empty(B, M + I, self.dim)
                n = n_mem + idx.shape[1]
                buf_idx[:, n_mem:n] = idx
                buf_emb[:, n_mem:n] = emb
                del emb
                if n > M:
                    s = self.pool.scores(buf_emb[:, :n], self.score)  # [B, n]
                    # stable sort: ties keep buffer order, which is ascending patch index among equal scores
                    keep = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :M]  # [B, M]
                    buf_idx[:, :M] = buf_idx[:, :n].gather(1, keep)
                    buf_emb[:, :M] = buf_emb[:, :n].gather(1, keep.unsqueeze(-1).expand(-1, -1, self.dim))
                    n = M
                n_mem = n
        return buf_idx[:, :M].sort(dim=1).values  # [B, M]

    def forward(self, x: Tensor | PatchSource, mode: str = "topk", generator: torch.Generator | None = None,
                contrastive: bool = False) -> IPSOutput:
        """Classify x [B, C, H, W] (or a PatchSource) from its M selected patches, re-encoded with gradients.

        `mode` must be "topk" and `contrastive` False; `generator` draws only STKIM's mask (training
        with `mask_top_k`), selection draws nothing. They exist so that `steps.sampling_loss` and
        `steps.predictor` can call IPSNet like the others.
        """
        if mode != "topk":
            raise ValueError(f"IPSNet is deterministic: mode must be 'topk', got {mode!r}")
        if contrastive:
            raise ValueError("IPSNet has no contrastive samples (no attention distribution to complement)")
        source = self.patch_source(x)
        idx = self.select(source)  # [B, M], no graph kept
        I = self.iter_size
        emb = torch.cat([self.embed(source, idx[:, s : s + I]) for s in range(0, idx.shape[1], I)], dim=1)  # [B, M, D]
        z, attn, heads = self.pool(emb, generator)  # [B, T, D], [B, H, T, M], [B, H, T, Dv]
        logits = [head(z[:, t]) for t, head in enumerate(self.heads)]  # T x [B, n_classes_t]
        head_logits = self.head_mlps(heads) if self.head_mlps is not None else None  # T x [B, H, n_classes_t]
        if head_logits is not None and not self.multi_task:
            head_logits = head_logits[0]
        cols = source.grid[1]
        (ph, pw), (sh, sw) = source.patch_size, source.stride
        centers = torch.stack(((idx // cols) * sh + ph // 2, (idx % cols) * sw + pw // 2), dim=-1)  # [B, M, 2]
        return IPSOutput(
            logits=logits if self.multi_task else logits[0], indices=idx, centers=centers,
            weights=attn.mean(dim=(1, 2)), attention=attn, features=z, head_logits=head_logits,
        )


def regulariser_terms(semantic: float = 1.0, diversity: float = 1.0) -> dict[str, ExtraTerm]:
    """`extra_terms` of `steps.sampling_loss` for eq. 13 of the thesis: `semantic` x L_p and `diversity` x L_d.

    A zero weight leaves its term out. L_p needs an IPSNet built with `semantic=True` and one task; it is
    each head's unweighted cross-entropy (the thesis weights no class), also when L_b has class weights.
    """
    terms: dict[str, ExtraTerm] = {}
    if semantic:

        def semantic_term(model: nn.Module, out: ModelOutput, y: Tensor, extra: Sequence[Tensor]) -> Tensor:
            if not isinstance(out.head_logits, Tensor):
                raise ValueError("the semantic term needs a one-task IPSNet built with semantic=True")
            return semantic * semantic_loss(out.head_logits, y)

        terms["semantic"] = semantic_term
    if diversity:
        terms["diversity"] = lambda model, out, y, extra: diversity * diversity_loss(out.attention)
    return terms
