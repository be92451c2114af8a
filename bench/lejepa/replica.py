"""A PyTorch reference for our LeJEPA training: the minimal recipe of the LeJEPA authors
(rbalestr-lab/lejepa MINIMAL.md, the paper's Algorithm 1) on the exact ViT of our `vit-tiny`
preset, for a fixed wall-clock budget on the CPU, then the frozen features of the trained network
and of the same network at its initialisation, dumped for our TypeScript probes.

Recipe (every number a flag):
- encoder: model/vit.ts at vit-tiny (32 px, patch 4, width 192, depth 6, 3 heads, MLP 4×, LayerNorm
  eps 1e-6): a linear patch embedding of (row, col, channel)-flattened patches, fixed 2-D sin-cos
  positions added once, no class token, pre-norm blocks with a fused qkv and exact GELU, a final
  LayerNorm; the embedding is the mean of the final tokens. Initialised as model/params.ts:
  truncated normal (±2σ) σ 0.02, residual output projections σ 0.02/√(2(layer+1)), zero biases.
  A local view (16 px, a 4×4 grid) reads the sin-cos table at the coordinates where an 8×8 table
  resized to 4×4 would sample it: (i + ½)·8/4 − ½.
- projector: torchvision.ops.MLP(192, [2048, 2048, 16], norm_layer=BatchNorm1d) on the embedding of
  every view of the batch at once (one BatchNorm batch, as the minimal's), PyTorch's default init
  (`--proj-init trunc`: model/params.ts's σ 0.02 instead).
- views per image: 2 global (RandomResizedCrop 32, scale 0.3-1) and 6 local (16 px, scale
  0.05-0.3), ratio 3/4-4/3, then flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2,
  solarize(128) p 0.2, ImageNet normalisation; no blur at 32 px.
- loss: centres = mean projection of the global views; invariance = mean over views, images and
  dims of (centre − z)²; SIGReg = Epps-Pulley (t on [0, 3], 17 knots, trapezoid weights times
  exp(−t²/2)) · batch size, mean over 256 unit slices drawn fresh each step, mean over views;
  loss = (1 − λ)·invariance + λ·SIGReg, λ 0.02.
- AdamW lr 5e-4, weight decay 0.05 on every parameter (the minimal's single group), betas
  (0.9, 0.999), batch 64 images, float32, `--threads` intra-op threads.
- schedule: time-based. The learning rate is a function of the elapsed fraction f of the
  `--minutes` budget, read before each step: linear from 1% of the peak (the minimal's
  LinearLR start factor) over the first `--warmup` of the budget, then a half cosine to 0 at f = 1.
  Training stops at the first step that starts past the budget.

Data: `--data` is a folder of class sub-folders. bench/lejepa/split.ts (run by this script when
`<split dir>/train.tsv` is missing) writes our validation split by the repo's own rule; only its
training part is trained on. Outputs in `--out`:
- `{trained,random}-{train,val}.json` {"n", "dim", "classes"}, `.x.f32` little-endian float32
  [n, dim], `.y.i32` int32 labels [n]: embeddings of `--probe-train` seeded training-split
  images and `--probe-val` validation images (all of them by default), unaugmented, resized
  to 32 px as our evaluation does (bicubic, only when not already 32 px);
- `run.json`: counts, rates, losses over time, the kNN sanity check (cosine, k 20, T 0.07).

  python3 bench/lejepa/replica.py --data <image folder> --out runs/replica --minutes 30 --threads 1
"""
import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.ops import MLP

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------- encoder (model/vit.ts)

def sincos2d(dim, rows, cols):
    """2-D sin-cos positions [len(rows)·len(cols), dim] at (fractional) grid coordinates, row-major:
    the column coordinate in the first half, the row in the second (model/posembed.ts)."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    r, c = np.meshgrid(np.asarray(rows, np.float64), np.asarray(cols, np.float64), indexing='ij')
    r = r.reshape(-1, 1) * omega
    c = c.reshape(-1, 1) * omega
    return torch.from_numpy(np.concatenate([np.sin(c), np.cos(c), np.sin(r), np.cos(r)], 1)).float()


def grid_coords(n, span):
    """Where cell i of an n-cell grid samples a span-cell table resized to n cells."""
    return (np.arange(n, dtype=np.float64) + 0.5) * span / n - 0.5


def trunc_(w, std):
    nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
    return w


def linear(i, o, std):
    lin = nn.Linear(i, o)
    trunc_(lin.weight, std)
    nn.init.zeros_(lin.bias)
    return lin


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, eps, layer, std=0.02):
        super().__init__()
        self.heads = heads
        residual = std / math.sqrt(2 * (layer + 1))
        hidden = round(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv = linear(dim, 3 * dim, std)
        self.proj = linear(dim, dim, residual)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = linear(dim, hidden, std)
        self.fc2 = linear(hidden, dim, residual)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = ((q / math.sqrt(d // self.heads)) @ k.transpose(-2, -1)).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, image, patch, dim, depth, heads, mlp_ratio, eps, std=0.02):
        super().__init__()
        self.image, self.patch, self.dim = image, patch, dim
        self.patch_embed = linear(patch * patch * 3, dim, std)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, eps, i, std) for i in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self._pos = {}

    def positions(self, grid):
        if grid not in self._pos:
            c = grid_coords(grid, self.image // self.patch)
            self._pos[grid] = sincos2d(self.dim, c, c)
        return self._pos[grid]

    def patchify(self, x):
        """[B, 3, H, W] → [B, (H/p)·(W/p), p·p·3], raster order over the grid, (row, col, channel)
        inside a patch (format/preprocess.ts normalizePatches)."""
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def forward(self, x):
        """Images [B, 3, s, s] (s a multiple of the patch) → final-norm tokens [B, (s/p)², D]."""
        x = self.patch_embed(self.patchify(x)) + self.positions(x.shape[-1] // self.patch)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def embed(self, x):
        return self.forward(x).mean(1)


# ---------------------------------------------------------------- loss (LeJEPA Algorithm 1)

class SIGReg:
    """Sliced Epps-Pulley statistic against N(0, 1), as the minimal: [V, N, K] → mean over views and slices."""

    def __init__(self, knots=17, t_max=3.0, slices=256):
        self.t = torch.linspace(0, t_max, knots)
        dt = t_max / (knots - 1)
        w = torch.full((knots,), 2 * dt)
        w[[0, -1]] = dt
        self.phi = torch.exp(-self.t.square() / 2)
        self.weights = w * self.phi
        self.slices = slices

    def __call__(self, proj, gen):
        a = torch.randn(proj.shape[-1], self.slices, generator=gen)
        a = a / a.norm(p=2, dim=0)
        xt = (proj @ a).unsqueeze(-1) * self.t  # [V, N, S, knots]
        err = (xt.cos().mean(-3) - self.phi).square() + xt.sin().mean(-3).square()
        return ((err @ self.weights) * proj.shape[-2]).mean()


def lejepa_loss(proj, n_global, lamb, sigreg, gen):
    centres = proj[:n_global].mean(0)
    inv = (centres - proj).square().mean()
    sig = sigreg(proj, gen)
    return (1 - lamb) * inv + lamb * sig, inv, sig


# ---------------------------------------------------------------- data

def read_split(path):
    labels, paths = [], []
    with open(path) as f:
        for line in f:
            y, p = line.rstrip('\n').split('\t', 1)
            labels.append(int(y))
            paths.append(p)
    return paths, np.asarray(labels, np.int32)


def open_rgb(path):
    with Image.open(path) as im:
        return im.convert('RGB')


def view_transform(size, scale, a):
    return T.Compose([
        T.RandomResizedCrop(size, scale=tuple(scale), ratio=(3 / 4, 4 / 3)),
        T.RandomHorizontalFlip(a.flip_p),
        T.RandomApply([T.ColorJitter(*a.jitter)], p=a.jitter_p),
        T.RandomGrayscale(a.gray_p),
        T.RandomSolarize(128, p=a.solarize_p),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_pixels(paths, size):
    """Unaugmented uint8 [n, size, size, 3], resized (bicubic, aspect ignored) only when not already size."""
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        im = open_rgb(p)
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        out[i] = np.asarray(im)
    return out


@torch.inference_mode()
def embed_all(enc, pixels, batch=256):
    enc.eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(pixels), batch):
        x = torch.from_numpy(pixels[i:i + batch]).permute(0, 3, 1, 2).float() / 255
        out.append(enc.embed((x - mean) / std))
    return torch.cat(out).numpy()


def write_features(prefix, x, y, classes):
    with open(f'{prefix}.json', 'w') as f:
        json.dump({'n': int(x.shape[0]), 'dim': int(x.shape[1]), 'classes': int(classes)}, f)
        f.write('\n')
    x.astype('<f4').tofile(f'{prefix}.x.f32')
    y.astype('<i4').tofile(f'{prefix}.y.i32')


def knn_accuracy(trx, tr_y, tex, te_y, classes, k=20, temperature=0.07):
    """Temperature-weighted cosine kNN (Wu et al. 2018), as eval/eval.ts knnPredict."""
    tr = F.normalize(torch.from_numpy(trx), dim=1)
    te = F.normalize(torch.from_numpy(tex), dim=1)
    ytr = torch.from_numpy(tr_y).long()
    correct = 0
    for i in range(0, len(te), 1024):
        top = (te[i:i + 1024] @ tr.T).topk(k, dim=1)
        votes = torch.zeros(top.values.shape[0], classes).scatter_add_(1, ytr[top.indices], (top.values / temperature).exp())
        correct += (votes.argmax(1) == torch.from_numpy(te_y[i:i + 1024]).long()).sum().item()
    return correct / len(te)


# ---------------------------------------------------------------- run

def blas_library():
    """The BLAS this process linked (Linux): Debian's python3-torch goes through the libblas.so.3
    alternative, and the reference BLAS there is about 10× slower than OpenBLAS."""
    torch.ones(64, 64) @ torch.ones(64, 64)
    try:
        with open('/proc/self/maps') as f:
            libs = {line.split()[-1] for line in f if 'blas' in line.split()[-1]}
    except OSError:
        return 'unknown'
    return ', '.join(sorted(libs)) or 'none found'


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', required=True, help='folder of class sub-folders')
    ap.add_argument('--out', default='runs/replica')
    ap.add_argument('--split-dir', help='train.tsv/val.tsv from bench/lejepa/split.ts (default <out>/split, written if missing)')
    ap.add_argument('--minutes', type=float, default=30, help='wall-clock training budget')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--embed-threads', type=int, help='threads for the feature dump after training (default --threads)')
    ap.add_argument('--seed', type=int, default=0)
    # model (model/presets.ts vit-tiny)
    ap.add_argument('--image', type=int, default=32)
    ap.add_argument('--patch', type=int, default=4)
    ap.add_argument('--dim', type=int, default=192)
    ap.add_argument('--depth', type=int, default=6)
    ap.add_argument('--heads', type=int, default=3)
    ap.add_argument('--mlp-ratio', type=float, default=4)
    ap.add_argument('--eps', type=float, default=1e-6)
    ap.add_argument('--proj-hidden', type=int, default=2048)
    ap.add_argument('--proj-dim', type=int, default=16)
    ap.add_argument('--proj-init', choices=['torch', 'trunc'], default='torch',
                    help="projector linears: PyTorch's default (the minimal's) or model/params.ts's (σ 0.02, zero bias)")
    # views
    ap.add_argument('--global-views', type=int, default=2)
    ap.add_argument('--local-views', type=int, default=6)
    ap.add_argument('--local-size', type=int, default=16)
    ap.add_argument('--global-scale', type=float, nargs=2, default=[0.3, 1.0])
    ap.add_argument('--local-scale', type=float, nargs=2, default=[0.05, 0.3])
    ap.add_argument('--flip-p', type=float, default=0.5)
    ap.add_argument('--jitter', type=float, nargs=4, default=[0.4, 0.4, 0.4, 0.1], metavar=('B', 'C', 'S', 'H'))
    ap.add_argument('--jitter-p', type=float, default=0.8)
    ap.add_argument('--gray-p', type=float, default=0.2)
    ap.add_argument('--solarize-p', type=float, default=0.2)
    # objective and optimiser
    ap.add_argument('--lamb', type=float, default=0.02, help='SIGReg weight λ')
    ap.add_argument('--slices', type=int, default=256)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--lr', type=float, default=5e-4)
    ap.add_argument('--weight-decay', type=float, default=0.05)
    ap.add_argument('--warmup', type=float, default=0.1, help='fraction of the budget')
    ap.add_argument('--start-factor', type=float, default=0.01, help='warm-up starts at this fraction of --lr')
    # outputs
    ap.add_argument('--probe-train', type=int, default=20000, help='training-split images to embed (seeded choice)')
    ap.add_argument('--probe-val', type=int, default=0, help='validation images to embed (0: all)')
    ap.add_argument('--log-points', type=int, default=20, help='loss records over the budget')
    a = ap.parse_args()
    if a.image % a.patch or a.local_size % a.patch:
        ap.error('--image and --local-size must be multiples of --patch')
    if a.global_views < 1:
        ap.error('--global-views must be at least 1 (the centres are their mean)')
    return a


def lr_at(frac, a):
    if frac < a.warmup:
        return a.lr * (a.start_factor + (1 - a.start_factor) * frac / a.warmup)
    return a.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - a.warmup) / max(1e-9, 1 - a.warmup))))


def main():
    a = parse()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    split_dir = a.split_dir or os.path.join(a.out, 'split')
    if not os.path.exists(os.path.join(split_dir, 'train.tsv')):
        subprocess.run(['node', '--import', 'tsx', os.path.join(REPO, 'bench/lejepa/split.ts'), os.path.abspath(a.data),
                        os.path.abspath(split_dir)], cwd=REPO, check=True)
    train_paths, train_y = read_split(os.path.join(split_dir, 'train.tsv'))
    val_paths, val_y = read_split(os.path.join(split_dir, 'val.tsv'))
    with open(os.path.join(split_dir, 'classes.json')) as f:
        classes = len(json.load(f))

    enc = ViT(a.image, a.patch, a.dim, a.depth, a.heads, a.mlp_ratio, a.eps)
    init = copy.deepcopy(enc)
    projector = MLP(a.dim, [a.proj_hidden, a.proj_hidden, a.proj_dim], norm_layer=nn.BatchNorm1d)
    if a.proj_init == 'trunc':
        for m in projector.modules():
            if isinstance(m, nn.Linear):
                trunc_(m.weight, 0.02)
                nn.init.zeros_(m.bias)
    params = list(enc.parameters()) + list(projector.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay, betas=(0.9, 0.999))
    sigreg = SIGReg(slices=a.slices)
    slice_gen = torch.Generator().manual_seed(a.seed + 1)
    order_gen = torch.Generator().manual_seed(a.seed + 2)
    global_t = view_transform(a.image, a.global_scale, a)
    local_t = view_transform(a.local_size, a.local_scale, a)
    views = a.global_views + a.local_views
    n = a.batch
    blas = blas_library()
    if 'openblas' not in blas and 'mkl' not in blas:
        print(f'warning: BLAS is {blas}; a reference BLAS makes this run several times slower than it should be',
              file=sys.stderr)
    print(f'replica: {len(train_paths)} training images, {len(val_paths)} validation held out; torch {torch.__version__}, '
          f'{a.threads} thread(s); encoder {sum(p.numel() for p in enc.parameters()):,} params, projector '
          f'{sum(p.numel() for p in projector.parameters()):,}', flush=True)

    budget = a.minutes * 60
    steps, order, cursor = 0, torch.randperm(len(train_paths), generator=order_gen), 0
    records, acc = [], {'loss': 0.0, 'inv': 0.0, 'sigreg': 0.0, 'n': 0}
    data_seconds = 0.0
    enc.train(), projector.train()
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < budget:
        lr = lr_at(elapsed / budget, a)
        for g in opt.param_groups:
            g['lr'] = lr
        if cursor + n > len(order):
            order, cursor = torch.randperm(len(train_paths), generator=order_gen), 0
        idx = order[cursor:cursor + n].tolist()
        cursor += n
        td = time.perf_counter()
        imgs = [open_rgb(train_paths[i]) for i in idx]
        # View-major: row v·N + i is view v of image i.
        g = torch.stack([global_t(im) for _ in range(a.global_views) for im in imgs])
        loc = torch.stack([local_t(im) for _ in range(a.local_views) for im in imgs]) if a.local_views else None
        data_seconds += time.perf_counter() - td
        emb = enc.embed(g)
        if loc is not None:
            emb = torch.cat([emb, enc.embed(loc)])
        proj = projector(emb).view(views, n, -1)
        loss, inv, sig = lejepa_loss(proj, a.global_views, a.lamb, sigreg, slice_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        for k, v in (('loss', loss), ('inv', inv), ('sigreg', sig)):
            acc[k] += v.item()
        acc['n'] += 1
        now = time.perf_counter() - t0
        if now >= budget * (len(records) + 1) / a.log_points or now >= budget:
            rec = {'step': steps, 'seconds': round(now, 1), 'lr': lr,
                   **{k: acc[k] / acc['n'] for k in ('loss', 'inv', 'sigreg')}}
            records.append(rec)
            acc = {'loss': 0.0, 'inv': 0.0, 'sigreg': 0.0, 'n': 0}
            print(f"step {steps} {now:.0f}s lr {lr:.2e} loss {rec['loss']:.4f} inv {rec['inv']:.4f} "
                  f"sigreg {rec['sigreg']:.4f} ({steps * n / now:.1f} img/s)", flush=True)
    train_seconds = time.perf_counter() - t0

    torch.set_num_threads(a.embed_threads or a.threads)
    t1 = time.perf_counter()
    rng = np.random.default_rng(a.seed)
    tr_items = np.arange(len(train_paths))
    if 0 < a.probe_train < len(train_paths):
        tr_items = np.sort(rng.choice(len(train_paths), a.probe_train, replace=False))
    va_items = np.arange(len(val_paths))
    if 0 < a.probe_val < len(val_paths):
        va_items = np.sort(rng.choice(len(val_paths), a.probe_val, replace=False))
    tr_pix = eval_pixels([train_paths[i] for i in tr_items], a.image)
    va_pix = eval_pixels([val_paths[i] for i in va_items], a.image)
    knn = {}
    for name, net in (('trained', enc), ('random', init)):
        trx, vax = embed_all(net, tr_pix), embed_all(net, va_pix)
        write_features(os.path.join(a.out, f'{name}-train'), trx, train_y[tr_items], classes)
        write_features(os.path.join(a.out, f'{name}-val'), vax, val_y[va_items], classes)
        knn[name] = knn_accuracy(trx, train_y[tr_items], vax, val_y[va_items], classes)
    embed_seconds = time.perf_counter() - t1

    run = {
        'torch': torch.__version__, 'blas': blas, 'threads': a.threads, 'seed': a.seed, 'args': vars(a),
        'schedule': 'time-based: lr from the elapsed fraction of the budget, linear warm-up then cosine to 0',
        'steps': steps, 'imagesSeen': steps * n, 'viewsSeen': steps * n * views,
        'trainSeconds': train_seconds, 'dataSeconds': data_seconds,
        'stepsPerSec': steps / train_seconds, 'imagesPerSec': steps * n / train_seconds,
        'viewsPerSec': steps * n * views / train_seconds,
        'losses': records, 'embedSeconds': embed_seconds,
        'probeTrain': int(len(tr_items)), 'probeVal': int(len(va_items)),
        'knn': {'k': 20, 'temperature': 0.07, **knn},
    }
    with open(os.path.join(a.out, 'run.json'), 'w') as f:
        json.dump(run, f, indent=2)
        f.write('\n')
    print(f"{steps} steps, {steps * n} images ({run['imagesPerSec']:.1f}/s), {steps * n * views} views "
          f"({run['viewsPerSec']:.1f}/s) in {train_seconds:.0f}s, {data_seconds:.0f}s of it making views; "
          f"features in {embed_seconds:.0f}s")
    print(f"kNN (k 20, cosine, T 0.07), {len(tr_items)} → {len(va_items)} validation images: "
          f"trained {knn['trained']:.4f}, random init {knn['random']:.4f}")


if __name__ == '__main__':
    sys.exit(main())
