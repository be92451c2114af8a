"""One I-JEPA training step in PyTorch eager, timed: the baseline of `npm run bench:gpu`.

The same work as the trainer's step on the same preset (model/presets.ts): the EMA target encoder
on every patch (no gradient), the context encoder on `--ctx` patches per image, the predictor on
the context repeated for `--targets` blocks of `--tgt` patches, smooth-L1 on the layer-normalised
targets plus SIGReg (0.1) on the pooled context, backward, AdamW and the EMA update. The layers
follow model/vit.ts (pre-norm blocks, fused qkv, exact GELU, eps 1e-6, sin-cos positions, residual
projections initialised at 0.02 / sqrt(2 (layer + 1))) and SIGReg model/objective.ts; only the
lengths matter for the time, so indices are random.

  python3 bench/gpu/torch_step.py --dim 768 --depth 12 --heads 12 --pred-dim 384 --pred-depth 6 \
      --pred-heads 12 --image 224 --patch 16 --batch 64 --ctx 150 --tgt 30 --targets 4 --precision fp32

Prints one JSON line: {"imgPerSec", "secPerStep", "device", "precision", ...}.
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# SIGReg's quadrature (model/objective.ts): knots on [0, T_MAX].
KNOTS = 17
T_MAX = 4.0


def sincos2d(dim, rows, cols):
    """2-D sin-cos positions: half the channels encode the row, half the column (model/posembed.ts)."""
    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2))
        out = np.einsum('p,f->pf', pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    gy, gx = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing='ij')
    emb = np.concatenate([one(dim // 2, gy.reshape(-1)), one(dim // 2, gx.reshape(-1))], axis=1)
    return torch.from_numpy(emb).float()


def trunc_(t, std=0.02):
    return nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


class Block(nn.Module):
    def __init__(self, dim, heads, layer, eps=1e-6):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        for lin in (self.qkv, self.fc1):
            trunc_(lin.weight)
            nn.init.zeros_(lin.bias)
        for lin in (self.proj, self.fc2):
            trunc_(lin.weight, 0.02 / math.sqrt(2 * (layer + 1)))
            nn.init.zeros_(lin.bias)

    def forward(self, x, bias=None):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        logits = (q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias
        x = x + self.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def key_bias(mask):
    """[B, L] 1 = real token -> additive [B, 1, 1, L]: padded keys get -1e9, real keys 0."""
    return ((mask - 1) * 1e9)[:, None, None, :]


def sigreg(x, directions):
    """Epps-Pulley statistic of each 1-D projection against N(0, 1), mean over projections, times n (model/objective.ts)."""
    t = torch.linspace(0, T_MAX, KNOTS, device=x.device)
    dt = T_MAX / (KNOTS - 1)
    gauss = torch.exp(-0.5 * t * t)
    w = gauss * dt * torch.where((torch.arange(KNOTS, device=x.device) == 0) | (torch.arange(KNOTS, device=x.device) == KNOTS - 1), 1.0, 2.0)
    tx = t[:, None, None] * (x @ directions)[None]  # [K, n, P]
    err = (tx.cos().mean(1) - gauss[:, None]) ** 2 + tx.sin().mean(1) ** 2
    return (err * w[:, None]).sum(0).mean() * x.shape[0]


class Encoder(nn.Module):
    def __init__(self, image, patch, dim, depth, heads):
        super().__init__()
        self.grid, self.patch_size = image // patch, patch
        self.patch = nn.Linear(3 * patch * patch, dim)
        trunc_(self.patch.weight)
        self.register_buffer('pos', sincos2d(dim, self.grid, self.grid))
        self.blocks = nn.ModuleList(Block(dim, heads, i) for i in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, patches, idx=None, mask=None):
        x = self.patch(patches) + self.pos
        bias = None
        if idx is not None:
            x = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
            bias = key_bias(mask)
        for blk in self.blocks:
            x = blk(x, bias)
        return self.norm(x)


class Predictor(nn.Module):
    def __init__(self, grid, dim, pdim, depth, heads):
        super().__init__()
        self.embed = nn.Linear(dim, pdim)
        self.mask_token = nn.Parameter(trunc_(torch.empty(1, 1, pdim)))
        self.register_buffer('pos', sincos2d(pdim, grid, grid))
        self.blocks = nn.ModuleList(Block(pdim, heads, i) for i in range(depth))
        self.norm = nn.LayerNorm(pdim, eps=1e-6)
        self.proj = nn.Linear(pdim, dim)

    def forward(self, ctx, ctx_idx, ctx_mask, tgt_idx):
        m, b, t = tgt_idx.shape
        x = (self.embed(ctx) + self.pos[ctx_idx]).repeat(m, 1, 1)
        x = torch.cat([x, self.mask_token + self.pos[tgt_idx.reshape(m * b, t)]], 1)
        keys = torch.cat([ctx_mask.repeat(m, 1), torch.ones(m * b, t, device=ctx.device)], 1)
        bias = key_bias(keys)
        for blk in self.blocks:
            x = blk(x, bias)
        return self.proj(self.norm(x)[:, -t:])


def main():
    ap = argparse.ArgumentParser()
    for name, default in [('dim', 192), ('depth', 6), ('heads', 3), ('pred-dim', 96), ('pred-depth', 3), ('pred-heads', 3),
                          ('image', 32), ('patch', 4), ('batch', 512), ('ctx', 30), ('tgt', 11), ('targets', 4), ('steps', 10)]:
        ap.add_argument(f'--{name}', type=int, default=default)
    ap.add_argument('--precision', choices=['fp32', 'bf16'], default='fp32')
    ap.add_argument('--seconds', type=float, default=20, help='stop timing after this long (at least 3 steps)')
    a = ap.parse_args()
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    # fp32 means fp32: no TF32 on the matrix units.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    grid = a.image // a.patch
    enc = Encoder(a.image, a.patch, a.dim, a.depth, a.heads).to(device)
    tgt_enc = Encoder(a.image, a.patch, a.dim, a.depth, a.heads).to(device)
    tgt_enc.load_state_dict(enc.state_dict())
    for p in tgt_enc.parameters():
        p.requires_grad_(False)
    pred = Predictor(grid, a.dim, a.pred_dim, a.pred_depth, a.pred_heads).to(device)
    params = [p for p in list(enc.parameters()) + list(pred.parameters())]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    n = grid * grid
    patches = torch.randn(a.batch, n, 3 * a.patch * a.patch, device=device)
    ctx_idx = torch.randint(0, n, (a.batch, a.ctx), device=device)
    ctx_mask = torch.ones(a.batch, a.ctx, device=device)
    tgt_idx = torch.randint(0, n, (a.targets, a.batch, a.tgt), device=device)
    dirs = F.normalize(torch.randn(a.dim, 64, device=device), dim=0)
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=a.precision == 'bf16')

    def step():
        with amp:
            with torch.no_grad():
                h = F.layer_norm(tgt_enc(patches), (a.dim,))
                rows = tgt_idx.reshape(a.targets * a.batch, a.tgt)
                target = torch.gather(h.repeat(a.targets, 1, 1), 1, rows[..., None].expand(-1, -1, a.dim))
            ctx = enc(patches, ctx_idx, ctx_mask)
            p = pred(ctx, ctx_idx, ctx_mask, tgt_idx)
            loss = F.smooth_l1_loss(p.float(), target.float()) + 0.1 * sigreg(ctx.float().mean(1), dirs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            t, o = list(tgt_enc.parameters()), list(enc.parameters())
            torch._foreach_mul_(t, 0.996)
            torch._foreach_add_(t, o, alpha=0.004)
        return loss.item()  # read every step, as the trainer does

    for _ in range(3):
        step()
    times = []
    t_end = time.perf_counter() + a.seconds
    while len(times) < max(3, a.steps) and (len(times) < 3 or time.perf_counter() < t_end):
        if device == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    print(json.dumps({'imgPerSec': a.batch / sec, 'secPerStep': sec, 'steps': len(times), 'device': device,
                      'gpu': torch.cuda.get_device_name() if device == 'cuda' else None, 'precision': a.precision,
                      'torch': torch.__version__}))


if __name__ == '__main__':
    main()
