"""How much compute do the issue-6 targets need? A PyTorch replica of the default recipe, for a GPU.

Our engines cannot use the lent GPU (tfjs-node-gpu and onnxruntime's CUDA provider download
binaries at install time from hosts that this workplace cannot reach), so this file re-states the
trainer's default recipe (`lr-quarter-no-crop`, vit-tiny on Fashion-MNIST at 32x32) in PyTorch:
the same ViT (pre-norm, fused qkv, sin-cos positions, residual init rescaled by 1/sqrt(2 layer)),
the same multi-block masks with padded contexts (masks.ts), smooth-L1 on layer-normalised EMA
targets, SIGReg 0.1 on the pooled context, AdamW with decoupled decay on matrices only, and a
complete schedule for each run length (15% warmup 5e-5 -> 2.5e-4, cosine to 1e-6; weight decay
0.04 -> 0.4; EMA 0.996 -> 1). Its first run length matches the ~149k images that the trainer's
30-minute CPU run sees, to check the replica against the trainer's own numbers
(docs/recipe-study.md); longer runs give the frozen-probe accuracy as a function of images seen.

Probes follow train/probe.ts: the EMA target encoder's output tokens read as `mean`, `grid4` or
`grid8` (readout.ts), standardised, an L2 logistic regression (mean cross-entropy + l2/2 |W|^2)
whose penalty is chosen on a seeded 80/20 split of the 10k probe-training images from
[1, 0.1, 0.01, 1e-3, 1e-4], scored on a held-out validation sixth of the training set that
pre-training never sees.

  python3 bench/gpu-scaling/ijepa_torch.py --data DIR --images 149000 600000 2400000 --out results.json
"""
import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRID = 8
PATCH = 4
L2_GRID = (1.0, 1e-1, 1e-2, 1e-3, 1e-4)


def read_idx(path):
    with gzip.open(path, 'rb') as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fmnist(data, device):
    """Train images as normalised [N, 3, 32, 32] (grey replicated, squashed 28 -> 32), labels [N]."""
    x = torch.from_numpy(read_idx(os.path.join(data, 'train-images-idx3-ubyte.gz')).copy()).float().div_(255)
    y = torch.from_numpy(read_idx(os.path.join(data, 'train-labels-idx1-ubyte.gz')).astype(np.int64))
    x = F.interpolate(x[:, None], size=(32, 32), mode='bilinear', align_corners=False).repeat(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device), y.to(device)


def splits(n, seed=0, limit=10000):
    """A seeded sixth held out for validation; the first `limit` of the rest (seeded) train the probes."""
    perm = np.random.default_rng(seed).permutation(n)
    cut = n - round(n / 6)
    train, val = np.sort(perm[:cut]), np.sort(perm[cut:])
    probe = np.random.default_rng(seed + 1).permutation(train)[:limit]
    return torch.from_numpy(train), torch.from_numpy(val[:limit]), torch.from_numpy(probe)


def sincos2d(dim, rows, cols):
    """2-D sin-cos positions: half the channels encode the row, half the column (posembed.ts)."""
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


class Encoder(nn.Module):
    def __init__(self, dim=192, depth=6, heads=3):
        super().__init__()
        self.patch = nn.Linear(3 * PATCH * PATCH, dim)
        trunc_(self.patch.weight)
        nn.init.zeros_(self.patch.bias)
        self.register_buffer('pos', sincos2d(dim, GRID, GRID))
        self.blocks = nn.ModuleList(Block(dim, heads, i) for i in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, img, idx=None, mask=None):
        b = img.shape[0]
        p = img.unfold(2, PATCH, PATCH).unfold(3, PATCH, PATCH)  # [B, C, 8, 8, 4, 4]
        p = p.permute(0, 2, 3, 4, 5, 1).reshape(b, GRID * GRID, -1)  # patch rows, cols, channels last
        x = self.patch(p) + self.pos
        bias = None
        if idx is not None:
            x = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
            bias = key_bias(mask)
        for blk in self.blocks:
            x = blk(x, bias)
        return self.norm(x)


class Predictor(nn.Module):
    def __init__(self, dim=192, pdim=96, depth=3, heads=3):
        super().__init__()
        self.embed = nn.Linear(dim, pdim)
        self.mask_token = nn.Parameter(trunc_(torch.empty(1, 1, pdim)))
        self.register_buffer('pos', sincos2d(pdim, GRID, GRID))
        self.blocks = nn.ModuleList(Block(pdim, heads, i) for i in range(depth))
        self.norm = nn.LayerNorm(pdim, eps=1e-6)
        self.proj = nn.Linear(pdim, dim)
        for lin in (self.embed, self.proj):
            trunc_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, ctx, ctx_idx, ctx_mask, tgt_idx):
        """ctx [B, L, D]; tgt_idx [M, B, T] -> predictions [M*B, T, D] (block-major)."""
        m, b, t = tgt_idx.shape
        x = (self.embed(ctx) + self.pos[ctx_idx]).repeat(m, 1, 1)
        queries = self.mask_token + self.pos[tgt_idx.reshape(m * b, t)]
        x = torch.cat([x, queries], 1)
        keys = torch.cat([ctx_mask.repeat(m, 1), torch.ones(m * b, t, device=ctx.device)], 1)
        bias = key_bias(keys)
        for blk in self.blocks:
            x = blk(x, bias)
        return self.proj(self.norm(x)[:, -t:])


def block_size(scale, aspect):
    area = scale * GRID * GRID
    h = max(1, min(GRID, round(math.sqrt(area * aspect))))
    w = max(1, min(GRID, round(math.sqrt(area / aspect))))
    return h, w


def place(rng, h, w, shape):
    """Patch indices [*shape, h*w] of h x w blocks with uniform top-left corners (masks.ts placeBlock)."""
    top = rng.integers(GRID - h + 1, size=shape)[..., None, None]
    left = rng.integers(GRID - w + 1, size=shape)[..., None, None]
    return ((top + np.arange(h)[:, None]) * GRID + left + np.arange(w)[None, :]).reshape(*shape, h * w)


def sample_masks(rng, batch, device, num_targets=4, min_keep=4, tries=20):
    """masks.ts sampleMasks, vectorised: one target and one context size per batch, placed per image;
    the context is the first of `tries` blocks that keeps min_keep non-target patches, else every
    non-target patch; an image whose targets leave fewer than min_keep patches draws its targets again."""
    th, tw = block_size(rng.uniform(0.15, 0.2), rng.uniform(0.75, 1.5))
    ch, cw = block_size(rng.uniform(0.85, 1.0), 1.0)
    rows = np.arange(batch)
    tgt = place(rng, th, tw, (num_targets, batch))
    taken = np.zeros((batch, GRID * GRID), dtype=bool)
    taken[rows[None, :, None], tgt] = True
    while True:
        short = np.nonzero((~taken).sum(1) < min_keep)[0]
        if len(short) == 0:
            break
        tgt[:, short] = place(rng, th, tw, (num_targets, len(short)))
        taken[short] = False
        taken[short[None, :, None], tgt[:, short]] = True
    cand = place(rng, ch, cw, (tries, batch))  # [R, B, C]
    free = ~taken[rows[None, :, None], cand]
    ok = free.sum(2) >= min_keep
    first = ok.argmax(0)
    ctx = np.zeros((batch, GRID * GRID), dtype=bool)
    ctx[rows[:, None], cand[first, rows]] = free[first, rows]
    fallback = ~ok.any(0)
    ctx[fallback] = ~taken[fallback]
    count = ctx.sum(1)
    length = count.max()
    order = np.argsort(~ctx, axis=1, kind='stable')[:, :length]  # context patches first, in raster order
    mask = np.arange(length)[None, :] < count[:, None]
    idx = np.where(mask, order, order[:, :1])
    return (torch.from_numpy(idx).to(device), torch.from_numpy(mask.astype(np.float32)).to(device), torch.from_numpy(tgt).to(device))


KNOTS = 17
T_MAX = 4.0


def sigreg(x, directions):
    """Epps-Pulley statistic of each 1-D projection against N(0, 1), mean over projections, times n (loss.ts)."""
    t = torch.linspace(0, T_MAX, KNOTS, device=x.device)
    dt = T_MAX / (KNOTS - 1)
    gauss = torch.exp(-0.5 * t * t)
    w = gauss * dt * torch.where((torch.arange(KNOTS, device=x.device) == 0) | (torch.arange(KNOTS, device=x.device) == KNOTS - 1), 1.0, 2.0)
    tx = t[:, None, None] * (x @ directions)[None]  # [K, n, P]
    err = (tx.cos().mean(1) - gauss[:, None]) ** 2 + tx.sin().mean(1) ** 2
    return (err * w[:, None]).sum(0).mean() * x.shape[0]


def schedule(step, total, peak=2.5e-4, start=5e-5, final=1e-6, warm_frac=0.15, wd=(0.04, 0.4), ema=(0.996, 1.0)):
    warm = round(total * warm_frac)
    if step < warm:
        lr = start + (peak - start) * step / warm
    else:
        prog = min(1.0, (step - warm) / max(1, total - warm))
        lr = final + (peak - final) * 0.5 * (1 + math.cos(math.pi * prog))
    prog = min(1.0, step / max(1, total))
    decay = wd[1] + (wd[0] - wd[1]) * 0.5 * (1 + math.cos(math.pi * prog))
    return lr, decay, ema[0] + (ema[1] - ema[0]) * prog


def train(x, train_idx, images, seed, device, batch=128, sigreg_weight=0.1, budget=None, log=print):
    """With `budget` (seconds), the pace of steps 20-60 fixes the run's length so that its schedule completes in time (the trainer's planByBudget)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc, pred = Encoder().to(device), Predictor().to(device)
    target = Encoder().to(device)
    target.load_state_dict(enc.state_dict())
    for p in target.parameters():
        p.requires_grad_(False)
    params = [p for m in (enc, pred) for p in m.parameters()]
    decay = [p for p in params if p.ndim == 2]
    rest = [p for p in params if p.ndim != 2]
    opt = torch.optim.AdamW([{'params': decay}, {'params': rest, 'weight_decay': 0.0}], lr=0, betas=(0.9, 0.999), eps=1e-8)
    total = images // batch
    order = torch.empty(0, dtype=torch.long)
    t0 = time.time()
    step = 0
    while step < total:
        if budget is not None and step == 60:
            torch.cuda.synchronize() if device == 'cuda' else None
            pace = (time.time() - t20) / 40
            total = max(61, min(total, 60 + int((budget - (time.time() - t0)) / pace)))
            log(f'  budget {budget:.0f}s at {pace * 1000:.1f} ms/step: {total} steps, {total * batch} images')
        if step == 20:
            torch.cuda.synchronize() if device == 'cuda' else None
            t20 = time.time()
        if len(order) < batch:
            order = torch.cat([order, train_idx[torch.from_numpy(rng.permutation(len(train_idx)))]])
        pick, order = order[:batch], order[batch:]
        img = x[pick.to(device)]
        lr, wd, mom = schedule(step, total)
        opt.param_groups[0]['lr'] = opt.param_groups[1]['lr'] = lr
        opt.param_groups[0]['weight_decay'] = wd
        ctx_idx, ctx_mask, tgt_idx = sample_masks(rng, batch, device)
        with torch.no_grad():
            h = F.layer_norm(target(img), (192,), eps=1e-6)
            m, b, t = tgt_idx.shape
            tgt = torch.gather(h.repeat(m, 1, 1), 1, tgt_idx.reshape(m * b, t)[..., None].expand(-1, -1, 192))
        ctx = enc(img, ctx_idx, ctx_mask)
        p = pred(ctx, ctx_idx, ctx_mask, tgt_idx)
        loss = F.smooth_l1_loss(p, tgt, beta=1.0)
        reg = torch.zeros((), device=device)
        if sigreg_weight > 0:
            # Per chunk of 32 images, averaged, as the trainer's engines compute it (the statistic scales with n).
            pooled = (ctx * ctx_mask[..., None]).sum(1) / ctx_mask.sum(1, keepdim=True)
            d = torch.randn(192, 64, device=device)
            d = d / d.norm(dim=0, keepdim=True)
            reg = torch.stack([sigreg(c, d) for c in pooled.split(32)]).mean()
        opt.zero_grad(set_to_none=True)
        (loss + sigreg_weight * reg).backward()
        opt.step()
        with torch.no_grad():
            tp = list(target.parameters())
            torch._foreach_mul_(tp, mom)
            torch._foreach_add_(tp, list(enc.parameters()), alpha=1 - mom)
        if step % 500 == 0 or step == total - 1:
            log(f'  step {step + 1}/{total} loss {loss.item():.4f} sigreg {reg.item():.3f} lr {lr:.2e} {((step + 1) * batch) / (time.time() - t0):.0f} img/s')
        step += 1
    return target, time.time() - t0, step * batch


@torch.no_grad()
def readouts(enc, x, idx, device, chunk=1000):
    """The trainer's probe readouts of the encoder's output tokens: mean, grid4 (2x2 cells), grid8 (every patch)."""
    out = {'mean': [], 'grid4': [], 'grid8': []}
    for i in range(0, len(idx), chunk):
        tok = enc(x[idx[i:i + chunk].to(device)])  # [n, 64, D]
        n, _, d = tok.shape
        grid = tok.view(n, 4, 2, 4, 2, d).mean((2, 4))
        out['mean'].append(tok.mean(1))
        out['grid4'].append(grid.reshape(n, -1))
        out['grid8'].append(tok.reshape(n, -1))
    return {k: torch.cat(v) for k, v in out.items()}


def fit_logreg(x, y, l2, init=None, max_iter=500):
    d, k = x.shape[1], 10
    w = torch.zeros(d + 1, k, device=x.device) if init is None else init.clone()
    w.requires_grad_(True)
    xb = torch.cat([x, torch.ones(len(x), 1, device=x.device)], 1)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, tolerance_grad=1e-5, tolerance_change=1e-9, history_size=20, line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach()


def accuracy(w, x, y):
    return (torch.cat([x, torch.ones(len(x), 1, device=x.device)], 1) @ w).argmax(1).eq(y).float().mean().item() * 100


def standardise(fit, *others):
    mean, std = fit.mean(0), fit.std(0).clamp_min(1e-6)
    return [(a - mean) / std for a in (fit, *others)]


def probe(ftr, ytr, fval, yval):
    """L2 chosen on a seeded 80/20 split of the probe's training features (probe.ts selectL2), then refit on all of them."""
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(ftr))).to(ftr.device)
    cut = int(len(ftr) * 0.8)
    a, b = standardise(ftr[perm[:cut]], ftr[perm[cut:]])
    best, w = None, None
    for l2 in L2_GRID:
        w = fit_logreg(a, ytr[perm[:cut]], l2, init=w)
        acc = accuracy(w, b, ytr[perm[cut:]])
        if best is None or acc > best[1]:
            best = (l2, acc)
    tr, va = standardise(ftr, fval)
    return accuracy(fit_logreg(tr, ytr, best[0]), va, yval), best[0]


def evaluate(enc, x, y, probe_idx, val_idx, device):
    enc.eval()
    ftr, fval = readouts(enc, x, probe_idx, device), readouts(enc, x, val_idx, device)
    ytr, yval = y[probe_idx.to(device)], y[val_idx.to(device)]
    return {k: probe(ftr[k], ytr, fval[k], yval) for k in ftr}


def baselines(results, x, y, probe_idx, val_idx, device, seed):
    torch.manual_seed(seed)
    results['pixels'] = probe(x[probe_idx.to(device)].flatten(1), y[probe_idx.to(device)], x[val_idx.to(device)].flatten(1), y[val_idx.to(device)])
    results['random'] = evaluate(Encoder().to(device), x, y, probe_idx, val_idx, device)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', required=True, help='folder with the Fashion-MNIST IDX .gz files')
    ap.add_argument('--images', type=int, nargs='+', required=True, help='pre-training images of each run (each a complete schedule)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--limit', type=int, default=10000, help='probe-training and validation images (smoke tests)')
    ap.add_argument('--deadline', type=float, default=1e9, help='seconds: skip a run whose estimated time would pass this')
    ap.add_argument('--budget', type=float, help='seconds per run: shorten the run (a complete schedule) to fit')
    ap.add_argument('--no-baselines', dest='baselines', action='store_false', help='skip the raw-pixel and random-init probes')
    ap.add_argument('--out', required=True)
    args = ap.parse_args()
    start = time.time()
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.backends.cuda.matmul.allow_tf32 = True
    x, y = load_fmnist(args.data, device)
    train_idx, val_idx, probe_idx = splits(len(x), limit=args.limit)
    results = {'device': torch.cuda.get_device_name() if device == 'cuda' else 'cpu', 'torch': torch.__version__, 'runs': []}

    def save():
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)

    def log(s):
        print(f'[{time.time() - start:6.0f}s] {s}', flush=True)

    if args.baselines:
        baselines(results, x, y, probe_idx, val_idx, device, args.seed)
        log(f"pixels {results['pixels']} random-init {results['random']}")
        save()
    rate = None
    for images in args.images:
        if rate is not None and time.time() - start + images / rate * 1.15 + 45 > args.deadline:
            log(f'skip {images} images: would pass the deadline')
            continue
        enc, secs, images = train(x, train_idx, images, args.seed, device, budget=args.budget, log=log)
        rate = images / secs
        run = {'images': images, 'seconds': round(secs, 1), 'img_per_s': round(rate), 'probes': evaluate(enc, x, y, probe_idx, val_idx, device)}
        results['runs'].append(run)
        log(json.dumps(run))
        save()


if __name__ == '__main__':
    main()
